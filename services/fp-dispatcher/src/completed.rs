//! Attempts this dispatcher has in flight or has completed (their outcome is with the broker), so
//! that a copy of the same attempt is not sent again. Copies come back when an ack is lost with the
//! broker connection (the input returns, `redelivered`, often while the original still waits to
//! record its outcome on the new connection), or when the api's relay published an event twice (it
//! died between the broker's confirm and marking the outbox row).
//!
//! Manual redeliveries are never skipped: each is a tenant's explicit request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fp_contracts::DeliveryJob;
use quick_cache::sync::Cache;
use tokio::sync::Notify;
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
    /// Attempts being made now, with what wakes a copy waiting for one to end.
    in_flight: Mutex<HashMap<AttemptKey, Arc<Notify>>>,
}

/// What `begin` found.
pub enum Claim<'a> {
    /// This task makes the attempt; the claim ends when this is dropped.
    Claimed(InFlight<'a>),
    /// The same attempt is in flight in another task: wait on this, then look again.
    InFlightElsewhere(Arc<Notify>),
}

/// An attempt in flight; dropping it wakes the copies that wait for it.
pub struct InFlight<'a> {
    registry: &'a CompletedAttempts,
    key: Option<AttemptKey>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let notify = self.registry.in_flight_map().remove(&key);
            if let Some(notify) = notify {
                notify.notify_waiters();
            }
        }
    }
}

impl CompletedAttempts {
    pub fn new() -> Self {
        CompletedAttempts {
            recent: Cache::new(CAPACITY),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn in_flight_map(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptKey, Arc<Notify>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims the attempt for the calling task, unless the same attempt is in flight already.
    pub fn begin(&self, job: &DeliveryJob) -> Claim<'_> {
        let key = AttemptKey::of(job);
        if let Some(key) = key {
            let mut in_flight = self.in_flight_map();
            if let Some(notify) = in_flight.get(&key) {
                return Claim::InFlightElsewhere(notify.clone());
            }
            in_flight.insert(key, Arc::new(Notify::new()));
        }
        Claim::Claimed(InFlight {
            registry: self,
            key,
        })
    }

    /// Whether the attempt is still in flight (checked after subscribing to its `Notify`, so an end
    /// in between is not missed).
    pub fn is_in_flight(&self, job: &DeliveryJob) -> bool {
        AttemptKey::of(job).is_some_and(|key| self.in_flight_map().contains_key(&key))
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
    fn a_copy_finds_the_attempt_in_flight_until_its_claim_ends() {
        let completed = CompletedAttempts::new();
        let Claim::Claimed(original) = completed.begin(&job(1, false)) else {
            panic!("nothing was in flight");
        };
        assert!(matches!(
            completed.begin(&job(1, false)),
            Claim::InFlightElsewhere(_)
        ));
        assert!(matches!(completed.begin(&job(2, false)), Claim::Claimed(_)));
        assert!(matches!(completed.begin(&job(1, true)), Claim::Claimed(_)));
        drop(original);
        assert!(!completed.is_in_flight(&job(1, false)));
        assert!(matches!(completed.begin(&job(1, false)), Claim::Claimed(_)));
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
