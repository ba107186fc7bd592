//! W3C trace context (`traceparent`, `tracestate`) across process boundaries, with the SDK's
//! `TraceContextPropagator`: injected into and extracted from whatever carries headers (AMQP
//! headers in `fp-broker`, HTTP headers in the actix middleware and the dashboard's api client, the
//! outbox row's `traceparent` column).

use std::collections::HashMap;

pub use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
pub use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use opentelemetry::propagation::{Extractor as HeaderExtractor, Injector as HeaderInjector};

/// The header holding the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// Writes `span`'s context into `injector` (nothing when the span has none, e.g. it is disabled).
pub fn inject(span: &tracing::Span, injector: &mut dyn Injector) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        propagator().inject_context(&context, injector);
    }
}

/// Writes the current span's context into `injector`.
pub fn inject_current(injector: &mut dyn Injector) {
    inject(&tracing::Span::current(), injector);
}

/// The context a carrier holds; an empty one when it holds none or garbage (a broken header must
/// not stop any work: the span then starts a trace of its own).
pub fn extract(extractor: &dyn Extractor) -> Context {
    propagator().extract(extractor)
}

/// The context of the `TRACEPARENT` (and `TRACESTATE`) environment variables, by which a script
/// makes a command-line tool's spans part of its own trace.
pub fn from_environment() -> Context {
    let headers: HashMap<String, String> =
        [("traceparent", "TRACEPARENT"), ("tracestate", "TRACESTATE")]
            .into_iter()
            .filter_map(|(header, variable)| {
                Some((header.to_owned(), std::env::var(variable).ok()?))
            })
            .collect();
    extract(&headers)
}

/// `span`'s context as a `traceparent` value, e.g. for the outbox row.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut headers = HashMap::new();
    inject(span, &mut headers);
    headers.remove(TRACEPARENT)
}

/// A context as a `traceparent` value (normalised by the propagator), when it names a span.
pub fn context_traceparent(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut headers = HashMap::new();
    propagator().inject_context(context, &mut headers);
    headers.remove(TRACEPARENT)
}

/// `span`'s OpenTelemetry context (empty when the span is not exported).
pub fn context(span: &tracing::Span) -> Context {
    span.context()
}

/// The context a stored `traceparent` names (empty when it is empty or malformed).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let headers = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    extract(&headers)
}

/// Makes `parent` the parent of `span`, when it names a span; otherwise `span` starts a trace.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when the span has already started recording children, which callers avoid
        // by setting the parent right after creating it.
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the span a context names (a batch to each record it stores).
pub fn add_link(span: &tracing::Span, context: &Context) {
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.add_link(span_context);
    }
}

/// The trace id of `span` (32 hex digits), for log lines; empty when the span has no context.
pub fn trace_id(span: &tracing::Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_traceparent_names_its_span() {
        let stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = context_from_traceparent(stored);
        let span_context = context.span().span_context().clone();
        assert!(span_context.is_valid());
        assert_eq!(
            span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span_context.is_remote());
    }

    #[test]
    fn malformed_traceparents_give_an_empty_context() {
        // (The SDK reads a short hex id such as `00-abc-def-01` as a zero-padded one: lenient,
        // and harmless.)
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let context = context_from_traceparent(bad);
            assert!(!context.span().span_context().is_valid(), "{bad}");
        }
    }
}
