//! Liveness, readiness and metrics of every process, on its own `health_listen` address.
//!
//! One implementation for all four services: [`serve`] binds the health address (never the public
//! one) and answers `/healthz` (liveness: the process runs), `/readyz` (readiness: started, not
//! draining, every dependency reachable) and `/metrics` (Prometheus text, from the recorder
//! [`crate::metrics::install`] puts behind the `metrics` facade), over hyper's HTTP/1.1 server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::{self, InstallError};

/// A dependency readiness waits for: `Err` says why it is not usable now.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Liveness and readiness of one process.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    checks: Mutex<Vec<(&'static str, ReadinessCheck)>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Marks the process ready (started) or not (starting, draining). Readiness also needs every
    /// dependency check to pass.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Adds a dependency (the broker, the database) that must be reachable for the process to be
    /// ready, so an orchestrator stops routing to it while it is not.
    pub fn require(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name, Box::new(check)));
    }

    /// `Ok` when started and every dependency is reachable; otherwise what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Acquire) {
            return Err("starting or stopping".to_owned());
        }
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let failing: Vec<String> = checks
            .iter()
            .filter_map(|(name, check)| check().err().map(|why| format!("{name}: {why}")))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("; "))
        }
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// The status and body of a probe path (`/healthz`, `/readyz`, `/metrics`).
    pub fn answer(&self, path: &str) -> (u16, String) {
        match path {
            "/healthz" => (200, "ok\n".to_owned()),
            "/readyz" => match self.readiness() {
                Ok(()) => (200, "ready\n".to_owned()),
                Err(why) => (503, format!("not ready: {why}\n")),
            },
            "/metrics" => {
                ::metrics::gauge!("fp_ready").set(if self.is_ready() { 1.0 } else { 0.0 });
                (
                    200,
                    metrics::handle()
                        .map(|handle| handle.render())
                        .unwrap_or_default(),
                )
            }
            _ => (404, "not found\n".to_owned()),
        }
    }
}

/// Why the health listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] InstallError),
}

/// A client that sends nothing is dropped after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the metrics recorder, binds `listen` and answers `/healthz`, `/readyz` and `/metrics`
/// until the process ends. Returns the bound address (`listen` may have port 0).
pub async fn serve(listen: SocketAddr, health: Arc<Health>) -> Result<SocketAddr, ServeError> {
    let handle = metrics::install()?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| ServeError::Bind(listen, error))?;
    let bound = listener
        .local_addr()
        .map_err(|error| ServeError::Bind(listen, error))?;
    // Histograms are folded here rather than on every scrape.
    tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(metrics::UPKEEP_INTERVAL);
        loop {
            upkeep.tick().await;
            handle.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "health listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = health.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = respond(&health, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "health connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

fn respond(health: &Health, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body, content_type) = if request.method() == Method::GET {
        let (status, body) = health.answer(request.uri().path());
        let content_type = if request.uri().path() == "/metrics" {
            "text/plain; version=0.0.4; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        (status, body, content_type)
    } else {
        (
            405,
            "method not allowed\n".to_owned(),
            "text/plain; charset=utf-8",
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status line");
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn probes_and_metrics_are_served_over_http() {
        let health = Health::new();
        let address = serve("127.0.0.1:0".parse().expect("addr"), health.clone())
            .await
            .expect("serve");
        assert_eq!(get(address, "/healthz").await.0, 200);
        assert_eq!(get(address, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get(address, "/readyz").await, (200, "ready\n".to_owned()));
        let broker_up = Arc::new(AtomicBool::new(false));
        let up = broker_up.clone();
        health.require("broker", move || {
            if up.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("reconnecting".to_owned())
            }
        });
        assert_eq!(
            get(address, "/readyz").await,
            (503, "not ready: broker: reconnecting\n".to_owned())
        );
        let (_, metrics) = get(address, "/metrics").await;
        assert!(metrics.contains("fp_ready 0"), "{metrics}");
        broker_up.store(true, Ordering::Relaxed);
        assert_eq!(get(address, "/readyz").await.0, 200);
        ::metrics::counter!("fp_test_things_total", "kind" => "a").increment(3);
        let (status, metrics) = get(address, "/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.contains("fp_ready 1"), "{metrics}");
        assert!(
            metrics.contains("fp_test_things_total{kind=\"a\"} 3"),
            "{metrics}"
        );
        assert_eq!(get(address, "/nope").await.0, 404);
    }
}
