//! Handling one message: decide, deliver, record, schedule the retry, ack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fp_broker::{BatchPublisher, Delivery, Inbound, Names, OutgoingMessage, Publisher, Settlement};
use fp_contracts::{DeliveryJob, JobContent, ProtoMessage, timestamp_from, v1};
use fp_delivery::{AttemptOutcome, DeliveryClient, DeliveryResponse};
use fp_domain::format::{self, EndpointFormat};
use fp_domain::inbound_event::{self, MessageProperties, Rejection, Undeliverable};
use fp_domain::request::{build_request, build_stored_request};
use fp_domain::retry::{PlannedRetry, RetrySchedule, Verdict, judge_response, parse_retry_after};
use fp_domain::{DeliveryId, Event, EventType};
use fp_store::PgPool;
use fp_store::attempts::AttemptRow;
use fp_telemetry::OTEL_TARGET;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::completed::{Claim, CompletedAttempts};
use crate::config_cache::{ConfigCache, Endpoint, Lookup};
use crate::endpoint_health::HealthReporter;
use crate::endpoint_limits::EndpointLimits;
use crate::first_attempts::{AttemptClaim, FirstAttemptLog};
use crate::host_rates::HostRates;

/// How long an attempt's record waits for a lost broker connection to come back before the
/// attempt is given up as unrecorded (its input then returns to the queue).
const RECORD_PATIENCE: Duration = Duration::from_secs(30);

/// How long a first attempt's outcome waits for the database to write it over its pending row
/// before it goes to log-ingest as a record instead (a database that hangs rather than fails).
const OUTCOME_PATIENCE: Duration = Duration::from_secs(5);

/// Beyond the maker's request timeout and record patience: how far log-ingest may lag behind.
const LOG_LAG_ALLOWANCE: Duration = Duration::from_secs(5);

/// How often a copy waiting for another dispatcher's outcome reads the log again.
const PENDING_POLL: Duration = Duration::from_millis(500);

/// Longest wait of a redelivered copy for another dispatcher's outcome, from when it arrived. A
/// maker that lost its node notices within two heartbeats (20 s) of the loss, the broker hands its
/// input out again once it notices too (at once for a closed connection, within the cluster's
/// net tick, about 10 s, for a node cut off), and the maker records its outcome as soon as it is
/// connected again: 15 s covers both. A maker that died sends nothing, so the wait only delays
/// its attempts; this keeps that delay short.
const COPY_OUTCOME_WAIT: Duration = Duration::from_secs(15);

/// Longest wait of a copy for the same attempt in flight in this process: its request timeout and
/// its record's patience are both shorter.
const COPY_PATIENCE: Duration = Duration::from_secs(60);

/// How long a message a dependency kept us from handling waits before it goes back to its queue.
const HAND_BACK_DELAY: Duration = Duration::from_secs(1);

/// Marks the copy of an input handed back to its queue that may have a claim or a twin: an event
/// that asked for its first attempt's claim (`delivery_claims`; it may hold it), or an input that
/// was itself a copy (handed out again, handed back, parked). The copy is handled as a copy: the
/// claim may be its own, and only the log tells whether its attempt was made. Its value says how
/// it asks the log ([`AskLog`]): [`ASK_AT_ONCE`] or [`ASK_AFTER_LAG`] (any other value, such as
/// the previous release's `1`, reads as the latter).
const HANDED_BACK_HEADER: &str = "x-fp-handed-back";

/// [`HANDED_BACK_HEADER`]'s value for a copy that asks the log at once: a fresh event that may
/// hold its claim (a claim stores its pending row itself, so no record is on its way through the
/// broker), or a parked copy. After a database outage many such copies come back together, and a
/// wait each would hold their prefetch slots.
const ASK_AT_ONCE: &str = "at-once";

/// [`HANDED_BACK_HEADER`]'s value for a copy of an input the broker handed out again: its twin's
/// pending record may still be on its way through the broker.
const ASK_AFTER_LAG: &str = "after-lag";

/// Marks a job parked by a deferral. If the parking's confirm was lost with the connection, the
/// input it came from is handed out again too, and both copies would be sent: so a parked copy
/// asks the log whether its attempt was made (without waiting for a record, since a parked copy
/// normally has no twin), and takes the send of its attempt before its request, as the twin does.
const DEFERRED_HEADER: &str = "x-fp-deferred";

/// Why a delivery is parked rather than sent now.
#[derive(Debug, Clone, Copy)]
enum Deferral {
    /// The endpoint has `dispatcher.max_in_flight_per_endpoint` requests out.
    EndpointAtCap,
    /// The destination host had its `dispatcher.host_requests_per_second`.
    HostAtRate,
}

impl Deferral {
    fn reason(self) -> &'static str {
        match self {
            Deferral::EndpointAtCap => "endpoint at its in-flight cap",
            Deferral::HostAtRate => "destination host at its request rate",
        }
    }

    /// The counter of deliveries parked for this reason.
    fn counter(self) -> &'static str {
        match self {
            Deferral::EndpointAtCap => "fp_dispatcher_deferred_total",
            Deferral::HostAtRate => "fp_dispatcher_host_rate_deferred_total",
        }
    }
}

/// How an attempt about to be sent, or parked, is claimed across dispatchers.
enum SendClaim<'a> {
    /// A fresh event's first attempt: claimed once per delivery, whether sent or parked; sets
    /// the flag once claimed.
    FirstAttempt(&'a mut bool),
    /// A copy that may have a twin (handed out again, handed back, parked): takes the send of its
    /// attempt just before its request. Parked again, it claims nothing.
    Copy,
    /// Sent without a claim: a job as scheduled (its only input), a manual redelivery, a copy of
    /// an attempt whose maker was given up on, or a copy that found the send taken and then no
    /// settled outcome.
    Unclaimed,
}

/// Whether, and how, a copy asks the log if its attempt was made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AskLog {
    /// Not a copy: only this process's memory is asked.
    No,
    /// A parked copy (it normally has no twin), or a copy handed back with [`ASK_AT_ONCE`]: it
    /// asks at once.
    AtOnce,
    /// An input handed out again, or handed back after it was: with no record of the attempt in
    /// the log, it first gives log-ingest [`LOG_LAG_ALLOWANCE`] to write one.
    AfterLag,
    /// A copy that found its attempt's send taken by another copy: waits for that attempt's
    /// outcome as long as an attempt can be in flight, and as `AfterLag` where the taker's
    /// pending row went through the broker (its tenant was held by an erasure or a deletion).
    TwinSending,
}

/// What the log says of the attempt a copy is about to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    /// Made, with an outcome that needs nothing more (delivered, or final): the copy is skipped.
    Settled,
    /// Started by a maker given up on (its pending row outlived the wait): sent again.
    Abandoned,
    /// Not in the log, not asked (not a copy), or failed with a retry planned (which may never
    /// have been scheduled).
    Absent,
}

/// What [`Dispatcher::attempt`] did.
enum Attempted {
    /// Sent, recorded and followed up; or not sent, as another copy of the event had claimed its
    /// first attempt.
    Done,
    /// Not sent: the send of this attempt was taken before (by a twin, or by this input's own
    /// earlier try).
    SendTakenElsewhere,
}

/// Which queue a message came from, and so how to read it.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// A domain event from `fp.events`: fan out to the tenant's endpoint.
    Event,
    /// A delivery job whose delay is over, or a redelivery from the api: one more attempt of one
    /// delivery.
    Job,
}

pub struct Dispatcher {
    pub configs: Arc<ConfigCache>,
    /// Reads the log, to tell whether a redelivered input's attempt was already made elsewhere.
    pub pool: PgPool,
    pub completed: CompletedAttempts,
    /// First attempts claimed across dispatchers (a duplicate publish is delivered once) and
    /// copies' sends taken (twins are sent once), each with its pending row and then its
    /// outcome in the log.
    pub first_attempts: FirstAttemptLog,
    pub client: DeliveryClient,
    pub publisher: Publisher,
    /// Attempt records, batched: one message carries every record ready at the same moment.
    pub records: BatchPublisher,
    pub names: Names,
    pub schedule: RetrySchedule,
    pub limits: EndpointLimits,
    /// This dispatcher's request rate to each destination host.
    pub host_rates: HostRates,
    /// The longest an attempt can be in flight, from its pending record to its outcome record: the
    /// request timeout plus [`RECORD_PATIENCE`], plus log-ingest's lag. A redelivered copy waits
    /// that long for another dispatcher's outcome before it sends again (see `already_made`).
    pub in_flight_horizon: Duration,
    pub busy_delay: Duration,
    pub health: HealthReporter,
}

impl Dispatcher {
    /// Handles one message. Never panics and never drops a message: it is acked (handled),
    /// dead-lettered (unreadable) or returned to its queue (a dependency failed), each through
    /// its settlement, which coalesces the acks of the channel.
    pub async fn handle(&self, input: Input, inbound: Inbound) {
        let Inbound {
            delivery,
            settlement,
        } = inbound;
        let source_queue = match input {
            Input::Event => &self.names.dispatcher_queue,
            Input::Job => &self.names.retry_queue,
        };
        // The consumer span continues the trace the message carries (the api request that
        // recorded the event, or the attempt that scheduled this retry). Its attributes are ids,
        // types and outcomes: never a URL, a secret or a body.
        let span = tracing::info_span!(
            target: OTEL_TARGET,
            "process",
            "otel.name" = %format!("process {source_queue}"),
            "otel.kind" = "consumer",
            "messaging.system" = "rabbitmq",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = %source_queue,
            trace_id = Empty,
            "fp.tenant_id" = Empty,
            "fp.event_type" = Empty,
            "fp.event_id" = Empty,
            "fp.delivery_id" = Empty,
            "fp.attempt" = Empty,
            "fp.endpoint_format" = Empty,
            "fp.manual" = Empty,
            "fp.outcome" = Empty,
        );
        fp_telemetry::propagation::set_parent(&span, fp_broker::trace_context(&delivery));
        span.record("trace_id", fp_telemetry::propagation::trace_id(&span));
        // The span is attached to each future rather than entered across awaits, so deliveries
        // interleaved on one thread never log under each other's trace id.
        self.handle_in_span(input, source_queue, delivery, settlement, &span)
            .instrument(span.clone())
            .await;
    }

    async fn handle_in_span(
        &self,
        input: Input,
        source_queue: &str,
        delivery: Delivery,
        settlement: Settlement,
        span: &tracing::Span,
    ) {
        let job = match input {
            Input::Event => self.accept_event(&delivery).map(JobOrEvent::Event),
            Input::Job => fp_contracts::decode_job(&delivery.data)
                .map(JobOrEvent::Job)
                .map_err(|error| (fp_broker::UNREADABLE, error.to_string())),
        };
        let job = match job {
            Ok(job) => job,
            Err((code, error)) => {
                span.record("fp.outcome", "dead_lettered");
                tracing::error!(%error, code, queue = %source_queue, "refused message: dead-lettering");
                if let Input::Event = input {
                    metrics::counter!("fp_dispatcher_events_rejected_total", "reason" => code)
                        .increment(1);
                }
                match self
                    .publisher
                    .copy_to_dead_letters(&self.names, source_queue, &delivery, code, &error)
                    .await
                {
                    Ok(()) => settlement.ack().await,
                    Err(error) => {
                        tracing::error!(%error, "could not dead-letter; returning it to its queue");
                        // Paced, so that a broker refusing the copy is not asked again at once.
                        tokio::time::sleep(HAND_BACK_DELAY).await;
                        settlement.requeue().await;
                    }
                }
                return;
            }
        };
        let handed_back = fp_broker::header_text(&delivery, HANDED_BACK_HEADER);
        let deferred_copy = matches!(input, Input::Job)
            && fp_broker::header_text(&delivery, DEFERRED_HEADER).is_some();
        let asks = match (delivery.redelivered, handed_back.as_deref()) {
            (true, _) => AskLog::AfterLag,
            (false, Some(ASK_AT_ONCE)) => AskLog::AtOnce,
            (false, Some(_)) => AskLog::AfterLag,
            (false, None) if deferred_copy => AskLog::AtOnce,
            (false, None) => AskLog::No,
        };
        // Set once this input may hold its event's first-attempt claim.
        let mut may_hold_claim = false;
        span.record("fp.event_id", job.event_id().to_string());
        span.record("fp.tenant_id", job.tenant_id().to_string());
        span.record("fp.event_type", job.event_type().as_str());
        span.record("fp.manual", job.manual());
        match self.process(job, asks, &mut may_hold_claim, span).await {
            Ok(()) => {
                settlement.ack().await;
                metrics::counter!("fp_dispatcher_messages_handled_total").increment(1);
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    queue = %source_queue,
                    "not handled; handing it back to its queue"
                );
                span.record("fp.outcome", "handed_back");
                let copy_asks = match asks {
                    AskLog::No if may_hold_claim => AskLog::AtOnce,
                    asks => asks,
                };
                self.hand_back(&delivery, settlement, source_queue, copy_asks)
                    .await;
            }
        }
    }

    /// An event from the events queue, if it keeps the publishing contract; otherwise the
    /// rejection code and why.
    fn accept_event(&self, delivery: &Delivery) -> Result<Event, (&'static str, String)> {
        let properties = MessageProperties {
            message_type: delivery
                .properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str()),
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|content_type| content_type.as_str()),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str()),
            // A copy handed back to the queue is routed by the queue's name instead.
            routing_key: (delivery.exchange.as_str() == self.names.events_exchange)
                .then(|| delivery.routing_key.as_str()),
        };
        let accepted = inbound_event::check_message(delivery.data.len(), &properties)
            .and_then(|()| {
                fp_contracts::decode_event(&delivery.data)
                    .map_err(|error| Rejection::new(error.rejection_reason(), error.to_string()))
            })
            .and_then(|event| {
                inbound_event::check_event(&event, &properties, Utc::now()).map(|()| event)
            });
        accepted.map_err(|rejection| (rejection.reason.code(), rejection.detail))
    }

    /// Sets `may_hold_claim` once it may have claimed the event's first attempt.
    async fn process(
        &self,
        job: JobOrEvent,
        asks: AskLog,
        may_hold_claim: &mut bool,
        span: &tracing::Span,
    ) -> anyhow::Result<()> {
        let tenant_id = job.tenant_id();
        let endpoint = match self.configs.endpoint(tenant_id).await? {
            Lookup::Endpoint(endpoint) => endpoint,
            Lookup::NoConfig => return self.no_endpoint(&job, false, span).await,
            Lookup::UnknownTenant => return self.no_endpoint(&job, true, span).await,
        };
        // A fresh event (not a copy handed out again) claims its first attempt across dispatchers.
        let claims_first_attempt = matches!(job, JobOrEvent::Event(_)) && asks == AskLog::No;
        if let JobOrEvent::Job(DeliveryJob {
            content: JobContent::Stored(stored),
            ..
        }) = &job
        {
            if !endpoint.takes_redelivery_of(&stored.url) {
                // The api checked this when it accepted the redelivery; the tenant changed the
                // endpoint since. A stored request goes to the endpoint's current URL, but only
                // while it takes the format the stored body was made for.
                span.record("fp.outcome", "not_subscribed");
                tracing::info!(
                    "endpoint disabled, removed or of another format since; not redelivered"
                );
                return Ok(());
            }
        } else if !endpoint.wants(job.event_type()) {
            // Also ends pending retries of a tenant who disabled the endpoint or unsubscribed.
            span.record("fp.outcome", "not_subscribed");
            tracing::debug!("endpoint disabled or not subscribed to this event");
            return Ok(());
        }
        if endpoint.secret_unreadable {
            // Never unsigned, and not requeued (that would loop until the key is fixed): dropped,
            // counted, and logged.
            metrics::counter!("fp_dispatcher_secret_unreadable_total").increment(1);
            span.record("fp.outcome", "secret_unreadable");
            tracing::error!(
                %tenant_id,
                "not delivered: the endpoint's secret cannot be opened with FP__SECRETS__MASTER_KEY"
            );
            return Ok(());
        }
        let job = match job {
            JobOrEvent::Event(event) => DeliveryJob {
                delivery_id: DeliveryId::for_event_and_endpoint(event.id, &endpoint.url),
                content: JobContent::Event(event),
                attempt_number: 1,
                manual: false,
            },
            JobOrEvent::Job(job) => job,
        };
        span.record("fp.delivery_id", job.delivery_id.to_string());
        span.record("fp.attempt", job.attempt_number);
        if self.erased(&job, &endpoint).await? {
            return self.cancel(&job, &endpoint, span).await;
        }
        // The attempt is claimed first and then looked up, so a copy cannot slip in between an
        // original's last step (remembering it) and its claim's end. A copy of an attempt in
        // flight here waits for it to end, then looks again.
        let (_claim, logged) = loop {
            match self.completed.begin(&job) {
                Claim::Claimed(claim) => {
                    let logged = self.already_made(&job, asks).await?;
                    if logged == Logged::Settled {
                        skipped_as_made(&job, span);
                        return Ok(());
                    }
                    break (claim, logged);
                }
                Claim::InFlightElsewhere(ended) => {
                    let ending = ended.notified();
                    if self.completed.is_in_flight(&job) {
                        // Bounded, and looked at again: the original ends within its request
                        // timeout and its record's patience.
                        let _ = tokio::time::timeout(COPY_PATIENCE, ending).await;
                    }
                }
            }
        };
        // Not remembered as made (looked at above), so a fresh event claims its first attempt
        // across dispatchers: with its pending row when it is sent now, before it is parked
        // otherwise. A copy that may have a twin takes the send just before its request, unless
        // the attempt's maker was given up on (its claim, if any, is the maker's).
        let mut send_claim = if claims_first_attempt {
            SendClaim::FirstAttempt(may_hold_claim)
        } else if asks != AskLog::No && !job.manual && logged == Logged::Absent {
            SendClaim::Copy
        } else {
            SendClaim::Unclaimed
        };
        // Stored URLs are valid; were one not, the attempt would say so.
        let host = url::Url::parse(&endpoint.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        loop {
            let Some(slot) = self.limits.try_acquire(&endpoint.url) else {
                return self
                    .defer(&job, send_claim, span, Deferral::EndpointAtCap)
                    .await;
            };
            if !self.host_rates.try_acquire(&host) {
                return self
                    .defer(&job, send_claim, span, Deferral::HostAtRate)
                    .await;
            }
            match self.attempt(&job, &endpoint, send_claim, span).await? {
                Attempted::Done => return Ok(()),
                Attempted::SendTakenElsewhere => {
                    // The twin's pending row is in the log now (stored with the send it took):
                    // wait for that attempt's outcome, without holding the endpoint's slot.
                    drop(slot);
                    if self.already_made(&job, AskLog::TwinSending).await? == Logged::Settled {
                        skipped_as_made(&job, span);
                        return Ok(());
                    }
                    // No outcome within the longest an attempt can be in flight (its maker died),
                    // or a failure with a retry planned, which the log cannot tell was scheduled
                    // (this input may be the one whose retry was not): sent again, unclaimed.
                    send_claim = SendClaim::Unclaimed;
                }
            }
        }
    }

    /// Claims the first attempt of a fresh event's delivery across dispatchers, with `pending`
    /// (the row of the attempt about to be sent) stored by the same statement. Sets
    /// `may_hold_claim` before it asks: a claim that fails may still have been committed (its
    /// answer lost, or its batch's next statement failed), so a copy handed back must stay a
    /// copy. A copy that finds it claimed before is counted and logged here.
    async fn claim_first_attempt(
        &self,
        job: &DeliveryJob,
        pending: Option<AttemptRow>,
        may_hold_claim: &mut bool,
        span: &tracing::Span,
    ) -> anyhow::Result<AttemptClaim> {
        let claim_span = claims_span("INSERT delivery_claims", pending.is_some());
        *may_hold_claim = true;
        let found = self
            .first_attempts
            .claim(job.delivery_id, pending)
            .instrument(claim_span)
            .await?;
        match found {
            AttemptClaim::Claimed { .. } => {}
            AttemptClaim::ClaimedBefore => {
                metrics::counter!("fp_dispatcher_duplicate_events_skipped_total").increment(1);
                span.record("fp.outcome", "already_made");
                tracing::info!(
                    delivery_id = %job.delivery_id,
                    "another copy of this event claimed its first attempt; not sent again"
                );
            }
        }
        Ok(found)
    }

    /// A valid input whose tenant has no endpoint: counted; an event of a tenant that does not
    /// exist is recorded too (`undeliverable_events`), since no tenant's log can show it. The
    /// common case, an event of a tenant without a config, costs nothing but the cached lookup.
    async fn no_endpoint(
        &self,
        job: &JobOrEvent,
        unknown_tenant: bool,
        span: &tracing::Span,
    ) -> anyhow::Result<()> {
        span.record("fp.outcome", "no_endpoint");
        let reason = match (job, unknown_tenant) {
            (JobOrEvent::Event(event), true) => {
                tracing::warn!(
                    tenant_id = %event.tenant_id,
                    event_id = %event.id,
                    "event for a tenant that does not exist: recorded as undeliverable"
                );
                let mut conn = self.pool.get().await.map_err(fp_store::StoreError::from)?;
                fp_store::inbound_events::record_undeliverable(
                    &mut conn,
                    &fp_store::inbound_events::UndeliverableEvent {
                        event_id: event.id,
                        unknown_tenant_id: event.tenant_id,
                        event_type: event.event_type().as_str().to_owned(),
                        reason: Undeliverable::UnknownTenant.code().to_owned(),
                        occurred_at: event.occurred_at,
                        recorded_at: Utc::now(),
                    },
                )
                .await?;
                Undeliverable::UnknownTenant
            }
            // Events of tenants without an endpoint are common; they are not worth a line.
            (JobOrEvent::Event(_), false) => {
                tracing::debug!("tenant has no webhook config; nothing to deliver");
                Undeliverable::NoConfig
            }
            // A delivery under way whose config went since: removed, or the tenant deleted
            // (`fpctl tenant delete`). Acked and dropped, never sent.
            (JobOrEvent::Job(job), _) => {
                tracing::info!(
                    tenant_id = %job.tenant_id(),
                    delivery_id = %job.delivery_id,
                    attempt = job.attempt_number,
                    "the tenant has no webhook config any more (removed, or the tenant deleted); \
                     this delivery is dropped, not sent"
                );
                Undeliverable::ConfigRemoved
            }
        };
        metrics::counter!("fp_dispatcher_undeliverable_total", "reason" => reason.code())
            .increment(1);
        Ok(())
    }

    /// Parks a delivery this dispatcher will not send now in the busy-endpoint delay queue, from
    /// where it comes back through the retry queue: no attempt, no record, the same attempt
    /// number. It holds no prefetch slot meanwhile, so other endpoints and hosts are not held up.
    ///
    /// A fresh event's first attempt is claimed before it is parked, with nothing sent
    /// ([`SendClaim::FirstAttempt`]); its parked copy takes the send when it comes back. Other
    /// claims are made only by a copy about to send.
    async fn defer(
        &self,
        job: &DeliveryJob,
        send_claim: SendClaim<'_>,
        span: &tracing::Span,
        why: Deferral,
    ) -> anyhow::Result<()> {
        if let SendClaim::FirstAttempt(may_hold_claim) = send_claim {
            let found = self
                .claim_first_attempt(job, None, may_hold_claim, span)
                .await?;
            if found == AttemptClaim::ClaimedBefore {
                return Ok(());
            }
        }
        tracing::debug!(delivery_id = %job.delivery_id, why = why.reason(), "deferring");
        span.record("fp.outcome", "deferred");
        self.publish_job(job, self.busy_delay, None, &[(DEFERRED_HEADER, "1")])
            .await?;
        // Counted once parked: a copy whose twin holds the claim is not, and comes back no more.
        metrics::counter!(why.counter()).increment(1);
        Ok(())
    }

    /// Whether the job's event was erased (`POST /api/v2/submissions/{id}/erase`). Looked up only
    /// for events older than the tenant's latest erasure, which the config cache carries.
    async fn erased(&self, job: &DeliveryJob, endpoint: &Endpoint) -> anyhow::Result<bool> {
        let event_id = job.event_id();
        if !fp_domain::erasure::may_have_been_erased(event_id, endpoint.latest_erasure_at) {
            return Ok(false);
        }
        let mut conn = self.pool.get().await.map_err(fp_store::StoreError::from)?;
        Ok(fp_store::erasure::event_erased(&mut conn, event_id).await?)
    }

    /// Ends a delivery of an erased event without sending it: a final attempt record with error
    /// kind `cancelled` and no payload, so the tenant's log says why the delivery stopped. Its
    /// input (the event, a retry or a redelivery, which carries the erased data) is then acked and
    /// leaves the broker.
    async fn cancel(
        &self,
        job: &DeliveryJob,
        endpoint: &Endpoint,
        span: &tracing::Span,
    ) -> anyhow::Result<()> {
        span.record("fp.outcome", "cancelled");
        tracing::info!(
            delivery_id = %job.delivery_id,
            attempt = job.attempt_number,
            "the event's personal data was erased; delivery cancelled, nothing sent"
        );
        let mut record = cancelled_record(job, endpoint, Utc::now());
        self.publish_record(&mut record, RECORD_PATIENCE).await?;
        Ok(())
    }

    /// Whether this attempt was completed already: by this process (remembered), or, for a copy
    /// (see [`AskLog`]), by any dispatcher (the log says so).
    async fn already_made(&self, job: &DeliveryJob, asks: AskLog) -> anyhow::Result<Logged> {
        if self.completed.contains(job) {
            return Ok(Logged::Settled);
        }
        if asks == AskLog::No || job.manual {
            return Ok(Logged::Absent);
        }
        let attempt_number = i32::try_from(job.attempt_number).unwrap_or(i32::MAX);
        // A copy whose attempt another dispatcher started (its pending record is logged) but has
        // not recorded the end of: that dispatcher lost its broker connection (a node went away)
        // and records the outcome on its next one, or it died. Sending now would repeat a request
        // the endpoint may well have answered; so the copy waits, holding its input, until the
        // outcome is logged (then it is skipped), or for [`COPY_OUTCOME_WAIT`], or until the
        // attempt is older than any attempt in flight can be (then its maker is taken to be gone
        // and it is sent again, as before). A copy with no record at all first gives log-ingest
        // [`LOG_LAG_ALLOWANCE`] to write one: a maker's pending record is confirmed before its
        // request leaves, but when the node it was on goes away log-ingest may still be moving
        // to another node, so the record can reach the log after the copy reaches us.
        let arrived = tokio::time::Instant::now();
        // A twin that took the send just now is alive: its outcome is waited for as long as an
        // attempt can be in flight.
        let give_up = arrived
            + match asks {
                AskLog::TwinSending => self.in_flight_horizon,
                _ => COPY_OUTCOME_WAIT,
            };
        let log_caught_up = match asks {
            AskLog::AtOnce => arrived,
            _ => arrived + LOG_LAG_ALLOWANCE,
        };
        loop {
            let mut conn = self.pool.get().await.map_err(fp_store::StoreError::from)?;
            if fp_store::attempts::attempt_settled(
                &mut conn,
                job.delivery_id.0,
                attempt_number,
                fp_contracts::INTERRUPTED_ERROR_KIND,
            )
            .await?
            {
                return Ok(Logged::Settled);
            }
            let pending = fp_store::attempts::attempt_pending_since(
                &mut conn,
                job.delivery_id.0,
                attempt_number,
                fp_contracts::INTERRUPTED_ERROR_KIND,
            )
            .await?;
            drop(conn);
            let Some(since) = pending else {
                if tokio::time::Instant::now() >= log_caught_up {
                    return Ok(Logged::Absent);
                }
                // One look after the allowance, not a poll: after a node loss hundreds of copies
                // may be waiting at once, and each query of theirs loads the database.
                tokio::time::sleep_until(log_caught_up).await;
                continue;
            };
            let horizon = chrono::TimeDelta::from_std(self.in_flight_horizon)
                .unwrap_or(chrono::TimeDelta::MAX);
            let left = (since + horizon - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(give_up.saturating_duration_since(tokio::time::Instant::now()));
            if left.is_zero() {
                return Ok(Logged::Abandoned);
            }
            tracing::info!(
                delivery_id = %job.delivery_id,
                attempt = job.attempt_number,
                "another dispatcher's attempt of this copy has no logged outcome yet; waiting for it"
            );
            tokio::time::sleep(left.min(PENDING_POLL)).await;
        }
    }

    /// One HTTP attempt, its record, and the retry it calls for. Both messages are confirmed by
    /// the broker before the input is acked, so a crash leaves the input to be handled again.
    ///
    /// `send_claim`: how the attempt is claimed first, with its pending row. Nothing is sent
    /// where another copy holds the claim.
    async fn attempt(
        &self,
        job: &DeliveryJob,
        endpoint: &Endpoint,
        send_claim: SendClaim<'_>,
        span: &tracing::Span,
    ) -> anyhow::Result<Attempted> {
        let parsed_url = url::Url::parse(&endpoint.url)?;
        let format = format::detect(&parsed_url);
        let target = format::delivery_url(format, &parsed_url);
        span.record("fp.endpoint_format", format.as_str());
        let attempted_at = Utc::now();
        let secrets = endpoint.signing_secrets(attempted_at);
        let request = match &job.content {
            JobContent::Event(event) => build_request(
                event,
                format,
                job.delivery_id,
                secrets,
                attempted_at.timestamp(),
            ),
            JobContent::Stored(stored) => build_stored_request(
                stored.event_type,
                job.delivery_id,
                stored.body.clone(),
                secrets,
                attempted_at.timestamp(),
            ),
        };
        // Recorded before it is sent: if this process or its broker connection dies while the
        // request is out, the tenant's log still shows the attempt (as interrupted), so it never
        // shows fewer requests than the endpoint saw. Nothing is sent unless the log (a first
        // attempt's row, stored with its claim) or the broker (the pending record) has it.
        let mut record =
            pending_record(job, endpoint, attempted_at, &request.headers, request.body);
        let pending_logged = match send_claim {
            SendClaim::FirstAttempt(may_hold_claim) => {
                let row = row_in_span(&record, span)?;
                match self
                    .claim_first_attempt(job, Some(row), may_hold_claim, span)
                    .await?
                {
                    AttemptClaim::ClaimedBefore => return Ok(Attempted::Done),
                    AttemptClaim::Claimed { pending_logged } => pending_logged,
                }
            }
            SendClaim::Copy => {
                let row = row_in_span(&record, span)?;
                match self.take_send(job, row).await? {
                    AttemptClaim::ClaimedBefore => return Ok(Attempted::SendTakenElsewhere),
                    AttemptClaim::Claimed { pending_logged } => pending_logged,
                }
            }
            SendClaim::Unclaimed => false,
        };
        if !pending_logged {
            self.publish_record(&mut record, Duration::ZERO)
                .await
                .context("the pending attempt record was not taken; nothing was sent")?;
        }
        // The body goes to the client and then back into the record without a copy: `Bytes`
        // takes over the Vec's buffer, and gives it back once the client has dropped its handle.
        let body = Bytes::from(std::mem::take(&mut record.request_body));
        if let (1, false, JobContent::Event(event)) = (job.attempt_number, job.manual, &job.content)
        {
            crate::metrics::first_attempt(event.occurred_at, attempted_at);
        }
        let in_flight = crate::metrics::InFlight::start();
        let client_span = client_span(&target, job);
        let outcome = self
            .client
            .post(target.as_str(), &request.headers, body.clone())
            .instrument(client_span.clone())
            .await;
        drop(in_flight);
        record_client_outcome(&client_span, &outcome);
        drop(client_span);
        record.request_body = Vec::from(body);
        crate::metrics::attempt_made(&outcome, format);

        let (verdict, retry_after) = match &outcome.result {
            Ok(response) => (
                judge_response(format, response.status, &response.body),
                retry_after(response, attempted_at),
            ),
            Err(error) => (error.failure_kind().verdict(), None),
        };
        let retry = match verdict {
            // A manual attempt is a one-off: the tenant asked for one attempt and sees its outcome.
            Verdict::Retry if !job.manual => {
                self.schedule
                    .next_retry(job.attempt_number, retry_after, rand::random::<f64>())
            }
            Verdict::Retry | Verdict::Delivered | Verdict::GiveUp => None,
        };
        span.record(
            "fp.outcome",
            match (verdict, retry) {
                (Verdict::Delivered, _) => "delivered",
                (_, Some(_)) => "retry_scheduled",
                (_, None) => "failed",
            },
        );
        match (&outcome.result, verdict, retry) {
            (Ok(response), Verdict::Delivered, _) => tracing::info!(
                status = response.status,
                attempt = job.attempt_number,
                duration_ms = duration_ms(outcome.duration),
                delivery_id = %job.delivery_id,
                "delivered"
            ),
            (_, _, Some(retry)) => tracing::warn!(
                attempt = job.attempt_number,
                retry_in_ms = duration_ms(retry.delay),
                delivery_id = %job.delivery_id,
                "attempt failed; retry scheduled"
            ),
            (_, _, None) => tracing::warn!(
                attempt = job.attempt_number,
                delivery_id = %job.delivery_id,
                "attempt failed; the delivery has failed for good"
            ),
        }

        record_outcome(&mut record, format, attempted_at, outcome, retry);
        // The retry is published once, on this connection: if it is gone, the input cannot be acked
        // and comes back by itself, so a retry published on the next connection would make a
        // second chain of attempts.
        let scheduled = match retry {
            Some(retry) => {
                let next = DeliveryJob {
                    attempt_number: retry.attempt_number,
                    ..job.clone()
                };
                self.publish_job(&next, retry.tier, Some(retry.delay), &[])
                    .await
            }
            None => Ok(()),
        };
        // The outcome of an attempt whose pending row is in the log goes over that row, with no
        // record through the broker; where it cannot (the database is away, the row gone or
        // changed since the claim, the event erased, the outcome stored already), the record
        // does.
        if !(pending_logged && self.log_outcome(&record, span).await) {
            // The record waits for the next connection: the endpoint may have seen this
            // attempt, so the tenant's log must show its outcome.
            self.publish_record(&mut record, RECORD_PATIENCE).await?;
        }
        scheduled?;
        crate::metrics::attempt_settled(verdict, retry, job.manual, format);
        self.completed.remember(job);
        let delivered = verdict == Verdict::Delivered;
        if let Some(report) =
            self.health
                .observe(job.tenant_id(), &endpoint.url, delivered, attempted_at)
        {
            self.report_health(&report).await;
        }
        Ok(Attempted::Done)
    }

    /// Takes the send of a copy's attempt across dispatchers, with `pending` (its row) stored by
    /// the same statement; a copy that finds it taken is counted and logged here.
    async fn take_send(
        &self,
        job: &DeliveryJob,
        pending: AttemptRow,
    ) -> anyhow::Result<AttemptClaim> {
        let take_span = claims_span("UPSERT delivery_claims", true);
        let found = self
            .first_attempts
            .take_send(pending)
            .instrument(take_span)
            .await?;
        if found == AttemptClaim::ClaimedBefore {
            metrics::counter!("fp_dispatcher_twin_sends_held_total").increment(1);
            tracing::info!(
                delivery_id = %job.delivery_id,
                attempt = job.attempt_number,
                "this attempt's send was taken before (by a twin, or an earlier try of this \
                 input); waiting for its outcome"
            );
        }
        Ok(found)
    }

    /// Returns a message a dependency kept us from handling to the tail of its queue, after a pause
    /// so an outage does not become a hot loop. A copy is published (and confirmed) before the
    /// original is acked: a nack-requeue would count towards the queue's delivery limit, and a
    /// database outage longer than that limit would dead-letter healthy events.
    ///
    /// An input whose channel is gone (its connection was lost, often the very reason it could
    /// not be handled) is left alone: the broker hands the original out again by itself, and a
    /// copy beside it would make two inputs of one delivery that two dispatchers could both send.
    ///
    /// `asks`: how the copy asks the log; anything but [`AskLog::No`] (the input may hold its
    /// event's first-attempt claim or have a twin) is carried on in [`HANDED_BACK_HEADER`].
    async fn hand_back(
        &self,
        delivery: &Delivery,
        settlement: Settlement,
        source_queue: &str,
        asks: AskLog,
    ) {
        tokio::time::sleep(HAND_BACK_DELAY).await;
        if !settlement.usable() {
            tracing::debug!("its channel is gone; the broker hands it out again");
            return;
        }
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let copied = self
            .publisher
            .publish(&OutgoingMessage {
                exchange: "",
                routing_key: source_queue,
                message_id: &message_id,
                parent: None,
                payload: &delivery.data,
                headers: match asks {
                    AskLog::No => &[],
                    AskLog::AtOnce => &[(HANDED_BACK_HEADER, ASK_AT_ONCE)],
                    // An input is never handed back while it waits for a twin (`TwinSending`).
                    AskLog::AfterLag | AskLog::TwinSending => {
                        &[(HANDED_BACK_HEADER, ASK_AFTER_LAG)]
                    }
                },
                expiration: None,
            })
            .await;
        match copied {
            Ok(()) => settlement.ack().await,
            Err(error) => {
                tracing::debug!(%error, "could not copy it back; requeueing it instead");
                settlement.requeue().await;
            }
        }
    }

    /// Stores the outcome of an attempt whose claim stored its pending row over that row; false
    /// where it was not stored, for the record to go to log-ingest.
    async fn log_outcome(&self, record: &v1::DeliveryAttempt, span: &tracing::Span) -> bool {
        let row = match row_in_span(record, span) {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(%error, "the outcome has no row; sending its record");
                return false;
            }
        };
        // From the hand-over to the writer: its linger and the statement.
        let store_span = tracing::info_span!(
            target: OTEL_TARGET,
            "outcome",
            "otel.name" = "UPDATE delivery_attempts",
            "otel.kind" = "internal",
            "db.system.name" = "postgresql",
            "db.operation.name" = "UPDATE",
            "db.collection.name" = "delivery_attempts",
        );
        let stored = tokio::time::timeout(
            OUTCOME_PATIENCE,
            self.first_attempts.log_outcome(row).instrument(store_span),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {OUTCOME_PATIENCE:?}")));
        match stored {
            Ok(true) => {
                metrics::counter!("fp_dispatcher_outcomes_logged_total").increment(1);
                true
            }
            Ok(false) => {
                tracing::info!(
                    "the outcome's row is gone or changed since its claim (tenant deleted, \
                     event erased, or the outcome stored already); sending its record"
                );
                false
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not store the outcome; sending its record"
                );
                false
            }
        }
    }

    /// Publishes an attempt record in the next batch (`records`), waiting up to `patience` for a
    /// lost connection to come back. The record carries the context of its own span in the
    /// attempt's trace, which log-ingest keeps with its row.
    async fn publish_record(
        &self,
        record: &mut v1::DeliveryAttempt,
        patience: Duration,
    ) -> Result<(), std::sync::Arc<fp_broker::BrokerError>> {
        let attempt_id = record.attempt_id.clone();
        self.records
            .publish(&attempt_id, patience, |trace| {
                record.traceparent = trace.traceparent;
                record.tracestate = trace.tracestate;
                record.encode_to_vec()
            })
            .await
    }

    /// Health reports are advisory: one that cannot be published is logged, and the next one
    /// (due within the report interval) carries the news.
    async fn report_health(&self, report: &v1::EndpointHealthReport) {
        let published = self
            .publisher
            .publish(&OutgoingMessage {
                exchange: &self.names.endpoint_health_exchange,
                routing_key: if report.healthy { "healthy" } else { "failing" },
                message_id: &Uuid::now_v7().to_string(),
                parent: None,
                payload: &report.encode_to_vec(),
                headers: &[],
                expiration: None,
            })
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "could not publish an endpoint health report");
        }
    }

    /// Parks a job in the delay queue of `tier`; it comes back through the retry queue after
    /// `expiration` (or the tier's own delay).
    async fn publish_job(
        &self,
        job: &DeliveryJob,
        tier: Duration,
        expiration: Option<Duration>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        self.publisher
            .publish(&OutgoingMessage {
                exchange: "",
                routing_key: &self.names.delay_queue(tier),
                message_id: &format!("{}/{}", job.delivery_id, job.attempt_number),
                parent: None,
                payload: &fp_contracts::encode_job(job),
                headers,
                expiration,
            })
            .await?;
        Ok(())
    }
}

/// The span of a claim's statement on `delivery_claims`, named `otel_name`; `pending_row`: it
/// stores the attempt's pending row too.
fn claims_span(otel_name: &'static str, pending_row: bool) -> tracing::Span {
    tracing::info_span!(
        target: OTEL_TARGET,
        "claim",
        "otel.name" = otel_name,
        "otel.kind" = "internal",
        "db.system.name" = "postgresql",
        "db.operation.name" = "INSERT",
        "db.collection.name" = "delivery_claims",
        "fp.pending_row" = pending_row,
    )
}

/// A copy of an attempt already made is acked unsent: counted and logged.
fn skipped_as_made(job: &DeliveryJob, span: &tracing::Span) {
    metrics::counter!("fp_dispatcher_repeats_skipped_total").increment(1);
    span.record("fp.outcome", "already_made");
    tracing::info!(
        delivery_id = %job.delivery_id,
        attempt = job.attempt_number,
        "this attempt was already made and recorded; not sent again"
    );
}

/// The client span of one attempt, with the OpenTelemetry HTTP conventions' method and server
/// address: never the URL's path or query, where Slack and Discord keep their tokens.
fn client_span(target: &url::Url, job: &DeliveryJob) -> tracing::Span {
    tracing::info_span!(
        target: OTEL_TARGET,
        "http.client",
        "otel.name" = "POST",
        "otel.kind" = "client",
        "otel.status_code" = Empty,
        "http.request.method" = "POST",
        "server.address" = target.host_str().unwrap_or_default(),
        "server.port" = target.port_or_known_default().unwrap_or_default(),
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "fp.delivery_id" = %job.delivery_id,
        "fp.attempt" = job.attempt_number,
    )
}

fn record_client_outcome(span: &tracing::Span, outcome: &AttemptOutcome) {
    match &outcome.result {
        Ok(response) => {
            span.record("http.response.status_code", response.status);
            if response.status >= 400 {
                span.record("error.type", response.status.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(error) => {
            span.record("error.type", error.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// A decoded input: a fresh event, or a job continuing a delivery.
enum JobOrEvent {
    Event(Event),
    Job(DeliveryJob),
}

impl JobOrEvent {
    fn tenant_id(&self) -> Uuid {
        match self {
            JobOrEvent::Event(event) => event.tenant_id,
            JobOrEvent::Job(job) => job.tenant_id(),
        }
    }

    fn event_id(&self) -> Uuid {
        match self {
            JobOrEvent::Event(event) => event.id,
            JobOrEvent::Job(job) => job.event_id(),
        }
    }

    fn event_type(&self) -> EventType {
        match self {
            JobOrEvent::Event(event) => event.event_type(),
            JobOrEvent::Job(job) => job.event_type(),
        }
    }

    fn manual(&self) -> bool {
        matches!(self, JobOrEvent::Job(job) if job.manual)
    }
}

/// [`Dispatcher::in_flight_horizon`] for a client with these timeouts.
pub fn in_flight_horizon(connect_timeout: Duration, request_timeout: Duration) -> Duration {
    connect_timeout + request_timeout + OUTCOME_PATIENCE + RECORD_PATIENCE + LOG_LAG_ALLOWANCE
}

/// The row of `record` in the trace of the delivery's span, as a pending record's row is in its
/// own: what the dispatcher writes to the log itself.
fn row_in_span(
    record: &v1::DeliveryAttempt,
    span: &tracing::Span,
) -> Result<AttemptRow, fp_contracts::DecodeError> {
    let trace = fp_telemetry::propagation::StoredContext::of_span(span);
    let mut row = AttemptRow::from_record(record)?;
    row.traceparent = trace.traceparent;
    row.tracestate = trace.tracestate;
    Ok(row)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The receiver's `Retry-After`, or Discord's `retry_after` in a JSON body.
fn retry_after(response: &DeliveryResponse, now: DateTime<Utc>) -> Option<Duration> {
    let header = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| parse_retry_after(value, now));
    header.or_else(|| {
        let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        let seconds = body.get("retry_after")?.as_f64()?;
        parse_retry_after(&seconds.to_string(), now)
    })
}

fn headers_to_proto(headers: Vec<(String, String)>) -> Vec<v1::Header> {
    headers
        .into_iter()
        .map(|(name, value)| v1::Header { name, value })
        .collect()
}

/// The record of an attempt about to be sent: what is sent, and `interrupted` until its outcome
/// replaces it.
fn pending_record(
    job: &DeliveryJob,
    endpoint: &Endpoint,
    attempted_at: DateTime<Utc>,
    request_headers: &[(String, String)],
    request_body: Vec<u8>,
) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        attempt_id: Uuid::now_v7().to_string(),
        delivery_id: job.delivery_id.to_string(),
        event_id: job.event_id().to_string(),
        tenant_id: job.tenant_id().to_string(),
        event_type: job.event_type().as_str().to_owned(),
        url: endpoint.url.clone(),
        attempt_number: job.attempt_number,
        attempted_at: Some(timestamp_from(attempted_at)),
        request_headers: headers_to_proto(request_headers.to_vec()),
        request_body,
        manual: job.manual,
        outcome_pending: true,
        error_kind: fp_contracts::INTERRUPTED_ERROR_KIND.to_owned(),
        error_message: fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned(),
        ..v1::DeliveryAttempt::default()
    }
}

/// The record of a delivery cancelled because its event was erased: final, nothing sent, no
/// headers or bodies.
fn cancelled_record(
    job: &DeliveryJob,
    endpoint: &Endpoint,
    at: DateTime<Utc>,
) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        outcome_pending: false,
        r#final: true,
        error_kind: fp_domain::erasure::CANCELLED_ERROR_KIND.to_owned(),
        error_message: fp_domain::erasure::CANCELLED_ERROR_MESSAGE.to_owned(),
        ..pending_record(job, endpoint, at, &[], Vec::new())
    }
}

/// Turns a pending record into the attempt's outcome.
fn record_outcome(
    record: &mut v1::DeliveryAttempt,
    format: EndpointFormat,
    attempted_at: DateTime<Utc>,
    outcome: AttemptOutcome,
    retry: Option<PlannedRetry>,
) {
    record.outcome_pending = false;
    record.error_kind.clear();
    record.error_message.clear();
    record.duration_ms = duration_ms(outcome.duration);
    record.r#final = retry.is_none();
    record.next_retry_at = retry.and_then(|retry| {
        chrono::Duration::from_std(retry.delay)
            .ok()
            .map(|delay| timestamp_from(attempted_at + delay))
    });
    match outcome.result {
        Ok(response) => {
            record.response_status = Some(u32::from(response.status));
            if (300..400).contains(&response.status) {
                let location = response
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("location"))
                    .map_or("(none)", |(_, value)| value.as_str());
                record.error_kind = "redirect".to_owned();
                record.error_message = format!(
                    "the endpoint answered HTTP {} to Location {location}; redirects are not followed",
                    response.status
                );
            } else if !(200..300).contains(&response.status) {
                record.error_kind = "http_status".to_owned();
                record.error_message = format!(
                    "the {} endpoint answered HTTP {}",
                    format.as_str(),
                    response.status
                );
            }
            record.response_headers = headers_to_proto(response.headers);
            record.response_body = response.body;
            record.response_truncated = response.body_truncated;
        }
        Err(error) => {
            record.error_kind = error.kind().to_owned();
            record.error_message = error.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_waits_no_longer_than_an_attempt_can_be_in_flight() {
        let horizon = in_flight_horizon(Duration::from_secs(5), Duration::from_secs(15));
        // The maker's connect and request timeouts, its wait for the database to take the
        // outcome, its record's patience on a new connection, and log-ingest's lag: an outcome
        // cannot come later than that.
        assert_eq!(horizon, Duration::from_secs(5 + 15 + 5 + 30 + 5));
        assert!(horizon > RECORD_PATIENCE);
    }
}
