//! Submissions (owned by fp-api). Writes happen inside the caller's transaction, beside the outbox row
//! that announces them.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self, Array, BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::submissions;

#[derive(Debug, Clone, Queryable, Selectable)]
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

/// Inserts `new` in one statement; returns the rows in the order of `new`.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    new: &[NewSubmission<'_>],
) -> Result<Vec<SubmissionRow>, StoreError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = InsertSubmissions::of(new).get_results(conn).await?;
    // PostgreSQL does not promise that RETURNING lists the rows in insertion order; the ids do
    // follow it (see `InsertSubmissions`).
    rows.sort_unstable_by_key(|row: &SubmissionRow| row.id);
    Ok(rows)
}

/// `INSERT INTO submissions ... SELECT FROM unnest(<one array per column>)`: one statement text
/// for every batch size, so it is prepared once per connection, where a multi-row `VALUES` would
/// be parsed and planned again for each new size. The rows are inserted in array order, so ids
/// (drawn from one sequence, row by row) follow the order of the input.
struct InsertSubmissions<'a> {
    tenant_ids: Vec<Uuid>,
    campaign_ids: Vec<i64>,
    star_ratings: Vec<i32>,
    text_feedbacks: Vec<&'a str>,
    customer_names: Vec<Option<&'a str>>,
    statuses: Vec<&'a str>,
}

impl<'a> InsertSubmissions<'a> {
    fn of(new: &[NewSubmission<'a>]) -> Self {
        Self {
            tenant_ids: new.iter().map(|row| row.tenant_id).collect(),
            campaign_ids: new.iter().map(|row| row.campaign_id).collect(),
            star_ratings: new.iter().map(|row| row.star_rating).collect(),
            text_feedbacks: new.iter().map(|row| row.text_feedback).collect(),
            customer_names: new.iter().map(|row| row.customer_name).collect(),
            statuses: new.iter().map(|row| row.status).collect(),
        }
    }
}

impl QueryId for InsertSubmissions<'_> {
    type QueryId = InsertSubmissions<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertSubmissions<'_> {
    type SqlType = submissions::SqlType;
}

impl QueryFragment<Pg> for InsertSubmissions<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO submissions \
               (tenant_id, campaign_id, star_rating, text_feedback, customer_name, status) \
             SELECT tenant_id, campaign_id, star_rating, text_feedback, customer_name, status \
             FROM unnest(",
        );
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
        out.push_sql(
            ") WITH ORDINALITY AS new (tenant_id, campaign_id, star_rating, text_feedback, \
               customer_name, status, position) \
             ORDER BY position \
             RETURNING id, tenant_id, campaign_id, star_rating, text_feedback, customer_name, \
               status, created_at, updated_at",
        );
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
