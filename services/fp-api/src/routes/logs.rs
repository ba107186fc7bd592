//! `GET /api/v2/webhooks/logs`: the tenant's delivery attempts, newest first.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_store::attempts::{self, AttemptRow};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::ApiError;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Deserialize)]
pub struct LogQuery {
    limit: Option<String>,
}

#[derive(Serialize)]
struct LogPage {
    data: Vec<LogEntry>,
}

#[derive(Serialize)]
struct AttemptError {
    kind: String,
    message: String,
}

/// One attempt, with everything the product page lists plus what debugging needs.
#[derive(Serialize)]
struct LogEntry {
    id: Uuid,
    delivery_id: Uuid,
    event_id: Uuid,
    event_type: String,
    url: String,
    response_code: Option<i32>,
    /// The exact body sent, as text (bodies are always UTF-8 JSON).
    payload: String,
    response_body: String,
    response_body_truncated: bool,
    timestamp: DateTime<Utc>,
    duration_ms: i64,
    attempt_number: i32,
    #[serde(rename = "final")]
    is_final: bool,
    /// When the next attempt of this delivery is due; absent on final attempts.
    next_retry_at: Option<DateTime<Utc>>,
    error: Option<AttemptError>,
}

impl From<AttemptRow> for LogEntry {
    fn from(row: AttemptRow) -> Self {
        LogEntry {
            id: row.id,
            delivery_id: row.delivery_id,
            event_id: row.event_id,
            event_type: row.event_type,
            url: row.url,
            response_code: row.response_status,
            payload: String::from_utf8_lossy(&row.request_body).into_owned(),
            response_body: String::from_utf8_lossy(&row.response_body).into_owned(),
            response_body_truncated: row.response_truncated,
            timestamp: row.attempted_at,
            duration_ms: row.duration_ms,
            attempt_number: row.attempt_number,
            is_final: row.is_final,
            next_retry_at: row.next_retry_at,
            error: row.error_kind.map(|kind| AttemptError {
                kind,
                message: row.error_message.unwrap_or_default(),
            }),
        }
    }
}

pub async fn list(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match &query.limit {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let rows = attempts::newest_for_tenant(&mut conn, tenant_id, limit).await?;
    Ok(HttpResponse::Ok().json(LogPage {
        data: rows.into_iter().map(LogEntry::from).collect(),
    }))
}
