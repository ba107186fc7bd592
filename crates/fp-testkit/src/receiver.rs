//! An HTTPS webhook receiver that records every request and answers as told.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::certificates;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Names lower-cased, as HTTP/2 and hyper give them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Instant,
}

impl ReceivedRequest {
    /// The submission id of a `submission.created` delivery (the custom JSON format); `None` for
    /// anything else.
    pub fn created_submission(&self) -> Option<i64> {
        if self.header("x-feedbackpulse-event") != Some("submission.created") {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        body["data"]["id"].as_i64()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct CannedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (to play a slow or hanging endpoint).
    pub delay: Duration,
}

impl CannedResponse {
    pub fn new(status: u16, body: &str) -> Self {
        CannedResponse {
            status,
            headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// Chooses the answer to the `n`th request (0-based).
pub type Responder = Arc<dyn Fn(&ReceivedRequest, usize) -> CannedResponse + Send + Sync>;

/// Answers `200 ok` to everything.
pub fn always_ok() -> Responder {
    Arc::new(|_, _| CannedResponse::new(200, "ok"))
}

struct Shared {
    /// TCP connections accepted, whether or not a request followed (a refused TLS handshake counts).
    connections: AtomicUsize,
    requests: Mutex<Vec<ReceivedRequest>>,
    arrived: Notify,
    responder: Responder,
}

pub struct TlsReceiver {
    address: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl TlsReceiver {
    /// Listens on `listen` (port 0 for any free port) with a certificate for `127.0.0.1` and
    /// `localhost`.
    pub async fn start(listen: SocketAddr, responder: Responder) -> anyhow::Result<Self> {
        Self::start_with_names(listen, &["127.0.0.1", "localhost"], responder).await
    }

    /// As [`TlsReceiver::start`], with a certificate for `names` (to play e.g. `hooks.slack.com`).
    pub async fn start_with_names(
        listen: SocketAddr,
        names: &[&str],
        responder: Responder,
    ) -> anyhow::Result<Self> {
        Self::start_with_identity(listen, certificates::generate(names)?, responder).await
    }

    /// As [`TlsReceiver::start`], serving `identity` (to play an endpoint whose certificate is
    /// expired, self-signed, or for other names).
    pub async fn start_with_identity(
        listen: SocketAddr,
        identity: certificates::ServerIdentity,
        responder: Responder,
    ) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("receiver cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            responder,
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(TlsReceiver {
            address,
            ca_pem: identity.ca_pem,
            shared,
            task,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    pub fn write_ca_pem(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.ca_pem)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived for `target` (path and query, exactly).
    pub fn requests_to(&self, target: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|request| request.target == target)
            .count()
    }

    /// Waits until at least `count` requests arrived, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedRequest>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let requests = self.requests();
            if requests.len() >= count {
                return Ok(requests);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!(
                    "the receiver got {} of {count} expected requests within {timeout:?}",
                    requests.len()
                );
            }
        }
    }

    /// Waits until a request for which `wanted` holds arrived and returns the first such, or
    /// fails after `timeout`.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        wanted: impl Fn(&ReceivedRequest) -> bool,
    ) -> anyhow::Result<ReceivedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let requests = self.requests();
            if let Some(request) = requests.iter().find(|request| wanted(request)) {
                return Ok(request.clone());
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!(
                    "none of the {} requests the receiver got within {timeout:?} is the one expected",
                    requests.len()
                );
            }
        }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request| answer(request, shared.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = request.into_body().collect().await?.to_bytes().to_vec();
    let received = ReceivedRequest {
        method,
        target,
        headers,
        body,
        received_at: Instant::now(),
    };
    let canned = {
        let mut requests = lock(&shared.requests);
        let canned = (shared.responder)(&received, requests.len());
        requests.push(received);
        canned
    };
    shared.arrived.notify_waiters();
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    let mut response = Response::builder().status(canned.status);
    for (name, value) in &canned.headers {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(Bytes::from(canned.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"bad canned response")))))
}
