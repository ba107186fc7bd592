//! OpenTelemetry traces through `tracing`: the SDK's tracer provider behind a
//! `tracing-opentelemetry` layer, configured only by the standard `OTEL_` environment variables.
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): where spans go. Unset:
//!   no exporter is built and nothing is exported; spans still get ids, so trace context still
//!   propagates across services and into log lines.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `http/protobuf` (the default) or
//!   `grpc`.
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (read by the SDK); the service
//!   name defaults to the binary's name.
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`: read by the SDK (default
//!   `parentbased_always_on`).
//! - `OTEL_BSP_*`: the batch processor's queue (2048 spans by default), batch size and delays.
//!
//! Export never holds up the work: spans go to the SDK's batch processor, whose bounded queue
//! drops spans when full; a batch the collector does not take is dropped and counted
//! ([`SPANS_DROPPED_METRIC`] on `/metrics`).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The target of every span that is exported: only spans written with
/// `tracing::info_span!(target: fp_telemetry::OTEL_TARGET, ...)` become OpenTelemetry spans, so a
/// log field (a URL, a path) never turns into a span attribute by accident.
pub const OTEL_TARGET: &str = "otel";

/// Links a span may carry: log-ingest links its batch insert to every record of the batch.
const MAX_LINKS_PER_SPAN: u32 = 1024;

/// Counter of the spans handed to the exporter that the collector did not take (down, slow,
/// refusing). Spans dropped because the batch processor's queue was full are not in it: the SDK
/// keeps that count to itself and logs it at shutdown.
pub const SPANS_DROPPED_METRIC: &str = "fp_trace_spans_dropped_total";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL `{0}` is not supported: use `http/protobuf` or `grpc`")]
    UnsupportedProtocol(String),
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the OTLP gRPC runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Which OTLP transport the environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    pub fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim() {
            "" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(TelemetryError::UnsupportedProtocol(other.to_owned())),
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The export the environment asks for: `None` when no endpoint is set (or the SDK is disabled).
pub fn requested_protocol() -> Result<Option<Protocol>, TelemetryError> {
    if env_var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env_var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_none()
    {
        return Ok(None);
    }
    let protocol = env_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env_var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    Protocol::parse(&protocol).map(Some)
}

/// The tracer provider of the process and what keeps its exporter running. Call
/// [`Tracing::shutdown`] before the process exits, so the spans still queued are sent.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// The runtime the gRPC channel's tasks live on, whatever runtime the service itself uses.
    grpc_runtime: Option<tokio::runtime::Runtime>,
}

impl Tracing {
    /// Builds the provider from the environment. `service` is the default `service.name`.
    pub fn from_env(service: &'static str) -> Result<Self, TelemetryError> {
        let mut resource = Resource::builder().build();
        let named = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
        if !named {
            resource = Resource::builder().with_service_name(service).build();
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if env_var("OTEL_SPAN_LINK_COUNT_LIMIT").is_none() {
            builder = builder.with_max_links_per_span(MAX_LINKS_PER_SPAN);
        }
        let mut grpc_runtime = None;
        match requested_protocol()? {
            None => {}
            Some(Protocol::HttpProtobuf) => {
                // The blocking client is built on a thread of its own by the exporter; reqwest
                // needs a rustls provider, and the workspace's is ring.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .build()?;
                builder = builder.with_batch_exporter(CountingExporter(exporter));
            }
            Some(Protocol::Grpc) => {
                // tonic's channel spawns its connection tasks on the runtime it is built in; the
                // batch processor's own thread then only waits on them.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otel-grpc")
                    .enable_all()
                    .build()?;
                let exporter = {
                    let _entered = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .build()?
                };
                builder = builder.with_batch_exporter(CountingExporter(exporter));
                grpc_runtime = Some(runtime);
            }
        }
        Ok(Tracing {
            provider: builder.build(),
            grpc_runtime,
        })
    }

    /// A provider that gives spans their ids (so context still propagates) and exports nothing.
    pub fn without_export(service: &'static str) -> Self {
        Tracing {
            provider: SdkTracerProvider::builder()
                .with_resource(Resource::builder().with_service_name(service).build())
                .build(),
            grpc_runtime: None,
        }
    }

    /// The `tracing` layer that turns spans of [`OTEL_TARGET`] into OpenTelemetry spans.
    pub fn layer<S>(&self, service: &'static str) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(service))
            // Both run on every poll of every instrumented future (the dispatcher's top symbol of
            // its own in the profiles): busy/idle timings nobody reads, and an OpenTelemetry
            // context made current for instrumentation we do not have (parents come from the
            // `tracing` span tree, propagation from `propagation`).
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && metadata.target() == OTEL_TARGET
            }))
    }

    /// Runs a service's whole life, then sends the spans still queued before the process ends,
    /// whatever the outcome.
    pub async fn flush_after<F: std::future::Future>(self, service: F) -> F::Output {
        let outcome = service.await;
        self.shutdown();
        outcome
    }

    /// Sends what is queued (bounded by the export timeout) and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::debug!(%error, "trace provider shut down with an error");
        }
        // The provider has flushed through it already; `shutdown_background` is the one way to
        // stop a runtime that is allowed from within the service's own async `main`.
        if let Some(runtime) = self.grpc_runtime {
            runtime.shutdown_background();
        }
    }
}

/// Counts the spans of every batch the collector did not take.
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            metrics::counter!(SPANS_DROPPED_METRIC).increment(count);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_the_two_standard_ones() {
        assert_eq!(Protocol::parse("").ok(), Some(Protocol::HttpProtobuf));
        assert_eq!(
            Protocol::parse("http/protobuf").ok(),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(Protocol::parse("grpc").ok(), Some(Protocol::Grpc));
        assert!(Protocol::parse("http/json").is_err());
    }
}
