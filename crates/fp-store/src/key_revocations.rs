//! Revoked API keys as they are revoked: the channel a trigger on `api_keys` notifies (migration
//! `2026-12-06-000001_api_key_revocation_notify`) when a live key is revoked, changed or deleted,
//! whoever does it. The api drops such keys from its in-process cache
//! ([`crate::notifications::follow`] listens).

use crate::notifications::Channel;

pub const CHANNEL: Channel = Channel {
    name: "fp_api_key_revoked",
    application_name: "fp-api key revocations",
    heard: "api key revocations",
    while_deaf: "every key is checked in the database until they are heard again",
};

/// What a notification says.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The hash of the key that stopped being live.
    Key(Vec<u8>),
    /// A payload that names no key (someone else's `NOTIFY` on the channel): any key may be gone.
    Unknown,
}

/// Reads a notification's payload: the hex of the key's hash.
pub fn parse_payload(payload: &str) -> Revoked {
    match hex::decode(payload) {
        Ok(hash) if !hash.is_empty() => Revoked::Key(hash),
        _ => Revoked::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_a_hash_in_hex_or_names_no_key() {
        assert_eq!(parse_payload("00ff10"), Revoked::Key(vec![0, 255, 16]));
        assert_eq!(parse_payload(""), Revoked::Unknown);
        assert_eq!(parse_payload("not hex"), Revoked::Unknown);
    }
}
