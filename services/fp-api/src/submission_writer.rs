//! Group commit of new submissions. `POST /api/v2/submissions` hands its submission to a queue;
//! a writer takes what is queued (up to `api.submission_batch_max`) and commits all of it, each
//! submission with the outbox row of its event, in one statement: one fsync for the batch
//! instead of one per request. A writer never waits for a batch to fill: a batch holds what
//! queued while the previous commit ran, so a lone request is written at once. Each request is
//! answered only after its batch committed, and the batch's events are then handed to the outbox
//! relay in memory.

use std::num::NonZeroUsize;
use std::sync::Arc;

use fp_store::outbox::OutboxEvent;
use fp_store::submissions::{self, NewSubmission, SubmissionRow};
use fp_store::{PgConnection, PgPool, StoreError};
use fp_telemetry::propagation::StoredContext;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::ApiError;
use crate::outbox_relay::OutboxHandoff;
use crate::routes::submissions::created_event;

/// A submission to store, as its request gave it.
pub(crate) struct PendingSubmission {
    pub tenant_id: Uuid,
    pub campaign_id: i64,
    pub star_rating: i32,
    pub text_feedback: String,
    pub customer_name: Option<String>,
    /// The request's trace context: its event's outbox row carries it, so the event continues
    /// the request's trace although a writer task stores it.
    pub trace: StoredContext,
}

/// The stored row, or why it was not stored. Shared, since one failure of a batch can be every
/// member's.
type WriteOutcome = Result<SubmissionRow, Arc<StoreError>>;

struct Queued {
    submission: PendingSubmission,
    reply: oneshot::Sender<WriteOutcome>,
}

/// The handlers' end of the queue.
#[derive(Clone)]
pub(crate) struct SubmissionQueue {
    sender: mpsc::Sender<Queued>,
}

/// Taken by the writers, one batch at a time.
#[derive(Clone)]
pub(crate) struct SubmissionWriter {
    pool: PgPool,
    outbox: OutboxHandoff,
    batch_max: usize,
    /// Locked only while a writer takes its batch, so the others commit meanwhile.
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
}

/// The queue and a writer of its batches (to [`SubmissionWriter::spawn`]).
pub(crate) fn queue(
    pool: PgPool,
    outbox: OutboxHandoff,
    batch_max: NonZeroUsize,
    writers: NonZeroUsize,
) -> (SubmissionQueue, SubmissionWriter) {
    // Room for every writer's next batch to gather while it commits; beyond that, handlers wait.
    let capacity = batch_max
        .get()
        .saturating_mul(writers.get())
        .saturating_mul(2);
    let (sender, receiver) = mpsc::channel(capacity);
    (
        SubmissionQueue { sender },
        SubmissionWriter {
            pool,
            outbox,
            batch_max: batch_max.get(),
            receiver: Arc::new(Mutex::new(receiver)),
        },
    )
}

#[derive(Debug, thiserror::Error)]
#[error("the submission writers have stopped (the api is shutting down)")]
struct WritersStopped;

impl From<WritersStopped> for ApiError {
    fn from(_: WritersStopped) -> Self {
        ApiError::Unavailable(
            "the api is shutting down: try again after Retry-After seconds".to_owned(),
        )
    }
}

impl SubmissionQueue {
    /// Queues `submission`; the receiver gets its outcome once its batch is done.
    async fn enqueue(
        &self,
        submission: PendingSubmission,
    ) -> Result<oneshot::Receiver<WriteOutcome>, WritersStopped> {
        let (reply, outcome) = oneshot::channel();
        self.sender
            .send(Queued { submission, reply })
            .await
            .map_err(|_| WritersStopped)?;
        Ok(outcome)
    }

    /// Stores `submission` with its event; returns once both are committed.
    pub async fn write(&self, submission: PendingSubmission) -> Result<SubmissionRow, ApiError> {
        let outcome = self
            .enqueue(submission)
            .await?
            .await
            .map_err(|_| WritersStopped)?;
        outcome.map_err(ApiError::from)
    }
}

/// Why a batch was not written.
enum BatchError {
    /// The database refused it: nothing of the batch was written.
    Refused(StoreError),
    /// The connection went while the batch's statement ran: whether it committed is unknown.
    Unknown(StoreError),
}

impl BatchError {
    fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Refused(error) | BatchError::Unknown(error) => error,
        }
    }
}

impl SubmissionWriter {
    /// Starts `count` writers sharing the queue. Once `stopping` turns true, no more submissions
    /// are taken; the writers store what is queued, then end.
    pub fn spawn(
        self,
        count: NonZeroUsize,
        stopping: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        (0..count.get())
            .map(|_| tokio::spawn(self.clone().run(stopping.clone())))
            .collect()
    }

    async fn run(self, mut stopping: watch::Receiver<bool>) {
        while let Some(batch) = self.next_batch(&mut stopping).await {
            self.write_batch(batch).await;
        }
    }

    /// The first queued submission (waiting for one) and whatever else is queued already, up to
    /// the batch size; `None` once the api stops and the queue is empty.
    async fn next_batch(&self, stopping: &mut watch::Receiver<bool>) -> Option<Vec<Queued>> {
        let mut receiver = self.receiver.lock().await;
        let first = tokio::select! {
            biased;
            queued = receiver.recv() => queued,
            // A dropped sender means stopping too. (The `Ref` it returns must not live on: it
            // is not `Send`.)
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                // Refuses new submissions; those already queued are still received.
                receiver.close();
                receiver.recv().await
            }
        }?;
        let mut batch = vec![first];
        while batch.len() < self.batch_max {
            match receiver.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Commits `batch` in one statement and answers each member. A refused batch is written
    /// again one member at a time, so one bad member (a tenant deleted meanwhile) fails alone.
    async fn write_batch(&self, batch: Vec<Queued>) {
        metrics::histogram!("fp_api_submission_batch_size").record(batch.len() as f64);
        let mut conn = match self.pool.get().await {
            Ok(conn) => conn,
            Err(error) => return answer_all(batch, StoreError::from(error)),
        };
        let submissions: Vec<&PendingSubmission> =
            batch.iter().map(|queued| &queued.submission).collect();
        match commit(&mut conn, &submissions).await {
            Ok(Committed { rows, events }) => {
                // Handed over before the answers, so a stopping api has handed over everything
                // it answered for.
                self.outbox.committed(events);
                for (queued, row) in batch.into_iter().zip(rows) {
                    // The client may be gone; its submission stays stored.
                    let _ = queued.reply.send(Ok(row));
                }
            }
            Err(BatchError::Refused(error)) if batch.len() > 1 && !error.is_unreachable() => {
                tracing::warn!(%error, size = batch.len(), "a batch of submissions was refused; writing its members one by one");
                for queued in batch {
                    let outcome = commit(&mut conn, &[&queued.submission])
                        .await
                        .map_err(BatchError::into_store_error)
                        .and_then(|committed| {
                            self.outbox.committed(committed.events);
                            // One row in, one row back, as `get_result` would say.
                            committed
                                .rows
                                .into_iter()
                                .next()
                                .ok_or(StoreError::Query(fp_store::DieselError::NotFound))
                        })
                        .map_err(Arc::new);
                    let _ = queued.reply.send(outcome);
                }
            }
            // Nothing to retry: the database is away, or the batch may have committed (writing
            // it again could store it twice).
            Err(error) => answer_all(batch, error.into_store_error()),
        }
    }
}

fn answer_all(batch: Vec<Queued>, error: StoreError) {
    let error = Arc::new(error);
    for queued in batch {
        let _ = queued.reply.send(Err(error.clone()));
    }
}

/// What a batch wrote: its submissions in the order they were given, and their events.
struct Committed {
    rows: Vec<SubmissionRow>,
    events: Vec<OutboxEvent>,
}

/// Writes `submissions` and the outbox rows of their events. Two round trips: their ids are
/// reserved first, so that their events can be encoded, and then both are inserted in one
/// statement, which commits on its own.
async fn commit(
    conn: &mut PgConnection,
    submissions: &[&PendingSubmission],
) -> Result<Committed, BatchError> {
    // Nothing is written yet: a failure here is a refusal whatever its cause.
    let reservation = submissions::reserve(conn, submissions.len())
        .await
        .map_err(BatchError::Refused)?;
    let rows: Vec<SubmissionRow> = submissions
        .iter()
        .zip(&reservation.ids)
        .map(|(submission, &id)| {
            NewSubmission {
                tenant_id: submission.tenant_id,
                campaign_id: submission.campaign_id,
                star_rating: submission.star_rating,
                text_feedback: &submission.text_feedback,
                customer_name: submission.customer_name.as_deref(),
                status: fp_domain::SubmissionStatus::Pending.as_str(),
            }
            .row(id, reservation.at)
        })
        .collect();
    let events = rows
        .iter()
        .zip(submissions)
        .map(|(row, submission)| created_event(row, submission.trace.clone()))
        .collect::<Result<Vec<OutboxEvent>, StoreError>>()
        .map_err(BatchError::Refused)?;
    match submissions::insert_with_events(conn, &rows, &events).await {
        Ok(()) => Ok(Committed { rows, events }),
        // The server may have committed the statement before the connection went.
        Err(error) if error.is_unreachable() => Err(BatchError::Unknown(error)),
        Err(error) => Err(BatchError::Refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use diesel::QueryableByName;
    use diesel::sql_types::{BigInt, Nullable, Text};
    use diesel_async::RunQueryDsl;
    use fp_testkit::environment::TestEnvironment;

    use crate::outbox_relay::Handoff;

    use super::*;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct OutboxRow {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Nullable<BigInt>)]
        submission_id: Option<i64>,
        #[diesel(sql_type = Text)]
        traceparent: String,
    }

    async fn outbox_rows(conn: &mut PgConnection) -> anyhow::Result<Vec<OutboxRow>> {
        Ok(diesel::sql_query(
            "SELECT event_id, tenant_id, submission_id, traceparent FROM outbox \
             ORDER BY submission_id",
        )
        .load(conn)
        .await?)
    }

    /// A submission of `tenant_id` with text `text`, from a request of trace `n`.
    fn pending(tenant_id: Uuid, text: &str, n: u64) -> PendingSubmission {
        PendingSubmission {
            tenant_id,
            campaign_id: 7,
            star_rating: 4,
            text_feedback: text.to_owned(),
            customer_name: Some(format!("customer of {text}")),
            trace: StoredContext {
                traceparent: format!("00-{n:032x}-{n:016x}-01"),
                tracestate: String::new(),
            },
        }
    }

    /// Takes the one batch the queue holds, checks it has `members` submissions, and writes it.
    async fn write_one_batch(writer: &SubmissionWriter, members: usize) {
        let (_stop, mut stopping) = watch::channel(false);
        let batch = writer.next_batch(&mut stopping).await;
        assert_eq!(batch.as_ref().map(Vec::len), Some(members));
        writer.write_batch(batch.unwrap_or_default()).await;
    }

    struct Fixture {
        env: TestEnvironment,
        pool: PgPool,
        tenant_id: Uuid,
        outbox: OutboxHandoff,
        handoffs: std::sync::Mutex<mpsc::Receiver<Handoff>>,
    }

    async fn fixture(label: &str) -> anyhow::Result<Fixture> {
        let env = TestEnvironment::new(label).await?;
        let pool = fp_store::pool(&env.database_url, 4)?;
        let tenant_id = Uuid::new_v4();
        fp_store::identity::create_tenant(&mut *pool.get().await?, tenant_id, "Writer").await?;
        let (outbox, handoffs) = OutboxHandoff::channel();
        Ok(Fixture {
            env,
            pool,
            tenant_id,
            outbox,
            handoffs: std::sync::Mutex::new(handoffs),
        })
    }

    impl Fixture {
        fn writer(&self, batch_max: usize) -> (SubmissionQueue, SubmissionWriter) {
            queue(
                self.pool.clone(),
                self.outbox.clone(),
                NonZeroUsize::new(batch_max).unwrap_or(NonZeroUsize::MIN),
                NonZeroUsize::MIN,
            )
        }

        /// The ids of the events handed to the relay so far, in the order handed over.
        fn handed_off(&self) -> Vec<Uuid> {
            let mut handoffs = self
                .handoffs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut event_ids = Vec::new();
            while let Ok(handoff) = handoffs.try_recv() {
                event_ids.extend(handoff.events.iter().map(|event| event.event_id));
            }
            event_ids
        }
    }

    fn event_ids(rows: &[OutboxRow]) -> Vec<Uuid> {
        rows.iter().map(|row| row.event_id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_commits_each_submission_with_its_own_event() -> anyhow::Result<()> {
        let fixture = fixture("writer_batch").await?;
        let outcome = async {
            let (queue, writer) = fixture.writer(64);
            // Queued before any writer runs, so one batch holds them all.
            let texts: Vec<String> = (1..=5).map(|n| format!("feedback {n}")).collect();
            let mut outcomes = Vec::new();
            for (n, text) in (1..).zip(&texts) {
                outcomes.push(queue.enqueue(pending(fixture.tenant_id, text, n)).await?);
            }
            write_one_batch(&writer, 5).await;

            let mut rows = Vec::new();
            for (outcome, text) in outcomes.into_iter().zip(&texts) {
                let row = outcome.await?.map_err(|error| anyhow::anyhow!("{error}"))?;
                assert_eq!(&row.text_feedback, text);
                assert_eq!(row.tenant_id, fixture.tenant_id);
                rows.push(row);
            }
            let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
            assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

            let mut conn = fixture.pool.get().await?;
            let expected: Vec<(Uuid, Option<i64>, String)> = (1..)
                .zip(&rows)
                .map(|(n, row)| {
                    let traceparent = pending(fixture.tenant_id, "", n).trace.traceparent;
                    (fixture.tenant_id, Some(row.id), traceparent)
                })
                .collect();
            let stored = outbox_rows(&mut conn).await?;
            let found: Vec<(Uuid, Option<i64>, String)> = stored
                .iter()
                .map(|row| (row.tenant_id, row.submission_id, row.traceparent.clone()))
                .collect();
            assert_eq!(found, expected);
            // Committed, the batch's events went to the relay at once, in one hand-off.
            assert_eq!(fixture.handed_off(), event_ids(&stored));
            Ok(())
        }
        .await;
        fixture.env.finish_after(outcome).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_cannot_be_stored_fails_alone() -> anyhow::Result<()> {
        let fixture = fixture("writer_refused").await?;
        let outcome = async {
            let (queue, writer) = fixture.writer(64);
            let tenant_id = fixture.tenant_id;
            let first = queue.enqueue(pending(tenant_id, "first", 1)).await?;
            // No such tenant: the batch's insert breaks the foreign key.
            let ghost = queue.enqueue(pending(Uuid::new_v4(), "ghost", 2)).await?;
            let last = queue.enqueue(pending(tenant_id, "last", 3)).await?;
            write_one_batch(&writer, 3).await;

            let refused = ghost.await?.map(|row| row.id);
            let error = refused.expect_err("a submission of no tenant was stored");
            assert!(!error.is_unreachable(), "{error}");
            let mut stored = Vec::new();
            for outcome in [first, last] {
                stored.push(outcome.await?.map_err(|error| anyhow::anyhow!("{error}"))?);
            }
            let mut conn = fixture.pool.get().await?;
            let events = outbox_rows(&mut conn).await?;
            assert_eq!(
                events
                    .iter()
                    .map(|event| (event.tenant_id, event.submission_id))
                    .collect::<Vec<_>>(),
                stored
                    .iter()
                    .map(|row| (tenant_id, Some(row.id)))
                    .collect::<Vec<_>>()
            );
            // Only what was stored reaches the relay.
            assert_eq!(fixture.handed_off(), event_ids(&events));
            Ok(())
        }
        .await;
        fixture.env.finish_after(outcome).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_writers_store_what_is_queued_and_take_nothing_more() -> anyhow::Result<()> {
        let fixture = fixture("writer_stop").await?;
        let outcome = async {
            // Batches of two, so the queue takes more than one to drain (it holds four).
            let (queue, writer) = fixture.writer(2);
            let mut outcomes = Vec::new();
            for n in 1..=3 {
                outcomes.push(
                    queue
                        .enqueue(pending(fixture.tenant_id, &format!("queued {n}"), n))
                        .await?,
                );
            }
            let (_stop, stopping) = watch::channel(true);
            for task in writer.spawn(NonZeroUsize::MIN, stopping) {
                task.await?;
            }
            for outcome in outcomes {
                outcome.await?.map_err(|error| anyhow::anyhow!("{error}"))?;
            }
            assert!(
                queue
                    .enqueue(pending(fixture.tenant_id, "too late", 4))
                    .await
                    .is_err(),
                "a stopped queue took a submission"
            );
            let mut conn = fixture.pool.get().await?;
            assert_eq!(outbox_rows(&mut conn).await?.len(), 3);
            Ok(())
        }
        .await;
        fixture.env.finish_after(outcome).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_connection_every_member_is_told_the_database_is_unreachable()
    -> anyhow::Result<()> {
        // Nothing listens on port 1.
        let pool = fp_store::pool("postgres://fp_app@127.0.0.1:1/nowhere", 1)?;
        let (outbox, mut handoffs) = OutboxHandoff::channel();
        let (queue, writer) = queue(
            pool,
            outbox,
            NonZeroUsize::MIN.saturating_add(1),
            NonZeroUsize::MIN,
        );
        let first = queue.enqueue(pending(Uuid::new_v4(), "first", 1)).await?;
        let second = queue.enqueue(pending(Uuid::new_v4(), "second", 2)).await?;
        write_one_batch(&writer, 2).await;
        for outcome in [first, second] {
            let error = outcome
                .await?
                .map(|row| row.id)
                .expect_err("stored nowhere");
            assert!(error.is_unreachable(), "{error}");
        }
        assert!(
            handoffs.try_recv().is_err(),
            "nothing stored, yet handed off"
        );
        Ok(())
    }
}
