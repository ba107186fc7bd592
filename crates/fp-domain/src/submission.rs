//! A piece of customer feedback and its moderation status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a submission stands in the tenant's moderation flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionStatus {
    Pending,
    Approved,
    Rejected,
    Archived,
}

impl SubmissionStatus {
    pub const ALL: [SubmissionStatus; 4] = [
        SubmissionStatus::Pending,
        SubmissionStatus::Approved,
        SubmissionStatus::Rejected,
        SubmissionStatus::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionStatus::Pending => "pending",
            SubmissionStatus::Approved => "approved",
            SubmissionStatus::Rejected => "rejected",
            SubmissionStatus::Archived => "archived",
        }
    }
}

impl fmt::Display for SubmissionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}` (known: pending, approved, rejected, archived)")]
pub struct UnknownStatus(pub String);

impl FromStr for SubmissionStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SubmissionStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A submission as the webhook body's `data` object shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub id: i64,
    pub campaign_id: i64,
    pub star_rating: i32,
    pub text_feedback: String,
    pub customer_name: Option<String>,
    pub status: SubmissionStatus,
}

/// The longest `text_feedback` the api accepts, in characters.
pub const MAX_TEXT_FEEDBACK_CHARS: usize = 10_000;
/// The longest `customer_name` the api accepts, in characters.
pub const MAX_CUSTOMER_NAME_CHARS: usize = 200;
/// The star ratings a submission may have.
pub const STAR_RATINGS: std::ops::RangeInclusive<i32> = 1..=5;

/// A submission field the api, or the dispatcher for a published event, refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidSubmission {
    pub field: &'static str,
    pub message: String,
    pub kind: InvalidKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    OutOfRange,
    TooLong,
}

/// The limits on a submission's fields: one rule for what the api stores and what a publisher
/// may announce.
pub fn check_submission_fields(
    campaign_id: i64,
    star_rating: i32,
    text_feedback: &str,
    customer_name: Option<&str>,
) -> Result<(), InvalidSubmission> {
    let invalid = |field, message: String, kind| InvalidSubmission {
        field,
        message,
        kind,
    };
    if campaign_id < 1 {
        return Err(invalid(
            "campaign_id",
            "must be a positive integer".to_owned(),
            InvalidKind::OutOfRange,
        ));
    }
    if !STAR_RATINGS.contains(&star_rating) {
        return Err(invalid(
            "star_rating",
            format!(
                "must be between {} and {}",
                STAR_RATINGS.start(),
                STAR_RATINGS.end()
            ),
            InvalidKind::OutOfRange,
        ));
    }
    if text_feedback.chars().count() > MAX_TEXT_FEEDBACK_CHARS {
        return Err(invalid(
            "text_feedback",
            format!("must be at most {MAX_TEXT_FEEDBACK_CHARS} characters"),
            InvalidKind::TooLong,
        ));
    }
    if customer_name.is_some_and(|name| name.chars().count() > MAX_CUSTOMER_NAME_CHARS) {
        return Err(invalid(
            "customer_name",
            format!("must be at most {MAX_CUSTOMER_NAME_CHARS} characters"),
            InvalidKind::TooLong,
        ));
    }
    Ok(())
}
