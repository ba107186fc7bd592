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
