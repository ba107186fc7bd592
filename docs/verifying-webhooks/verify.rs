//! Verifying a FeedbackPulse delivery in Rust, with the crates `ring`, `base64` and `hex`.
//! Pass the raw request body, before any JSON parsing, and the header values as text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// How far `webhook-timestamp` may be from the receiver's clock.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A `whsec_` secret is the base64 of the key; any other secret is its UTF-8 bytes.
fn signing_key(secret: &str) -> hmac::Key {
    let decoded = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| BASE64.decode(encoded).ok());
    let key = decoded.unwrap_or_else(|| secret.as_bytes().to_vec());
    hmac::Key::new(hmac::HMAC_SHA256, &key)
}

/// Checks the Standard Webhooks headers of a delivery received at `now`.
pub fn verify_webhook_signature(
    secret: &str,
    webhook_id: &str,
    webhook_timestamp: &str,
    webhook_signature: &str,
    body: &[u8],
    now: SystemTime,
) -> bool {
    let Some(sent) = webhook_timestamp
        .parse()
        .ok()
        .and_then(|seconds| UNIX_EPOCH.checked_add(Duration::from_secs(seconds)))
    else {
        return false;
    };
    let offset = now
        .duration_since(sent)
        .unwrap_or_else(|early| early.duration());
    if offset > TOLERANCE {
        return false; // too old (a replay) or from the future
    }
    let key = signing_key(secret);
    let signed = [
        webhook_id.as_bytes(),
        b".",
        webhook_timestamp.as_bytes(),
        b".",
        body,
    ]
    .concat();
    // Space-separated entries, two while a secret rotates: any v1 entry that matches verifies.
    webhook_signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        // ring compares in constant time.
        .any(|signature| hmac::verify(&key, &signed, &signature).is_ok())
}

/// Checks `X-FeedbackPulse-Signature` (the body alone, no timestamp: prefer the above).
pub fn verify_feedbackpulse_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(Ok(given)) = signature.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &given).is_ok()
}
