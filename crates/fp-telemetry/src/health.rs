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

/// Liveness, readiness and counters of one process.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    counters: Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Marks the process ready (connected, consuming) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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

    fn answer(&self, path: &str) -> (u16, String) {
        match path {
            "/healthz" => (200, "ok\n".to_owned()),
            "/readyz" if self.is_ready() => (200, "ready\n".to_owned()),
            "/readyz" => (503, "not ready\n".to_owned()),
            "/metrics" => (200, self.metrics_text()),
            _ => (404, "not found\n".to_owned()),
        }
    }
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
        health
            .counter("fp_deliveries_total")
            .fetch_add(3, Ordering::Relaxed);
        let (_, metrics) = health.answer("/metrics");
        assert!(metrics.contains("fp_deliveries_total 3"), "{metrics}");
        assert_eq!(health.answer("/nope").0, 404);
    }
}
