//! Writes that many deliveries wait for, batched: a single task writes every item waiting at the
//! time (or arriving within its linger) in one statement, so under load one round trip serves
//! many deliveries, and with no linger a lone item waits for nothing but its own round trip.

use std::future::Future;
use std::time::Duration;

use fp_store::{PgConnection, PgPool, PooledConnection, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most items written in one statement.
const MAX_BATCH: usize = 1_000;
/// Most bytes of items in one statement (the first item goes whatever its size): a kept
/// connection keeps buffers as large as the largest statement it sent, and outcomes carry
/// response bodies of up to 64 KiB. A full batch of claims with their pending rows (about 1.5
/// KB each) fits.
const MAX_BATCH_BYTES: usize = 2 << 20;
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

    /// About how many bytes `item` adds to a statement.
    fn size(item: &Self::Item) -> usize;

    /// Writes `items`, in one statement where it can; answers each item, in their order.
    fn write(
        &mut self,
        conn: &mut PgConnection,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, StoreError>> + Send;
}

/// An item, what answers it, and when it was handed over (its linger runs from then).
struct Waiting<S: BatchStatement> {
    item: S::Item,
    answer: oneshot::Sender<Result<S::Answer, String>>,
    since: Instant,
}

pub struct BatchWriter<S: BatchStatement> {
    requests: mpsc::Sender<Waiting<S>>,
}

impl<S: BatchStatement> Clone for BatchWriter<S> {
    fn clone(&self) -> Self {
        BatchWriter {
            requests: self.requests.clone(),
        }
    }
}

impl<S: BatchStatement> BatchWriter<S> {
    /// Starts the writer on the current runtime. A batch gathers until `linger` after its first
    /// item was handed over (`Duration::ZERO`: no gathering).
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
            .send(Waiting {
                item,
                answer,
                since: Instant::now(),
            })
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
    mut waiting: mpsc::Receiver<Waiting<S>>,
) {
    let mut batch: Vec<Waiting<S>> = Vec::with_capacity(MAX_BATCH);
    // What did not fit the last statement's byte budget: the head of the next.
    let mut left_over: Vec<Waiting<S>> = Vec::new();
    let mut kept: Option<PooledConnection> = None;
    loop {
        batch.append(&mut left_over);
        if batch.is_empty() && waiting.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        if let Some(until) = batch.first().map(|first| first.since + linger) {
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(until, waiting.recv_many(&mut batch, room)).await {
                    Ok(received) if received > 0 => {}
                    // The linger is over, or every sender is gone.
                    _ => break,
                }
            }
        }
        left_over = batch.split_off(within_budget(
            batch.iter().map(|waiting| S::size(&waiting.item)),
            MAX_BATCH_BYTES,
        ));
        let (items, answers): (Vec<S::Item>, Vec<_>) = batch
            .drain(..)
            .map(|waiting| (waiting.item, waiting.answer))
            .unzip();
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
                debug_assert_eq!(found.len(), answers.len(), "one answer per item");
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

/// How many of the leading items fit `budget` bytes; at least one, so an item larger than the
/// budget still goes (alone).
fn within_budget(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0;
    let mut count = 0;
    for size in sizes {
        total += size;
        if count > 0 && total > budget {
            break;
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::within_budget;

    #[test]
    fn a_batch_takes_the_leading_items_that_fit_and_always_its_first() {
        assert_eq!(within_budget([].into_iter(), 10), 0);
        assert_eq!(within_budget([4, 4, 2].into_iter(), 10), 3);
        assert_eq!(within_budget([4, 4, 3, 1].into_iter(), 10), 2);
        assert_eq!(within_budget([25, 1].into_iter(), 10), 1);
    }
}
