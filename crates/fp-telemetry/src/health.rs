//! `/healthz`, `/readyz` and `/metrics` for the services that serve no other HTTP.
//!
//! A deliberately tiny HTTP/1.1 responder: these endpoints are read by orchestrators and Prometheus,
//! answer in one line, and should not pull a web framework into a queue worker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A dependency readiness waits for: `Err` says why it is not usable now.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Liveness, readiness and counters of one process.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    checks: Mutex<Vec<(&'static str, ReadinessCheck)>>,
    counters: Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>,
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

    /// A monotonically increasing counter exported as `name` in Prometheus text format.
    pub fn counter(&self, name: &'static str) -> Arc<AtomicU64> {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.entry(name).or_default().clone()
    }

    fn metrics_text(&self) -> String {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = String::new();
        for (name, value) in counters.iter() {
            let _ = writeln!(
                text,
                "# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        text
    }

    /// The status and body of a probe path (`/healthz`, `/readyz`, `/metrics`), for the services
    /// that serve them from their own HTTP server.
    pub fn answer(&self, path: &str) -> (u16, String) {
        match path {
            "/healthz" => (200, "ok\n".to_owned()),
            "/readyz" => match self.readiness() {
                Ok(()) => (200, "ready\n".to_owned()),
                Err(why) => (503, format!("not ready: {why}\n")),
            },
            "/metrics" => (200, self.metrics_text()),
            _ => (404, "not found\n".to_owned()),
        }
    }
}

/// The probe routes of a service with its own actix-web server, answered from the
/// `web::Data<Arc<Health>>` it registers.
#[cfg(feature = "actix")]
pub fn actix_routes(config: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    config
        .route("/healthz", web::get().to(actix_probe))
        .route("/readyz", web::get().to(actix_probe));
}

#[cfg(feature = "actix")]
async fn actix_probe(
    request: actix_web::HttpRequest,
    health: actix_web::web::Data<Arc<Health>>,
) -> actix_web::HttpResponse {
    use actix_web::http::StatusCode;
    let (status, body) = health.answer(request.path());
    actix_web::HttpResponse::build(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type("text/plain; charset=utf-8")
    .body(body)
}

/// Binds `listen` and answers health requests until the process ends.
pub async fn serve(listen: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let Ok(read) = stream.read(&mut request).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&request[..read]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = health.answer(path);
                let reason = match status {
                    200 => "OK",
                    503 => "Service Unavailable",
                    _ => "Not Found",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_counters_show_in_answers() {
        let health = Health::new();
        assert_eq!(health.answer("/healthz").0, 200);
        assert_eq!(health.answer("/readyz").0, 503);
        health.set_ready(true);
        assert_eq!(health.answer("/readyz").0, 200);
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
            health.answer("/readyz"),
            (503, "not ready: broker: reconnecting\n".to_owned())
        );
        broker_up.store(true, Ordering::Relaxed);
        assert_eq!(health.answer("/readyz").0, 200);
        health
            .counter("fp_deliveries_total")
            .fetch_add(3, Ordering::Relaxed);
        let (_, metrics) = health.answer("/metrics");
        assert!(metrics.contains("fp_deliveries_total 3"), "{metrics}");
        assert_eq!(health.answer("/nope").0, 404);
    }
}
