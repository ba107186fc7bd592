//! Tenant API keys: shown once at creation, stored only as a hash.

use ring::digest;

/// Every key starts with this, so leaked keys are easy to recognise (secret scanners, logs).
pub const PREFIX: &str = "fpk_";

/// Formats a new key from 32 random bytes the caller drew.
pub fn format_key(random: [u8; 32]) -> String {
    format!("{PREFIX}{}", hex::encode(random))
}

/// What the database stores: SHA-256 of the whole key. Keys carry 256 random bits, so a slow
/// password hash would add cost without adding safety.
pub fn hash_key(key: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, key.as_bytes())
        .as_ref()
        .to_vec()
}

/// The part of a key that may be shown in lists: the prefix and four more characters.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 4).collect()
}

/// A freshly issued key: the key itself is shown once; only `hash` and `prefix` are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    pub key: String,
    pub hash: Vec<u8>,
    pub prefix: String,
}

impl IssuedKey {
    /// Issues a key from 32 random bytes the caller drew from a secure source.
    pub fn from_random(random: [u8; 32]) -> Self {
        let key = format_key(random);
        IssuedKey {
            hash: hash_key(&key),
            prefix: display_prefix(&key),
            key,
        }
    }
}

/// Longest label a key may carry.
pub const MAX_NAME_CHARS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_hex_and_hash_deterministically() {
        let key = format_key([7; 32]);
        assert!(key.starts_with("fpk_"));
        assert_eq!(key.len(), 4 + 64);
        assert_eq!(hash_key(&key), hash_key(&key));
        assert_ne!(hash_key(&key), hash_key(&format_key([8; 32])));
        assert_eq!(display_prefix(&key), "fpk_0707");
    }

    #[test]
    fn an_issued_key_stores_its_hash_and_prefix_only() {
        let issued = IssuedKey::from_random([9; 32]);
        assert_eq!(issued.hash, hash_key(&issued.key));
        assert_eq!(issued.prefix, "fpk_0909");
        assert!(!issued.hash.windows(4).any(|window| window == b"fpk_"));
    }
}
