//! Attempt rows written straight to the database, for tests of what reads them (log pages, plans,
//! the dashboard) that need many rows or exact times without running deliveries.

use chrono::{DateTime, Utc};
use fp_store::attempts::{AttemptRow, StoredHeaders};
use uuid::Uuid;

/// A final, successful first attempt of a new delivery of `submission.created`; tests change the
/// fields they care about with struct update syntax.
pub fn attempt_row(tenant_id: Uuid, attempted_at: DateTime<Utc>) -> AttemptRow {
    AttemptRow {
        id: Uuid::now_v7(),
        delivery_id: Uuid::now_v7(),
        event_id: Uuid::now_v7(),
        tenant_id,
        event_type: "submission.created".to_owned(),
        url: "https://example.com/hook".to_owned(),
        attempt_number: 1,
        attempted_at,
        duration_ms: 12,
        request_headers: StoredHeaders::none(),
        request_body: b"{}".to_vec(),
        response_status: Some(200),
        response_headers: StoredHeaders::none(),
        response_body: Vec::new(),
        response_truncated: false,
        error_kind: None,
        error_message: None,
        is_final: true,
        next_retry_at: None,
        manual: false,
        traceparent: String::new(),
        tracestate: String::new(),
    }
}

/// The partition of `delivery_attempts` that holds the attempt `id`, if any.
pub async fn partition_of(
    conn: &mut fp_store::PgConnection,
    id: Uuid,
) -> anyhow::Result<Option<String>> {
    use diesel::OptionalExtension;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Partition {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    Ok(diesel::sql_query(
        "SELECT tableoid::regclass::text AS name FROM delivery_attempts WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result::<Partition>(conn)
    .await
    .optional()?
    .map(|partition| partition.name))
}

/// Marks `event_ids` of the tenant erased, with the audit record an erasure stores with them
/// (`fp_store::erasure::record`, asked for by a key id that names no key, of submission 0, which
/// no submission has, so no submission counts as erased before), as an erasure's last step does;
/// the rows it would rewrite are the test's to write.
pub async fn mark_erased(
    conn: &mut fp_store::PgConnection,
    tenant_id: Uuid,
    event_ids: &[Uuid],
) -> anyhow::Result<()> {
    let erasure = fp_store::erasure::ErasureRecord {
        id: Uuid::now_v7(),
        tenant_id,
        submission_id: 0,
        requested_by_api_key: Some(Uuid::now_v7()),
        requested_by_user: None,
        erased_at: Utc::now(),
        erased_fields: Vec::new(),
        submission_rows: 0,
        outbox_rows: 0,
        delivery_attempts: 0,
        erased_events: i32::try_from(event_ids.len())?,
        cancelled_deliveries: 0,
    };
    fp_store::erasure::record(conn, &erasure, event_ids).await?;
    Ok(())
}
