//! What state a tenant's webhook endpoint is in, as its health record says, and when a failing one
//! will be disabled. The api disables an endpoint once a failure is reported and every delivery
//! has failed for `disable_after` (`api.disable_failing_endpoints_after`); the dashboard tells the
//! tenant that time in advance. Both read the same record: `failing_since` is the start of the
//! current run of failures (cleared by a success), `disabled_at` is set when the api disabled it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// An endpoint's health record (the columns of its webhook config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthRecord {
    /// Deliveries are switched on (the tenant's choice; off as well once the api disabled it).
    pub enabled: bool,
    pub last_success_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// What the endpoint's record means now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointState {
    /// The tenant has no webhook config.
    NotConfigured,
    /// Switched on, and no delivery has failed since the last success (or none was made yet).
    Healthy {
        last_success_at: Option<DateTime<Utc>>,
    },
    /// Every delivery has failed since `since`. Unless one succeeds, the api disables the endpoint
    /// on the first failure reported from `disable_at` on; `due` once that time has passed.
    Failing {
        since: DateTime<Utc>,
        disable_at: DateTime<Utc>,
        due: bool,
    },
    /// The api disabled it for failing too long; saving the config again switches it back on.
    Disabled {
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    /// The tenant switched deliveries off.
    SwitchedOff,
}

/// The state of an endpoint whose record is `record` (`None`: no config), at `now`, when the api
/// disables endpoints that failed for `disable_after`.
pub fn endpoint_state(
    record: Option<&HealthRecord>,
    disable_after: Duration,
    now: DateTime<Utc>,
) -> EndpointState {
    let Some(record) = record else {
        return EndpointState::NotConfigured;
    };
    if let Some(at) = record.disabled_at {
        return EndpointState::Disabled {
            at,
            reason: record.disabled_reason.clone(),
        };
    }
    if !record.enabled {
        return EndpointState::SwitchedOff;
    }
    match record.failing_since {
        Some(since) => {
            let disable_at = disable_time(since, disable_after);
            EndpointState::Failing {
                since,
                disable_at,
                due: now >= disable_at,
            }
        }
        None => EndpointState::Healthy {
            last_success_at: record.last_success_at,
        },
    }
}

/// When a run of failures that began at `since` has lasted `disable_after`; the end of time for a
/// duration too long for the calendar (such an endpoint is never disabled).
pub fn disable_time(since: DateTime<Utc>, disable_after: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(disable_after)
        .ok()
        .and_then(|after| since.checked_add_signed(after))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::at;

    const FIVE_DAYS: Duration = Duration::from_secs(5 * 86_400);

    fn enabled() -> HealthRecord {
        HealthRecord {
            enabled: true,
            ..HealthRecord::default()
        }
    }

    #[test]
    fn no_config_is_not_configured() {
        assert_eq!(
            endpoint_state(None, FIVE_DAYS, at(0)),
            EndpointState::NotConfigured
        );
    }

    #[test]
    fn an_endpoint_without_failures_is_healthy() {
        assert_eq!(
            endpoint_state(Some(&enabled()), FIVE_DAYS, at(0)),
            EndpointState::Healthy {
                last_success_at: None
            }
        );
        let succeeded = HealthRecord {
            last_success_at: Some(at(-60)),
            ..enabled()
        };
        assert_eq!(
            endpoint_state(Some(&succeeded), FIVE_DAYS, at(0)),
            EndpointState::Healthy {
                last_success_at: Some(at(-60))
            }
        );
    }

    #[test]
    fn a_failing_endpoint_is_disabled_once_it_has_failed_for_the_limit() {
        // The run began after the last success: the limit counts from its start.
        let failing = HealthRecord {
            last_success_at: Some(at(-7200)),
            failing_since: Some(at(-3600)),
            ..enabled()
        };
        let disable_at = at(-3600 + 5 * 86_400);
        assert_eq!(
            endpoint_state(Some(&failing), FIVE_DAYS, at(0)),
            EndpointState::Failing {
                since: at(-3600),
                disable_at,
                due: false
            }
        );
        // A second before the limit it is not due; at the limit it is, and stays so until a
        // failure is reported and the api disables it.
        for (now, due) in [
            (disable_at - TimeDelta::seconds(1), false),
            (disable_at, true),
            (disable_at + TimeDelta::days(1), true),
        ] {
            assert_eq!(
                endpoint_state(Some(&failing), FIVE_DAYS, now),
                EndpointState::Failing {
                    since: at(-3600),
                    disable_at,
                    due
                },
                "{now}"
            );
        }
    }

    #[test]
    fn a_disabled_endpoint_says_when_and_why_whatever_else_is_recorded() {
        let disabled = HealthRecord {
            enabled: false,
            last_success_at: Some(at(-10 * 86_400)),
            failing_since: Some(at(-6 * 86_400)),
            disabled_at: Some(at(-86_400)),
            disabled_reason: Some("every delivery failed since ...".to_owned()),
        };
        assert_eq!(
            endpoint_state(Some(&disabled), FIVE_DAYS, at(0)),
            EndpointState::Disabled {
                at: at(-86_400),
                reason: Some("every delivery failed since ...".to_owned())
            }
        );
    }

    #[test]
    fn an_endpoint_the_tenant_switched_off_is_switched_off() {
        let off = HealthRecord {
            enabled: false,
            failing_since: Some(at(-60)),
            ..HealthRecord::default()
        };
        assert_eq!(
            endpoint_state(Some(&off), FIVE_DAYS, at(0)),
            EndpointState::SwitchedOff
        );
    }

    #[test]
    fn a_limit_beyond_the_calendar_never_comes() {
        assert_eq!(
            disable_time(at(0), Duration::from_secs(u64::MAX)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(disable_time(at(0), Duration::from_secs(90)), at(90));
    }
}
