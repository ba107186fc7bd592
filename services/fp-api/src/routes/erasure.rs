//! `POST /api/v2/submissions/{id}/erase`: erases a submission's personal data (GDPR Art. 17) from
//! the submission, from its events as published (outbox) and from every stored request of their
//! deliveries, clears those deliveries' response bodies (a receiver may echo the request), marks
//! the events erased so the dispatcher cancels their pending deliveries, and writes an audit
//! record. The rules (what is personal, the marker, each body format) are `fp_domain::erasure`'s.
//!
//! One transaction, under the submission's row lock: a status change waits for it and then
//! announces the erased submission, so only the events that exist when a submission is first
//! erased can carry its data, and only those are marked erased (later ones go out as usual).

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::erasure;
use fp_store::erasure::{AttemptBodies, ErasureRecord};
use fp_store::{AsyncConnection, PgConnection, StoreError};
use serde::Serialize;
use uuid::Uuid;

use super::submissions::{domain_submission, submission_id};
use crate::AppState;
use crate::auth::{AuthenticatedTenant, Requester};
use crate::error::{ApiError, ErrorBody};

/// What one erasure changed. A second erasure of the same submission changes only what was
/// stored since the first (the response bodies of deliveries made since, such as a later status
/// change's), so it mostly answers empty fields and zero counts (its request is audited all the
/// same).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErasureResponse {
    submission_id: i64,
    /// The submission's fields that held personal data and now hold `[erased]`
    /// (`text_feedback`, `customer_name`); a name that was never given stays `null`.
    #[schema(example = json!(["text_feedback", "customer_name"]))]
    erased_fields: Vec<String>,
    /// Stored events (as published to the delivery pipeline) rewritten.
    outbox_rows: i32,
    /// Delivery attempts whose stored request body was rewritten or response body cleared.
    delivery_attempts: i32,
    /// Events marked erased by this request: no delivery of them is attempted again.
    erased_events: i32,
    /// Deliveries of those events that were still under way (a retry planned, or an attempt
    /// without an outcome yet): they stop, and their log ends with an attempt whose `error_kind`
    /// is `cancelled`.
    cancelled_deliveries: i32,
    /// The audit record of this request (who asked and when; never the erased data).
    audit_id: Uuid,
    erased_at: DateTime<Utc>,
}

impl From<ErasureRecord> for ErasureResponse {
    fn from(record: ErasureRecord) -> Self {
        ErasureResponse {
            submission_id: record.submission_id,
            erased_fields: record.erased_fields,
            outbox_rows: record.outbox_rows,
            delivery_attempts: record.delivery_attempts,
            erased_events: record.erased_events,
            cancelled_deliveries: record.cancelled_deliveries,
            audit_id: record.id,
            erased_at: record.erased_at,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v2/submissions/{id}/erase",
    tag = "submissions",
    params(("id" = i64, Path, description = "The submission's `id`")),
    responses(
        (status = 200, description = "Erased, or already erased (then only what was stored since changed); what changed per table", body = ErasureResponse),
        (status = 404, description = "No such submission for this tenant", body = ErrorBody),
    ),
)]
pub async fn erase(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    requester: Requester,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = submission_id(&path)?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let record = conn
        .transaction(async |conn| erase_submission(conn, tenant_id, id, requester).await)
        .await?
        .ok_or(ApiError::NotFound("submission"))?;
    tracing::info!(
        submission_id = id,
        audit_id = %record.id,
        outbox_rows = record.outbox_rows,
        delivery_attempts = record.delivery_attempts,
        cancelled_deliveries = record.cancelled_deliveries,
        "submission erased"
    );
    Ok(HttpResponse::Ok().json(ErasureResponse::from(record)))
}

/// The erasure itself, in the caller's transaction; `None` when the tenant has no such submission.
async fn erase_submission(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    submission_id: i64,
    requester: Requester,
) -> Result<Option<ErasureRecord>, StoreError> {
    let Some(row) = fp_store::submissions::find_for_update(conn, tenant_id, submission_id).await?
    else {
        return Ok(None);
    };
    let mut submission = domain_submission(&row)?;
    let erased_fields = erasure::erase_submission(&mut submission);
    let submission_rows = if erased_fields.is_empty() {
        0
    } else {
        fp_store::erasure::set_submission_personal_data(
            conn,
            tenant_id,
            submission_id,
            &submission.text_feedback,
            submission.customer_name.as_deref(),
        )
        .await?
    };

    let event_ids = fp_store::erasure::events_of_submission(conn, tenant_id, submission_id).await?;
    let mut outbox_rows = 0;
    for stored in fp_store::erasure::outbox_payloads(conn, tenant_id, &event_ids).await? {
        let erased = erased_payload(&stored.payload);
        if erased != stored.payload {
            fp_store::erasure::set_outbox_payload(conn, stored.id, &erased).await?;
            outbox_rows += 1;
        }
    }
    // Just before the attempts are read, not earlier: the tenant's writers wait while it is held.
    // A row being written now is then committed and read here, or is stored by log-ingest after
    // this erasure's marks commit, and log-ingest erases it (`lock_tenant` says which remain).
    fp_store::erasure::lock_tenant(conn, tenant_id).await?;
    let attempts = fp_store::erasure::attempt_bodies(conn, tenant_id, &event_ids).await?;
    let mut delivery_attempts = 0;
    for attempt in &attempts {
        let format = fp_domain::format::detect_text(&attempt.url);
        let request_body = erasure::erase_request_body(&attempt.request_body, format);
        let response_body = erasure::erase_response_body(&attempt.response_body);
        if request_body != attempt.request_body || response_body != attempt.response_body {
            fp_store::erasure::set_attempt_bodies(
                conn,
                tenant_id,
                attempt,
                &request_body,
                &response_body,
            )
            .await?;
            delivery_attempts += 1;
        }
    }

    // Events made after the first erasure were made from the erased submission.
    let newly_erased = if fp_store::erasure::erased_before(conn, tenant_id, submission_id).await? {
        Vec::new()
    } else {
        fp_store::erasure::not_yet_erased(conn, &event_ids).await?
    };
    let record = ErasureRecord {
        id: Uuid::now_v7(),
        tenant_id,
        submission_id,
        requested_by_api_key: match requester {
            Requester::ApiKey(key_id) => Some(key_id),
            Requester::User(_) => None,
        },
        requested_by_user: match requester {
            Requester::User(user_id) => Some(user_id),
            Requester::ApiKey(_) => None,
        },
        erased_at: Utc::now(),
        erased_fields: erased_fields
            .iter()
            .map(|field| field.as_str().to_owned())
            .collect(),
        submission_rows: count(submission_rows),
        outbox_rows,
        delivery_attempts,
        erased_events: count(newly_erased.len()),
        cancelled_deliveries: unfinished_deliveries(&attempts, &newly_erased),
    };
    fp_store::erasure::record(conn, &record, &newly_erased).await?;
    Ok(Some(record))
}

/// An outbox row's encoded event with the personal data erased; a payload that does not decode
/// (it cannot have been published either) is cleared, since it may hold the data.
fn erased_payload(payload: &[u8]) -> Vec<u8> {
    match fp_contracts::decode_event(payload) {
        Ok(mut event) => {
            if erasure::erase_event(&mut event) {
                fp_contracts::encode_event(&event)
            } else {
                payload.to_vec()
            }
        }
        Err(_) => Vec::new(),
    }
}

/// Deliveries of `events` whose latest attempt is not final: a retry is planned or the outcome
/// is not in yet. Their next attempt is cancelled.
fn unfinished_deliveries(attempts: &[AttemptBodies], events: &[Uuid]) -> i32 {
    let mut latest: HashMap<Uuid, &AttemptBodies> = HashMap::new();
    for attempt in attempts
        .iter()
        .filter(|attempt| events.contains(&attempt.event_id))
    {
        let entry = latest.entry(attempt.delivery_id).or_insert(attempt);
        if (attempt.attempted_at, attempt.attempt_number)
            > (entry.attempted_at, entry.attempt_number)
        {
            *entry = attempt;
        }
    }
    count(latest.values().filter(|attempt| !attempt.is_final).count())
}

fn count(rows: usize) -> i32 {
    i32::try_from(rows).unwrap_or(i32::MAX)
}
