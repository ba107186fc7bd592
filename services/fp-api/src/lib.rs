//! The tenant API. It owns tenants, keys, webhook configs, submissions and the outbox; every event
//! it emits is committed in the same transaction as the change it announces, then published by
//! [`outbox_relay`].

mod auth;
mod error;
mod json_body;
pub mod outbox_relay;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use fp_broker::Broker;
use fp_domain::address_policy::AddressPolicy;
use fp_settings::Settings;
use fp_store::PgPool;
use tokio::sync::Notify;

/// What every request handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub pool: PgPool,
    /// The dispatcher's policy (same allow-list keys), so a save is judged as a delivery would be.
    pub policy: Arc<AddressPolicy>,
    /// Wakes the relay right after an outbox row commits, so events leave without waiting a poll.
    pub outbox_wakeup: Arc<Notify>,
}

/// Largest request body accepted; config and submission bodies are far smaller.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Starts the relay and serves HTTP until the process is told to stop.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let pool = fp_store::pool(&settings.database.url, settings.database.pool_size)?;
    fp_store::ensure_migrated(&pool)
        .await
        .context("fp-api cannot start")?;
    let broker = Broker::connect(&settings.broker.url, &settings.broker.namespace)
        .await
        .context("fp-api cannot start")?;
    let publisher = broker.publisher().await?;

    let policy = Arc::new(AddressPolicy::with_allow_list(
        settings.dispatcher.allow_private_cidrs.clone(),
    ));
    let state = AppState {
        pool: pool.clone(),
        policy,
        outbox_wakeup: Arc::new(Notify::new()),
    };

    let relay = outbox_relay::OutboxRelay {
        pool,
        publisher,
        exchange: broker.names.events_exchange.clone(),
        wakeup: state.outbox_wakeup.clone(),
        poll_interval: Duration::from_millis(settings.api.outbox_poll_interval_ms),
    };
    let relay_task = tokio::spawn(relay.run());

    let listen = settings.api.listen;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms"))
            .configure(routes::configure)
    })
    .bind(listen)
    .with_context(|| format!("fp-api cannot listen on {listen}"))?;
    tracing::info!(%listen, "fp-api listening");
    server.run().await?;
    relay_task.abort();
    broker.close().await;
    Ok(())
}
