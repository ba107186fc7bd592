//! The dispatcher: consumes events from the shared queue, delivers each to the tenant's endpoint,
//! records each attempt's outcome (a fresh event's first attempt, or a copy's whose send it took,
//! in PostgreSQL, over the pending row its claim stored; any other as a record through the broker
//! to log-ingest), and acks the event only after that outcome is committed or confirmed. A crash at any point leaves the event
//! unacked, so it is delivered again (at least once; the delivery id stays the same, so receivers
//! can deduplicate).

mod batch_writer;
mod completed;
mod config_cache;
mod delivery;
mod endpoint_health;
mod endpoint_limits;
mod first_attempts;
mod host_rates;
mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fp_broker::{BatchLimits, BatchTarget, Broker, Declarations, QueueOptions};
use fp_delivery::{DeliveryClient, DeliveryConfig};
use fp_domain::address_policy::AddressPolicy;
use fp_settings::{ExposeSecret, Settings};
use fp_telemetry::health::{self, Health};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config_cache::{ConfigCache, Lifetimes};
use crate::delivery::{Dispatcher, Input};
use crate::endpoint_health::HealthReporter;
use crate::endpoint_limits::EndpointLimits;
use crate::host_rates::HostRates;

/// Stored response bodies are capped; the rest is discarded and the attempt marked truncated.
const RESPONSE_BODY_CAP: usize = 64 * 1024;

/// A record batch takes no further record once it holds this many bytes, so one message stays far
/// below RabbitMQ's size limit and log-ingest's memory per message stays small.
const RECORD_BATCH_BYTES: usize = 1024 * 1024;

/// Routing key of attempt-record batches (a batch mixes event types; log-ingest's queue takes all).
const ATTEMPT_BATCH_ROUTING_KEY: &str = "attempts";

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // reqwest is built without a default crypto provider: name ring explicitly, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dispatcher_settings = &settings.dispatcher;
    // Checked first: without the key no signed delivery can be made.
    let master_key = settings
        .secrets
        .master_key()
        .context("fp-dispatcher cannot start")?
        .clone();

    let health = Health::new();
    let health_addr = health::serve(dispatcher_settings.health_listen, health.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve health on {}",
                dispatcher_settings.health_listen
            )
        })?;
    tracing::info!(%health_addr, "health endpoints up");
    crate::metrics::runtime_sized();

    let policy = Arc::new(AddressPolicy::with_allow_list(
        dispatcher_settings.allow_private_cidrs.clone(),
    ));
    if !policy.allow_list().is_empty() {
        let allowed: Vec<String> = policy
            .allow_list()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            allowed = allowed.join(","),
            "SSRF allow-list is set: deliveries may reach these private networks"
        );
    }
    let client = DeliveryClient::new(
        &DeliveryConfig {
            connect_timeout: Duration::from_millis(dispatcher_settings.connect_timeout_ms),
            request_timeout: Duration::from_millis(dispatcher_settings.request_timeout_ms),
            response_body_cap: RESPONSE_BODY_CAP,
        },
        policy,
        dispatcher_settings.extra_root_certs.as_deref(),
        dispatcher_settings.hosts_file.as_deref(),
    )?;

    let pool = fp_store::pool(
        settings.database.url.expose_secret(),
        settings.database.pool_size,
    )?;
    fp_store::ensure_migrated(&pool)
        .await
        .context("fp-dispatcher cannot start")?;
    health.require(
        "database",
        fp_store::Reachability::watch(pool.clone(), settings.lifecycle.readiness_probe_interval())
            .into_check(),
    );
    // Supervised: the dispatcher starts (not ready) while RabbitMQ is away and reconnects by
    // itself; every connection first declares the topology and this schedule's delay queues.
    let broker = Broker::supervise(
        settings.broker.url.expose_secret(),
        &settings.broker.namespace,
        Declarations {
            topology: true,
            delay_tiers: dispatcher_settings.delay_tiers(),
            queues: QueueOptions {
                quorum_initial_group_size: settings.broker.quorum_initial_group_size,
            },
        },
    );
    health.require("broker", broker.readiness_check());
    let publisher = broker.publisher();
    let consumer_tag = format!("fp-dispatcher-{}", std::process::id());
    let prefetch = dispatcher_settings.prefetch;
    let events = broker.consume_settled(&broker.names.dispatcher_queue, &consumer_tag, prefetch);
    let jobs = broker.consume_settled(&broker.names.retry_queue, &consumer_tag, prefetch);
    let mut inputs = futures_util::stream::select(
        events.map(|delivery| (Input::Event, delivery)),
        jobs.map(|delivery| (Input::Job, delivery)),
    );

    let configs = Arc::new(ConfigCache::new(
        pool.clone(),
        Lifetimes {
            ttl: Duration::from_millis(dispatcher_settings.config_cache_ttl_ms),
            max_age: Duration::from_millis(dispatcher_settings.config_cache_max_age_ms),
        },
        master_key,
    ));
    let (stop_listening, listening_stopped) = watch::channel(false);
    let config_changes = tokio::spawn(fp_store::notifications::follow(
        &fp_store::config_changes::CHANNEL,
        settings.database.url.clone(),
        configs.clone(),
        listening_stopped,
    ));
    let dispatcher = Arc::new(Dispatcher {
        configs,
        first_attempts: first_attempts::FirstAttemptLog::start(
            pool.clone(),
            Duration::from_millis(dispatcher_settings.outcome_linger_ms),
        ),
        pool,
        completed: completed::CompletedAttempts::new(),
        client,
        records: publisher.batched(
            BatchTarget {
                exchange: broker.names.attempts_exchange.clone(),
                routing_key: ATTEMPT_BATCH_ROUTING_KEY.to_owned(),
                message_type: fp_contracts::ATTEMPT_BATCH_TYPE,
                frame: fp_contracts::encode_attempt_batch,
            },
            BatchLimits {
                max_messages: dispatcher_settings.record_batch_max.get(),
                max_bytes: RECORD_BATCH_BYTES,
                in_flight: dispatcher_settings.record_batches_in_flight.get(),
            },
        ),
        publisher,
        names: broker.names.clone(),
        schedule: dispatcher_settings.retry_schedule.clone(),
        limits: EndpointLimits::new(dispatcher_settings.max_in_flight_per_endpoint),
        host_rates: HostRates::new(
            dispatcher_settings.host_requests_per_second,
            dispatcher_settings.host_request_burst,
        ),
        busy_delay: dispatcher_settings.endpoint_busy_delay(),
        in_flight_horizon: delivery::in_flight_horizon(
            Duration::from_millis(dispatcher_settings.connect_timeout_ms),
            Duration::from_millis(dispatcher_settings.request_timeout_ms),
        ),
        health: HealthReporter::new(Duration::from_millis(
            dispatcher_settings.health_report_interval_ms,
        )),
    });
    health.set_ready(true);
    tracing::info!(
        events = %broker.names.dispatcher_queue,
        retries = %broker.names.retry_queue,
        "dispatcher consuming"
    );

    // Each message is handled in its own task; the prefetch limits bound how many run at once.
    let mut in_flight = InFlight::default();
    let shutdown = fp_telemetry::lifecycle::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            next = inputs.next() => match next {
                Some((input, inbound)) => {
                    let dispatcher = dispatcher.clone();
                    in_flight.spawn(input, inbound, |input, inbound| async move {
                        dispatcher.handle(input, inbound).await
                    });
                }
                // Only a closed broker ends the consumers; a lost connection is consumed again.
                None => break,
            },
            Some(()) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }

    health.set_ready(false);
    tracing::info!(
        in_flight = in_flight.len(),
        "stopping: draining in-flight deliveries"
    );
    // The consumers are cancelled, so the broker does not refill the prefetch as the drain's
    // acks free it: what comes after stays in the queues for the other dispatchers. Their
    // channels stay open while the drain lasts, so the inputs finished now are acked (closed
    // first, they would send every input in flight back to its queue, to be handled again). The
    // few messages already on their way when the cancel landed are not pulled; they return to
    // the queue when the channels close, after the drain. The drain does not wait for the
    // cancel's answer: on a connection that died unnoticed that waits for the heartbeat.
    let drain = in_flight.drain(settings.lifecycle.drain_timeout());
    tokio::pin!(drain);
    tokio::select! {
        // The cancel first: its frames go out on its first poll, even when the drain is done.
        biased;
        outcome = broker.stop_consuming() => {
            if outcome.failed == 0 {
                tracing::info!(
                    cancelled = outcome.cancelled,
                    "consumers cancelled: the broker sends this dispatcher nothing more"
                );
            } else {
                tracing::warn!(
                    cancelled = outcome.cancelled,
                    failed = outcome.failed,
                    "some consumers could not be cancelled; their channels close after the drain"
                );
            }
            drain.await;
        }
        () = &mut drain => {}
    }
    drop(inputs);
    let _ = stop_listening.send(true);
    let _ = config_changes.await;
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// How often a drain says what it still waits for.
const DRAIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// How many of the inputs a drain still waits for it names in each report.
const DRAIN_INPUTS_NAMED: usize = 5;

/// The tasks handling inputs, and which input each handles: a drain that takes long names the
/// inputs it waits for, which the deliveries' own log lines then tell about.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    inputs: HashMap<tokio::task::Id, InputInFlight>,
}

struct InputInFlight {
    input: Input,
    message_id: String,
    redelivered: bool,
    since: tokio::time::Instant,
}

impl std::fmt::Display for InputInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.input {
            Input::Event => "event",
            Input::Job => "job",
        };
        let redelivered = if self.redelivered {
            ", redelivered"
        } else {
            ""
        };
        write!(
            f,
            "{kind} {} ({} ms{redelivered})",
            self.message_id,
            self.since.elapsed().as_millis()
        )
    }
}

impl InFlight {
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        &mut self,
        input: Input,
        inbound: fp_broker::Inbound,
        handle: impl FnOnce(Input, fp_broker::Inbound) -> F,
    ) {
        let described = InputInFlight {
            input,
            message_id: inbound
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            redelivered: inbound.delivery.redelivered,
            since: tokio::time::Instant::now(),
        };
        let task = self.tasks.spawn(handle(input, inbound));
        self.inputs.insert(task.id(), described);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The next task to end; `None` when there is none.
    async fn join_next(&mut self) -> Option<()> {
        match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => {
                self.inputs.remove(&id);
            }
            Err(error) => {
                // Its settlement, dropped with the task, returned its input to its queue.
                let input = self.inputs.remove(&error.id());
                tracing::error!(
                    %error,
                    input = %input.map(|input| input.to_string()).unwrap_or_default(),
                    "the task handling an input ended abnormally"
                );
            }
        }
        Some(())
    }

    /// Waits up to `timeout` for the tasks, saying every few seconds which inputs are left.
    async fn drain(&mut self, timeout: Duration) {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        // On a clock of its own: inputs that keep finishing do not put the report off.
        let mut next_report = (started + DRAIN_PROGRESS_INTERVAL).min(deadline);
        loop {
            match tokio::time::timeout_at(next_report, self.join_next()).await {
                Ok(Some(())) => {}
                Ok(None) => {
                    tracing::info!(
                        drain_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "in-flight deliveries drained"
                    );
                    return;
                }
                Err(_) if next_report >= deadline => {
                    tracing::warn!(
                        still_in_flight = self.len(),
                        inputs = %self.oldest_inputs(),
                        "drain timed out; their inputs return to their queues"
                    );
                    return;
                }
                Err(_) => {
                    tracing::info!(
                        still_in_flight = self.len(),
                        inputs = %self.oldest_inputs(),
                        "still draining in-flight deliveries"
                    );
                    // From this report, so that one that came late does not bring the next on.
                    next_report =
                        (tokio::time::Instant::now() + DRAIN_PROGRESS_INTERVAL).min(deadline);
                }
            }
        }
    }

    /// The longest-running inputs, oldest first.
    fn oldest_inputs(&self) -> String {
        let mut inputs: Vec<&InputInFlight> = self.inputs.values().collect();
        inputs.sort_by_key(|input| input.since);
        inputs
            .iter()
            .take(DRAIN_INPUTS_NAMED)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}
