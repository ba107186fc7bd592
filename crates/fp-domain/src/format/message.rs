//! The facts of one event, worded once for every chat format. Text here is raw: each format escapes
//! tenant text its own way.

use chrono::{DateTime, Utc};

use crate::event::{Change, Event};
use crate::submission::{Submission, SubmissionStatus};

/// Longest customer name shown, in characters after escaping: room for any real name, while a pasted
/// essay cannot crowd out the feedback itself.
pub(super) const CUSTOMER_NAME_MAX_CHARS: usize = 100;

const MAX_STARS: i32 = 5;

/// The label of the customer's name in the chat formats (erasure finds the name by it).
pub(super) const CUSTOMER_LABEL: &str = "Customer";

/// The headline of a `webhook.test` message.
pub(super) const TEST_HEADLINE: &str = "Test event from FeedbackPulse";

pub(super) struct Message<'a> {
    pub(super) submission: &'a Submission,
    /// Set when the event is a status change.
    pub(super) previous_status: Option<SubmissionStatus>,
    pub(super) occurred_at: DateTime<Utc>,
}

impl<'a> Message<'a> {
    /// The facts of a submission event; `None` for an event about no submission (`webhook.test`).
    pub(super) fn new(event: &'a Event) -> Option<Self> {
        let (submission, previous_status) = match &event.change {
            Change::SubmissionCreated { submission } => (submission, None),
            Change::SubmissionStatusChanged {
                submission,
                previous_status,
            } => (submission, Some(*previous_status)),
            Change::WebhookTest => return None,
        };
        Some(Message {
            submission,
            previous_status,
            occurred_at: event.occurred_at,
        })
    }

    /// What happened, in one line: "New feedback: ★★★★★ 5/5" or "Feedback #42 approved".
    pub(super) fn headline(&self) -> String {
        match self.previous_status {
            None => format!("New feedback: {}", self.rating()),
            Some(_) => format!(
                "Feedback #{} {}",
                self.submission.id,
                status_verb(self.submission.status)
            ),
        }
    }

    /// The rating as stars and number, "★★★★☆ 4/5"; an out-of-range number is shown as it is.
    pub(super) fn rating(&self) -> String {
        let rating = self.submission.star_rating;
        let filled = usize::try_from(rating.clamp(0, MAX_STARS)).unwrap_or(0);
        let empty = usize::try_from(MAX_STARS).unwrap_or(0) - filled;
        format!(
            "{}{} {rating}/{MAX_STARS}",
            "★".repeat(filled),
            "☆".repeat(empty)
        )
    }

    /// "pending" for a new submission, "from pending to approved" for a status change.
    pub(super) fn status(&self) -> String {
        let current = self.submission.status.as_str();
        match self.previous_status {
            None => current.to_owned(),
            Some(previous) => format!("from {} to {current}", previous.as_str()),
        }
    }

    /// The customer's name on one line, or "Anonymous" when there is none to show.
    pub(super) fn customer(&self) -> String {
        // Line breaks and other control characters would break the one-line layouts.
        let name: String = self
            .submission
            .customer_name
            .as_deref()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match name.trim() {
            "" => "Anonymous".to_owned(),
            name => name.to_owned(),
        }
    }

    /// The feedback text, unless it is empty or only whitespace (which Slack would reject).
    pub(super) fn feedback(&self) -> Option<&'a str> {
        let text = self.submission.text_feedback.as_str();
        (!text.trim().is_empty()).then_some(text)
    }

    pub(super) fn campaign(&self) -> String {
        format!("Campaign #{}", self.submission.campaign_id)
    }

    pub(super) fn submission_ref(&self) -> String {
        format!("Submission #{}", self.submission.id)
    }
}

/// How a status reads after "Feedback #42 …".
fn status_verb(status: SubmissionStatus) -> &'static str {
    match status {
        SubmissionStatus::Pending => "returned to pending",
        SubmissionStatus::Approved => "approved",
        SubmissionStatus::Rejected => "rejected",
        SubmissionStatus::Archived => "archived",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fixtures::{
        created, jane_approved, jane_created, sample_submission, submission_message, webhook_test,
    };

    #[test]
    fn a_test_event_has_no_submission_facts() {
        assert!(Message::new(&webhook_test()).is_none());
    }

    #[test]
    fn created_event_reads_as_new_feedback() {
        let event = jane_created();
        let message = submission_message(&event);
        assert_eq!(message.headline(), "New feedback: ★★★★★ 5/5");
        assert_eq!(message.status(), "pending");
        assert_eq!(message.customer(), "Jane Doe");
        assert_eq!(message.feedback(), Some("Love this product!"));
        assert_eq!(message.campaign(), "Campaign #1");
        assert_eq!(message.submission_ref(), "Submission #42");
    }

    #[test]
    fn status_change_reads_as_from_and_to() {
        let event = jane_approved();
        let message = submission_message(&event);
        assert_eq!(message.headline(), "Feedback #42 approved");
        assert_eq!(message.status(), "from pending to approved");
    }

    #[test]
    fn ratings_outside_one_to_five_keep_five_stars_and_show_the_number() {
        let rated = |star_rating| {
            created(Submission {
                star_rating,
                ..sample_submission()
            })
        };
        assert_eq!(submission_message(&rated(-3)).rating(), "☆☆☆☆☆ -3/5");
        assert_eq!(submission_message(&rated(9)).rating(), "★★★★★ 9/5");
        assert_eq!(submission_message(&rated(3)).rating(), "★★★☆☆ 3/5");
    }

    #[test]
    fn blank_names_are_anonymous_and_names_stay_on_one_line() {
        for (customer_name, shown) in [
            (None, "Anonymous"),
            (Some(""), "Anonymous"),
            (Some(" \n\t "), "Anonymous"),
            (Some("Jane\r\nDoe"), "Jane  Doe"),
        ] {
            let event = created(Submission {
                customer_name: customer_name.map(str::to_owned),
                ..sample_submission()
            });
            assert_eq!(submission_message(&event).customer(), shown);
        }
    }

    #[test]
    fn blank_feedback_is_none() {
        let event = created(Submission {
            text_feedback: " \n ".into(),
            ..sample_submission()
        });
        assert_eq!(submission_message(&event).feedback(), None);
    }
}
