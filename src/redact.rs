//! Removing API keys from text before it leaves our hands (error bodies, log lines).
//!
//! Gemini error messages can quote the key that was used (`Consumer 'api_key:AIza…' has been
//! suspended`). Such bodies are forwarded to clients and written to logs, so every buffered
//! error body passes through [`redact_keys`] first.
//!
//! # Example
//!
//! ```
//! use gemini_balance::redact::redact_keys;
//!
//! let text = "Consumer 'api_key:AIzaSyA1234567890abcdefghijklmnopqrstuv' has been suspended.";
//! assert_eq!(redact_keys(text), "Consumer 'api_key:AIza…stuv' has been suspended.");
//! ```

use std::borrow::Cow;

use crate::keys::mask;

/// Replaces every Google API key (`AIza` followed by 35 URL-safe characters) with its
/// fingerprint (`AIza…x4Fq`).
pub fn redact_keys(text: &str) -> Cow<'_, str> {
    if !text.contains("AIza") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while let Some(found) = text[i..].find("AIza") {
        let start = i + found;
        let end = start + 39;
        let is_key = end <= bytes.len()
            && bytes[start + 4..end].iter().all(|b| is_key_char(*b))
            && (end == bytes.len() || !is_key_char(bytes[end]));
        if is_key {
            out.push_str(&text[last..start]);
            out.push_str(&mask(&text[start..end]));
            last = end;
            i = end;
        } else {
            i = start + 4;
        }
    }
    if last == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Replaces every occurrence of `secret` with `replacement`, then applies [`redact_keys`].
pub fn redact_secret<'a>(text: &'a str, secret: &str, replacement: &str) -> Cow<'a, str> {
    if secret.is_empty() || !text.contains(secret) {
        return redact_keys(text);
    }
    Cow::Owned(redact_keys(&text.replace(secret, replacement)).into_owned())
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_keys_and_keeps_the_rest() {
        let key = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
        assert_eq!(redact_keys("no key here"), "no key here");
        assert_eq!(redact_keys("AIza short"), "AIza short");
        let two = format!("{key} and {key}.");
        assert_eq!(redact_keys(&two), "AIza…stuv and AIza…stuv.");
        // One character longer is not a Gemini key: left alone.
        let longer = format!("{key}x");
        assert_eq!(redact_keys(&longer), longer);
        assert_eq!(
            redact_secret("token sk-abcdef123 failed", "sk-abcdef123", "sk-a…f123"),
            "token sk-a…f123 failed"
        );
    }
}
