//! Webhook secrets sealed at rest with AES-256-GCM.
//!
//! Layout of a sealed value: `version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! The tenant id is the associated data, so a sealed value copied into another tenant's row does
//! not open. The caller supplies the nonce (this crate does no randomness): it must be random and
//! never reused with the same key.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use uuid::Uuid;

/// The only layout written so far.
const VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// The key that seals every webhook secret (`secrets.master_key`).
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key is not hexadecimal")]
    NotHex,
    #[error("the master key must be 32 bytes (64 hex characters), found {0} bytes")]
    WrongLength(usize),
}

impl MasterKey {
    /// Parses a key written as exactly 64 hex characters (32 bytes).
    pub fn from_hex(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| MasterKeyError::NotHex)?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey(key))
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always valid for AES-256-GCM.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte AES-256 key"))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error("sealed secret is too short")]
    Truncated,
    #[error("sealed secret has unknown version {0}")]
    UnknownVersion(u8),
    #[error("sealed secret does not open with this key and tenant (wrong key, or tampered)")]
    Unopenable,
    #[error("opened secret is not UTF-8")]
    NotUtf8,
}

/// Seals `plaintext` for `tenant_id`. `nonce` must be fresh random bytes.
pub fn seal(key: &MasterKey, nonce: [u8; NONCE_LEN], tenant_id: Uuid, plaintext: &str) -> Vec<u8> {
    let mut in_out = plaintext.as_bytes().to_vec();
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(tenant_id.as_bytes()),
            &mut in_out,
        )
        // Only fails for inputs longer than GCM allows (64 GiB).
        .expect("secret within AES-GCM limits");
    let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
    sealed.push(VERSION);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&in_out);
    sealed
}

/// Opens what `seal` produced for the same key and tenant.
pub fn open(key: &MasterKey, tenant_id: Uuid, sealed: &[u8]) -> Result<String, SecretBoxError> {
    let (&version, rest) = sealed.split_first().ok_or(SecretBoxError::Truncated)?;
    if version != VERSION {
        return Err(SecretBoxError::UnknownVersion(version));
    }
    if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(SecretBoxError::Truncated);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretBoxError::Truncated)?;
    let mut in_out = ciphertext.to_vec();
    let plaintext = key
        .aead()
        .open_in_place(nonce, Aad::from(tenant_id.as_bytes()), &mut in_out)
        .map_err(|_| SecretBoxError::Unopenable)?;
    String::from_utf8(plaintext.to_vec()).map_err(|_| SecretBoxError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    fn key() -> MasterKey {
        MasterKey::from_hex(KEY_HEX).expect("valid key")
    }

    fn tenant() -> Uuid {
        Uuid::from_u128(0x1234)
    }

    #[test]
    fn round_trip() {
        let sealed = seal(&key(), NONCE, tenant(), "your_shared_secret");
        assert_eq!(sealed[0], VERSION);
        assert_eq!(
            sealed.len(),
            1 + NONCE_LEN + "your_shared_secret".len() + 16
        );
        assert!(
            !sealed
                .windows("your_shared_secret".len())
                .any(|window| window == b"your_shared_secret")
        );
        assert_eq!(
            open(&key(), tenant(), &sealed).as_deref(),
            Ok("your_shared_secret")
        );
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = seal(&key(), NONCE, tenant(), "secret-value");
        let other = MasterKey::from_hex(&"ab".repeat(32)).expect("valid key");
        assert_eq!(
            open(&other, tenant(), &sealed),
            Err(SecretBoxError::Unopenable)
        );
    }

    #[test]
    fn wrong_tenant_fails() {
        let sealed = seal(&key(), NONCE, tenant(), "secret-value");
        assert_eq!(
            open(&key(), Uuid::from_u128(0x5678), &sealed),
            Err(SecretBoxError::Unopenable)
        );
    }

    #[test]
    fn any_tampered_byte_fails() {
        let sealed = seal(&key(), NONCE, tenant(), "secret-value");
        for index in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                open(&key(), tenant(), &tampered),
                Err(SecretBoxError::Unopenable),
                "byte {index}"
            );
        }
        assert_eq!(
            open(&key(), tenant(), &sealed[..sealed.len() - 1]),
            Err(SecretBoxError::Unopenable)
        );
        assert_eq!(
            open(&key(), tenant(), &sealed[..10]),
            Err(SecretBoxError::Truncated)
        );
        assert_eq!(open(&key(), tenant(), &[]), Err(SecretBoxError::Truncated));
    }

    #[test]
    fn unknown_version_fails() {
        let mut sealed = seal(&key(), NONCE, tenant(), "secret-value");
        sealed[0] = 2;
        assert_eq!(
            open(&key(), tenant(), &sealed),
            Err(SecretBoxError::UnknownVersion(2))
        );
    }

    #[test]
    fn keys_must_be_64_hex_characters() {
        assert_eq!(
            MasterKey::from_hex("zz").err(),
            Some(MasterKeyError::NotHex)
        );
        assert_eq!(
            MasterKey::from_hex(&"ab".repeat(31)).err(),
            Some(MasterKeyError::WrongLength(31))
        );
        assert_eq!(
            MasterKey::from_hex(&"ab".repeat(33)).err(),
            Some(MasterKeyError::WrongLength(33))
        );
        assert_eq!(
            MasterKey::from_hex("").err(),
            Some(MasterKeyError::WrongLength(0))
        );
        assert!(MasterKey::from_hex(&format!(" {KEY_HEX}\n")).is_ok());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let shown = format!("{:?}", key());
        assert_eq!(shown, "MasterKey(<redacted>)");
        assert!(!shown.contains("0001"));
    }
}
