//! The dispatcher's delivery metrics. Labels come from fixed sets only: outcome, status class,
//! endpoint format, retry tier; never the tenant, the URL or the event.

use chrono::{DateTime, Utc};
use fp_delivery::AttemptOutcome;
use fp_domain::format::EndpointFormat;
use fp_domain::retry::{PlannedRetry, Verdict};
use fp_telemetry::metrics::{duration_label, status_class};

const IN_FLIGHT: &str = "fp_dispatcher_in_flight_deliveries";

/// An attempt's outcome label: `success`, `redirect`, `http_status` (any other answer), or the
/// transport failure's kind (`timeout`, `connection_refused`, `connect`, `tls_unknown_authority`,
/// `tls_self_signed`, `tls_expired`, `tls_wrong_host`, `tls`, `dns`, `blocked`, `other`), as in
/// the attempt record's `error_kind`.
pub fn outcome_label(outcome: &AttemptOutcome) -> &'static str {
    match &outcome.result {
        Ok(response) if (200..300).contains(&response.status) => "success",
        Ok(response) if (300..400).contains(&response.status) => "redirect",
        Ok(_) => "http_status",
        Err(error) => error.kind(),
    }
}

/// Counts one attempt whose request ended, and how long it took.
pub fn attempt_made(outcome: &AttemptOutcome, format: EndpointFormat) {
    let label = outcome_label(outcome);
    let status = outcome.result.as_ref().ok().map(|response| response.status);
    metrics::counter!(
        "fp_dispatcher_attempts_total",
        "outcome" => label,
        "status_class" => status_class(status),
        "format" => format.as_str(),
    )
    .increment(1);
    metrics::histogram!("fp_dispatcher_attempt_duration_seconds", "outcome" => label)
        .record(outcome.duration.as_secs_f64());
}

/// How long an event waited from its commit in the api (`occurred_at`, set in the transaction that
/// wrote its outbox row) to its first attempt: the outbox relay, the broker and this queue.
pub fn first_attempt(occurred_at: DateTime<Utc>, attempted_at: DateTime<Utc>) {
    let age = (attempted_at - occurred_at)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64();
    metrics::histogram!("fp_dispatcher_event_age_at_first_attempt_seconds").record(age);
}

/// What followed an attempt whose record and retry the broker took: a retry in its tier, or the
/// end of the delivery when it failed for good (manual redeliveries are one-offs, not counted).
pub fn attempt_settled(
    verdict: Verdict,
    retry: Option<PlannedRetry>,
    manual: bool,
    format: EndpointFormat,
) {
    match (verdict, retry) {
        (_, Some(retry)) => {
            metrics::counter!(
                "fp_dispatcher_retries_scheduled_total",
                "tier" => duration_label(retry.tier),
            )
            .increment(1);
        }
        (Verdict::Delivered, None) => {}
        (Verdict::Retry | Verdict::GiveUp, None) if !manual => {
            metrics::counter!(
                "fp_dispatcher_deliveries_given_up_total",
                "format" => format.as_str(),
            )
            .increment(1);
        }
        (Verdict::Retry | Verdict::GiveUp, None) => {}
    }
}

/// How many threads run this dispatcher's deliveries, read back from the runtime rather than the
/// settings: how the process is sized, for its operators.
pub fn runtime_sized() {
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    metrics::gauge!("fp_dispatcher_worker_threads").set(threads as f64);
}

/// One request out: the in-flight gauge counts it until dropped (also when the attempt's future is
/// dropped mid-request).
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fp_delivery::{DeliveryError, DeliveryResponse};

    use super::*;

    fn answered(status: u16) -> AttemptOutcome {
        AttemptOutcome {
            result: Ok(DeliveryResponse {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                body_truncated: false,
            }),
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn outcomes_map_to_the_record_error_kinds() {
        assert_eq!(outcome_label(&answered(204)), "success");
        assert_eq!(outcome_label(&answered(301)), "redirect");
        assert_eq!(outcome_label(&answered(500)), "http_status");
        assert_eq!(outcome_label(&answered(404)), "http_status");
        let timed_out = AttemptOutcome {
            result: Err(DeliveryError::Timeout("slow".to_owned())),
            duration: Duration::from_secs(1),
        };
        assert_eq!(outcome_label(&timed_out), "timeout");
        let unresolved = AttemptOutcome {
            result: Err(DeliveryError::Dns("no such name".to_owned())),
            duration: Duration::ZERO,
        };
        assert_eq!(outcome_label(&unresolved), "dns");
    }
}
