//! Submissions (owned by fp-api). Writes happen inside the caller's transaction, beside the outbox row
//! that announces them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
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

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = submissions)]
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
    // An empty batch would be an INSERT of one row of defaults.
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = diesel::insert_into(submissions::table)
        .values(new)
        .returning(SubmissionRow::as_returning())
        .get_results(conn)
        .await?;
    // The ids come from one sequence, drawn row by row in the order of VALUES, so id order is
    // input order; PostgreSQL does not promise that RETURNING lists the rows in that order.
    rows.sort_unstable_by_key(|row| row.id);
    Ok(rows)
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
