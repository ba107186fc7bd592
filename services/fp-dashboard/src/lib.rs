//! The dashboard: server-rendered pages for tenant admins.
//!
//! It reads PostgreSQL through a read-only role and never writes a table: writes, log-ins and
//! sessions go through the api (see [`api_client`], [`session`]).

mod api_client;
mod error;
mod i18n;
mod local_time;
mod pages;
mod session;
mod views;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, Logger};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use fp_settings::{ExposeSecret, Settings};
use fp_store::{PgPool, PooledConnection, StoreError};
use fp_telemetry::health::{self, Health};
use ring::rand::SystemRandom;

use crate::api_client::ApiClient;
use crate::i18n::Catalog;
use crate::session::{CsrfSigner, ServedOverHttps};
use crate::views::Templates;

/// Nothing but scripts-free pages and our own stylesheet may load; no framing, no form posts
/// elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The log-in and log-out forms are tiny.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What every request handler can reach.
pub(crate) struct AppState {
    pub pool: PgPool,
    /// The api, for every write (the dashboard's own role only reads).
    pub api: ApiClient,
    pub catalog: Catalog,
    /// Signs the forms' CSRF tokens.
    pub signer: CsrfSigner,
    pub templates: Templates,
    pub rng: SystemRandom,
    /// Proxies in front of the dashboard whose `X-Forwarded-For` names the browser.
    pub trusted_proxies: Vec<fp_domain::address_policy::Cidr>,
    /// The api's `api.disable_failing_endpoints_after` (the same key), to tell a tenant when its
    /// failing endpoint will be disabled.
    pub disable_failing_endpoints_after: std::time::Duration,
}

impl AppState {
    fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        if settings
            .dashboard
            .session_key
            .expose_secret()
            .trim()
            .is_empty()
        {
            anyhow::bail!(
                "dashboard.session_key is required (FP__DASHBOARD__SESSION_KEY, e.g. `openssl rand \
                 -hex 32`): the forms' CSRF tokens are signed with a key derived from it"
            );
        }
        let signer = CsrfSigner::from_hex(settings.dashboard.session_key.expose_secret())?;
        Ok(AppState {
            pool: fp_store::pool(
                settings.database.readonly_url.expose_secret(),
                settings.database.pool_size,
            )?,
            api: ApiClient::new(&settings.dashboard.api_url)?,
            catalog: Catalog::load().context("the embedded texts do not load")?,
            signer,
            templates: Templates::load().context("the embedded templates do not parse")?,
            rng,
            trusted_proxies: settings.dashboard.trusted_proxies.clone(),
            disable_failing_endpoints_after: settings.api.disable_failing_endpoints_after,
        })
    }

    async fn connection(&self) -> Result<PooledConnection, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Checks the schema, then serves HTTP until the process is told to stop.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let state = AppState::from_settings(&settings).context("fp-dashboard cannot start")?;
    fp_store::ensure_migrated(&state.pool)
        .await
        .context("fp-dashboard cannot start")?;
    let health = Health::new();
    // Probes and metrics on their own address, never on the public one.
    let health_addr = health::serve(settings.dashboard.health_listen, health.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve health on {}",
                settings.dashboard.health_listen
            )
        })?;
    tracing::info!(%health_addr, "health endpoints up");
    health.require(
        "database",
        fp_store::Reachability::watch(
            state.pool.clone(),
            settings.lifecycle.readiness_probe_interval(),
        )
        .into_check(),
    );
    let state = web::Data::new(state);
    let https = web::Data::new(ServedOverHttps(settings.dashboard.served_over_https()));

    let listen = settings.dashboard.listen;
    let server = HttpServer::new(move || app(state.clone(), https.clone()))
        // Outlasts the idle timeout of the proxy in front, which then closes first (no race).
        .keep_alive(settings.dashboard.keep_alive)
        // SIGTERM: stop accepting, close idle connections, let requests in flight finish for up
        // to the drain timeout.
        .shutdown_timeout(settings.lifecycle.drain_timeout().as_secs().max(1))
        .bind(listen)
        .with_context(|| format!("fp-dashboard cannot listen on {listen}"))?;
    tracing::info!(%listen, "fp-dashboard listening");
    health.set_ready(true);
    server.run().await?;
    tracing::info!("stopped");
    Ok(())
}

fn app(
    state: web::Data<AppState>,
    https: web::Data<ServedOverHttps>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(https)
        .app_data(web::FormConfig::default().limit(MAX_FORM_BYTES))
        .configure(pages::routes)
        .default_service(web::to(pages::not_found))
        .wrap(ErrorHandlers::new().default_handler(error::render_error_page))
        // Outside the error pages, whose redirects may set cookies too.
        .wrap(actix_web::middleware::from_fn(
            session::https_only_when_configured,
        ))
        // Outside the error pages, so they carry the headers too.
        .wrap(
            DefaultHeaders::new()
                .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Referrer-Policy", "same-origin")),
        )
        // Outside the error pages: counts every page by its route template, errors included.
        .wrap(actix_web::middleware::from_fn(
            fp_telemetry::metrics::actix_middleware,
        ))
        .wrap(Logger::new("%r %s %Dms"))
        // Outermost: the request's server span covers everything above, and the api calls a
        // page makes are its children (they carry its `traceparent`).
        .wrap(actix_web::middleware::from_fn(
            fp_telemetry::http_server::middleware,
        ))
}

#[cfg(test)]
mod tests;
