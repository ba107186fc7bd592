//! The api's in-process cache of API keys (issue 17), on two fp-api processes sharing one database:
//! a key another instance serves from its cache is refused there once notified when it is revoked
//! through the api, by plain SQL, or by deleting its tenant, and while the instance's revocation
//! listener is lost (the cache is bypassed, then emptied); before it is notified, it still refuses
//! to issue a key at the revoked key's request. The cache's TTL is set to an hour, so only a
//! notification (or the listener's loss) can have evicted a key within the test.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use diesel::sql_types;
use diesel_async::RunQueryDsl;
use fp_store::key_revocations::CHANNEL;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{
    KEY_REVOCATION_PATIENCE, TenantApi, end_listeners, metric, start_api_with_health,
};
use serde_json::json;
use uuid::Uuid;

const HITS: &str = "fp_api_key_cache_hits_total";
/// How long a refusal or a cache hit may take to show: a notification's way through PostgreSQL,
/// or the listener connecting at start or again.
const PATIENCE: Duration = KEY_REVOCATION_PATIENCE;

/// One api process: where it serves, and where its metrics are.
struct Instance {
    api: SocketAddr,
    health: SocketAddr,
}

/// A test database with two fp-api processes on it, whose caches keep keys for an hour.
async fn two_instances(label: &str) -> anyhow::Result<(TestEnvironment, Instance, Instance)> {
    let mut env = TestEnvironment::new(label).await?;
    env.set("FP__API__KEY_CACHE_TTL", "1h");
    let (api, health) = start_api_with_health(&mut env).await?;
    let a = Instance { api, health };
    let (api, health) = start_api_with_health(&mut env).await?;
    let b = Instance { api, health };
    Ok((env, a, b))
}

/// Uses `key` at `instance` until the instance answers it from its cache (its hit counter rises):
/// the first use may be before its listener is up, and a miss is what fills the cache.
async fn served_from_cache(api: &TenantApi, instance: &Instance) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let hits = metric(instance.health, HITS).await?;
        let status = api.config_status().await?;
        anyhow::ensure!(status == 404, "a live key, no config yet: got {status}");
        if metric(instance.health, HITS).await? > hits {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} never served the key from its cache", api.base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Revokes a key as an operator would, with SQL (in `conn`'s transaction, if it has one).
async fn revoke_by_sql(conn: &mut fp_store::PgConnection, key_id: Uuid) -> anyhow::Result<()> {
    let revoked = diesel::sql_query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind::<sql_types::Uuid, _>(key_id)
        .execute(conn)
        .await?;
    anyhow::ensure!(revoked == 1, "no key {key_id}");
    Ok(())
}

/// A second key of the tenant, issued through the api: its id and a client using it.
async fn second_key(tenant: &TenantApi) -> anyhow::Result<(Uuid, TenantApi)> {
    let (status, created) = tenant
        .send(
            reqwest::Method::POST,
            "/api/v2/api-keys",
            Some(&json!({ "name": "cached" }).to_string()),
        )
        .await?;
    anyhow::ensure!(status == 201, "{created}");
    let key = created["key"].as_str().context("key")?;
    Ok((
        created["id"].as_str().context("id")?.parse()?,
        tenant.with_key(key),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_by_the_other_once_notified() -> anyhow::Result<()>
{
    let (env, a, b) = two_instances("keycache_revoke").await?;
    let outcome = async {
        let tenant = TenantApi::create(&env, a.api, "Acme").await?;
        let (key_id, second) = second_key(&tenant).await?;
        served_from_cache(&second, &a).await?;
        served_from_cache(&second.on(b.api), &b).await?;

        let (status, revoked) = tenant
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v2/api-keys/{key_id}"),
                None,
            )
            .await?;
        assert_eq!(status, 200, "{revoked}");
        // Where it was revoked at once; the other instance by the notification.
        assert_eq!(second.config_status().await?, 401);
        second.on(b.api).refused_within(PATIENCE).await?;
        // The tenant's other key is untouched, and still cached.
        served_from_cache(&tenant.on(b.api), &b).await?;

        // Revoked by an operator's SQL, not through the api: refused by both.
        let (key_id, third) = second_key(&tenant).await?;
        served_from_cache(&third, &a).await?;
        served_from_cache(&third.on(b.api), &b).await?;
        revoke_by_sql(&mut fp_store::connect(&env.database_url).await?, key_id).await?;
        third.refused_within(PATIENCE).await?;
        third.on(b.api).refused_within(PATIENCE).await
    }
    .await;
    env.finish_after(outcome).await
}

/// A key revoked elsewhere is still taken where it is cached until the revocation is heard, but
/// it cannot issue a key in that moment: issuing checks the asking key in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_still_cached_cannot_issue_a_key() -> anyhow::Result<()> {
    let (env, a, _b) = two_instances("keycache_issue").await?;
    let outcome = async {
        let tenant = TenantApi::create(&env, a.api, "Acme").await?;
        let (key_id, second) = second_key(&tenant).await?;
        served_from_cache(&second, &a).await?;
        // With the revocation trigger off, the api never hears of it, as if the notification
        // were still on its way.
        let mut conn = fp_store::connect(&env.database_url).await?;
        diesel::sql_query("ALTER TABLE api_keys DISABLE TRIGGER api_key_revoked")
            .execute(&mut conn)
            .await?;
        revoke_by_sql(&mut conn, key_id).await?;
        assert_eq!(second.config_status().await?, 404, "still cached");

        let (status, answer) = second
            .send(
                reqwest::Method::POST,
                "/api/v2/api-keys",
                Some(&json!({ "name": "minted" }).to_string()),
            )
            .await?;
        assert_eq!(status, 401, "{answer}");
        let minted: i64 =
            diesel::sql_query("SELECT count(*) AS count FROM api_keys WHERE name = 'minted'")
                .get_result::<Count>(&mut conn)
                .await?
                .count;
        assert_eq!(minted, 0);
        assert_eq!(
            second.config_status().await?,
            404,
            "the key was still cached throughout, so the 401 came from issuing"
        );
        // The tenant's live key still issues one.
        second_key(&tenant).await?;
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = sql_types::BigInt)]
    count: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_listener_is_lost_the_cache_is_bypassed_then_emptied() -> anyhow::Result<()> {
    let (env, a, b) = two_instances("keycache_listener").await?;
    let outcome = async {
        let tenant = TenantApi::create(&env, a.api, "Acme").await?;
        let (key_id, second) = second_key(&tenant).await?;
        let second_on_b = second.on(b.api);
        served_from_cache(&second_on_b, &b).await?;

        // The key is revoked in the transaction that ends both instances' listening connections,
        // after they are gone: the notification reaches no one, as an instance waits a moment
        // before it listens again.
        let mut conn = fp_store::connect(&env.database_url).await?;
        diesel::sql_query("BEGIN").execute(&mut conn).await?;
        revoke_by_sql(&mut conn, key_id).await?;
        let ended = end_listeners(&mut conn, &CHANNEL).await?;
        diesel::sql_query("COMMIT").execute(&mut conn).await?;
        assert_eq!(ended, 2, "one listener per instance");
        second_on_b.refused_within(PATIENCE).await?;

        // Listening again, the instance caches again, and what it cached before is gone: the
        // revocation's notification went out while it was not listening.
        served_from_cache(&tenant.on(b.api), &b).await?;
        assert_eq!(second_on_b.config_status().await?, 401);
        let logs = env.service_logs()?;
        assert!(
            logs.iter()
                .any(|(_, log)| log.contains("lost the listener for api key revocations")),
            "the outage is logged"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenants_keys_are_refused_once_notified() -> anyhow::Result<()> {
    let (env, a, b) = two_instances("keycache_tenant").await?;
    let outcome = async {
        let doomed = TenantApi::create(&env, a.api, "Doomed").await?;
        let kept = TenantApi::create(&env, a.api, "Kept").await?;
        for instance in [&a, &b] {
            served_from_cache(&doomed.on(instance.api), instance).await?;
            served_from_cache(&kept.on(instance.api), instance).await?;
        }
        env.fpctl(&["tenant", "delete", &doomed.tenant_id]).await?;
        for instance in [&a, &b] {
            doomed.on(instance.api).refused_within(PATIENCE).await?;
            served_from_cache(&kept.on(instance.api), instance).await?;
        }
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
