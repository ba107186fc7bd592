//! An OTLP trace receiver standing in for the OpenTelemetry Collector: services export to it over
//! `grpc` (a tonic `TraceService`) or `http/protobuf` (`POST /v1/traces`), and tests read the spans
//! it took. Built on the `opentelemetry-proto` types, so it reads exactly what a collector reads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The OTLP transport a receiver speaks, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn env_value(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One span as received, with the ids in hex and every attribute value as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    pub attributes: Vec<(String, String)>,
    /// Its W3C trace state (`vendor=value,...`; empty when none).
    pub trace_state: String,
    /// Every other text the span carries (resource attributes, event and link attributes,
    /// status message, trace state), for checks that nothing secret leaked anywhere.
    pub other_text: Vec<String>,
}

impl ReceivedSpan {
    /// Every text the span carries: its name, each attribute's key and value, and
    /// [`ReceivedSpan::other_text`].
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        [self.name.as_str()]
            .into_iter()
            .chain(
                self.attributes
                    .iter()
                    .flat_map(|(key, value)| [key.as_str(), value.as_str()]),
            )
            .chain(self.other_text.iter().map(String::as_str))
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// What the receiver took: every span (tests), or only their number (the bench's stand-in
/// collector, which must not grow with the load), and each span's timing written to a file when
/// asked ([`OtlpReceiver::start_writing_timings`]).
#[derive(Default)]
struct Received {
    keep: bool,
    count: std::sync::atomic::AtomicU64,
    spans: Mutex<Vec<ReceivedSpan>>,
    timings: Option<Mutex<BufWriter<File>>>,
}

type Spans = Arc<Received>;

pub struct OtlpReceiver {
    address: SocketAddr,
    protocol: OtlpProtocol,
    spans: Spans,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// A receiver on a free loopback port that keeps every span it takes.
    pub async fn start(protocol: OtlpProtocol) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, protocol, true).await
    }

    /// A receiver on `listen`; with `keep` false it only counts spans ([`OtlpReceiver::count`]).
    pub async fn start_on(
        listen: SocketAddr,
        protocol: OtlpProtocol,
        keep: bool,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            listen,
            protocol,
            Received {
                keep,
                ..Received::default()
            },
        )
        .await
    }

    /// A receiver on `listen` that counts spans and writes each one's service, name, ids and
    /// times to `path` as a line of JSON; [`OtlpReceiver::flush`] before reading it.
    pub async fn start_writing_timings(
        listen: SocketAddr,
        protocol: OtlpProtocol,
        path: &Path,
    ) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create the timings file {}", path.display()))?;
        Self::start_with(
            listen,
            protocol,
            Received {
                timings: Some(Mutex::new(BufWriter::new(file))),
                ..Received::default()
            },
        )
        .await
    }

    async fn start_with(
        listen: SocketAddr,
        protocol: OtlpProtocol,
        received: Received,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .context("the OTLP receiver cannot listen")?;
        let address = listener.local_addr()?;
        let spans = Arc::new(received);
        let task = match protocol {
            OtlpProtocol::Grpc => {
                let service = TraceServiceServer::new(GrpcTraces(spans.clone()));
                tokio::spawn(async move {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming)
                        .await;
                })
            }
            OtlpProtocol::HttpProtobuf => tokio::spawn(http_accept_loop(listener, spans.clone())),
        };
        Ok(OtlpReceiver {
            address,
            protocol,
            spans,
            task,
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The `OTEL_` variables that make a service export here, quickly (a short batch delay).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                self.protocol.env_value().to_owned(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        ]
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.spans).clone()
    }

    /// Spans taken so far (kept or not).
    pub fn count(&self) -> u64 {
        self.spans.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes out what the timings file still buffers.
    pub fn flush(&self) -> std::io::Result<()> {
        match &self.spans.timings {
            Some(timings) => timings
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .flush(),
            None => Ok(()),
        }
    }

    /// Waits until `done` holds for the spans received, or `timeout` passes; then the spans.
    pub async fn spans_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(spans: &Spans) -> std::sync::MutexGuard<'_, Vec<ReceivedSpan>> {
    spans
        .spans
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct GrpcTraces(Spans);

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        store(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_accept_loop(listener: TcpListener, spans: Spans) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let spans = spans.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| http_export(request, spans.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn http_export(
    request: Request<hyper::body::Incoming>,
    spans: Spans,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let status = if request.method() != hyper::Method::POST || request.uri().path() != "/v1/traces"
    {
        404
    } else if request
        .headers()
        .get("content-type")
        .is_none_or(|value| value.as_bytes() != b"application/x-protobuf")
    {
        415
    } else {
        let body = request.into_body().collect().await?.to_bytes();
        match ExportTraceServiceRequest::decode(body) {
            Ok(export) => {
                store(&spans, export);
                200
            }
            Err(_) => 400,
        }
    };
    let body = if status == 200 {
        ExportTraceServiceResponse::default().encode_to_vec()
    } else {
        Vec::new()
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn store(spans: &Spans, export: ExportTraceServiceRequest) {
    if let Some(timings) = &spans.timings {
        write_timings(timings, &export);
    }
    if !spans.keep {
        let count: usize = export
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        spans
            .count
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = pairs(
            resource_spans
                .resource
                .as_ref()
                .map(|resource| resource.attributes.as_slice())
                .unwrap_or_default(),
        );
        let service = resource
            .iter()
            .find(|(key, _)| key == "service.name")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let mut other_text: Vec<String> = resource
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                other_text.push(span.trace_state.clone());
                if let Some(status) = &span.status {
                    other_text.push(status.message.clone());
                }
                for event in &span.events {
                    other_text.push(event.name.clone());
                    other_text.extend(
                        pairs(&event.attributes)
                            .into_iter()
                            .map(|(key, value)| format!("{key}={value}")),
                    );
                }
                for link in &span.links {
                    other_text.push(link.trace_state.clone());
                    other_text.extend(
                        pairs(&link.attributes)
                            .into_iter()
                            .map(|(key, value)| format!("{key}={value}")),
                    );
                }
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                    attributes: pairs(&span.attributes),
                    trace_state: span.trace_state.clone(),
                    other_text,
                });
            }
        }
    }
    spans
        .count
        .fetch_add(received.len() as u64, std::sync::atomic::Ordering::Relaxed);
    lock(spans).extend(received);
}

fn write_timings(timings: &Mutex<BufWriter<File>>, export: &ExportTraceServiceRequest) {
    let mut file = timings
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for resource_spans in &export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| &scope.spans)
        {
            // One line per span: where it sits in its trace and when it ran (Unix ns).
            let line = serde_json::json!({
                "service": service,
                "name": span.name,
                "trace": hex(&span.trace_id),
                "span": hex(&span.span_id),
                "parent": hex(&span.parent_span_id),
                "start": span.start_time_unix_nano,
                "end": span.end_time_unix_nano,
            });
            // A line that cannot be written is lost from the breakdown, not from the count.
            let _ = writeln!(file, "{line}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
