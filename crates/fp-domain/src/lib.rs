//! The FeedbackPulse webhook domain.
//!
//! Everything here is pure: no sockets, no files, no clocks read behind the caller's back. Services and
//! adapters pass in what the outside world said (times, resolved addresses, secrets) and get decisions
//! and bytes back, which keeps every rule of the product page testable on its own.

pub mod address_policy;
pub mod api_key;
pub mod event;
pub mod format;
pub mod payload;
pub mod request;
pub mod retry;
pub mod secret_box;
pub mod session_token;
pub mod signing;
pub mod submission;

pub use event::{Change, DeliveryId, Event, EventType, NotSubscribable, UnknownEventType};
pub use submission::{Submission, SubmissionStatus, UnknownStatus};
