//! Delivery attempts (written only by fp-log-ingest; read by the api and the dashboard).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::delivery_attempts;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = delivery_attempts)]
pub struct AttemptRow {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub url: String,
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `[[name, value], ...]` in the order sent.
    pub request_headers: serde_json::Value,
    pub request_body: Vec<u8>,
    pub response_status: Option<i32>,
    pub response_headers: serde_json::Value,
    pub response_body: Vec<u8>,
    pub response_truncated: bool,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub is_final: bool,
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// Inserts a batch in one statement; rows whose id is already stored are skipped, so a record the
/// broker delivers twice still makes one row. Returns how many rows were new.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(diesel::insert_into(delivery_attempts::table)
        .values(rows)
        .on_conflict(delivery_attempts::id)
        .do_nothing()
        .execute(conn)
        .await?)
}

/// The tenant's newest attempts first.
pub async fn newest_for_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<AttemptRow>, StoreError> {
    let query = AttemptQuery {
        tenant_id: Some(tenant_id),
        limit,
        ..AttemptQuery::default()
    };
    Ok(page(conn, &query).await?.0)
}

/// Which response codes a log query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(i32),
    /// `2` for 2xx, `5` for 5xx, ...
    Class(i32),
    /// Attempts that got no HTTP answer (blocked, DNS, connect, TLS, timeout).
    NoResponse,
}

/// A page of a log query: newest first, keyset-paged by `(attempted_at, id)`.
#[derive(Debug, Clone, Default)]
pub struct AttemptQuery {
    /// `None` only for the platform-wide admin view.
    pub tenant_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub status: Option<StatusFilter>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The last entry of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// One page of attempts matching `query`, and whether more follow.
pub async fn page(
    conn: &mut AsyncPgConnection,
    query: &AttemptQuery,
) -> Result<(Vec<AttemptRow>, bool), StoreError> {
    use delivery_attempts::dsl;

    let mut statement = dsl::delivery_attempts
        .select(AttemptRow::as_select())
        .into_boxed();
    if let Some(tenant_id) = query.tenant_id {
        statement = statement.filter(dsl::tenant_id.eq(tenant_id));
    }
    if let Some(event_type) = &query.event_type {
        statement = statement.filter(dsl::event_type.eq(event_type.clone()));
    }
    statement = match query.status {
        None => statement,
        Some(StatusFilter::Exact(code)) => statement.filter(dsl::response_status.eq(code)),
        Some(StatusFilter::Class(class)) => {
            statement.filter(dsl::response_status.between(class * 100, class * 100 + 99))
        }
        Some(StatusFilter::NoResponse) => statement.filter(dsl::response_status.is_null()),
    };
    if let Some(from) = query.from {
        statement = statement.filter(dsl::attempted_at.ge(from));
    }
    if let Some(to) = query.to {
        statement = statement.filter(dsl::attempted_at.lt(to));
    }
    if let Some((at, id)) = query.after {
        statement = statement.filter(
            dsl::attempted_at
                .lt(at)
                .or(dsl::attempted_at.eq(at).and(dsl::id.lt(id))),
        );
    }
    let mut rows = statement
        .order((dsl::attempted_at.desc(), dsl::id.desc()))
        .limit(query.limit + 1)
        .load(conn)
        .await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(usize::try_from(query.limit).unwrap_or(0));
    Ok((rows, more))
}
