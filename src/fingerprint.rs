//! Public identities of secrets: [`KeyId`] for an upstream key, [`ClientId`] for a client's
//! token, and the [`mask`] both show. A leaf module, so every other module may name a key
//! without depending on the key pool.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The public identity of a key: a 64-bit digest (SHA-256 of the key, truncated) plus its
/// fingerprint for humans.
///
/// `Display` shows the fingerprint (`AIza…x4Fq`); [`hex`](Self::hex) gives the digest, which is
/// unique where fingerprints may collide. Neither reveals the key.
#[derive(Clone)]
pub struct KeyId {
    digest: u64,
    mask: Arc<str>,
}

impl KeyId {
    /// The id of a secret.
    pub fn of(secret: &str) -> KeyId {
        let hash = Sha256::digest(secret.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        KeyId {
            digest: u64::from_be_bytes(first),
            mask: mask(secret).into(),
        }
    }

    /// Rebuilds an id from its stored parts ([`digest`](Self::digest) and [`mask`](Self::mask)),
    /// for stores that read key state back.
    pub fn from_parts(digest: u64, mask: &str) -> KeyId {
        KeyId {
            digest,
            mask: mask.into(),
        }
    }

    /// Rebuilds an id from its [`hex`](Self::hex) form and mask; `None` if `hex` is not 16 hex digits.
    pub fn from_hex(hex: &str, mask: &str) -> Option<KeyId> {
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16)
            .ok()
            .map(|digest| KeyId::from_parts(digest, mask))
    }

    /// The fingerprint: the first four and last four characters (`AIza…x4Fq`).
    pub fn mask(&self) -> &str {
        &self.mask
    }

    /// The digest as 16 hex characters, unique per key and stable across restarts.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.digest)
    }

    /// The digest.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for KeyId {}

impl Hash for KeyId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({} {:016x})", self.mask, self.digest)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.mask)
    }
}

/// The fingerprint of a secret: first four and last four characters, or `…` alone when the
/// secret is too short to show any of it safely.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The fingerprint of a client's token (never the token): see [`ClientId::of`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(KeyId);

impl ClientId {
    /// The id of a client token: a fingerprint and a digest, like a [`KeyId`].
    pub fn of(token: &str) -> ClientId {
        ClientId(KeyId::of(token))
    }

    /// The fingerprint (`sk-a…9f3c`).
    pub fn mask(&self) -> &str {
        self.0.mask()
    }

    /// The digest as 16 hex characters.
    pub fn hex(&self) -> String {
        self.0.hex()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({} {})", self.0.mask(), self.0.hex())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.0.mask())
    }
}
