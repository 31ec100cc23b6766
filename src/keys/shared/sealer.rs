//! [`ChaChaSealer`]: keys sealed with ChaCha20-Poly1305 under a key every instance gets from
//! its environment, so a key added on one instance serves on all without being at rest in clear.

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::KeySealer;

/// Binds a sealed value to its use: a sealed key is not accepted as anything else.
const CONTEXT: &[u8] = b"gemini-balance shared key v1";
/// The sealed form's prefix (the scheme, so a later one can be told apart).
const PREFIX: &str = "c20p1305:";

/// A [`KeySealer`] with ChaCha20-Poly1305 (an AEAD: a sealed key that was altered, or sealed
/// under another key, does not open). The sealed form is `c20p1305:` and the hex of a random
/// 96-bit nonce and the ciphertext with its tag.
///
/// ```
/// use gemini_balance::keys::shared::{ChaChaSealer, KeySealer};
///
/// // 32 bytes as 64 hex digits, e.g. from `openssl rand -hex 32`.
/// let sealer = ChaChaSealer::from_hex(&"ab".repeat(32)).unwrap();
/// let sealed = sealer.seal("AIzaSyA1234567890abcdefghijklmnopqrstuv").unwrap();
/// assert!(!sealed.contains("AIzaSy"));
/// assert_eq!(sealer.open(&sealed).as_deref(), Some("AIzaSyA1234567890abcdefghijklmnopqrstuv"));
/// assert_eq!(ChaChaSealer::from_hex(&"cd".repeat(32)).unwrap().open(&sealed), None);
/// ```
pub struct ChaChaSealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl fmt::Debug for ChaChaSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaChaSealer(..)")
    }
}

/// The sealing key is not 64 hex digits (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSealingKey;

impl fmt::Display for InvalidSealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the sealing key must be 64 hex digits (32 bytes; e.g. `openssl rand -hex 32`)")
    }
}

impl std::error::Error for InvalidSealingKey {}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl ChaChaSealer {
    /// A sealer from 32 bytes written as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(key: &str) -> Result<Self, InvalidSealingKey> {
        let bytes = from_hex(key.trim()).ok_or(InvalidSealingKey)?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| InvalidSealingKey)?;
        Ok(ChaChaSealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }
}

impl KeySealer for ChaChaSealer {
    fn seal(&self, secret: &str) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CONTEXT),
                &mut data,
            )
            .ok()?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Some(format!("{PREFIX}{}", to_hex(&sealed)))
    }

    fn open(&self, sealed: &str) -> Option<String> {
        let bytes = from_hex(sealed.strip_prefix(PREFIX)?)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(CONTEXT), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_unaltered_and_under_the_same_key() {
        let sealer = ChaChaSealer::from_hex(&"01".repeat(32)).unwrap();
        let a = sealer.seal("secret-one").unwrap();
        let b = sealer.seal("secret-one").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(sealer.open(&a).as_deref(), Some("secret-one"));
        // One flipped hex digit in the ciphertext.
        let mut altered = a.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(sealer.open(&String::from_utf8(altered).unwrap()), None);
        assert_eq!(sealer.open("c20p1305:zz"), None);
        assert_eq!(sealer.open("plain"), None);
    }

    #[test]
    fn bad_sealing_keys_are_refused() {
        assert!(ChaChaSealer::from_hex("").is_err());
        assert!(ChaChaSealer::from_hex(&"0".repeat(63)).is_err());
        assert!(ChaChaSealer::from_hex(&"zz".repeat(32)).is_err());
        assert!(ChaChaSealer::from_hex(&"00".repeat(16)).is_err());
        assert!(ChaChaSealer::from_hex(&format!(" {} \n", "00".repeat(32))).is_ok());
    }
}
