//! Submissions (owned by fp-api). Each write is committed together with the outbox row of the
//! event that announces it.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self, Array, BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::outbox::{InsertEvents, OutboxEvent};
use crate::schema::submissions;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = submissions)]
pub struct SubmissionRow {
    pub id: i64,
    pub tenant_id: Uuid,
    pub campaign_id: i64,
    pub star_rating: i32,
    pub text_feedback: String,
    pub customer_name: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewSubmission<'a> {
    pub tenant_id: Uuid,
    pub campaign_id: i64,
    pub star_rating: i32,
    pub text_feedback: &'a str,
    pub customer_name: Option<&'a str>,
    pub status: &'a str,
}

/// Ids and a creation time for new submissions, taken before they are written so that their
/// events can be encoded first and both written in one statement ([`insert_with_events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Ascending: given out in the order of the submissions they are for.
    pub ids: Vec<i64>,
    /// The database's clock, as a column default would have taken it.
    pub at: DateTime<Utc>,
}

/// Draws `count` ids from the submissions' sequence. An id reserved but never written is a gap,
/// as a rolled-back insert leaves one.
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    count: usize,
) -> Result<Reservation, StoreError> {
    let count = i32::try_from(count).map_err(|_| {
        StoreError::Query(diesel::result::Error::QueryBuilderError(
            format!("cannot reserve {count} submission ids in one statement").into(),
        ))
    })?;
    let reserved: Vec<(i64, DateTime<Utc>)> = ReserveIds { count }.load(conn).await?;
    let at = reserved
        .iter()
        .map(|&(_, at)| at)
        .next()
        .unwrap_or_else(Utc::now);
    let mut ids: Vec<i64> = reserved.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    Ok(Reservation { ids, at })
}

/// `count` ids from the submissions' sequence and the database's time; a statement of its own
/// type, so it is prepared once per connection (a `sql_query` is parsed every time).
struct ReserveIds {
    count: i32,
}

impl QueryId for ReserveIds {
    type QueryId = ReserveIds;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ReserveIds {
    type SqlType = (BigInt, sql_types::Timestamptz);
}

impl QueryFragment<Pg> for ReserveIds {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT nextval('submissions_id_seq'), now() FROM generate_series(1, ");
        out.push_bind_param::<Integer, _>(&self.count)?;
        out.push_sql(")");
        Ok(())
    }
}

impl NewSubmission<'_> {
    /// The row this submission becomes with id `id`, created at `at`.
    pub fn row(&self, id: i64, at: DateTime<Utc>) -> SubmissionRow {
        SubmissionRow {
            id,
            tenant_id: self.tenant_id,
            campaign_id: self.campaign_id,
            star_rating: self.star_rating,
            text_feedback: self.text_feedback.to_owned(),
            customer_name: self.customer_name.map(str::to_owned),
            status: self.status.to_owned(),
            created_at: at,
            updated_at: at,
        }
    }
}

/// Inserts `rows` (with ids from [`reserve`]) and the outbox rows of their events in one
/// statement. A single statement is atomic on its own, so this takes one round trip where a
/// transaction around two inserts takes four (`BEGIN`, the inserts, `COMMIT`): either everything
/// is written or nothing is.
pub async fn insert_with_events(
    conn: &mut AsyncPgConnection,
    rows: &[SubmissionRow],
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    if rows.is_empty() && events.is_empty() {
        return Ok(());
    }
    InsertWithEvents {
        submissions: InsertSubmissions::of(rows),
        events: InsertEvents::of(events),
    }
    .execute(conn)
    .await?;
    Ok(())
}

/// `WITH new_submissions AS (INSERT INTO submissions ...) INSERT INTO outbox ...`: both inserts
/// in one statement, each of them `INSERT ... SELECT FROM unnest(<one array per column>)`, so
/// there is one statement text for every batch size and it is prepared once per connection.
struct InsertWithEvents<'a> {
    submissions: InsertSubmissions<'a>,
    events: InsertEvents<'a>,
}

impl QueryId for InsertWithEvents<'_> {
    type QueryId = InsertWithEvents<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertWithEvents<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH new_submissions AS (");
        self.submissions.walk_ast(out.reborrow())?;
        out.push_sql(") ");
        self.events.walk_ast(out.reborrow())
    }
}

struct InsertSubmissions<'a> {
    ids: Vec<i64>,
    tenant_ids: Vec<Uuid>,
    campaign_ids: Vec<i64>,
    star_ratings: Vec<i32>,
    text_feedbacks: Vec<&'a str>,
    customer_names: Vec<Option<&'a str>>,
    statuses: Vec<&'a str>,
    created_ats: Vec<DateTime<Utc>>,
    updated_ats: Vec<DateTime<Utc>>,
}

impl<'a> InsertSubmissions<'a> {
    fn of(rows: &'a [SubmissionRow]) -> Self {
        Self {
            ids: rows.iter().map(|row| row.id).collect(),
            tenant_ids: rows.iter().map(|row| row.tenant_id).collect(),
            campaign_ids: rows.iter().map(|row| row.campaign_id).collect(),
            star_ratings: rows.iter().map(|row| row.star_rating).collect(),
            text_feedbacks: rows.iter().map(|row| row.text_feedback.as_str()).collect(),
            customer_names: rows
                .iter()
                .map(|row| row.customer_name.as_deref())
                .collect(),
            statuses: rows.iter().map(|row| row.status.as_str()).collect(),
            created_ats: rows.iter().map(|row| row.created_at).collect(),
            updated_ats: rows.iter().map(|row| row.updated_at).collect(),
        }
    }
}

impl QueryFragment<Pg> for InsertSubmissions<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO submissions (id, tenant_id, campaign_id, star_rating, text_feedback, \
               customer_name, status, created_at, updated_at) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.tenant_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.campaign_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.star_ratings)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.text_feedbacks)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.customer_names)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Timestamptz>, _>(&self.created_ats)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Timestamptz>, _>(&self.updated_ats)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The tenant's submission, locked until the transaction ends so concurrent status changes
/// serialise and each event names the right previous status.
type OneSubmission = diesel::dsl::Select<
    diesel::dsl::Filter<
        diesel::dsl::Filter<submissions::table, diesel::dsl::Eq<submissions::tenant_id, Uuid>>,
        diesel::dsl::Eq<submissions::id, i64>,
    >,
    diesel::dsl::AsSelect<SubmissionRow, diesel::pg::Pg>,
>;

/// The tenant's submission `id`: one query for [`find`] and [`find_for_update`].
fn one_submission(tenant_id: Uuid, id: i64) -> OneSubmission {
    submissions::table
        .filter(submissions::tenant_id.eq(tenant_id))
        .filter(submissions::id.eq(id))
        .select(SubmissionRow::as_select())
}

/// [`find`], locking the row until the transaction ends.
pub async fn find_for_update(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<SubmissionRow>, StoreError> {
    Ok(one_submission(tenant_id, id)
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: i64,
    status: &str,
    at: DateTime<Utc>,
) -> Result<SubmissionRow, StoreError> {
    Ok(diesel::update(submissions::table.find(id))
        .set((
            submissions::status.eq(status),
            submissions::updated_at.eq(at),
        ))
        .returning(SubmissionRow::as_returning())
        .get_result(conn)
        .await?)
}

/// One of the tenant's submissions.
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<SubmissionRow>, StoreError> {
    Ok(one_submission(tenant_id, id).first(conn).await.optional()?)
}

/// The tenant's submissions, newest first, after the one with id `before` if given; one more than
/// `limit` is fetched so the caller knows whether another page follows.
pub async fn newest(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<SubmissionRow>, bool), StoreError> {
    let mut query = submissions::table
        .filter(submissions::tenant_id.eq(tenant_id))
        .select(SubmissionRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(submissions::id.lt(before));
    }
    let mut rows = query
        .order(submissions::id.desc())
        .limit(limit + 1)
        .load(conn)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}
