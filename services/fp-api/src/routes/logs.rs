//! `GET /api/v2/webhooks/logs`: the tenant's delivery attempts, newest first.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_store::attempts::{self, AttemptQuery, AttemptRow, StatusFilter};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::ApiError;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Query string of `GET /api/v2/webhooks/logs`; every filter is optional and they combine.
#[derive(Deserialize)]
pub struct LogQuery {
    limit: Option<String>,
    event_type: Option<String>,
    /// An exact code (`404`), a class (`5xx`), or `none` for attempts that got no answer.
    status: Option<String>,
    /// RFC 3339; `from` is inclusive, `to` exclusive.
    from: Option<String>,
    to: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize)]
struct LogPage {
    data: Vec<LogEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
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
    let mut filter = attempt_query(&query)?;
    filter.tenant_id = Some(tenant_id);
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let (rows, more) = attempts::page(&mut conn, &filter).await?;
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|row| encode_cursor(row.attempted_at, row.id))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(LogPage {
        data: rows.into_iter().map(LogEntry::from).collect(),
        next_cursor,
    }))
}

/// The store query a request asks for, every parameter validated with its name in the error.
fn attempt_query(query: &LogQuery) -> Result<AttemptQuery, ApiError> {
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
    let event_type = query
        .event_type
        .as_deref()
        .map(|name| {
            name.parse::<EventType>()
                .map(|event| event.as_str().to_owned())
                .map_err(|err| ApiError::invalid("event_type", err.to_string()))
        })
        .transpose()?;
    Ok(AttemptQuery {
        tenant_id: None,
        event_type,
        status: query.status.as_deref().map(parse_status).transpose()?,
        from: query
            .from
            .as_deref()
            .map(|text| parse_time("from", text))
            .transpose()?,
        to: query
            .to
            .as_deref()
            .map(|text| parse_time("to", text))
            .transpose()?,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    })
}

fn parse_status(text: &str) -> Result<StatusFilter, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "status",
            "must be a code from 100 to 599 (e.g. 404), a class (1xx to 5xx) or `none`",
        )
    };
    let text = text.trim().to_ascii_lowercase();
    if text == "none" {
        return Ok(StatusFilter::NoResponse);
    }
    if let Some(class) = text.strip_suffix("xx") {
        return class
            .parse::<i32>()
            .ok()
            .filter(|class| (1..=5).contains(class))
            .map(StatusFilter::Class)
            .ok_or_else(invalid);
    }
    text.parse::<i32>()
        .ok()
        .filter(|code| (100..=599).contains(code))
        .map(StatusFilter::Exact)
        .ok_or_else(invalid)
}

fn parse_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| {
            ApiError::invalid(
                field,
                format!("must be an RFC 3339 time such as 2024-03-15T10:30:00Z: {err}"),
            )
        })
}

/// Opaque to clients: the position of the last entry of a page.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::invalid("cursor", "is not a cursor this api returned");
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_parse_codes_classes_and_none() {
        assert_eq!(parse_status("404").ok(), Some(StatusFilter::Exact(404)));
        assert_eq!(parse_status("5xx").ok(), Some(StatusFilter::Class(5)));
        assert_eq!(parse_status("2XX").ok(), Some(StatusFilter::Class(2)));
        assert_eq!(parse_status("none").ok(), Some(StatusFilter::NoResponse));
        for bad in ["6xx", "99", "600", "abc", "xx", ""] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_710_498_600_123_456).expect("time");
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).ok(), Some((at, id)));
        assert!(decode_cursor("not-a-cursor").is_err());
    }
}
