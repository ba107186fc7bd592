//! The W3C trace context in AMQP headers: an injector and an extractor over lapin's `FieldTable`
//! for the SDK's propagator (`fp_telemetry::propagation`).

use fp_telemetry::propagation::Context;
use fp_telemetry::propagation::{self, HeaderExtractor, HeaderInjector};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::Delivery;

/// Writes trace headers into a message's headers, as long strings.
pub struct AmqpHeadersMut<'a>(pub &'a mut FieldTable);

impl HeaderInjector for AmqpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(ShortString::from(key), AMQPValue::LongString(value.into()));
    }
}

/// Reads trace headers from a delivery's headers (long or short strings; anything else is
/// ignored).
pub struct AmqpHeaders<'a>(pub Option<&'a FieldTable>);

impl HeaderExtractor for AmqpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0?.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|table| table.inner().keys().map(ShortString::as_str).collect())
            .unwrap_or_default()
    }
}

/// The trace context a delivery carries; empty when it carries none or garbage.
pub fn trace_context(delivery: &Delivery) -> Context {
    propagation::extract(&AmqpHeaders(delivery.properties.headers().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_round_trip_through_a_field_table() {
        let mut table = FieldTable::default();
        AmqpHeadersMut(&mut table).set(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        );
        let headers = AmqpHeaders(Some(&table));
        assert_eq!(
            headers.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(headers.keys(), vec!["traceparent"]);
        let context = propagation::extract(&headers);
        use fp_telemetry::propagation::TraceContextExt as _;
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(AmqpHeaders(None).get("traceparent"), None);
    }
}
