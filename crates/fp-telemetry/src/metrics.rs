//! Prometheus metrics of every process, recorded through the `metrics` facade.
//!
//! Any crate records with `metrics::counter!`/`gauge!`/`histogram!`; [`install`] puts the
//! Prometheus recorder behind the facade once per process, and the health listener
//! ([`crate::health::serve`]) renders it at `/metrics`. Until a process installs it, recording is a
//! no-op (unit tests record nothing and pay nothing).
//!
//! Label values are always from small fixed sets (outcome, status class, endpoint format, route
//! template, retry tier, reason): never a tenant id, a URL or an event id, which would make a series
//! per tenant or per event.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `*_seconds` histogram: from a fast local answer to a day-long retry backlog.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
];

/// Buckets of row-count histograms (log-ingest's batch sizes, up to its largest batch).
const ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct InstallError(#[from] BuildError);

/// Installs the process's Prometheus recorder (once; later calls return the same handle) and
/// describes the metrics this workspace records.
pub fn install() -> Result<&'static PrometheusHandle, InstallError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_rows".to_owned()), ROWS_BUCKETS)?
        .install_recorder()?;
    let handle = HANDLE.get_or_init(|| handle);
    describe();
    Ok(handle)
}

/// The installed recorder's handle, if [`install`] ran.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// How often histograms are folded (the exporter's upkeep).
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The status class label of an HTTP status: `2xx` … `5xx`, `none` without an answer.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

/// The label of a delay: its largest whole unit (`5s`, `5m`, `2h`, `1d`; `1500ms` when none is
/// whole). Retry tiers come from the configured schedule, so there are few of them.
pub fn duration_label(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// HELP texts, so `/metrics` explains itself to whoever reads it.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "fp_ready",
        "1 while the process is ready (started, every dependency reachable), else 0"
    );
    describe_counter!(
        crate::tracing_setup::SPANS_DROPPED_METRIC,
        "Spans the trace collector did not take (down, slow or refusing), dropped so no work waits"
    );
    // HTTP (api and dashboard).
    describe_counter!(
        "fp_http_requests_total",
        "HTTP requests answered, by route template (the matched pattern), method and status class"
    );
    describe_histogram!(
        "fp_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and method"
    );
    // Dispatcher.
    describe_counter!(
        "fp_dispatcher_attempts_total",
        "Delivery attempts made, by outcome (success, http_status, redirect, timeout, connect, tls, dns, blocked, other), status class and endpoint format"
    );
    describe_histogram!(
        "fp_dispatcher_attempt_duration_seconds",
        Unit::Seconds,
        "Duration of one delivery attempt's HTTP request, by outcome"
    );
    describe_histogram!(
        "fp_dispatcher_event_age_at_first_attempt_seconds",
        Unit::Seconds,
        "Time from the event's commit in the api (its occurred_at) to its first delivery attempt"
    );
    describe_counter!(
        "fp_dispatcher_retries_scheduled_total",
        "Retries scheduled after a failed attempt, by delay tier"
    );
    describe_counter!(
        "fp_dispatcher_deliveries_given_up_total",
        "Deliveries failed for good (retries exhausted or not retryable), by endpoint format"
    );
    describe_gauge!(
        "fp_dispatcher_in_flight_deliveries",
        "Delivery attempts whose HTTP request is out now"
    );
    describe_gauge!(
        "fp_dispatcher_worker_threads",
        "Threads of the dispatcher's runtime (dispatcher.worker_threads)"
    );
    describe_counter!(
        "fp_dispatcher_deferred_total",
        "Deliveries parked because their endpoint was at its in-flight cap"
    );
    describe_counter!(
        "fp_dispatcher_host_rate_deferred_total",
        "Deliveries parked because their destination host was at this dispatcher's request rate"
    );
    describe_counter!(
        "fp_dispatcher_messages_handled_total",
        "Input messages handled and acked"
    );
    describe_counter!(
        "fp_dispatcher_repeats_skipped_total",
        "Copies of already completed attempts that were not sent again"
    );
    describe_counter!(
        "fp_dispatcher_config_loads_total",
        "Tenants' configs read from the database (the cache had none, or its entry was dropped by a change, reached its age limit, expired while changes were not heard or when listening resumed, or a load could not be kept)"
    );
    describe_counter!(
        "fp_dispatcher_secret_unreadable_total",
        "Deliveries dropped because the endpoint's secret does not open with the master key"
    );
    describe_counter!(
        "fp_dispatcher_events_rejected_total",
        "Published events refused and dead-lettered, by rejection code (x-fp-rejection)"
    );
    describe_counter!(
        "fp_dispatcher_undeliverable_total",
        "Valid inputs with no endpoint, by reason (unknown_tenant: recorded in undeliverable_events; no_config; config_removed)"
    );
    describe_counter!(
        "fp_dispatcher_duplicate_events_skipped_total",
        "Copies of a published event whose first attempt another copy had claimed (any dispatcher)"
    );
    describe_counter!(
        "fp_dispatcher_twin_sends_held_total",
        "Copies of an attempt (handed out again, handed back, parked) that found its send taken \
         (by a twin, or by their own earlier try) and waited for its outcome instead of sending"
    );
    describe_histogram!(
        "fp_dispatcher_claim_batch_size",
        "Claims (fresh events' first attempts, copies' sends) written to PostgreSQL per batch (one \
         statement, two when it holds both kinds)"
    );
    describe_counter!(
        "fp_dispatcher_outcomes_logged_total",
        "Outcomes written to the log over the pending rows their claims stored (fresh events' \
         first attempts, copies' sends: the attempts fp-log-ingest never sees; with \
         fp_log_ingest_rows_inserted_total, every attempt logged)"
    );
    describe_histogram!(
        "fp_dispatcher_outcome_batch_size",
        "Outcomes of claimed attempts written to PostgreSQL per statement"
    );
    // Api.
    describe_gauge!(
        "fp_api_outbox_backlog",
        "Outbox rows not yet published to the broker (sampled)"
    );
    describe_gauge!(
        "fp_api_outbox_oldest_age_seconds",
        "Age of the oldest unpublished outbox row, 0 when none (sampled)"
    );
    describe_histogram!(
        "fp_api_submission_batch_size",
        "New submissions per batch a writer commits together (group commit)"
    );
    describe_counter!(
        "fp_api_outbox_published_total",
        "Outbox rows published (broker-confirmed) and marked by the relay; path: handoff (handed \
         over in memory by the api that committed them) or poll (claimed from the outbox)"
    );
    describe_counter!(
        "fp_api_outbox_handoff_events_missed_total",
        "Committed events the relay's hand-off left to its poll; reason: queue_full, stopped, \
         stale (queued for half the grace), publish_failed, mark_failed (then published again)"
    );
    describe_counter!(
        "fp_api_endpoints_disabled_total",
        "Webhook endpoints disabled after failing every delivery for too long"
    );
    describe_counter!(
        "fp_api_notifications_total",
        "Endpoint notification emails to tenant admins, by kind (failing, disabled) and outcome (sent, failed, no_admin)"
    );
    // Log-ingest.
    describe_counter!(
        "fp_log_ingest_rows_inserted_total",
        "Attempt rows written from records (new rows and outcomes replacing pending rows; a fresh \
         event's first attempt and a copy's are logged by the dispatcher: \
         fp_dispatcher_outcomes_logged_total)"
    );
    describe_counter!(
        "fp_log_ingest_pending_rows_total",
        "Pending (interrupted) attempt rows written from pending records (retries, manual \
         redeliveries, attempts whose claim could not store the row; a fresh event's first attempt \
         and a copy's are written by the dispatcher with their claim)"
    );
    describe_counter!(
        "fp_log_ingest_records_dropped_total",
        "Attempt records of tenants that no longer exist (deleted), dropped rather than stored"
    );
    describe_histogram!(
        "fp_log_ingest_batch_rows",
        "Attempt records per committed batch"
    );
    describe_histogram!(
        "fp_log_ingest_lag_seconds",
        Unit::Seconds,
        "Time from an attempt to the commit of its row"
    );
    // Maintenance (the services' loops; fp_store::maintenance).
    describe_counter!(
        "fp_maintenance_runs_total",
        "Maintenance step runs, by step and outcome (done, skipped: another replica held its lock, failed)"
    );
    describe_histogram!(
        "fp_maintenance_step_duration_seconds",
        Unit::Seconds,
        "Time a maintenance step took when it did its work, by step"
    );
    describe_counter!(
        "fp_maintenance_rows_removed_total",
        "Rows maintenance removed, by step (outbox_prune: published outbox rows past their grace; submission_events_prune: submission_events rows of events whose delivery attempts are all gone)"
    );
    describe_counter!(
        "fp_maintenance_payloads_cleared_total",
        "Attempts whose bodies and headers maintenance cleared, past their tenant's payload retention"
    );
    describe_counter!(
        "fp_maintenance_partitions_created_total",
        "delivery_attempts partitions maintenance made ahead of time"
    );
    describe_counter!(
        "fp_maintenance_partitions_dropped_total",
        "delivery_attempts partitions maintenance dropped past retention.max_days"
    );
    // Broker and database.
    describe_counter!(
        "fp_broker_reconnects_total",
        "Broker connections opened after a lost one"
    );
    describe_gauge!(
        "fp_broker_connected",
        "1 while the broker connection is up, else 0"
    );
    describe_counter!(
        "fp_broker_publish_confirms_failed_total",
        "Publishes the broker did not confirm (nack, unroutable, or the connection failed)"
    );
    describe_gauge!(
        "fp_broker_dead_letter_queue_messages",
        "Messages waiting in the dead-letter queue, whoever put them there (sampled by the api)"
    );
    describe_counter!(
        "fp_broker_dead_lettered_total",
        "Messages this process dead-lettered, by reason"
    );
    describe_counter!(
        "fp_broker_settle_frames_total",
        "Ack and nack frames sent for coalesced consumers; multiple=true settles a run of deliveries"
    );
    describe_gauge!(
        "fp_db_pool_waiting",
        "Tasks waiting for a database connection from the pool (sampled)"
    );
    describe_gauge!(
        "fp_db_pool_connections",
        "Database pool connections, by state (idle, in_use) (sampled)"
    );
    describe_counter!(
        "fp_db_pool_timeouts_total",
        "Database connection requests that failed (pool timeout or connect error)"
    );
    describe_counter!(
        "fp_api_key_cache_hits_total",
        "API keys the api resolved from its in-process cache"
    );
    describe_counter!(
        "fp_api_key_cache_misses_total",
        "API keys the api looked up in the database (not cached, cache off, or bypassed while its revocation listener is down)"
    );
    describe_counter!(
        "fp_api_failed_logins_total",
        "Password checks (log-ins, password changes) refused by the api, by reason (credentials, throttled)"
    );
    // Dashboard.
    describe_counter!(
        "fp_dashboard_failed_logins_total",
        "Dashboard log-ins refused, by reason (credentials, throttled)"
    );
}

/// The request metrics of an actix-web service: `fp_http_requests_total` and
/// `fp_http_request_duration_seconds` by route template (`match_pattern`, so
/// `/api/v2/submissions/{id}` and never the path with its id), method and status class.
#[cfg(feature = "actix")]
pub async fn actix_middleware(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = bounded_method(request.method());
    let result = next.call(request).await;
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.as_response_error().status_code().as_u16(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!(
        "fp_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status_class" => status_class(Some(status)),
    )
    .increment(1);
    metrics::histogram!(
        "fp_http_request_duration_seconds",
        "route" => route,
        "method" => method,
    )
    .record(elapsed);
    result
}

/// The standard methods by name; anything else (a client may send any token) as `other`.
#[cfg(feature = "actix")]
fn bounded_method(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_tiers_are_small_label_sets() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(Some(302)), "3xx");
        assert_eq!(status_class(Some(999)), "other");
        assert_eq!(status_class(None), "none");
        assert_eq!(duration_label(Duration::from_secs(5)), "5s");
        assert_eq!(duration_label(Duration::from_secs(300)), "5m");
        assert_eq!(duration_label(Duration::from_secs(7200)), "2h");
        assert_eq!(duration_label(Duration::from_secs(86_400)), "1d");
        assert_eq!(duration_label(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_label(Duration::from_secs(90)), "90s");
    }
}
