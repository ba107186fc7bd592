//! Deliveries (read by the api and the dashboard): one row per delivery, the attempts sharing a
//! delivery id (one event for one endpoint), with where it stands
//! ([`fp_domain::delivery_state`]), how many attempts it took and its latest answer.
//!
//! A page walks the tenant's attempts newest first through `delivery_attempts_tenant_time` and
//! keeps each delivery's latest attempt (no later attempt of the same delivery, looked up through
//! `delivery_attempts_delivery`), so deliveries come in the order of their latest attempt and are
//! keyset-paged by its `(attempted_at, id)`: the cursor of [`crate::attempts::encode_cursor`].
//! A search goes through `delivery_attempts_delivery`, `delivery_attempts_event` and, for a
//! submission, `submission_events_submission` (`submission_events` keeps which events are about
//! which submission after their outbox rows are pruned).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fp_domain::delivery_state::{
    self, Condition, DeliveryFacts, DeliveryState, LatestAttempt, OTHERWISE, RULE,
};
use fp_domain::retry::FailureKind;
use uuid::Uuid;

use crate::StoreError;
use crate::attempts::Statement;

/// One delivery: its latest attempt and what its attempts add up to.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct DeliveryRow {
    #[diesel(sql_type = sql_types::Uuid)]
    pub delivery_id: Uuid,
    #[diesel(sql_type = sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = sql_types::Text)]
    pub event_type: String,
    #[diesel(sql_type = sql_types::Text)]
    pub url: String,
    #[diesel(sql_type = sql_types::Int8)]
    pub attempts: i64,
    #[diesel(sql_type = sql_types::Timestamptz)]
    pub first_attempted_at: DateTime<Utc>,
    /// Some attempt got a 2xx answer.
    #[diesel(sql_type = sql_types::Bool)]
    pub delivered: bool,
    /// The latest attempt (the one made last): its id is the detail's and the cursor's.
    #[diesel(sql_type = sql_types::Uuid)]
    pub last_attempt_id: Uuid,
    #[diesel(sql_type = sql_types::Timestamptz)]
    pub last_attempted_at: DateTime<Utc>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Int4>)]
    pub last_response_status: Option<i32>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    pub last_error_kind: Option<String>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    pub last_error_message: Option<String>,
    #[diesel(sql_type = sql_types::Bool)]
    pub last_final: bool,
    #[diesel(sql_type = sql_types::Bool)]
    pub last_manual: bool,
    /// When the next attempt is due, if one is planned.
    #[diesel(sql_type = sql_types::Nullable<sql_types::Timestamptz>)]
    pub next_retry_at: Option<DateTime<Utc>>,
}

impl DeliveryRow {
    /// Where the delivery stands; `pending_kind` is the error kind of a pending record
    /// (`fp_contracts::INTERRUPTED_ERROR_KIND`).
    pub fn state(&self, pending_kind: &str) -> DeliveryState {
        let kind = self.last_error_kind.as_deref();
        delivery_state::delivery_state(&DeliveryFacts {
            delivered: self.delivered,
            latest: LatestAttempt {
                outcome_pending: kind == Some(pending_kind),
                manual: self.last_manual,
                blocked: kind == Some(FailureKind::Blocked.as_str()),
                is_final: self.last_final,
                retry_planned: self.next_retry_at.is_some(),
            },
        })
    }

    /// The cursor of the page that starts after this delivery.
    pub fn cursor(&self) -> String {
        crate::attempts::encode_cursor(self.last_attempted_at, self.last_attempt_id)
    }
}

/// What a search box holds: an id of a delivery or of its event (a UUID), or a submission's id
/// (an integer), whose events' deliveries are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverySearch {
    /// A delivery id or an event id.
    Id(Uuid),
    Submission(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be a delivery id or an event id (a UUID such as 0192f0c4-8c1e-7a6b-9d3f-2b5e8f1a4c7d), \
     or a submission id (a positive integer of at most 18 digits)"
)]
pub struct InvalidSearch;

/// The forms [`DeliverySearch`] reads, as a pattern (the api documents it): a hyphenated or a
/// plain UUID, or up to 18 digits (so every such number is an `i64`).
pub const SEARCH_PATTERN: &str = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-\
    [0-9a-fA-F]{12}|[0-9a-fA-F]{32}|[0-9]{1,18})$";

impl std::str::FromStr for DeliverySearch {
    type Err = InvalidSearch;

    /// Exactly the forms of [`SEARCH_PATTERN`] (no braces, no `urn:uuid:`, no sign, no blanks).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if matches!(text.len(), 32 | 36)
            && let Ok(id) = Uuid::parse_str(text)
        {
            return Ok(DeliverySearch::Id(id));
        }
        if (1..=18).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(DeliverySearch::Submission)
                .ok_or(InvalidSearch);
        }
        Err(InvalidSearch)
    }
}

/// A page of the tenant's deliveries: latest attempt newest first, every filter optional.
#[derive(Debug, Clone)]
pub struct DeliveryQuery {
    pub tenant_id: Uuid,
    pub state: Option<DeliveryState>,
    pub search: Option<DeliverySearch>,
    /// Deliveries whose latest attempt is at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Deliveries whose latest attempt is before this.
    pub to: Option<DateTime<Utc>>,
    /// The latest attempt of the previous page's last delivery (its [`DeliveryRow::cursor`]).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

impl DeliveryQuery {
    /// Every delivery of the tenant, `limit` at a time.
    pub fn of_tenant(tenant_id: Uuid, limit: i64) -> Self {
        DeliveryQuery {
            tenant_id,
            state: None,
            search: None,
            from: None,
            to: None,
            after: None,
            limit,
        }
    }
}

/// What a row holds (`l` is the latest attempt, `s` the sums over the delivery's attempts).
const COLUMNS: &str = "l.delivery_id, l.event_id, l.event_type, l.url, \
    s.attempts, s.first_attempted_at, s.delivered, \
    l.id AS last_attempt_id, l.attempted_at AS last_attempted_at, \
    l.response_status AS last_response_status, l.error_kind AS last_error_kind, \
    l.error_message AS last_error_message, \
    l.final AS last_final, l.manual AS last_manual, l.next_retry_at";

/// Each delivery's latest attempt of the tenant (bound next), with its delivery's sums. Whether
/// an attempt is its delivery's latest comes from the same look-up as the sums: on the
/// partitioned table each look-up probes every partition's copy of the index, and a second one
/// (an anti-join) made PostgreSQL prefer hashing the tenant's whole log and sorting it.
const LATEST_ATTEMPTS: &str = " FROM delivery_attempts l \
    CROSS JOIN LATERAL ( \
        SELECT count(*) AS attempts, min(a.attempted_at) AS first_attempted_at, \
               coalesce(bool_or(a.response_status BETWEEN 200 AND 299), false) AS delivered, \
               bool_and((a.attempted_at, a.id) <= (l.attempted_at, l.id)) AS latest \
        FROM delivery_attempts a \
        WHERE a.delivery_id = l.delivery_id AND a.tenant_id = l.tenant_id \
    ) s \
    WHERE s.latest AND l.tenant_id = ";

/// The statement of `query`'s page (after `prefix`: `SELECT` or `EXPLAIN SELECT`), or of the one
/// delivery `only`.
fn page_statement(
    prefix: &str,
    query: &DeliveryQuery,
    only: Option<Uuid>,
    pending_kind: &str,
) -> Statement {
    let mut statement = Statement::new(&format!("{prefix} {COLUMNS}{LATEST_ATTEMPTS}"))
        .bind::<sql_types::Uuid, _>(query.tenant_id);
    if let Some(delivery_id) = only {
        statement = statement
            .sql(" AND l.delivery_id = ")
            .bind::<sql_types::Uuid, _>(delivery_id);
    }
    match query.search {
        None => {}
        Some(DeliverySearch::Id(id)) => {
            statement = statement
                .sql(" AND (l.delivery_id = ")
                .bind::<sql_types::Uuid, _>(id)
                .sql(" OR l.event_id = ")
                .bind::<sql_types::Uuid, _>(id)
                .sql(")");
        }
        Some(DeliverySearch::Submission(submission_id)) => {
            statement = statement
                .sql(" AND l.event_id IN (SELECT e.event_id FROM submission_events e WHERE e.tenant_id = ")
                .bind::<sql_types::Uuid, _>(query.tenant_id)
                .sql(" AND e.submission_id = ")
                .bind::<sql_types::Int8, _>(submission_id)
                .sql(")");
        }
    }
    if let Some(from) = query.from {
        statement = statement
            .sql(" AND l.attempted_at >= ")
            .bind::<sql_types::Timestamptz, _>(from);
    }
    if let Some(to) = query.to {
        statement = statement
            .sql(" AND l.attempted_at < ")
            .bind::<sql_types::Timestamptz, _>(to);
    }
    if let Some((at, id)) = query.after {
        // A row comparison, which PostgreSQL turns into an index bound (see `attempts::page`).
        statement = statement
            .sql(" AND (l.attempted_at, l.id) < (")
            .bind::<sql_types::Timestamptz, _>(at)
            .sql(", ")
            .bind::<sql_types::Uuid, _>(id)
            .sql(")");
    }
    if let Some(state) = query.state {
        statement = state_expression(statement.sql(" AND "), pending_kind)
            .sql(" = ")
            .bind::<sql_types::Text, _>(state.as_str());
    }
    statement
        .sql(" ORDER BY l.attempted_at DESC, l.id DESC LIMIT ")
        .bind::<sql_types::Int8, _>(query.limit + 1)
}

/// The state of a row in SQL: `fp_domain::delivery_state::RULE`, condition by condition in its
/// order, so the filter picks exactly the rows [`DeliveryRow::state`] names so.
fn state_expression(mut statement: Statement, pending_kind: &str) -> Statement {
    statement = statement.sql("(CASE");
    for (condition, state) in RULE {
        statement = statement.sql(" WHEN ");
        statement = match condition {
            Condition::LatestManualPending => statement
                .sql("l.manual AND l.error_kind = ")
                .bind::<sql_types::Text, _>(pending_kind.to_owned()),
            Condition::LatestPending => statement
                .sql("l.error_kind = ")
                .bind::<sql_types::Text, _>(pending_kind.to_owned()),
            Condition::SomeAttemptDelivered => statement.sql("s.delivered"),
            Condition::LatestBlocked => statement
                .sql("l.error_kind = ")
                .bind::<sql_types::Text, _>(FailureKind::Blocked.as_str()),
            Condition::LatestRetryPlanned => {
                statement.sql("NOT l.final AND l.next_retry_at IS NOT NULL")
            }
        };
        statement = statement
            .sql(" THEN ")
            .bind::<sql_types::Text, _>(state.as_str());
    }
    statement
        .sql(" ELSE ")
        .bind::<sql_types::Text, _>(OTHERWISE.as_str())
        .sql(" END)")
}

/// One page of deliveries matching `query`, and whether more follow. `pending_kind` is the error
/// kind of a pending record (`fp_contracts::INTERRUPTED_ERROR_KIND`).
pub async fn page(
    conn: &mut AsyncPgConnection,
    query: &DeliveryQuery,
    pending_kind: &str,
) -> Result<(Vec<DeliveryRow>, bool), StoreError> {
    let mut rows: Vec<DeliveryRow> = page_statement("SELECT", query, None, pending_kind)
        .query
        .load(conn)
        .await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(usize::try_from(query.limit).unwrap_or(0));
    Ok((rows, more))
}

/// The tenant's delivery `delivery_id`; `None` if the tenant has none by that id (another
/// tenant's included). Its attempts are [`crate::attempts::of_delivery`].
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    delivery_id: Uuid,
    pending_kind: &str,
) -> Result<Option<DeliveryRow>, StoreError> {
    let query = DeliveryQuery::of_tenant(tenant_id, 1);
    let mut rows: Vec<DeliveryRow> =
        page_statement("SELECT", &query, Some(delivery_id), pending_kind)
            .query
            .load(conn)
            .await?;
    Ok((!rows.is_empty()).then(|| rows.swap_remove(0)))
}

/// PostgreSQL's plan for [`page`], one line a row, so tests can check it stays an index walk.
pub async fn explain_page(
    conn: &mut AsyncPgConnection,
    query: &DeliveryQuery,
    pending_kind: &str,
) -> Result<Vec<String>, StoreError> {
    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let lines: Vec<PlanLine> = page_statement("EXPLAIN SELECT", query, None, pending_kind)
        .query
        .load(conn)
        .await?;
    Ok(lines.into_iter().map(|plan| plan.line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_ids_or_submission_numbers() {
        let id = Uuid::now_v7();
        assert_eq!(id.to_string().parse(), Ok(DeliverySearch::Id(id)));
        assert_eq!(
            id.simple().to_string().to_uppercase().parse(),
            Ok(DeliverySearch::Id(id))
        );
        assert_eq!("42".parse(), Ok(DeliverySearch::Submission(42)));
        assert_eq!(
            "999999999999999999".parse(),
            Ok(DeliverySearch::Submission(999_999_999_999_999_999))
        );
        let braced = format!("{{{id}}}");
        let urn = id.urn().to_string();
        let padded = format!(" {id}");
        for bad in [
            "",
            "0",
            "-3",
            "+3",
            " 3",
            "abc",
            "12ab",
            "0192f0c4-8c1e",
            "1000000000000000000",
            &braced,
            &urn,
            &padded,
        ] {
            assert_eq!(bad.parse::<DeliverySearch>(), Err(InvalidSearch), "{bad}");
        }
    }

    fn row() -> DeliveryRow {
        let now = Utc::now();
        DeliveryRow {
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: "submission.created".into(),
            url: "https://example.com/hook".into(),
            attempts: 1,
            first_attempted_at: now,
            delivered: false,
            last_attempt_id: Uuid::now_v7(),
            last_attempted_at: now,
            last_response_status: None,
            last_error_kind: None,
            last_error_message: None,
            last_final: true,
            last_manual: false,
            next_retry_at: None,
        }
    }

    #[test]
    fn a_row_reads_its_facts_from_the_latest_attempt() {
        let pending = DeliveryRow {
            last_error_kind: Some("interrupted".into()),
            last_final: false,
            ..row()
        };
        assert_eq!(pending.state("interrupted"), DeliveryState::Pending);
        let blocked = DeliveryRow {
            last_error_kind: Some("blocked".into()),
            ..row()
        };
        assert_eq!(blocked.state("interrupted"), DeliveryState::Blocked);
        let retrying = DeliveryRow {
            last_response_status: Some(500),
            last_error_kind: Some("http_status".into()),
            last_final: false,
            next_retry_at: Some(Utc::now()),
            ..row()
        };
        assert_eq!(retrying.state("interrupted"), DeliveryState::Retrying);
        assert_eq!(row().state("interrupted"), DeliveryState::Failed);
    }

    #[test]
    fn the_state_expression_has_a_case_per_condition_and_the_fallback() {
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(
            &state_expression(Statement::new(""), "interrupted").query,
        )
        .to_string();
        assert_eq!(sql.matches(" WHEN ").count(), RULE.len(), "{sql}");
        assert!(sql.contains(" ELSE "), "{sql}");
    }
}
