//! W3C trace context (`traceparent`, `tracestate`) across process boundaries, with the SDK's
//! `TraceContextPropagator`: injected into and extracted from whatever carries headers (AMQP
//! headers in `fp-broker`, HTTP headers in the actix middleware and the dashboard's api client, the
//! outbox row's and the attempt row's `traceparent` and `tracestate` columns).

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

/// The header holding vendors' trace state, which travels with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// A context as stored beside the work it belongs to (the outbox row, an attempt's log row), so
/// whoever takes up that work later continues the trace: its W3C `traceparent` and `tracestate`
/// values, each empty when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl StoredContext {
    /// `span`'s context (empty when the span is not exported).
    pub fn of_span(span: &tracing::Span) -> Self {
        Self::of_context(&span.context())
    }

    /// A context, normalised by the propagator (empty when it names no span).
    pub fn of_context(context: &Context) -> Self {
        let mut headers = HashMap::new();
        if context.span().span_context().is_valid() {
            propagator().inject_context(context, &mut headers);
        }
        StoredContext {
            traceparent: headers.remove(TRACEPARENT).unwrap_or_default(),
            tracestate: headers.remove(TRACESTATE).unwrap_or_default(),
        }
    }

    /// The trace id (32 hex digits), for log lines; empty when there is no context.
    pub fn trace_id(&self) -> &str {
        // The propagator writes `<version>-<trace id>-<span id>-<flags>`.
        self.traceparent.split('-').nth(1).unwrap_or_default()
    }
}

/// The context stored `traceparent` and `tracestate` values name (empty when the traceparent is
/// empty or malformed; a malformed tracestate alone is dropped).
pub fn stored_context(traceparent: &str, tracestate: &str) -> Context {
    let headers = HashMap::from([
        (TRACEPARENT.to_owned(), traceparent.to_owned()),
        (TRACESTATE.to_owned(), tracestate.to_owned()),
    ]);
    extract(&headers)
}

/// `span`'s OpenTelemetry context (empty when the span is not exported).
pub fn context(span: &tracing::Span) -> Context {
    span.context()
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
    fn a_stored_context_names_its_span_and_keeps_its_trace_state() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = stored_context(traceparent, "vendor=opaque,other=1");
        let span_context = context.span().span_context().clone();
        assert!(span_context.is_valid());
        assert_eq!(
            span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span_context.is_remote());
        assert_eq!(
            StoredContext::of_context(&context),
            StoredContext {
                traceparent: traceparent.to_owned(),
                tracestate: "vendor=opaque,other=1".to_owned(),
            }
        );
        assert_eq!(
            StoredContext::of_context(&stored_context(traceparent, "")).tracestate,
            ""
        );
        assert_eq!(
            StoredContext::of_context(&context).trace_id(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(StoredContext::of_context(&Context::new()).trace_id(), "");
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
            let context = stored_context(bad, "vendor=opaque");
            assert!(!context.span().span_context().is_valid(), "{bad}");
            assert_eq!(
                StoredContext::of_context(&context),
                StoredContext::default()
            );
        }
    }
}
