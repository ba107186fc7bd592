//! What this dispatcher has seen of each endpoint, turned into occasional health reports for the
//! api, which owns the configs and decides when a failing endpoint is disabled.
//!
//! A report goes out when an endpoint turns healthy or failing, and otherwise at most once per
//! interval, so a busy endpoint costs a handful of messages a minute, not one per delivery.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fp_contracts::{timestamp_from, v1};
use uuid::Uuid;

#[derive(Default)]
struct Seen {
    /// Start of this dispatcher's current run of failures.
    failing_since: Option<DateTime<Utc>>,
    last_report: Option<(Instant, bool)>,
}

pub struct HealthReporter {
    interval: Duration,
    endpoints: Mutex<HashMap<(Uuid, String), Seen>>,
}

impl HealthReporter {
    pub fn new(interval: Duration) -> Self {
        HealthReporter {
            interval,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Notes one attempt's outcome; returns the report to publish, if one is due.
    pub fn observe(
        &self,
        tenant_id: Uuid,
        url: &str,
        succeeded: bool,
        at: DateTime<Utc>,
    ) -> Option<v1::EndpointHealthReport> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = endpoints.entry((tenant_id, url.to_owned())).or_default();
        seen.failing_since = if succeeded {
            None
        } else {
            Some(seen.failing_since.unwrap_or(at))
        };
        let due = match seen.last_report {
            None => true,
            Some((reported_at, reported_healthy)) => {
                reported_healthy != succeeded || reported_at.elapsed() >= self.interval
            }
        };
        if !due {
            return None;
        }
        seen.last_report = Some((Instant::now(), succeeded));
        Some(v1::EndpointHealthReport {
            tenant_id: tenant_id.to_string(),
            url: url.to_owned(),
            healthy: succeeded,
            observed_at: Some(timestamp_from(at)),
            failing_since: seen.failing_since.map(timestamp_from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_on_change_and_then_once_per_interval() {
        let reporter = HealthReporter::new(Duration::from_secs(3600));
        let tenant = Uuid::now_v7();
        let start = Utc::now();
        let first = reporter
            .observe(tenant, "https://a.example/", false, start)
            .expect("first report");
        assert!(!first.healthy);
        assert_eq!(first.failing_since, Some(timestamp_from(start)));
        // More failures inside the interval: nothing new to say.
        assert!(
            reporter
                .observe(tenant, "https://a.example/", false, Utc::now())
                .is_none()
        );
        // Recovery is reported at once, and clears the run of failures.
        let recovered = reporter
            .observe(tenant, "https://a.example/", true, Utc::now())
            .expect("change");
        assert!(recovered.healthy && recovered.failing_since.is_none());
        // Another endpoint is tracked on its own.
        assert!(
            reporter
                .observe(tenant, "https://b.example/", true, Utc::now())
                .is_some()
        );
    }

    #[test]
    fn a_long_run_of_failures_is_reported_again_after_the_interval() {
        let reporter = HealthReporter::new(Duration::ZERO);
        let tenant = Uuid::now_v7();
        let start = Utc::now();
        reporter.observe(tenant, "https://a.example/", false, start);
        let again = reporter
            .observe(tenant, "https://a.example/", false, Utc::now())
            .expect("interval passed");
        assert_eq!(
            again.failing_since,
            Some(timestamp_from(start)),
            "the run keeps its start"
        );
    }
}
