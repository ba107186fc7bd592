//! Which fields a log line shows. Spans carry OpenTelemetry's semantic-convention attributes
//! (`otel.name`, `messaging.system`, `db.operation.name`, ...) for the exported trace; in a log
//! line they repeat what the message already says, on every line of the span, and formatting
//! them was a share of the dispatcher's CPU on every delivery (bench/README.md). A log line, its
//! own fields and its spans', shows the fields without a dot (`trace_id`, `request_id`, `status`,
//! `error`, the message), every `fp.*` field, and an HTTP server request's route (which request a
//! line belongs to).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::field::{MakeVisitor, RecordFields, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultFields, FormatFields, Writer};

/// Whether a field named `name` belongs in a log line.
fn shown_in_logs(name: &str) -> bool {
    !name.contains('.') || name.starts_with("fp.") || name == "http.route"
}

/// The fmt layer's field formatter: tracing-subscriber's default one, given only the fields
/// [`shown_in_logs`].
#[derive(Debug, Default)]
pub struct LogFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = ShownFields(self.inner.make_visitor(writer));
        fields.record(&mut visitor);
        visitor.finish()
    }

    /// As the default, but a record of hidden fields only adds nothing, not even the space
    /// before it.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let before = current.fields.len();
        if before > 0 {
            current.fields.push(' ');
        }
        <Self as FormatFields<'_>>::format_fields(self, current.as_writer(), fields)?;
        if before > 0 && current.fields.len() == before + 1 {
            current.fields.truncate(before);
        }
        Ok(())
    }
}

/// Passes on the fields [`shown_in_logs`], and nothing of the others.
struct ShownFields<V>(V);

/// Numbers and booleans reach `record_debug` through `Visit`'s defaults, as they do in the
/// default formatter.
impl<V: Visit> Visit for ShownFields<V> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if shown_in_logs(field.name()) {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if shown_in_logs(field.name()) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if shown_in_logs(field.name()) {
            self.0.record_error(field, value);
        }
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for ShownFields<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for ShownFields<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn conventions_are_left_out_and_our_fields_kept() {
        for shown in [
            "message",
            "trace_id",
            "error",
            "fp.delivery_id",
            "fp.rows.pending",
            "http.route",
        ] {
            assert!(shown_in_logs(shown), "{shown}");
        }
        for hidden in [
            "otel.name",
            "otel.kind",
            "messaging.system",
            "db.operation.name",
            "http.request.method",
            "http.response.status_code",
            "error.type",
        ] {
            assert!(!shown_in_logs(hidden), "{hidden}");
        }
    }

    /// A log line's bytes, kept for the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_shows_the_span_ids_and_not_its_conventions() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(LogFields::default())
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "process",
                "otel.name" = "process fp.events",
                "messaging.system" = "rabbitmq",
                "fp.delivery_id" = tracing::field::Empty,
                "http.response.status_code" = tracing::field::Empty,
                trace_id = "abc",
            );
            span.record("fp.delivery_id", "d-1");
            // Recorded after the others, as a span's outcome is: it must leave no space behind.
            span.record("http.response.status_code", 500);
            let _entered = span.enter();
            tracing::info!(status = 200, "error.type" = "timeout", "delivered");
        });
        let line = String::from_utf8(
            captured
                .0
                .lock()
                .map(|bytes| bytes.clone())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        for shown in [
            "trace_id=\"abc\"",
            "fp.delivery_id=\"d-1\"",
            "delivered",
            "status=200",
        ] {
            assert!(line.contains(shown), "{shown} in {line}");
        }
        for hidden in [
            "otel.",
            "messaging.",
            "error.type",
            "rabbitmq",
            "timeout",
            "http.",
            "500",
        ] {
            assert!(!line.contains(hidden), "{hidden} in {line}");
        }
        assert!(
            line.contains("fp.delivery_id=\"d-1\"}"),
            "a space left behind: {line}"
        );
    }
}
