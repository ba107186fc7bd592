//! Tenants, API keys and dashboard users (owned by fp-api; `fpctl` acts as the api's operator).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
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

/// Who an API key acts for; the key's role follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    /// A tenant admin's key: every call is scoped to this tenant.
    Tenant(Uuid),
    /// A superadmin key: platform-wide, admin routes only.
    Platform,
}

impl KeyOwner {
    fn tenant_id(self) -> Option<Uuid> {
        match self {
            KeyOwner::Tenant(tenant_id) => Some(tenant_id),
            KeyOwner::Platform => None,
        }
    }

    fn role(self) -> &'static str {
        match self {
            KeyOwner::Tenant(_) => ROLE_TENANT_ADMIN,
            KeyOwner::Platform => ROLE_SUPERADMIN,
        }
    }
}

/// An API key as lists show it: never the key, only its first characters.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub role: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRow {
    pub fn owner(&self) -> KeyOwner {
        match self.tenant_id {
            Some(tenant_id) => KeyOwner::Tenant(tenant_id),
            None => KeyOwner::Platform,
        }
    }
}

pub async fn create_api_key(
    conn: &mut AsyncPgConnection,
    owner: KeyOwner,
    name: &str,
    key_hash: &[u8],
    key_prefix: &str,
) -> Result<ApiKeyRow, StoreError> {
    Ok(diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(Uuid::now_v7()),
            api_keys::tenant_id.eq(owner.tenant_id()),
            api_keys::role.eq(owner.role()),
            api_keys::name.eq(name),
            api_keys::key_hash.eq(key_hash),
            api_keys::key_prefix.eq(key_prefix),
        ))
        .returning(ApiKeyRow::as_returning())
        .get_result(conn)
        .await?)
}

/// The live (unrevoked) key with this hash.
pub async fn live_key_by_hash(
    conn: &mut AsyncPgConnection,
    key_hash: &[u8],
) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The owner's keys, revoked ones included, oldest first.
pub async fn list_api_keys(
    conn: &mut AsyncPgConnection,
    owner: KeyOwner,
) -> Result<Vec<ApiKeyRow>, StoreError> {
    let query = api_keys::table
        .select(ApiKeyRow::as_select())
        .order((api_keys::created_at, api_keys::id))
        .into_boxed();
    let query = match owner.tenant_id() {
        Some(tenant_id) => query.filter(api_keys::tenant_id.eq(tenant_id)),
        None => query.filter(api_keys::tenant_id.is_null()),
    };
    Ok(query.load(conn).await?)
}

pub async fn count_live_api_keys(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<i64, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .filter(api_keys::revoked_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// What asking for a tenant's new key came to.
#[derive(Debug)]
pub enum KeyIssue {
    Issued(ApiKeyRow),
    /// The tenant already holds the most live keys it may.
    AtLimit,
    /// The key that asked is revoked or gone (an api may still have cached it).
    IssuerNotLive,
}

/// Issues a key to a tenant, asked for by its key `issuer`, unless it already holds `max_live`
/// live keys. The count and the insert run under a lock on the tenant's row, so creates racing
/// for the last slot take turns and only one gets it. `FOR NO KEY UPDATE`, because the tenant's
/// other writes (rows that reference it take `FOR KEY SHARE`) need not wait for it.
///
/// The issuer must be live in the database, not only in an api's key cache: a key revoked on
/// another process stays cached until its revocation is heard, and must not mint a key that
/// outlives it. Its row is locked `FOR SHARE`, so a revocation under way is waited for.
pub async fn create_tenant_api_key_within_limit(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    issuer: Uuid,
    max_live: i64,
    name: &str,
    key_hash: &[u8],
    key_prefix: &str,
) -> Result<KeyIssue, StoreError> {
    conn.transaction(async |conn| {
        tenants::table
            .find(tenant_id)
            .select(tenants::id)
            .for_no_key_update()
            .first::<Uuid>(conn)
            .await
            .optional()?
            .ok_or(StoreError::NoSuchTenant(tenant_id))?;
        let issuer_live = api_keys::table
            .filter(api_keys::id.eq(issuer))
            .filter(api_keys::tenant_id.eq(tenant_id))
            .filter(api_keys::revoked_at.is_null())
            .select(api_keys::id)
            .for_share()
            .first::<Uuid>(conn)
            .await
            .optional()?
            .is_some();
        if !issuer_live {
            return Ok(KeyIssue::IssuerNotLive);
        }
        if count_live_api_keys(conn, tenant_id).await? >= max_live {
            return Ok(KeyIssue::AtLimit);
        }
        let owner = KeyOwner::Tenant(tenant_id);
        create_api_key(conn, owner, name, key_hash, key_prefix)
            .await
            .map(KeyIssue::Issued)
    })
    .await
}

/// Revokes one of the owner's keys (a no-op if it already is). `None` when the owner has no key
/// with that id, so another tenant's key looks exactly like a key that does not exist. The key
/// comes with its hash, which names it in the api's key cache.
pub async fn revoke_api_key(
    conn: &mut AsyncPgConnection,
    owner: KeyOwner,
    key_id: Uuid,
) -> Result<Option<(ApiKeyRow, Vec<u8>)>, StoreError> {
    Ok(diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::tenant_id.is_not_distinct_from(owner.tenant_id())),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
    >("COALESCE(revoked_at, now())")))
    .returning((ApiKeyRow::as_returning(), api_keys::key_hash))
    .get_result(conn)
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
    /// The zone the user reads times in (an IANA name); `None`: not chosen.
    pub time_zone: Option<String>,
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

/// Sets the zone the user reads times in (`None`: back to the default); false if there is no such
/// user. The caller checks the name (`fp_domain::time_zone::parse`).
pub async fn set_time_zone(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    time_zone: Option<&str>,
) -> Result<bool, StoreError> {
    let updated = diesel::update(users::table.find(user_id))
        .set(users::time_zone.eq(time_zone))
        .execute(conn)
        .await?;
    Ok(updated == 1)
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
