//! Attempts this dispatcher has completed (their outcome is with the broker), so that a copy of the
//! same attempt is not sent again. Copies come back when an ack is lost with the broker connection
//! (the input returns, `redelivered`), or when the api's relay published an event twice (it died
//! between the broker's confirm and marking the outbox row).
//!
//! Manual redeliveries are never skipped: each is a tenant's explicit request.

use fp_contracts::DeliveryJob;
use quick_cache::sync::Cache;
use uuid::Uuid;

/// Enough for minutes of full load (a few MB); an older copy falls back to the log check.
const CAPACITY: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AttemptKey {
    delivery_id: Uuid,
    attempt_number: u32,
}

impl AttemptKey {
    /// `None` for a manual redelivery, which is never deduplicated.
    fn of(job: &DeliveryJob) -> Option<AttemptKey> {
        (!job.manual).then_some(AttemptKey {
            delivery_id: job.delivery_id.0,
            attempt_number: job.attempt_number,
        })
    }
}

pub struct CompletedAttempts {
    recent: Cache<AttemptKey, ()>,
}

impl CompletedAttempts {
    pub fn new() -> Self {
        CompletedAttempts {
            recent: Cache::new(CAPACITY),
        }
    }

    pub fn remember(&self, job: &DeliveryJob) {
        if let Some(key) = AttemptKey::of(job) {
            self.recent.insert(key, ());
        }
    }

    pub fn contains(&self, job: &DeliveryJob) -> bool {
        AttemptKey::of(job).is_some_and(|key| self.recent.get(&key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fp_contracts::{JobContent, StoredRequest};
    use fp_domain::{DeliveryId, EventType};

    fn job(attempt_number: u32, manual: bool) -> DeliveryJob {
        DeliveryJob {
            delivery_id: DeliveryId(Uuid::from_u128(7)),
            content: JobContent::Stored(StoredRequest {
                tenant_id: Uuid::from_u128(1),
                event_id: Uuid::from_u128(2),
                event_type: EventType::SubmissionCreated,
                url: "https://example.com/hook".to_owned(),
                body: Vec::new(),
            }),
            attempt_number,
            manual,
        }
    }

    #[test]
    fn the_same_attempt_is_known_a_later_one_and_manual_ones_are_not() {
        let completed = CompletedAttempts::new();
        completed.remember(&job(1, false));
        assert!(completed.contains(&job(1, false)));
        assert!(
            !completed.contains(&job(2, false)),
            "the retry is a new attempt"
        );
        completed.remember(&job(3, true));
        assert!(
            !completed.contains(&job(3, true)),
            "a manual redelivery is always sent"
        );
    }
}
