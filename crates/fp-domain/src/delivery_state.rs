//! Where a delivery (one event for one endpoint, the attempts sharing a delivery id) stands, from
//! its attempts: what the deliveries view shows and filters on.
//!
//! The rule is an ordered list of conditions, [`RULE`]; the first that holds decides, and a
//! delivery none of them fits has failed for good. It looks at the *latest* attempt (the one
//! made last) and at whether any attempt got a 2xx. The store filters with the same list, each
//! condition translated to SQL, so a filtered page and the states it shows cannot disagree.

use std::fmt;
use std::str::FromStr;

/// The state of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// The latest attempt has no outcome yet: it is in flight, or its dispatcher stopped after
    /// sending (the attempt is made again).
    Pending,
    /// A redelivery the tenant asked for is in flight: the latest attempt is manual and has no
    /// outcome yet. Once it has one, the delivery is delivered or failed again (a manual attempt
    /// is a one-off, never retried).
    Manual,
    /// Some attempt got a 2xx answer (a later manual redelivery that failed does not undo it).
    Delivered,
    /// The latest attempt was refused by the SSRF policy: the URL points to a private or reserved
    /// address, so nothing was sent and nothing will be until the URL changes.
    Blocked,
    /// The latest attempt failed and the next one is planned (`next_retry_at`).
    Retrying,
    /// No 2xx, and no attempt is planned: the endpoint answered for good (410, ...), the
    /// retries ran out, or a manual redelivery failed.
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Delivered,
        DeliveryState::Retrying,
        DeliveryState::Failed,
        DeliveryState::Blocked,
        DeliveryState::Manual,
        DeliveryState::Pending,
    ];

    /// The state's name in the api, the dashboard's filter and its texts.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Manual => "manual",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Blocked => "blocked",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a delivery state: use delivered, retrying, failed, blocked, manual or pending"
)]
pub struct UnknownDeliveryState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownDeliveryState;

    /// Exactly a state's name, as the api documents them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownDeliveryState(text.to_owned()))
    }
}

/// What the state is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryFacts {
    /// Some attempt of the delivery got a 2xx answer.
    pub delivered: bool,
    pub latest: LatestAttempt,
}

/// The delivery's latest attempt, as far as the state depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatestAttempt {
    /// Only its pending record is logged (error kind `interrupted`): no outcome yet.
    pub outcome_pending: bool,
    /// A redelivery the tenant asked for.
    pub manual: bool,
    /// Refused by the SSRF policy (error kind `blocked`).
    pub blocked: bool,
    /// The last attempt of the delivery unless someone redelivers it.
    pub is_final: bool,
    /// The next attempt is planned (`next_retry_at` is set).
    pub retry_planned: bool,
}

/// One condition of [`RULE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The latest attempt is manual and has no outcome yet.
    LatestManualPending,
    /// The latest attempt has no outcome yet.
    LatestPending,
    /// Some attempt got a 2xx.
    SomeAttemptDelivered,
    /// The latest attempt was blocked by the SSRF policy.
    LatestBlocked,
    /// The latest attempt is not final and its retry is planned.
    LatestRetryPlanned,
}

impl Condition {
    pub fn holds(self, facts: &DeliveryFacts) -> bool {
        let latest = facts.latest;
        match self {
            Condition::LatestManualPending => latest.outcome_pending && latest.manual,
            Condition::LatestPending => latest.outcome_pending,
            Condition::SomeAttemptDelivered => facts.delivered,
            Condition::LatestBlocked => latest.blocked,
            Condition::LatestRetryPlanned => !latest.is_final && latest.retry_planned,
        }
    }
}

/// The conditions in the order they are checked, each with the state it decides. An attempt in
/// flight comes first (it is what is happening now: a redelivery of a delivered event shows as
/// such until its outcome is logged), then success, then why it has not succeeded.
pub const RULE: [(Condition, DeliveryState); 5] = [
    (Condition::LatestManualPending, DeliveryState::Manual),
    (Condition::LatestPending, DeliveryState::Pending),
    (Condition::SomeAttemptDelivered, DeliveryState::Delivered),
    (Condition::LatestBlocked, DeliveryState::Blocked),
    (Condition::LatestRetryPlanned, DeliveryState::Retrying),
];

/// The state of a delivery that fits no condition of [`RULE`].
pub const OTHERWISE: DeliveryState = DeliveryState::Failed;

/// The state of a delivery with these facts.
pub fn delivery_state(facts: &DeliveryFacts) -> DeliveryState {
    RULE.iter()
        .find(|(condition, _)| condition.holds(facts))
        .map_or(OTHERWISE, |&(_, state)| state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(change: impl FnOnce(&mut LatestAttempt)) -> DeliveryFacts {
        let mut facts = DeliveryFacts::default();
        change(&mut facts.latest);
        facts
    }

    #[test]
    fn a_2xx_is_delivered() {
        let facts = DeliveryFacts {
            delivered: true,
            latest: LatestAttempt {
                is_final: true,
                ..LatestAttempt::default()
            },
        };
        assert_eq!(delivery_state(&facts), DeliveryState::Delivered);
    }

    #[test]
    fn a_failure_with_a_planned_retry_is_retrying() {
        let facts = latest(|latest| latest.retry_planned = true);
        assert_eq!(delivery_state(&facts), DeliveryState::Retrying);
        // A final attempt with a stale retry time is not retried.
        let facts = latest(|latest| {
            latest.retry_planned = true;
            latest.is_final = true;
        });
        assert_eq!(delivery_state(&facts), DeliveryState::Failed);
    }

    #[test]
    fn a_final_failure_is_failed_for_good() {
        assert_eq!(
            delivery_state(&latest(|latest| latest.is_final = true)),
            DeliveryState::Failed
        );
        // A failed manual redelivery (never retried) fails the delivery again.
        let facts = latest(|latest| {
            latest.is_final = true;
            latest.manual = true;
        });
        assert_eq!(delivery_state(&facts), DeliveryState::Failed);
    }

    #[test]
    fn a_blocked_attempt_is_blocked_not_failed() {
        let facts = latest(|latest| {
            latest.blocked = true;
            latest.is_final = true;
        });
        assert_eq!(delivery_state(&facts), DeliveryState::Blocked);
    }

    #[test]
    fn an_attempt_without_outcome_is_pending_or_a_manual_redelivery() {
        let facts = latest(|latest| latest.outcome_pending = true);
        assert_eq!(delivery_state(&facts), DeliveryState::Pending);
        let facts = latest(|latest| {
            latest.outcome_pending = true;
            latest.manual = true;
        });
        assert_eq!(delivery_state(&facts), DeliveryState::Manual);
        // A redelivery of a delivered event shows as the redelivery while it is in flight.
        let facts = DeliveryFacts {
            delivered: true,
            ..facts
        };
        assert_eq!(delivery_state(&facts), DeliveryState::Manual);
    }

    #[test]
    fn success_wins_over_a_later_failure() {
        let facts = DeliveryFacts {
            delivered: true,
            latest: LatestAttempt {
                is_final: true,
                manual: true,
                ..LatestAttempt::default()
            },
        };
        assert_eq!(delivery_state(&facts), DeliveryState::Delivered);
    }

    #[test]
    fn states_round_trip_their_names() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        for other in ["FAILED", " failed", "lost"] {
            assert!(other.parse::<DeliveryState>().is_err(), "{other}");
        }
        assert_eq!(
            "lost".parse::<DeliveryState>(),
            Err(UnknownDeliveryState("lost".into()))
        );
    }

    #[test]
    fn every_state_is_reachable() {
        for state in DeliveryState::ALL {
            assert!(
                state == OTHERWISE || RULE.iter().any(|&(_, decided)| decided == state),
                "{state} is never decided"
            );
        }
    }
}
