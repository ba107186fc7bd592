//! The bench's HTTPS endpoint: answers every POST with `200 ok` as fast as it can and records the
//! delivery id and arrival time of each, in its own process so its CPU is counted apart from the
//! pipeline's. A plain-HTTP control port serves `GET /stats`, `GET /arrivals` (24-byte records,
//! see `fp_bench::arrivals`), `POST /reset`, and `POST /down` / `POST /up` (refuse connections and
//! close open ones, for the backlog scenario).
//!
//! Prints one JSON line with both addresses on stdout once it listens.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use fp_bench::arrivals::{Arrival, ReceiverAddresses, ReceiverStats, now_ns};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(about = "Fast HTTPS webhook receiver for fp-bench")]
struct Args {
    /// HTTPS address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Plain-HTTP control address.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Where to write the PEM of the receiver's private CA.
    #[arg(long)]
    ca_out: PathBuf,
}

struct State {
    arrivals: Mutex<Vec<Arrival>>,
    requests: AtomicU64,
    without_delivery_id: AtomicU64,
    connections: AtomicU64,
    body_bytes: AtomicU64,
    /// `true` while the receiver refuses connections.
    down: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fp_bench::install_crypto_provider();
    let identity = fp_testkit::certificates::generate(&["127.0.0.1", "localhost"])?;
    std::fs::write(&args.ca_out, &identity.ca_pem)
        .with_context(|| format!("cannot write {}", args.ca_out.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let https = listener.local_addr()?;
    let control_listener = TcpListener::bind(args.control)
        .await
        .with_context(|| format!("cannot listen on {}", args.control))?;
    let control = control_listener.local_addr()?;

    let state = Arc::new(State {
        // Room for a typical run, so the hot path rarely reallocates.
        arrivals: Mutex::new(Vec::with_capacity(1 << 16)),
        requests: AtomicU64::new(0),
        without_delivery_id: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        body_bytes: AtomicU64::new(0),
        down: watch::channel(false).0,
    });
    tokio::spawn(serve_https(listener, https, acceptor, state.clone()));

    let line = serde_json::to_string(&ReceiverAddresses { https, control })?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);

    serve_control(control_listener, state).await;
    Ok(())
}

/// Accepts TLS connections while up; on `down` drops the listener (new connections are refused)
/// and every open connection, and binds the same address again on `up`.
async fn serve_https(
    mut listener: TcpListener,
    address: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<State>,
) {
    let mut down = state.down.subscribe();
    loop {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    state.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_connection(stream, acceptor.clone(), state.clone()));
                }
                changed = down.changed() => {
                    if changed.is_err() { return; }
                    if *down.borrow_and_update() { break; }
                }
            }
        }
        drop(listener);
        loop {
            if down.changed().await.is_err() {
                return;
            }
            if !*down.borrow_and_update() {
                break;
            }
        }
        listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    eprintln!("cannot listen on {address} again ({error}); retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        };
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut down = state.down.subscribe();
    if *down.borrow_and_update() {
        return;
    }
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let service_state = state.clone();
    let service = service_fn(move |request| record(request, service_state.clone()));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = connection => {}
        // Dropping the connection closes it at once, as a crashed endpoint would.
        _ = down.wait_for(|down| *down) => {}
    }
}

async fn record(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delivery_id = request
        .headers()
        .get("x-feedbackpulse-delivery")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| uuid::Uuid::parse_str(text).ok())
        .map_or(0, |id| id.as_u128());
    // The whole body is read, as a real endpoint would, so the connection stays reusable.
    let body_len = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len() as u64,
        Err(_) => 0,
    };
    let arrived_at_ns = now_ns();
    state.requests.fetch_add(1, Ordering::Relaxed);
    state.body_bytes.fetch_add(body_len, Ordering::Relaxed);
    if delivery_id == 0 {
        state.without_delivery_id.fetch_add(1, Ordering::Relaxed);
    }
    lock(&state.arrivals).push(Arrival {
        delivery_id,
        arrived_at_ns,
    });
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

async fn serve_control(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| control(request, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn control(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        Ok(response)
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/stats") => {
            let stats = ReceiverStats {
                requests: state.requests.load(Ordering::Relaxed),
                without_delivery_id: state.without_delivery_id.load(Ordering::Relaxed),
                connections: state.connections.load(Ordering::Relaxed),
                body_bytes: state.body_bytes.load(Ordering::Relaxed),
                down: *state.down.borrow(),
            };
            answer(
                StatusCode::OK,
                serde_json::to_vec(&stats).unwrap_or_default(),
            )
        }
        (&Method::GET, "/arrivals") => {
            // Copied out under the lock, encoded outside it, so the hot path waits only for a memcpy.
            let arrivals = lock(&state.arrivals).clone();
            let mut body = Vec::with_capacity(arrivals.len() * fp_bench::arrivals::RECORD_LEN);
            for arrival in &arrivals {
                arrival.write_to(&mut body);
            }
            answer(StatusCode::OK, body)
        }
        (&Method::POST, "/reset") => {
            lock(&state.arrivals).clear();
            state.requests.store(0, Ordering::Relaxed);
            state.without_delivery_id.store(0, Ordering::Relaxed);
            state.connections.store(0, Ordering::Relaxed);
            state.body_bytes.store(0, Ordering::Relaxed);
            answer(StatusCode::OK, b"reset\n".to_vec())
        }
        (&Method::POST, "/down") => {
            state.down.send_replace(true);
            answer(StatusCode::OK, b"down\n".to_vec())
        }
        (&Method::POST, "/up") => {
            state.down.send_replace(false);
            answer(StatusCode::OK, b"up\n".to_vec())
        }
        _ => answer(StatusCode::NOT_FOUND, b"not found\n".to_vec()),
    }
}
