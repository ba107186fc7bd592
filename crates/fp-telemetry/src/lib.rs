//! Logging and trace context shared by every service.
//!
//! Each event carries a W3C `traceparent` in its AMQP headers; services open their spans with the
//! event's trace id, so `grep trace_id=<id>` over all services' logs follows one event from the api to
//! the receiver and into the database.

pub mod health;
pub mod lifecycle;
pub mod metrics;

use std::fmt;

use rand::RngCore;
use tracing_subscriber::EnvFilter;

/// Installs the process-wide log subscriber. `RUST_LOG` overrides the default level (`info`).
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only where a person reads a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
    if installed.is_ok() {
        tracing::info!(service, "logging started");
    }
}

/// A W3C trace context: which trace a unit of work belongs to, and which span caused it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed traceparent `{0}`")]
pub struct MalformedTraceparent(pub String);

impl TraceContext {
    /// Starts a new trace, e.g. for an api request that creates an event.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut trace_id);
        rng.fill_bytes(&mut span_id);
        TraceContext { trace_id, span_id }
    }

    /// A new span in the same trace, for the next hop.
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        rand::rng().fill_bytes(&mut span_id);
        TraceContext {
            trace_id: self.trace_id,
            span_id,
        }
    }

    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// `00-<trace id>-<span id>-01`.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace_id),
            hex::encode(self.span_id)
        )
    }

    pub fn parse(traceparent: &str) -> Result<Self, MalformedTraceparent> {
        let malformed = || MalformedTraceparent(traceparent.to_owned());
        let mut parts = traceparent.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(_flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if version.len() != 2 || version == "ff" {
            return Err(malformed());
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).map_err(|_| malformed())?;
        hex::decode_to_slice(span, &mut span_id).map_err(|_| malformed())?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(malformed());
        }
        Ok(TraceContext { trace_id, span_id })
    }

    /// The context a message carried, or a fresh one when it carried none (or garbage): a broken
    /// header must not stop a delivery.
    pub fn from_header_or_new(traceparent: Option<&str>) -> Self {
        traceparent
            .and_then(|value| TraceContext::parse(value).ok())
            .unwrap_or_else(TraceContext::new_root)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_share_the_trace() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::parse(&root.to_traceparent()).expect("valid");
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child, root);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad}");
        }
        let fallback = TraceContext::from_header_or_new(Some("garbage"));
        assert_eq!(fallback.trace_id().len(), 32);
    }
}
