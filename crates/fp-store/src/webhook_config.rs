//! A tenant's webhook endpoint (owned by fp-api; read by the dispatcher).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fp_domain::endpoint_health::HealthRecord;
use uuid::Uuid;

use crate::StoreError;
use crate::schema::webhook_configs;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_configs)]
pub struct WebhookConfigRow {
    pub tenant_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// The secret sealed with `fp_domain::secret_box` (never the plaintext).
    pub secret_sealed: Option<Vec<u8>>,
    /// The secret `secret_sealed` replaced, sealed the same way; deliveries are signed with it too
    /// until `previous_secret_expires_at`. Both are set or both are `None`.
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// Saves the tenant's one config, replacing any earlier one whole, the previous secret included:
/// a caller that rotates the secret reads the current row with [`find_for_update`] in the same
/// transaction, so a concurrent save cannot drop the secret still in its grace period.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    config: &WebhookConfigRow,
) -> Result<(), StoreError> {
    diesel::insert_into(webhook_configs::table)
        .values(config)
        .on_conflict(webhook_configs::tenant_id)
        .do_update()
        .set((
            webhook_configs::url.eq(excluded(webhook_configs::url)),
            webhook_configs::events.eq(excluded(webhook_configs::events)),
            webhook_configs::secret_sealed.eq(excluded(webhook_configs::secret_sealed)),
            webhook_configs::previous_secret_sealed
                .eq(excluded(webhook_configs::previous_secret_sealed)),
            webhook_configs::previous_secret_expires_at
                .eq(excluded(webhook_configs::previous_secret_expires_at)),
            webhook_configs::enabled.eq(excluded(webhook_configs::enabled)),
            webhook_configs::updated_at.eq(excluded(webhook_configs::updated_at)),
            // Saving the config again is how a tenant re-enables an endpoint after fixing it.
            webhook_configs::failing_since.eq(None::<DateTime<Utc>>),
            webhook_configs::disabled_at.eq(None::<DateTime<Utc>>),
            webhook_configs::disabled_reason.eq(None::<String>),
            // A new run of failures, or disabling it again, is announced again.
            webhook_configs::failing_notified_at.eq(None::<DateTime<Utc>>),
            webhook_configs::disabled_notified_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

type TenantConfig = diesel::dsl::Select<
    diesel::dsl::Find<webhook_configs::table, Uuid>,
    diesel::dsl::AsSelect<WebhookConfigRow, diesel::pg::Pg>,
>;

fn tenant_config(tenant_id: Uuid) -> TenantConfig {
    webhook_configs::table
        .find(tenant_id)
        .select(WebhookConfigRow::as_select())
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<WebhookConfigRow>, StoreError> {
    Ok(tenant_config(tenant_id).first(conn).await.optional()?)
}

/// The tenant's config, locked until the transaction ends, so saves that derive the new secrets
/// from the stored ones serialise. Without a row nothing is locked; concurrent first saves then
/// resolve by the upsert, the last one winning.
pub async fn find_for_update(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<WebhookConfigRow>, StoreError> {
    Ok(tenant_config(tenant_id)
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// Why and since when an endpoint is unhealthy or disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = webhook_configs)]
pub struct EndpointHealth {
    pub enabled: bool,
    pub last_success_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

impl From<EndpointHealth> for HealthRecord {
    fn from(health: EndpointHealth) -> Self {
        HealthRecord {
            enabled: health.enabled,
            last_success_at: health.last_success_at,
            failing_since: health.failing_since,
            disabled_at: health.disabled_at,
            disabled_reason: health.disabled_reason,
        }
    }
}

/// The tenant's endpoint health; `None` without a config. The dashboard reads it too (its role
/// may read these columns and the tenant id, no other column of the config).
pub async fn health(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<EndpointHealth>, StoreError> {
    Ok(webhook_configs::table
        .find(tenant_id)
        .select(EndpointHealth::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A dispatcher saw `url` answer successfully at `at`: the run of failures before it is over.
pub async fn record_success(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    url: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE webhook_configs SET \
           last_success_at = GREATEST(last_success_at, $3), \
           failing_since = CASE WHEN failing_since <= $3 THEN NULL ELSE failing_since END, \
           failing_notified_at = CASE WHEN failing_since <= $3 THEN NULL ELSE failing_notified_at END \
         WHERE tenant_id = $1 AND url = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<diesel::sql_types::Text, _>(url)
    .bind::<diesel::sql_types::Timestamptz, _>(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A dispatcher has seen `url` fail since `since`. Runs of failures from several dispatchers merge
/// into the earliest start after the last success anyone saw. When the run is older than
/// `disable_before`, the endpoint is disabled with a reason. Returns whether this disabled it.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    url: &str,
    since: DateTime<Utc>,
    disable_before: DateTime<Utc>,
) -> Result<bool, StoreError> {
    diesel::sql_query(
        "UPDATE webhook_configs SET failing_since = LEAST(\
             COALESCE(failing_since, 'infinity'), \
             GREATEST($3, COALESCE(last_success_at, $3))) \
         WHERE tenant_id = $1 AND url = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<diesel::sql_types::Text, _>(url)
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .execute(conn)
    .await?;
    let disabled = diesel::sql_query(
        "UPDATE webhook_configs SET enabled = false, disabled_at = now(), \
           disabled_reason = 'every delivery failed since ' || \
             to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         WHERE tenant_id = $1 AND url = $2 AND enabled AND failing_since <= $3",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant_id)
    .bind::<diesel::sql_types::Text, _>(url)
    .bind::<diesel::sql_types::Timestamptz, _>(disable_before)
    .execute(conn)
    .await?;
    Ok(disabled > 0)
}

/// Removes the tenant's config; returns whether there was one. Dispatchers hear it at commit
/// ([`crate::config_changes`]) and deliver nothing more; pending retries find no config and end.
pub async fn delete(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> Result<bool, StoreError> {
    let deleted = diesel::delete(webhook_configs::table.find(tenant_id))
        .execute(conn)
        .await?;
    Ok(deleted > 0)
}
