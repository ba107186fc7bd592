//! First attempts claimed across dispatchers, so that an event published twice (a publisher's
//! retry, the api's relay dying between the broker's confirm and marking its outbox row) is
//! delivered once per endpoint even when the copies reach different dispatchers.
//!
//! One row per delivery in `delivery_claims`, inserted with `ON CONFLICT DO NOTHING`: the copy
//! whose insert took the row sends, the other is skipped. A claim made just before the request
//! carries the attempt's pending row, stored by the same statement: the attempt is in the log
//! before its request leaves without a pending record through the broker, and a copy that loses
//! its claim stores nothing. Claims are batched: a single task writes every claim waiting at the
//! time in one statement, so under load one round trip serves many deliveries (at ~4,600 first
//! attempts/s, about one statement per few milliseconds instead of 4,600 single-row
//! transactions), and a lone claim waits for nothing but its own round trip.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use fp_domain::DeliveryId;
use fp_domain::inbound_event::{DEDUP_WINDOW, UNDELIVERABLE_RETENTION};
use fp_store::attempts::AttemptRow;
use fp_store::inbound_events::FirstAttemptClaim;
use fp_store::partitions::CoveredDay;
use fp_store::{PgPool, PooledConnection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most claims written in one statement (arrays of any length: the bound is the batch's memory).
const MAX_BATCH: usize = 1_000;
/// Claims waiting for the writer; beyond it a claim waits for room (the prefetch bounds it anyway).
const QUEUE_CAPACITY: usize = 10_000;
/// How often old claims and undeliverable records are removed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

type Answer = oneshot::Sender<Result<FirstAttempt, String>>;

/// What a claim of a delivery's first attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAttempt {
    /// Claimed by this call. `pending_logged`: the pending row it carried is in the log; when
    /// not (the tenant is gone, the event erased), the pending record goes to log-ingest instead.
    Claimed { pending_logged: bool },
    /// Another copy of the event claimed it before (on any dispatcher, within the dedup window).
    ClaimedBefore,
}

#[derive(Clone)]
pub struct FirstAttemptClaims {
    requests: mpsc::Sender<(FirstAttemptClaim, Answer)>,
}

impl FirstAttemptClaims {
    /// Starts the writer and the pruning task on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        let (requests, waiting) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_claims(pool.clone(), waiting));
        tokio::spawn(prune(pool));
        FirstAttemptClaims { requests }
    }

    /// Claims the delivery's first attempt, storing `pending` (the row of the attempt about to be
    /// sent) with it.
    pub async fn claim(
        &self,
        delivery_id: DeliveryId,
        pending: Option<AttemptRow>,
    ) -> anyhow::Result<FirstAttempt> {
        let (answer, answered) = oneshot::channel();
        let claim = FirstAttemptClaim {
            delivery_id: delivery_id.0,
            pending,
        };
        self.requests
            .send((claim, answer))
            .await
            .map_err(|_| anyhow::anyhow!("the claim writer has stopped"))?;
        answered
            .await
            .map_err(|_| anyhow::anyhow!("the claim writer has stopped"))?
            .map_err(|error| anyhow::anyhow!("cannot claim the first attempt: {error}"))
    }
}

/// Writes the claims as they come, on one connection of the pool kept for it. A claim statement
/// carries its attempts' rows, and a connection keeps buffers as large as the largest message it
/// sent: taking any connection of the pool in turn left every one of them holding a statement's
/// worth (about 17 MiB in all on a backlog).
async fn write_claims(pool: PgPool, mut waiting: mpsc::Receiver<(FirstAttemptClaim, Answer)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut covered_day = CoveredDay::default();
    let mut kept: Option<PooledConnection> = None;
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (claims, answers): (Vec<FirstAttemptClaim>, Vec<Answer>) = batch.drain(..).unzip();
        // One the server closed (a restart) goes back to the pool, which drops it.
        kept.take_if(|conn| !fp_store::still_usable(conn));
        let conn = match kept.take() {
            Some(conn) => Ok(conn),
            None => pool.get().await,
        };
        let claimed = match conn {
            Ok(mut conn) => {
                let claimed = fp_store::inbound_events::claim_first_attempts(
                    &mut conn,
                    &claims,
                    Utc::now(),
                    &mut covered_day,
                )
                .await;
                if claimed.is_ok() {
                    kept = Some(conn);
                }
                claimed.map_err(|error| error.to_string())
            }
            Err(error) => Err(error.to_string()),
        }
        .map(|claimed| {
            claimed
                .into_iter()
                .map(|claimed| (claimed.delivery_id, claimed.pending_stored))
                .collect::<HashMap<Uuid, bool>>()
        });
        metrics::histogram!("fp_dispatcher_claim_batch_size").record(claims.len() as f64);
        match claimed {
            Ok(mut claimed) => {
                for (claim, answer) in claims.iter().zip(answers) {
                    // Two copies in one batch: the first takes the claim, the second does not.
                    let found = match claimed.remove(&claim.delivery_id) {
                        Some(pending_logged) => FirstAttempt::Claimed { pending_logged },
                        None => FirstAttempt::ClaimedBefore,
                    };
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

async fn prune(pool: PgPool) {
    let mut interval = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        interval.tick().await;
        let now = Utc::now();
        let pruned = match pool.get().await {
            Ok(mut conn) => {
                fp_store::inbound_events::prune(
                    &mut conn,
                    now - DEDUP_WINDOW,
                    now - UNDELIVERABLE_RETENTION,
                )
                .await
            }
            Err(error) => Err(error.into()),
        };
        match pruned {
            Ok(rows) => {
                tracing::debug!(rows, "pruned old delivery claims and undeliverable events")
            }
            Err(error) => tracing::warn!(%error, "could not prune old delivery claims"),
        }
    }
}
