//! Per-tenant rate limits of the actions that make the platform send requests on a tenant's word
//! (manual redelivery, test events), so no tenant can turn it into a flooding tool.
//!
//! Each limit is a token bucket holding one period's `amount`, refilled evenly over the period. Its
//! whole state is one instant, `full_at`: when the bucket is full again if nothing more is taken
//! (the "theoretical arrival time" of GCRA). One value is what a store can compare and swap in a
//! single statement, and it needs no refill bookkeeping. Arithmetic is in whole microseconds, the
//! precision PostgreSQL keeps, on integers, so a stored state reads back exactly.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::retry::parse_duration;

/// An action a tenant triggers at will and that makes requests to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedAction {
    /// `POST /api/v2/webhooks/logs/{id}/redeliver`: one delivery.
    Redelivery,
    /// `POST /api/v2/webhooks/logs/redeliver`: counted in deliveries queued (see [`bulk_cost`]).
    BulkRedelivery,
    /// `POST /api/v2/webhooks/test`.
    TestEvent,
}

impl LimitedAction {
    /// The stored name of the action's bucket.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitedAction::Redelivery => "redelivery",
            LimitedAction::BulkRedelivery => "bulk_redelivery",
            LimitedAction::TestEvent => "test_event",
        }
    }
}

/// What a bulk redelivery takes from its bucket: the deliveries it queues, and at least one, so
/// calls that find nothing to queue are bounded too.
pub fn bulk_cost(deliveries: usize) -> u32 {
    u32::try_from(deliveries).unwrap_or(u32::MAX).max(1)
}

/// `amount` per `period`: a full bucket holds `amount`, and refills at that pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    amount: u32,
    period_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a rate limit such as 60/1m: a count of at least 1, a slash, and a period from \
     1ms to 365d (units ms, s, m, h, d)"
)]
pub struct InvalidRateLimit(pub String);

/// Longest period a limit may have; a longer one is a typo.
const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);

impl RateLimit {
    /// `None` when `amount` is 0 or `period` is outside 1ms..=365d.
    pub fn new(amount: u32, period: Duration) -> Option<Self> {
        let period_micros = i64::try_from(period.as_micros()).ok()?;
        (amount > 0 && period_micros >= 1000 && period <= MAX_PERIOD).then_some(RateLimit {
            amount,
            period_micros,
        })
    }

    /// Reads `<amount>/<period>`, e.g. `60/1m` or `10000/1h`.
    pub fn parse(text: &str) -> Result<Self, InvalidRateLimit> {
        let invalid = || InvalidRateLimit(text.to_owned());
        let (amount, period) = text.trim().split_once('/').ok_or_else(invalid)?;
        let amount: u32 = amount.trim().parse().map_err(|_| invalid())?;
        let period = parse_duration(period.trim()).ok_or_else(invalid)?;
        RateLimit::new(amount, period).ok_or_else(invalid)
    }

    /// How long the bucket owes, at `now`, for what was taken: zero when it is full.
    fn debt_micros(full_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i128 {
        full_at.map_or(0, |full_at| {
            i128::from((full_at - now).num_microseconds().unwrap_or(i64::MAX)).max(0)
        })
    }

    /// Whole tokens in the bucket at `now`; a token partly refilled does not count yet.
    fn available(&self, full_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u32 {
        let amount = i128::from(self.amount);
        let period = i128::from(self.period_micros);
        let debt = Self::debt_micros(full_at, now);
        // Tokens in use: the debt in tokens, a started one counting whole.
        let used = (debt * amount + period - 1) / period;
        u32::try_from((amount - used).max(0)).unwrap_or(0)
    }

    /// The whole tokens in the bucket at `now`, or, when it holds none, how long until it holds one.
    pub fn room(
        &self,
        full_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u32, Duration> {
        let available = self.available(full_at, now);
        if available > 0 {
            return Ok(available);
        }
        let amount = i128::from(self.amount);
        let period = i128::from(self.period_micros);
        // One token is back once the debt is down to what `amount - 1` tokens owe.
        let wait = Self::debt_micros(full_at, now) - (amount - 1) * period / amount;
        Err(Duration::from_micros(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }

    /// Takes as many of `wanted` tokens (at least one) as the bucket holds at `now`; refused when
    /// it holds none, with how long until it holds one.
    pub fn take(
        &self,
        full_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        wanted: u32,
    ) -> Admission {
        let available = match self.room(full_at, now) {
            Ok(available) => available,
            Err(retry_after) => return Admission::Refused { retry_after },
        };
        let granted = wanted.clamp(1, available);
        let cost = i128::from(granted) * i128::from(self.period_micros) / i128::from(self.amount);
        // Taken from the later of now and the stored instant: a bucket that filled up while
        // unused holds no more than `amount`.
        let from = full_at.map_or(now, |full_at| full_at.max(now));
        let cost = TimeDelta::microseconds(i64::try_from(cost).unwrap_or(i64::MAX));
        Admission::Granted {
            granted,
            full_at: from + cost,
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = Duration::from_micros(self.period_micros.unsigned_abs());
        write!(f, "{} per {:?}", self.amount, period)
    }
}

/// The answer of [`RateLimit::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// `granted` tokens were taken; `full_at` is the bucket's new state.
    Granted {
        granted: u32,
        full_at: DateTime<Utc>,
    },
    Refused {
        retry_after: Duration,
    },
}

/// A `Retry-After` in whole seconds: rounded up, so the action works after waiting that long, and
/// at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let seconds = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_700_000_000_000 + millis)
            .single()
            .unwrap_or_default()
    }

    /// Takes `wanted` at `now`, storing the new state in `state` when granted.
    fn take(
        limit: RateLimit,
        state: &mut Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        wanted: u32,
    ) -> Admission {
        let admission = limit.take(*state, now, wanted);
        if let Admission::Granted { full_at, .. } = admission {
            *state = Some(full_at);
        }
        admission
    }

    fn granted(admission: Admission) -> u32 {
        match admission {
            Admission::Granted { granted, .. } => granted,
            Admission::Refused { .. } => 0,
        }
    }

    #[test]
    fn a_full_bucket_grants_its_amount_at_once_then_refuses() {
        let limit = RateLimit::parse("3/2s").expect("valid");
        let mut state = None;
        for _ in 0..3 {
            assert_eq!(granted(take(limit, &mut state, at(0), 1)), 1);
        }
        let Admission::Refused { retry_after } = take(limit, &mut state, at(0), 1) else {
            panic!("a fourth take within the burst is refused");
        };
        // One token refills every 2s / 3.
        assert_eq!(retry_after, Duration::from_micros(666_665));
        assert_eq!(retry_after_seconds(retry_after), 1);
    }

    #[test]
    fn after_the_retry_after_one_more_is_granted_and_only_one() {
        let limit = RateLimit::parse("3/2s").expect("valid");
        let mut state = None;
        for _ in 0..3 {
            take(limit, &mut state, at(0), 1);
        }
        let Admission::Refused { retry_after } = take(limit, &mut state, at(100), 1) else {
            panic!("empty");
        };
        let later = at(100) + TimeDelta::from_std(retry_after).expect("small");
        assert_eq!(granted(take(limit, &mut state, later, 1)), 1);
        assert!(matches!(
            take(limit, &mut state, later, 1),
            Admission::Refused { .. }
        ));
        // A whole second later (the rounded-up Retry-After) works too.
        let mut state = None;
        for _ in 0..3 {
            take(limit, &mut state, at(0), 1);
        }
        let seconds = retry_after_seconds(Duration::from_micros(666_666));
        let after_header = at(0) + TimeDelta::seconds(i64::try_from(seconds).expect("small"));
        assert_eq!(granted(take(limit, &mut state, after_header, 1)), 1);
    }

    #[test]
    fn the_bucket_refills_evenly_and_never_beyond_its_amount() {
        let limit = RateLimit::parse("60/1m").expect("valid");
        let mut state = None;
        assert_eq!(granted(take(limit, &mut state, at(0), 60)), 60);
        assert_eq!(limit.available(state, at(0)), 0);
        assert_eq!(limit.available(state, at(999)), 0);
        assert_eq!(limit.available(state, at(1000)), 1);
        assert_eq!(limit.available(state, at(30_000)), 30);
        assert_eq!(limit.available(state, at(60_000)), 60);
        // Unused for an hour: still only one period's amount.
        assert_eq!(limit.available(state, at(3_600_000)), 60);
        assert_eq!(granted(take(limit, &mut state, at(3_600_000), 61)), 60);
        assert_eq!(limit.available(state, at(3_600_000)), 0);
    }

    #[test]
    fn a_big_want_gets_what_is_left_and_an_empty_bucket_says_when_one_is_back() {
        let limit = RateLimit::parse("10000/1h").expect("valid");
        let mut state = None;
        for _ in 0..9 {
            assert_eq!(granted(take(limit, &mut state, at(0), 1000)), 1000);
        }
        assert_eq!(granted(take(limit, &mut state, at(0), 1000)), 1000);
        let Admission::Refused { retry_after } = take(limit, &mut state, at(0), 1000) else {
            panic!("empty");
        };
        // 3600 s / 10,000: one delivery's worth is back after 360 ms.
        assert_eq!(retry_after, Duration::from_millis(360));
        assert_eq!(granted(take(limit, &mut state, at(3_600), 1000)), 10);
    }

    #[test]
    fn a_state_from_a_clock_ahead_of_ours_only_makes_the_limit_stricter() {
        let limit = RateLimit::parse("2/1s").expect("valid");
        let mut state = None;
        take(limit, &mut state, at(10_000), 2);
        // Another replica's clock is 10 s behind: it sees a bucket in debt, not a full one.
        assert_eq!(limit.available(state, at(0)), 0);
        assert!(matches!(
            take(limit, &mut state, at(0), 1),
            Admission::Refused { retry_after } if retry_after > Duration::from_secs(10)
        ));
    }

    #[test]
    fn bulk_costs_its_deliveries_and_at_least_one() {
        assert_eq!(bulk_cost(0), 1);
        assert_eq!(bulk_cost(1), 1);
        assert_eq!(bulk_cost(1000), 1000);
        assert_eq!(bulk_cost(usize::MAX), u32::MAX);
    }

    #[test]
    fn limits_are_read_as_count_slash_period() {
        assert_eq!(
            RateLimit::parse(" 60/1m "),
            Ok(RateLimit::new(60, Duration::from_secs(60)).expect("valid"))
        );
        assert_eq!(
            RateLimit::parse("10000/1h"),
            Ok(RateLimit::new(10_000, Duration::from_secs(3600)).expect("valid"))
        );
        for bad in [
            "", "60", "60/", "/1m", "0/1m", "-1/1m", "60/0s", "60/1y", "60/366d", "x/1m", "60/1m/2",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
        let error = RateLimit::parse("60 per minute").expect_err("invalid");
        assert!(error.to_string().contains("60/1m"), "{error}");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
