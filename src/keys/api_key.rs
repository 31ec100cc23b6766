//! API keys as secrets, and the ids that stand for them everywhere else.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::HeaderValue;

use crate::fingerprint::KeyId;

/// An upstream API key. It is a secret from the moment it is parsed.
///
/// `Debug` and `Display` print only its fingerprint (`AIza…x4Fq`); the secret is reachable only
/// through [`expose_secret`](Self::expose_secret) and the prepared header values, which are marked
/// sensitive so that hyper and tracing do not print them.
///
/// ```
/// use gemini_balance::keys::ApiKey;
///
/// let key = ApiKey::new("AIzaSyA1234567890abcdefghijklmnopqrstuv").unwrap();
/// assert_eq!(format!("{key}"), "AIza…stuv");
/// assert_eq!(format!("{key:?}"), "ApiKey(AIza…stuv)");
/// assert!(key.looks_like_gemini_key());
/// ```
#[derive(Clone)]
pub struct ApiKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    secret: Box<str>,
    id: KeyId,
    header: HeaderValue,
    bearer: HeaderValue,
    forms: crate::redact::SecretForms,
}

/// Why a string was refused as an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The string is empty (after trimming).
    Empty,
    /// It contains whitespace, control or non-ASCII characters, so it cannot be a key.
    BadCharacters,
    /// It is longer than 512 bytes.
    TooLong,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            InvalidKey::Empty => "empty API key",
            InvalidKey::BadCharacters => "API key contains characters that cannot be in a key",
            InvalidKey::TooLong => "API key is longer than 512 bytes",
        })
    }
}

impl std::error::Error for InvalidKey {}

impl ApiKey {
    /// Parses a key. Surrounding whitespace and quotes are trimmed; any printable ASCII is
    /// accepted (so OpenAI-style upstream keys work too). See
    /// [`looks_like_gemini_key`](Self::looks_like_gemini_key) for the strict Gemini format.
    pub fn new(raw: &str) -> Result<ApiKey, InvalidKey> {
        let secret = raw.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        if secret.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if secret.len() > 512 {
            return Err(InvalidKey::TooLong);
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidKey::BadCharacters);
        }
        let mut header = HeaderValue::from_str(secret).map_err(|_| InvalidKey::BadCharacters)?;
        header.set_sensitive(true);
        let mut bearer = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| InvalidKey::BadCharacters)?;
        bearer.set_sensitive(true);
        let id = KeyId::of(secret);
        let forms = crate::redact::SecretForms::new(secret, id.mask());
        Ok(ApiKey {
            inner: Arc::new(KeyInner {
                id,
                secret: secret.into(),
                header,
                bearer,
                forms,
            }),
        })
    }

    /// The secret itself. Use it only to talk to the upstream.
    pub fn expose_secret(&self) -> &str {
        &self.inner.secret
    }

    /// The key's id: stable, unique, safe to log and store.
    pub fn id(&self) -> &KeyId {
        &self.inner.id
    }

    /// The forms the key can take in an answer's body (as is, escaped, UTF-16), to remove it
    /// from bodies before they are passed on or logged.
    pub fn secret_forms(&self) -> &crate::redact::SecretForms {
        &self.inner.forms
    }

    /// The key as an `x-goog-api-key` header value (marked sensitive).
    pub fn header_value(&self) -> &HeaderValue {
        &self.inner.header
    }

    /// `Bearer <key>` as an `Authorization` header value (marked sensitive).
    pub fn bearer_value(&self) -> &HeaderValue {
        &self.inner.bearer
    }

    /// `true` for the Google API key format: `AIza` and 35 characters of `[0-9A-Za-z_-]`.
    pub fn looks_like_gemini_key(&self) -> bool {
        looks_like_gemini_key(&self.inner.secret)
    }
}

/// `true` for the Google API key format: `AIza` and 35 characters of `[0-9A-Za-z_-]`.
pub fn looks_like_gemini_key(s: &str) -> bool {
    s.len() == 39
        && s.starts_with("AIza")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.inner.id.mask())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.inner.id.mask())
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for ApiKey {}

impl Hash for ApiKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::mask;

    #[test]
    fn key_never_prints_its_secret() {
        let secret = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
        let key = ApiKey::new(secret).unwrap();
        for shown in [
            format!("{key}"),
            format!("{key:?}"),
            format!("{:?}", key.id()),
            format!("{}", key.id()),
            key.id().hex(),
        ] {
            assert!(!shown.contains(&secret[4..35]), "{shown}");
        }
        assert!(key.header_value().is_sensitive());
        assert_eq!(
            key.id(),
            ApiKey::new(&format!(" \"{secret}\" ")).unwrap().id()
        );
    }

    #[test]
    fn rejects_what_cannot_be_a_key() {
        assert_eq!(ApiKey::new("  ").unwrap_err(), InvalidKey::Empty);
        assert_eq!(ApiKey::new("a b").unwrap_err(), InvalidKey::BadCharacters);
        assert_eq!(ApiKey::new("ключ").unwrap_err(), InvalidKey::BadCharacters);
        assert!(!ApiKey::new("sk-1234").unwrap().looks_like_gemini_key());
        assert_eq!(mask("short"), "…");
    }
}
