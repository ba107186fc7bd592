//! The tenant API. It owns tenants, keys, webhook configs, submissions and the outbox; every event
//! it emits is committed in the same transaction as the change it announces, then published by
//! [`outbox_relay`].

mod auth;
mod endpoint_health;
mod error;
mod json_body;
mod key_cache;
mod login_throttle;
mod maintenance;
mod metrics;
mod notifier;
mod openapi;
pub mod outbox_relay;
mod password;
mod rate_limit;
mod request_id;
mod routes;
mod submission_writer;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use fp_broker::{Broker, Declarations, Names, Publisher, QueueOptions};
use fp_delivery::PinningResolver;
use fp_domain::address_policy::{AddressPolicy, Cidr};
use fp_domain::secret_box::MasterKey;
use fp_domain::session::SessionTimeouts;
use fp_settings::{ExposeSecret, Settings};
use fp_store::PgPool;
use fp_telemetry::health::{self, Health};
use tokio::sync::watch;

/// What every request handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub pool: PgPool,
    /// The dispatcher's policy (same allow-list keys), so a save is judged as a delivery would be.
    pub policy: Arc<AddressPolicy>,
    /// The dispatcher's resolver (same hosts file, same policy), so a name is judged by its answers.
    pub resolver: Arc<PinningResolver>,
    /// Hands committed outbox rows to the relay, so events leave without waiting for a poll.
    pub outbox: outbox_relay::OutboxHandoff,
    /// Where new submissions go to be committed in batches.
    pub submissions: submission_writer::SubmissionQueue,
    /// Live API keys, emptied of each key as it is revoked (by any api process).
    pub key_cache: Arc<key_cache::KeyCache>,
    /// Seals webhook secrets before they are stored.
    pub master_key: MasterKey,
    /// When dashboard sessions end.
    pub session_timeouts: SessionTimeouts,
    /// Peers whose `X-Forwarded-For` is believed (`api.trusted_proxies`).
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// Checks log-in passwords (in constant time whether or not the user exists).
    pub passwords: Arc<password::PasswordChecker>,
    /// Source of the nonce of every sealed secret.
    pub rng: Arc<ring::rand::SystemRandom>,
    /// How long a replaced webhook secret still signs deliveries.
    pub secret_rotation_grace: chrono::TimeDelta,
    /// Publishes manual redeliveries (with confirms) straight to the dispatchers' retry queue.
    pub job_publisher: Publisher,
    pub broker_names: Names,
    /// Per-tenant limits of redelivery and test events (`api.rate_limits`).
    pub rate_limits: fp_settings::TenantRateLimits,
    /// How many days delivery records are kept (`retention.max_days`): the most a tenant may keep
    /// payloads.
    pub retention_max_days: u32,
}

/// Largest request body accepted; config and submission bodies are far smaller.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

fn session_timeouts(settings: &Settings) -> anyhow::Result<SessionTimeouts> {
    let timeout = |timeout: Duration, key: &str| {
        chrono::TimeDelta::from_std(timeout).with_context(|| format!("{key} is out of range"))
    };
    Ok(SessionTimeouts {
        idle: timeout(
            settings.api.session_idle_timeout,
            "api.session_idle_timeout",
        )?,
        absolute: timeout(
            settings.api.session_absolute_timeout,
            "api.session_absolute_timeout",
        )?,
    })
}

/// Starts the relay and serves HTTP until the process is told to stop.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Checked first: without the key no secret can be saved, so the api must not serve at all.
    let master_key = settings
        .secrets
        .master_key()
        .context("fp-api cannot start")?
        .clone();
    let pool = fp_store::pool(
        settings.database.url.expose_secret(),
        settings.database.pool_size,
    )?;
    fp_store::ensure_migrated(&pool)
        .await
        .context("fp-api cannot start")?;
    let health = Health::new();
    // Probes and metrics on their own address, never on the public one.
    let health_addr = health::serve(settings.api.health_listen, health.clone())
        .await
        .with_context(|| format!("cannot serve health on {}", settings.api.health_listen))?;
    tracing::info!(%health_addr, "health endpoints up");
    health.require(
        "database",
        fp_store::Reachability::watch(pool.clone(), settings.lifecycle.readiness_probe_interval())
            .into_check(),
    );
    // Supervised: submissions are taken (into the outbox) while RabbitMQ is away, and the relay
    // and the health consumer carry on by themselves once it is back.
    let broker = Broker::supervise(
        settings.broker.url.expose_secret(),
        &settings.broker.namespace,
        Declarations::topology(QueueOptions {
            quorum_initial_group_size: settings.broker.quorum_initial_group_size,
        }),
    );
    health.require("broker", broker.readiness_check());

    let policy = Arc::new(AddressPolicy::with_allow_list(
        settings.dispatcher.allow_private_cidrs.clone(),
    ));
    let lookup = fp_delivery::system_lookup(settings.dispatcher.hosts_file.as_deref())
        .context("fp-api cannot start")?;
    let resolver = Arc::new(PinningResolver::new(lookup, policy.clone()));
    let rng = ring::rand::SystemRandom::new();
    let (outbox, outbox_handoffs) = outbox_relay::OutboxHandoff::channel();
    let (submissions, submission_writer) = submission_writer::queue(
        pool.clone(),
        outbox.clone(),
        settings.api.submission_batch_max,
        settings.api.submission_writers,
    );
    let state = AppState {
        pool: pool.clone(),
        policy,
        resolver,
        outbox,
        submissions,
        key_cache: Arc::new(key_cache::KeyCache::new(
            settings.api.key_cache_capacity,
            settings.api.key_cache_ttl,
        )),
        master_key,
        session_timeouts: session_timeouts(&settings)?,
        trusted_proxies: Arc::new(settings.api.trusted_proxies.clone()),
        passwords: Arc::new(password::PasswordChecker::new(&rng).context("fp-api cannot start")?),
        rng: Arc::new(rng),
        secret_rotation_grace: chrono::TimeDelta::from_std(settings.api.secret_rotation_grace)
            .context("api.secret_rotation_grace is out of range")?,
        job_publisher: broker.publisher(),
        broker_names: broker.names.clone(),
        rate_limits: settings.api.rate_limits,
        retention_max_days: settings.retention.max_days.get(),
    };

    // Background work stops when this turns true, after the HTTP server has drained.
    let (stop, stopping) = watch::channel(false);
    let relay = outbox_relay::OutboxRelay {
        pool,
        broker: broker.clone(),
        publisher: broker.publisher(),
        exchange: broker.names.events_exchange.clone(),
        handoffs: outbox_handoffs,
        handoff_grace: Duration::from_millis(settings.api.outbox_handoff_grace_ms),
        poll_interval: Duration::from_millis(settings.api.outbox_poll_interval_ms),
        pipelines: settings.api.outbox_relay_pipelines,
    };
    // The relay stops after the writers, so that it publishes what they commit while stopping.
    let (relay_stop, relay_stopping) = watch::channel(false);
    let relay_task = tokio::spawn(relay.run(relay_stopping));
    let key_revocations_task = state.key_cache.is_enabled().then(|| {
        tokio::spawn(fp_store::notifications::follow(
            &fp_store::key_revocations::CHANNEL,
            settings.database.url.clone(),
            state.key_cache.clone(),
            stop.subscribe(),
        ))
    });
    let writer_tasks = submission_writer.spawn(settings.api.submission_writers, stop.subscribe());
    let health_consumer = broker.consume(
        &broker.names.endpoint_health_queue,
        &format!("fp-api-{}", std::process::id()),
        64,
    );
    let notifier = notifier::start(&settings, state.pool.clone(), stop.subscribe())
        .context("fp-api cannot start")?;
    let (notifier_wakeup, notifier_task) = notifier.unzip();
    let health_recorder = endpoint_health::EndpointHealthRecorder {
        pool: state.pool.clone(),
        publisher: broker.publisher(),
        names: broker.names.clone(),
        disable_after: settings.api.disable_failing_endpoints_after,
        notifier: notifier_wakeup,
    };
    let health_task = tokio::spawn(health_recorder.run(health_consumer, stopping));
    let sampler_task = tokio::spawn(
        metrics::Sampler {
            pool: state.pool.clone(),
            broker: broker.clone(),
        }
        .run(stop.subscribe()),
    );
    let maintenance_task = tokio::spawn(
        maintenance::Maintenance {
            database_url: settings.database.url.clone(),
            outbox_grace: chrono::TimeDelta::from_std(settings.retention.outbox_grace())
                .context("retention.outbox_grace_hours is out of range")?,
            submission_event_retention: chrono::TimeDelta::from_std(
                settings.submission_event_retention(),
            )
            .context("retention.max_days or dispatcher.retry_schedule is out of range")?,
            interval: settings.retention.maintenance_interval,
        }
        .run(stop.subscribe()),
    );

    let listen = settings.api.listen;
    let drain = settings.lifecycle.drain_timeout();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(actix_web::middleware::from_fn(request_id::middleware))
            // Outermost: counts every answer, the request id middleware's included.
            .wrap(actix_web::middleware::from_fn(
                fp_telemetry::metrics::actix_middleware,
            ))
            .app_data(web::QueryConfig::default().error_handler(|error, _| {
                error::ApiError::invalid("query", error.to_string()).into()
            }))
            .configure(routes::configure)
            .default_service(web::to(routes::unknown_route))
    })
    // Outlasts the idle timeout of any proxy or client pool in front, which then closes first.
    .keep_alive(settings.api.keep_alive)
    // SIGTERM: stop accepting, close idle connections, let requests in flight finish for up to
    // the drain timeout.
    .shutdown_timeout(drain.as_secs().max(1))
    .bind(listen)
    .with_context(|| format!("fp-api cannot listen on {listen}"))?;
    tracing::info!(%listen, "fp-api listening");
    health.set_ready(true);
    server.run().await?;
    health.set_ready(false);

    // The relay finishes its batch (or leaves it unmarked, to go out again) and the health
    // recorder its report, then both end.
    let _ = stop.send(true);
    let background = async {
        // Submissions still queued are written first.
        for writer_task in writer_tasks {
            let _ = writer_task.await;
        }
        let _ = relay_stop.send(true);
        let _ = relay_task.await;
        let _ = health_task.await;
        let _ = sampler_task.await;
        let _ = maintenance_task.await;
        if let Some(key_revocations_task) = key_revocations_task {
            let _ = key_revocations_task.await;
        }
        if let Some(notifier_task) = notifier_task {
            let _ = notifier_task.await;
        }
    };
    if tokio::time::timeout(drain, background).await.is_err() {
        tracing::warn!("background work did not finish within the drain timeout");
    }
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}
