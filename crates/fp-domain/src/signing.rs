//! Delivery signatures: the product page's `X-FeedbackPulse-Signature` and the Standard Webhooks
//! `webhook-signature`.
//!
//! While a rotated secret is in its grace period, `webhook-signature` carries one entry per secret
//! (the new one first), as Standard Webhooks specifies, so a receiver still holding the old secret
//! keeps verifying. `X-FeedbackPulse-Signature` has room for one signature only: it is always made
//! with the new secret, so a receiver of that legacy header must switch secrets when it rotates.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// The key length of a generated secret: HMAC-SHA256's block of 256 bits.
pub const GENERATED_KEY_BYTES: usize = 32;

/// A tenant's webhook secret, as the tenant typed it.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        WebhookSecret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A new `whsec_` secret: `key` base64-encoded, as Standard Webhooks writes secrets. The
    /// caller draws the key ([`GENERATED_KEY_BYTES`] random bytes).
    pub fn from_key(key: &[u8; GENERATED_KEY_BYTES]) -> Self {
        WebhookSecret(format!("whsec_{}", BASE64.encode(key)))
    }

    /// Key for the product page's scheme: the secret's UTF-8 bytes, as the PHP snippet uses it.
    fn feedbackpulse_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes())
    }

    /// Key for Standard Webhooks: a `whsec_` secret is base64 of the key bytes; any other secret is
    /// used as its UTF-8 bytes, so one secret serves both headers.
    fn standard_webhooks_key(&self) -> hmac::Key {
        let decoded = self
            .0
            .strip_prefix("whsec_")
            .and_then(|encoded| BASE64.decode(encoded).ok());
        match decoded {
            Some(bytes) => hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            None => self.feedbackpulse_key(),
        }
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The secrets one delivery is signed with.
#[derive(Debug, Clone, Copy)]
pub struct SigningSecrets<'a> {
    /// The tenant's secret: signs both headers.
    pub current: &'a WebhookSecret,
    /// The secret `current` replaced, while its grace period lasts: adds a second
    /// `webhook-signature` entry and nothing else.
    pub previous: Option<&'a WebhookSecret>,
}

/// `sha256=<lowercase hex HMAC-SHA256 of the raw body>`.
pub fn feedbackpulse_signature(secret: &WebhookSecret, body: &[u8]) -> String {
    let tag = hmac::sign(&secret.feedbackpulse_key(), body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// Checks a `X-FeedbackPulse-Signature` value in constant time.
pub fn verify_feedbackpulse_signature(secret: &WebhookSecret, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .strip_prefix("sha256=")
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return false;
    };
    hmac::verify(&secret.feedbackpulse_key(), body, &tag).is_ok()
}

/// One `v1,<base64>` entry of `webhook-signature`, over `{id}.{timestamp}.{body}`.
pub fn standard_webhooks_signature(
    secret: &WebhookSecret,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let key = secret.standard_webhooks_key();
    let mut context = hmac::Context::with_key(&key);
    context.update(webhook_id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", BASE64.encode(context.sign().as_ref()))
}

/// The whole `webhook-signature` value: the entries of `secrets`, space-separated, the current
/// secret's first.
pub fn standard_webhooks_signature_header(
    secrets: SigningSecrets<'_>,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut header = standard_webhooks_signature(secrets.current, webhook_id, timestamp, body);
    if let Some(previous) = secrets.previous {
        header.push(' ');
        header.push_str(&standard_webhooks_signature(
            previous, webhook_id, timestamp, body,
        ));
    }
    header
}

/// Checks a `webhook-signature` value as a receiver holding `secret` does: it verifies when any
/// `v1,` entry matches (each compared in constant time); entries of other versions are skipped.
/// The timestamp's age is the caller's to judge, as this crate reads no clock.
pub fn verify_standard_webhooks_signature(
    secret: &WebhookSecret,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let key = secret.standard_webhooks_key();
    let signed = [
        webhook_id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|tag| hmac::verify(&key, &signed, &tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedbackpulse_signature_matches_reference_vector() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        let signature = feedbackpulse_signature(&secret, b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify_feedbackpulse_signature(
            &secret,
            b"Hello, World!",
            &signature
        ));
        assert!(!verify_feedbackpulse_signature(
            &secret,
            b"Hello, World?",
            &signature
        ));
        assert!(!verify_feedbackpulse_signature(
            &secret,
            b"Hello, World!",
            "sha256=zz"
        ));
        assert!(!verify_feedbackpulse_signature(
            &WebhookSecret::new("another"),
            b"Hello, World!",
            &signature
        ));
    }

    #[test]
    fn standard_webhooks_signature_matches_reference_vector() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signature = standard_webhooks_signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_webhooks_reference_vector_verifies() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let verify = |header: &str| {
            verify_standard_webhooks_signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
                header,
            )
        };
        assert!(verify("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        // Any matching entry verifies, wherever it stands among others.
        assert!(verify(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,xyz \
             v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        // Only v1 entries count, and broken ones are skipped rather than trusted.
        assert!(!verify("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert!(!verify("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="));
        assert!(!verify("v1,not base64! v1,"));
        assert!(!verify(""));
    }

    #[test]
    fn during_a_rotation_the_header_verifies_with_either_secret() {
        let new = WebhookSecret::new("the-new-secret");
        let old = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let unrelated = WebhookSecret::new("not-a-secret-of-this-tenant");
        let body = br#"{"event":"submission.created"}"#;
        let header = standard_webhooks_signature_header(
            SigningSecrets {
                current: &new,
                previous: Some(&old),
            },
            "id-1",
            1_700_000_000,
            body,
        );
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            entries,
            [
                standard_webhooks_signature(&new, "id-1", 1_700_000_000, body),
                standard_webhooks_signature(&old, "id-1", 1_700_000_000, body),
            ]
        );
        for secret in [&new, &old] {
            assert!(verify_standard_webhooks_signature(
                secret,
                "id-1",
                1_700_000_000,
                body,
                &header
            ));
        }
        assert!(!verify_standard_webhooks_signature(
            &unrelated,
            "id-1",
            1_700_000_000,
            body,
            &header
        ));
        // The id, the timestamp and the body are all signed.
        assert!(!verify_standard_webhooks_signature(
            &new,
            "id-2",
            1_700_000_000,
            body,
            &header
        ));
        assert!(!verify_standard_webhooks_signature(
            &new,
            "id-1",
            1_700_000_001,
            body,
            &header
        ));
        assert!(!verify_standard_webhooks_signature(
            &new,
            "id-1",
            1_700_000_000,
            b"{}",
            &header
        ));

        let alone = standard_webhooks_signature_header(
            SigningSecrets {
                current: &new,
                previous: None,
            },
            "id-1",
            1_700_000_000,
            body,
        );
        assert_eq!(
            alone,
            standard_webhooks_signature(&new, "id-1", 1_700_000_000, body)
        );
        assert!(!verify_standard_webhooks_signature(
            &old,
            "id-1",
            1_700_000_000,
            body,
            &alone
        ));
    }

    #[test]
    fn a_generated_secret_is_whsec_and_its_key_is_the_bytes_given() {
        let key = [7u8; GENERATED_KEY_BYTES];
        let secret = WebhookSecret::from_key(&key);
        let encoded = secret.expose().strip_prefix("whsec_").expect("whsec_");
        assert_eq!(BASE64.decode(encoded).expect("base64"), key);
        // The key signs webhook-signature, so a receiver decoding the secret verifies.
        let signature = standard_webhooks_signature(&secret, "id-1", 1_700_000_000, b"{}");
        let by_key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        let expected = hmac::sign(&by_key, b"id-1.1700000000.{}");
        assert_eq!(
            signature,
            format!("v1,{}", BASE64.encode(expected.as_ref()))
        );
    }

    #[test]
    fn secret_never_shows_in_debug_output() {
        let secret = WebhookSecret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
