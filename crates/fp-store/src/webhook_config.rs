//! A tenant's webhook endpoint (owned by fp-api; read by the dispatcher).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::webhook_configs;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_configs)]
pub struct WebhookConfigRow {
    pub tenant_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// Saves the tenant's one config, replacing any earlier one whole.
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
            webhook_configs::secret.eq(excluded(webhook_configs::secret)),
            webhook_configs::enabled.eq(excluded(webhook_configs::enabled)),
            webhook_configs::updated_at.eq(excluded(webhook_configs::updated_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<WebhookConfigRow>, StoreError> {
    Ok(webhook_configs::table
        .find(tenant_id)
        .select(WebhookConfigRow::as_select())
        .first(conn)
        .await
        .optional()?)
}
