//! Writes that many deliveries wait for, batched: a single task writes every item waiting at the
//! time (or arriving within its linger) in one statement, so under load one round trip serves
//! many deliveries, and with no linger a lone item waits for nothing but its own round trip.

use std::future::Future;
use std::time::Duration;

use fp_store::{PgConnection, PgPool, PooledConnection, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most items written in one statement (arrays of any length: the bound is the batch's memory).
const MAX_BATCH: usize = 1_000;
/// Items waiting for the writer; beyond it an item waits for room (the prefetch bounds it anyway).
const QUEUE_CAPACITY: usize = 10_000;

/// One statement over a batch of items.
pub trait BatchStatement: Send + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;
    /// The histogram of items per statement.
    const BATCH_SIZE_METRIC: &'static str;
    /// What the writer is, for errors: "the claim writer".
    const WRITER: &'static str;

    /// Writes `items` in one statement; answers each item, in their order.
    fn write(
        &mut self,
        conn: &mut PgConnection,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, StoreError>> + Send;
}

type Answer<S> = oneshot::Sender<Result<<S as BatchStatement>::Answer, String>>;

pub struct BatchWriter<S: BatchStatement> {
    requests: mpsc::Sender<(S::Item, Answer<S>)>,
}

impl<S: BatchStatement> Clone for BatchWriter<S> {
    fn clone(&self) -> Self {
        BatchWriter {
            requests: self.requests.clone(),
        }
    }
}

impl<S: BatchStatement> BatchWriter<S> {
    /// Starts the writer on the current runtime. A batch gathers for `linger` after its first
    /// item (`Duration::ZERO`: none).
    pub fn start(pool: PgPool, statement: S, linger: Duration) -> Self {
        let (requests, waiting) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(pool, statement, linger, waiting));
        BatchWriter { requests }
    }

    /// Writes `item` in the next statement and returns its answer.
    pub async fn write(&self, item: S::Item) -> anyhow::Result<S::Answer> {
        let stopped = || anyhow::anyhow!("{} has stopped", S::WRITER);
        let (answer, answered) = oneshot::channel();
        self.requests
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(|error| anyhow::anyhow!("{}: {error}", S::WRITER))
    }
}

/// Writes the items as they come, on one connection of the pool kept for it. A statement carries
/// its attempts' rows, and a connection keeps buffers as large as the largest message it sent:
/// taking any connection of the pool in turn left every one of them holding a statement's worth
/// (about 17 MiB in all on a backlog).
async fn write_batches<S: BatchStatement>(
    pool: PgPool,
    mut statement: S,
    linger: Duration,
    mut waiting: mpsc::Receiver<(S::Item, Answer<S>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut kept: Option<PooledConnection> = None;
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() {
            let until = tokio::time::Instant::now() + linger;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(until, waiting.recv_many(&mut batch, room)).await {
                    Ok(received) if received > 0 => {}
                    // The linger is over, or every sender is gone.
                    _ => break,
                }
            }
        }
        let (items, answers): (Vec<S::Item>, Vec<Answer<S>>) = batch.drain(..).unzip();
        // One the server closed (a restart) goes back to the pool, which drops it.
        kept.take_if(|conn| !fp_store::still_usable(conn));
        let conn = match kept.take() {
            Some(conn) => Ok(conn),
            None => pool.get().await,
        };
        let written = match conn {
            Ok(mut conn) => {
                let written = statement.write(&mut conn, &items).await;
                if written.is_ok() {
                    kept = Some(conn);
                }
                written.map_err(|error| error.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        metrics::histogram!(S::BATCH_SIZE_METRIC).record(items.len() as f64);
        match written {
            Ok(found) => {
                for (found, answer) in found.into_iter().zip(answers) {
                    let _ = answer.send(Ok(found));
                }
            }
            Err(error) => {
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}
