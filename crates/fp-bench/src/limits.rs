//! The machine's own limits, measured with the same receiver, broker and database as the pipeline
//! (issue #6, item 3): what one delivery cannot avoid costing.
//!
//! Each function only does the work; the driver times it and reads the CPU of every process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use fp_broker::{Broker, OutgoingMessage, Publisher};
use fp_store::attempts::{AttemptRow, StoredHeaders};
use fp_store::partitions::CoveredDay;
use futures_util::{StreamExt, TryStreamExt};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use uuid::Uuid;

/// (a) A client like the dispatcher's: ring, ALPN h2 and http/1.1, the receiver's CA as the only
/// root, connections kept alive.
pub fn https_client(ca_pem: &Path) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("cannot read {}", ca_pem.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()?)
}

/// (a) `count` POSTs of `body` to `url`, `concurrency` in flight. Send one first, untimed, so the
/// connection is up (the dispatcher's are, once it runs) and the figure is not a handshake storm.
pub async fn https_posts(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let body = bytes::Bytes::from(body);
    futures_util::stream::iter(0..count)
        .map(|_| {
            let request = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-feedbackpulse-delivery", Uuid::new_v4().to_string())
                .body(body.clone());
            async move {
                let response = request.send().await?.error_for_status()?;
                response.bytes().await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// A quorum queue of its own for the broker limit; [`delete_queue`] removes it.
pub fn raw_queue_name(namespace: &str) -> String {
    format!("{namespace}.bench.raw")
}

/// (b), first half: `count` persistent messages of `size` bytes published with confirms, through
/// the default exchange, to the raw quorum queue (declared here), `window` unconfirmed at once.
pub async fn broker_publish(
    broker: &Broker,
    queue: &str,
    size: usize,
    count: u64,
    window: usize,
) -> anyhow::Result<()> {
    let channel = broker.channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    let publisher = broker.publisher();
    let payload = vec![b'x'; size];
    futures_util::stream::iter(0..count)
        .map(|_| publish_raw(&publisher, queue, &payload))
        .buffer_unordered(window)
        .try_collect::<()>()
        .await
}

/// (b), second half: consumes `count` messages from the raw queue, acking each (`ack_every` 1)
/// or every `ack_every`-th and the last with one multiple-ack, as log-ingest acks its batches.
pub async fn broker_consume(
    broker: &Broker,
    queue: &str,
    count: u64,
    prefetch: u16,
    ack_every: u64,
) -> anyhow::Result<()> {
    let mut consumer = broker.consume(queue, "fp-bench-raw", prefetch);
    let mut consumed = 0;
    while consumed < count {
        let delivery = consumer
            .next()
            .await
            .context("the raw queue's consumer ended early")?;
        consumed += 1;
        if ack_every <= 1 {
            fp_broker::ack(&delivery).await?;
        } else if consumed % ack_every == 0 || consumed == count {
            fp_broker::ack_up_to(&delivery).await?;
        }
    }
    Ok(())
}

/// (b), its latency: `count` messages paced at `rate` per second through the raw quorum queue
/// (published with confirms, consumed with acks at the same time), each carrying its send time.
/// Returns publish-to-consume latencies in nanoseconds: the broker's own share of the pipeline's
/// end-to-end latency, one hop.
pub async fn broker_round_trips(
    broker: &Broker,
    queue: &str,
    size: usize,
    count: u64,
    rate: f64,
) -> anyhow::Result<Vec<u64>> {
    let mut consumer = broker.consume(queue, "fp-bench-round-trip", 256);
    let receiving = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        while (latencies.len() as u64) < count {
            let delivery = consumer
                .next()
                .await
                .context("the round-trip consumer ended early")?;
            let received = crate::arrivals::now_ns();
            let sent = delivery
                .data
                .first_chunk::<8>()
                .map(|bytes| u64::from_le_bytes(*bytes))
                .context("a round-trip message without its send time")?;
            latencies.push(received.saturating_sub(sent));
            fp_broker::ack(&delivery).await?;
        }
        anyhow::Ok(latencies)
    });
    let publisher = broker.publisher();
    let started = tokio::time::Instant::now();
    futures_util::stream::iter(0..count)
        .then(|index| tokio::time::sleep_until(due_at(started, index, rate)))
        .map(|()| {
            let mut payload = vec![b'x'; size.max(8)];
            payload[..8].copy_from_slice(&crate::arrivals::now_ns().to_le_bytes());
            let publisher = &publisher;
            async move { publish_raw(publisher, queue, &payload).await }
        })
        .buffer_unordered(512)
        .try_collect::<()>()
        .await?;
    receiving.await?
}

/// When the `index`th of a series paced at `rate` per second from `started` falls due.
fn due_at(started: tokio::time::Instant, index: u64, rate: f64) -> tokio::time::Instant {
    started + Duration::from_secs_f64(index as f64 / rate)
}

/// One persistent message through the default exchange to `queue`, confirmed by the broker.
async fn publish_raw(publisher: &Publisher, queue: &str, payload: &[u8]) -> anyhow::Result<()> {
    let id = Uuid::now_v7().to_string();
    publisher
        .publish(&OutgoingMessage {
            exchange: "",
            routing_key: queue,
            message_id: &id,
            parent: None,
            payload,
            headers: &[],
            expiration: None,
        })
        .await?;
    Ok(())
}

pub async fn delete_queue(broker: &Broker, queue: &str) -> anyhow::Result<()> {
    let channel = broker.channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}

/// The endpoint URL of the rows [`attempt_inserts`] and [`paced_commits`] write, by which
/// [`delete_raw_rows`] finds them again.
const RAW_ROWS_URL: &str = "https://127.0.0.1/hook/raw";

/// (c) `count` attempt rows shaped like the pipeline's (same body size, a successful first
/// attempt), inserted in batches of `batch` as log-ingest inserts them.
pub async fn attempt_inserts(
    database_url: &str,
    tenant_id: Uuid,
    body_size: usize,
    count: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(database_url).await?;
    let body = vec![b'x'; body_size];
    let mut remaining = count;
    while remaining > 0 {
        let size = remaining.min(batch as u64);
        let rows: Vec<AttemptRow> = (0..size).map(|_| raw_row(tenant_id, &body)).collect();
        fp_store::attempts::insert_batch(&mut conn, &rows).await?;
        remaining -= size;
    }
    Ok(())
}

/// (d), a durable row's latency: `count` attempt rows falling due at `rate` per second, written
/// by one connection as the dispatcher writes its claims: every row waiting when the last
/// statement committed goes into the next one (at most [`COMMIT_BATCH_MAX`]), with no wait when
/// idle. Returns each row's time from falling due to its statement's commit, in nanoseconds: the
/// database's own share of the latency of every step of the pipeline that commits before it goes
/// on (the api's submission writer, the dispatcher's claim). A row falls due when the pacing task
/// hands it over, as a phase's event is stamped when the load generator publishes it, so both
/// leave out a late pacer's lag alike.
pub async fn paced_commits(
    database_url: &str,
    tenant_id: Uuid,
    body_size: usize,
    count: u64,
    rate: f64,
) -> anyhow::Result<Vec<u64>> {
    let mut conn = fp_store::connect(database_url).await?;
    let (due, mut waiting) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let pacing = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        for index in 0..count {
            tokio::time::sleep_until(due_at(started, index, rate)).await;
            if due.send(crate::arrivals::now_ns()).is_err() {
                break;
            }
        }
    });
    let body = vec![b'x'; body_size];
    let mut covered_day = CoveredDay::default();
    let mut latencies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut batch = Vec::with_capacity(COMMIT_BATCH_MAX);
    while (latencies.len() as u64) < count {
        if waiting.recv_many(&mut batch, COMMIT_BATCH_MAX).await == 0 {
            anyhow::bail!("the paced rows stopped coming after {}", latencies.len());
        }
        let rows: Vec<AttemptRow> = batch.iter().map(|_| raw_row(tenant_id, &body)).collect();
        fp_store::attempts::insert_batch_covering(&mut conn, &rows, &mut covered_day).await?;
        let committed = crate::arrivals::now_ns();
        latencies.extend(batch.drain(..).map(|due| committed.saturating_sub(due)));
    }
    pacing.await?;
    Ok(latencies)
}

/// The most rows one statement of [`paced_commits`] writes: the dispatcher's claim statement's
/// bound.
const COMMIT_BATCH_MAX: usize = 1000;

/// An attempt row shaped like the pipeline's (a successful first attempt with a body of the
/// pipeline's size) at [`RAW_ROWS_URL`].
fn raw_row(tenant_id: Uuid, body: &[u8]) -> AttemptRow {
    AttemptRow {
        url: RAW_ROWS_URL.to_owned(),
        duration_ms: 1,
        request_headers: StoredHeaders::of([("content-type", "application/json")]),
        request_body: body.to_vec(),
        response_body: b"ok".to_vec(),
        ..fp_testkit::seed::attempt_row(tenant_id, Utc::now())
    }
}

/// Removes the rows of (c) and (d), so the attempt table again holds only what the pipeline wrote (the
/// backlog phase and the final check come after the limits).
pub async fn delete_raw_rows(database_url: &str) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl;
    let mut conn = fp_store::connect(database_url).await?;
    diesel::sql_query("DELETE FROM delivery_attempts WHERE url = $1")
        .bind::<diesel::sql_types::Text, _>(RAW_ROWS_URL)
        .execute(&mut conn)
        .await?;
    Ok(())
}
