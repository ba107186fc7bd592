//! First attempts claimed across dispatchers, so that an event published twice (a publisher's
//! retry, the api's relay dying between the broker's confirm and marking its outbox row) is
//! delivered once per endpoint even when the copies reach different dispatchers.
//!
//! One row per delivery in `delivery_claims`, inserted with `ON CONFLICT DO NOTHING`: the copy
//! whose insert took the row sends, the other is skipped. A claim made just before the request
//! carries the attempt's pending row, stored by the same statement: the attempt is in the log
//! before its request leaves without a pending record through the broker, and a copy that loses
//! its claim stores nothing. The attempt's outcome then overwrites that row, from here too, so
//! the attempt normally sends no record through the broker (one goes to log-ingest only where
//! that write fails or the log would not keep it). Claims and outcomes are batched
//! (`batch_writer`): at ~4,600 first attempts/s, about one statement per few milliseconds
//! instead of 4,600 single-row transactions.
//!
//! The same row says which attempt of the delivery has been sent (`sent_attempt`; 0 while a
//! first attempt is parked). A copy that may have a twin (handed out again by the broker, handed
//! back, or parked) takes the send of its attempt there, with its pending row, just before its
//! request: of two such copies sent at once by two dispatchers, each asking the log before the
//! other's pending row was in it, only one takes it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use fp_domain::DeliveryId;
use fp_domain::inbound_event::{DEDUP_WINDOW, UNDELIVERABLE_RETENTION};
use fp_store::attempts::AttemptRow;
use fp_store::inbound_events::{ClaimedAttempt, FirstAttemptClaim};
use fp_store::partitions::CoveredDay;
use fp_store::{PgConnection, PgPool, StoreError};
use uuid::Uuid;

use crate::batch_writer::{BatchStatement, BatchWriter};

/// How often old claims and undeliverable records are removed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// What a claim of a delivery's first attempt, or of an attempt's send, found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClaim {
    /// Claimed by this call. `pending_logged`: the pending row it carried is in the log; when
    /// not (the tenant is gone or held by an erasure or a deletion, the event erased), the
    /// pending record goes to log-ingest instead.
    Claimed { pending_logged: bool },
    /// Claimed before: a first attempt by another copy of the event, a send by a twin or by an
    /// earlier try of this input (on any dispatcher, within the dedup window).
    ClaimedBefore,
}

/// A claim for the claim writer.
pub enum ClaimRequest {
    /// A fresh event's first attempt: sent now with its pending row, or parked without.
    FirstAttempt(FirstAttemptClaim),
    /// The send of an attempt by a copy that may have a twin, with its pending row.
    Send(AttemptRow),
}

impl ClaimRequest {
    fn delivery_id(&self) -> Uuid {
        match self {
            ClaimRequest::FirstAttempt(claim) => claim.delivery_id,
            ClaimRequest::Send(pending) => pending.delivery_id,
        }
    }

    fn pending(&self) -> Option<&AttemptRow> {
        match self {
            ClaimRequest::FirstAttempt(claim) => claim.pending.as_ref(),
            ClaimRequest::Send(pending) => Some(pending),
        }
    }
}

#[derive(Clone)]
pub struct FirstAttemptLog {
    claims: BatchWriter<ClaimStatement>,
    outcomes: BatchWriter<OutcomeStatement>,
}

impl FirstAttemptLog {
    /// Starts the writers (claims, outcomes: a connection each, so an outcome never holds up the
    /// claim a request waits for) and the pruning task on the current runtime. A claim is written
    /// at once (its request waits for it); outcomes gather for `outcome_linger` first (only the
    /// input's ack waits for them), so that at a low rate one statement still serves several.
    pub fn start(pool: PgPool, outcome_linger: Duration) -> Self {
        tokio::spawn(prune(pool.clone()));
        FirstAttemptLog {
            claims: BatchWriter::start(
                pool.clone(),
                ClaimStatement {
                    covered_day: CoveredDay::default(),
                },
                Duration::ZERO,
            ),
            outcomes: BatchWriter::start(pool, OutcomeStatement, outcome_linger),
        }
    }

    /// Claims the delivery's first attempt, storing `pending` (the row of the attempt about to be
    /// sent) with it.
    pub async fn claim(
        &self,
        delivery_id: DeliveryId,
        pending: Option<AttemptRow>,
    ) -> anyhow::Result<AttemptClaim> {
        self.claims
            .write(ClaimRequest::FirstAttempt(FirstAttemptClaim {
                delivery_id: delivery_id.0,
                pending,
            }))
            .await
    }

    /// Takes the send of the attempt whose pending row is `pending`, storing the row with it.
    pub async fn take_send(&self, pending: AttemptRow) -> anyhow::Result<AttemptClaim> {
        self.claims.write(ClaimRequest::Send(pending)).await
    }

    /// Stores the outcome of an attempt whose pending row its claim stored, over that row; false
    /// where the row is gone or changed since the claim, or its event erased (the tenant deleted,
    /// an erasure, an outcome stored already), and the outcome record goes to log-ingest instead.
    pub async fn log_outcome(&self, outcome: AttemptRow) -> anyhow::Result<bool> {
        self.outcomes.write(outcome).await
    }
}

struct ClaimStatement {
    covered_day: CoveredDay,
}

impl BatchStatement for ClaimStatement {
    type Item = ClaimRequest;
    type Answer = AttemptClaim;
    const BATCH_SIZE_METRIC: &'static str = "fp_dispatcher_claim_batch_size";
    const WRITER: &'static str = "the claim writer";

    fn size(claim: &ClaimRequest) -> usize {
        claim.pending().map_or(0, AttemptRow::approximate_bytes)
    }

    async fn write(
        &mut self,
        conn: &mut PgConnection,
        claims: &[ClaimRequest],
    ) -> Result<Vec<AttemptClaim>, StoreError> {
        let mut first_attempts = Vec::new();
        let mut sends = Vec::new();
        for claim in claims {
            match claim {
                ClaimRequest::FirstAttempt(claim) => first_attempts.push(claim),
                ClaimRequest::Send(pending) => sends.push(pending),
            }
        }
        let now = Utc::now();
        // Two statements, each committed on its own (either order is safe). When the second
        // fails, every claim of the batch gets its error though the first's may be committed:
        // a fresh event's input then goes back marked as a copy, which takes the send or waits
        // for the attempt in the log (`Dispatcher::claim_first_attempt`).
        let mut claimed = won(fp_store::inbound_events::claim_first_attempts(
            conn,
            first_attempts,
            now,
            &mut self.covered_day,
        )
        .await?);
        let mut taken =
            won(
                fp_store::inbound_events::take_sends(conn, sends, now, &mut self.covered_day)
                    .await?,
            );
        Ok(claims
            .iter()
            // Two copies in one batch: the first takes the claim, the second does not.
            .map(|claim| {
                let won = match claim {
                    ClaimRequest::FirstAttempt(_) => &mut claimed,
                    ClaimRequest::Send(_) => &mut taken,
                };
                match won.remove(&claim.delivery_id()) {
                    Some(pending_logged) => AttemptClaim::Claimed { pending_logged },
                    None => AttemptClaim::ClaimedBefore,
                }
            })
            .collect())
    }
}

/// The deliveries a statement claimed, with whether each one's pending row is in the log.
fn won(claimed: Vec<ClaimedAttempt>) -> HashMap<Uuid, bool> {
    claimed
        .into_iter()
        .map(|claimed| (claimed.delivery_id, claimed.pending_stored))
        .collect()
}

struct OutcomeStatement;

impl BatchStatement for OutcomeStatement {
    type Item = AttemptRow;
    type Answer = bool;
    const BATCH_SIZE_METRIC: &'static str = "fp_dispatcher_outcome_batch_size";
    const WRITER: &'static str = "the outcome writer";

    fn size(outcome: &AttemptRow) -> usize {
        outcome.approximate_bytes()
    }

    async fn write(
        &mut self,
        conn: &mut PgConnection,
        outcomes: &[AttemptRow],
    ) -> Result<Vec<bool>, StoreError> {
        let logged: HashSet<Uuid> = fp_store::attempts::store_claimed_outcomes(
            conn,
            outcomes,
            fp_contracts::INTERRUPTED_ERROR_KIND,
        )
        .await?
        .into_iter()
        .collect();
        Ok(outcomes
            .iter()
            .map(|outcome| logged.contains(&outcome.id))
            .collect())
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
