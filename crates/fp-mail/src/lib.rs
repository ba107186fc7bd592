//! SMTP adapter: sends an [`Email`] (composed by `fp_domain::notification`) as a plain-text
//! message through the server `notifications.smtp_url` names, in lettre's URL form:
//! `smtp://host:25` (no TLS), `smtp://user:pass@host:587?tls=required` (STARTTLS),
//! `smtps://user:pass@host:465` (TLS from the start). Certificates are checked against the public
//! web roots with rustls (ring), as the rest of the workspace does.

use std::time::Duration;

use fp_domain::notification::Email;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The URL is not kept in the message: it may hold the SMTP password.
    #[error(
        "notifications.smtp_url is not an SMTP URL lettre understands (smtp://host:port, smtps://user:pass@host): {0}"
    )]
    InvalidUrl(String),
    #[error("`{address}` is not an email address: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("no recipient")]
    NoRecipient,
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the SMTP server did not take the message: {0}")]
    Send(String),
}

/// Sends messages from one address through one SMTP server; cheap to share (`&self`).
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A mailer for `smtp_url` sending as `from` (`Name <address>` or a bare address). A message
    /// the server has not taken within `timeout` (connecting included) fails. Nothing is
    /// connected yet: a wrong server shows at the first send.
    pub fn new(smtp_url: &str, from: &str, timeout: Duration) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|error| MailError::InvalidUrl(error.to_string()))?
            .timeout(Some(timeout))
            .build();
        Ok(Mailer {
            transport,
            from: mailbox(from)?,
        })
    }

    /// Sends `email` as one message to every address of `to`.
    pub async fn send(&self, to: &[String], email: &Email) -> Result<(), MailError> {
        if to.is_empty() {
            return Err(MailError::NoRecipient);
        }
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(&email.subject)
            // Relays need not add one, and mail without it looks like spam.
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            message = message.to(mailbox(address)?);
        }
        let message = message
            .body(email.body.clone())
            .map_err(|error| MailError::Build(error.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|error| MailError::Send(error.to_string()))
    }
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .trim()
        .parse()
        .map_err(
            |error: lettre::address::AddressError| MailError::InvalidAddress {
                address: address.to_owned(),
                reason: error.to_string(),
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_are_checked_up_front() {
        let timeout = Duration::from_secs(1);
        assert!(
            Mailer::new(
                "smtp://127.0.0.1:2525",
                "FeedbackPulse <noreply@example.com>",
                timeout
            )
            .is_ok()
        );
        assert!(
            Mailer::new(
                "smtps://user:pass@smtp.example.com",
                "noreply@example.com",
                timeout
            )
            .is_ok()
        );
        let error = Mailer::new(
            "http://user:hunter2@smtp.example.com",
            "noreply@example.com",
            timeout,
        )
        .err()
        .expect("not smtp");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = Mailer::new("smtp://127.0.0.1:2525", "not an address", timeout)
            .err()
            .expect("bad from");
        assert!(matches!(error, MailError::InvalidAddress { .. }), "{error}");
    }
}
