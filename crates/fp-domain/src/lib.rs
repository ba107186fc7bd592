//! The FeedbackPulse webhook domain.
//!
//! Everything here is pure: no sockets, no files, no clocks read behind the caller's back. Services and
//! adapters pass in what the outside world said (times, resolved addresses, secrets) and get decisions
//! and bytes back, which keeps every rule of the product page testable on its own.

pub mod address_policy;
pub mod api_key;
pub mod client_address;
pub mod delivery_state;
pub mod endpoint_health;
pub mod erasure;
pub mod event;
pub mod example;
pub mod explanation;
pub mod format;
pub mod inbound_event;
pub mod login_throttle;
pub mod notification;
pub mod password;
pub mod payload;
pub mod rate_limit;
pub mod request;
pub mod retention;
pub mod retry;
pub mod secret_box;
pub mod session;
pub mod signing;
pub mod submission;
pub mod time_zone;
pub mod url_redaction;

pub use event::{Change, DeliveryId, Event, EventType, NotSubscribable, UnknownEventType};
pub use submission::{Submission, SubmissionStatus, UnknownStatus};

/// A fixed clock for the unit tests of time rules.
#[cfg(test)]
pub(crate) mod test_clock {
    use chrono::{DateTime, TimeZone, Utc};

    /// `seconds` after a fixed moment in 2027.
    pub fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("valid time")
    }
}
