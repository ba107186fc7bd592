//! Tenants, API keys and dashboard users (owned by fp-api; `fpctl` acts as the api's operator).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::{api_keys, tenants, users};

pub async fn create_tenant(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    name: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(tenants::table)
        .values((tenants::id.eq(id), tenants::name.eq(name)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn tenant_exists(conn: &mut AsyncPgConnection, id: Uuid) -> Result<bool, StoreError> {
    let found = tenants::table
        .find(id)
        .select(tenants::id)
        .first::<Uuid>(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

pub async fn create_api_key(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    key_hash: &[u8],
    key_prefix: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::tenant_id.eq(tenant_id),
            api_keys::key_hash.eq(key_hash),
            api_keys::key_prefix.eq(key_prefix),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// The tenant a live (unrevoked) key belongs to.
pub async fn tenant_for_key_hash(
    conn: &mut AsyncPgConnection,
    key_hash: &[u8],
) -> Result<Option<Uuid>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .filter(api_keys::revoked_at.is_null())
        .select(api_keys::tenant_id)
        .first::<Uuid>(conn)
        .await
        .optional()?)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

pub const ROLE_TENANT_ADMIN: &str = "tenant_admin";
pub const ROLE_SUPERADMIN: &str = "superadmin";

pub async fn create_user(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    email: &str,
    password_hash: &str,
    role: &str,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    diesel::insert_into(users::table)
        .values((
            users::id.eq(id),
            users::tenant_id.eq(tenant_id),
            users::email.eq(email),
            users::password_hash.eq(password_hash),
            users::role.eq(role),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

pub async fn user_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<UserRow>, StoreError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn user_by_id(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}
