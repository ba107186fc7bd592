//! The dashboard: server-rendered pages for tenant admins.
//!
//! It reads PostgreSQL through a read-only role and never writes a table (writes will go through
//! the api). Hence sessions are signed cookies rather than rows; see [`session`].

mod api_client;
mod error;
mod i18n;
mod pages;
mod password;
mod session;
mod throttle;
mod views;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, Logger};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use fp_domain::session_token::SessionKey;
use fp_settings::Settings;
use fp_store::{PgPool, PooledConnection, StoreError};
use fp_telemetry::health::{self, Health};
use ring::rand::SystemRandom;

use crate::api_client::ApiClient;
use crate::i18n::Catalog;
use crate::password::PasswordChecker;
use crate::session::SessionSigner;
use crate::throttle::LoginThrottle;
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
    pub signer: SessionSigner,
    pub passwords: PasswordChecker,
    /// Failed log-ins per email and client, in this process's memory.
    pub login_throttle: LoginThrottle,
    pub templates: Templates,
    pub rng: SystemRandom,
}

impl AppState {
    fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        if settings.dashboard.session_key.trim().is_empty() {
            anyhow::bail!(
                "dashboard.session_key is required (FP__DASHBOARD__SESSION_KEY, e.g. `openssl rand \
                 -hex 32`): it signs sessions, and the api verifies the dashboard's writes with it"
            );
        }
        let signer = SessionSigner::new(SessionKey::from_hex(&settings.dashboard.session_key)?);
        Ok(AppState {
            pool: fp_store::pool(&settings.database.readonly_url, settings.database.pool_size)?,
            api: ApiClient::new(&settings.dashboard.api_url)?,
            catalog: Catalog::load().context("the embedded texts do not load")?,
            signer,
            passwords: PasswordChecker::new(&rng)?,
            login_throttle: LoginThrottle::default(),
            templates: Templates::load().context("the embedded templates do not parse")?,
            rng,
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

    let listen = settings.dashboard.listen;
    let server = HttpServer::new(move || app(state.clone()))
        // SIGTERM: stop accepting, let requests in flight finish for up to the drain timeout.
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
        .app_data(web::FormConfig::default().limit(MAX_FORM_BYTES))
        .configure(pages::routes)
        .default_service(web::to(pages::not_found))
        .wrap(ErrorHandlers::new().default_handler(error::render_error_page))
        // Outside the error pages, whose redirects may set cookies too.
        .wrap(actix_web::middleware::from_fn(
            session::secure_cookies_over_https,
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
