//! Logging and OpenTelemetry traces shared by every service.
//!
//! Each event carries a W3C `traceparent` (SDK propagator, `propagation`) from the api request that
//! caused it, through the outbox row and the AMQP headers of every message, to log-ingest's insert;
//! services log the trace id, and export spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`tracing_setup`).

pub mod health;
#[cfg(feature = "actix")]
pub mod http_server;
pub mod lifecycle;
pub mod log_fields;
pub mod metrics;
pub mod propagation;
pub mod tracing_setup;

pub use tracing_setup::{OTEL_TARGET, Tracing};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the process-wide log subscriber and the trace provider. `RUST_LOG` overrides the
/// default log level (`info`); the `OTEL_` variables configure traces (`tracing_setup`). Keep the
/// returned [`Tracing`] and call its `shutdown` when the service stops, so queued spans are sent.
pub fn init(service: &'static str) -> Tracing {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (tracing, problem) = match Tracing::from_env(service) {
        Ok(tracing) => (tracing, None),
        // A telemetry misconfiguration must not keep the service from working: it runs, exports
        // nothing, and says why.
        Err(error) => (Tracing::without_export(service), Some(error)),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .fmt_fields(log_fields::LogFields::default())
        // Colour codes only where a person reads a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_filter(filter);
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(tracing.layer(service))
        .try_init();
    if installed.is_ok() {
        tracing::info!(service, "logging started");
    }
    if let Some(error) = problem {
        tracing::error!(%error, "traces are not exported");
    }
    tracing
}

/// For command-line tools whose standard output is their answer: installs only the trace layer
/// (no log lines). The tool's work continues a trace whose context is in the `TRACEPARENT` /
/// `TRACESTATE` environment variables ([`propagation::from_environment`]).
pub fn init_traces_only(service: &'static str) -> Tracing {
    let tracing = Tracing::from_env(service).unwrap_or_else(|error| {
        eprintln!("traces are not exported: {error}");
        Tracing::without_export(service)
    });
    let _ = tracing_subscriber::registry()
        .with(tracing.layer(service))
        .try_init();
    tracing
}
