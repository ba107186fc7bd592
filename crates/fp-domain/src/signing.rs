//! Delivery signatures: the product page's `X-FeedbackPulse-Signature` and the Standard Webhooks
//! `webhook-signature`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

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
    fn secret_never_shows_in_debug_output() {
        let secret = WebhookSecret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
