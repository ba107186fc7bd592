//! The dispatcher's config cache (issue 17), on two dispatchers sharing one database: a config
//! saved through the api is used by both from the next delivery on, and health writes after
//! deliveries drop nothing; while a dispatcher's listener is lost, a change goes unheard, and
//! listening again every entry is loaded anew. Entries live an hour here whether or not changes are
//! heard (`FP__DISPATCHER__CONFIG_CACHE_TTL_MS`, `..._MAX_AGE_MS`), so only a notification, or the
//! listener's loss, can have dropped one within a test.

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use diesel::sql_types;
use diesel_async::RunQueryDsl;
use fp_store::config_changes::CHANNEL;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi, end_listeners, listeners_reach, metric};
use fp_testkit::receiver::{TlsReceiver, always_ok};
use uuid::Uuid;

const LOADS: &str = "fp_dispatcher_config_loads_total";
const AN_HOUR_MS: &str = "3600000";
const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    env: TestEnvironment,
    pipeline: Pipeline,
    receiver: TlsReceiver,
}

/// Two dispatchers whose caches keep entries for an hour, each listening for changes.
async fn two_dispatchers(label: &str) -> anyhow::Result<Setup> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new(label).await?;
    env.trust_receiver(&receiver)?;
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", AN_HOUR_MS);
    env.set("FP__DISPATCHER__CONFIG_CACHE_MAX_AGE_MS", AN_HOUR_MS);
    env.set("FP__DISPATCHER__HEALTH_REPORT_INTERVAL_MS", "200");
    let pipeline = Pipeline::start(&mut env, 2).await?;
    listeners_reach(&env, &CHANNEL, 2).await?;
    Ok(Setup {
        env,
        pipeline,
        receiver,
    })
}

impl Setup {
    /// Waits until `path` got `expected` requests; fails on more at once.
    async fn path_reaches(&self, path: &str, expected: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.receiver.requests_to(path);
            anyhow::ensure!(got <= expected, "{path} got {got} requests, not {expected}");
            if got == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{path} got {got} of {expected} requests");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submits `count` events and waits until each reached `path`.
    async fn delivered_to(
        &self,
        tenant: &TenantApi,
        path: &str,
        count: usize,
    ) -> anyhow::Result<()> {
        let before = self.receiver.requests_to(path);
        for n in 0..count {
            tenant
                .submit(&format!("event {n} for {path}"), None)
                .await?;
        }
        self.path_reaches(path, before + count).await
    }

    /// Each dispatcher's config loads so far.
    async fn loads(&self) -> anyhow::Result<Vec<u64>> {
        let mut loads = Vec::new();
        for dispatcher in &self.pipeline.dispatchers {
            loads.push(metric(*dispatcher, LOADS).await?);
        }
        Ok(loads)
    }

    /// A tenant whose endpoint is `/first`, submitting one event at a time until every
    /// dispatcher has loaded its config; every event arrived.
    async fn tenant_cached_everywhere(&self) -> anyhow::Result<(TenantApi, Uuid)> {
        let tenant = self.pipeline.tenant(&self.env, "Acme").await?;
        let tenant_id: Uuid = tenant.tenant_id.parse()?;
        let path = "/first";
        tenant.configure(&self.receiver.url(path), None).await?;
        let before = self.receiver.requests_to(path);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut sent = 0;
        while self.loads().await?.contains(&0) {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "not every dispatcher loaded the config: {:?}",
                    self.loads().await?
                );
            }
            tenant.submit(&format!("event {sent}"), None).await?;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.path_reaches(path, before + sent).await?;
        Ok((tenant, tenant_id))
    }
}

async fn last_success_at(
    env: &TestEnvironment,
    tenant_id: Uuid,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    let health = fp_store::webhook_config::health(&mut conn, tenant_id).await?;
    Ok(health.and_then(|health| health.last_success_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_config_is_used_by_every_dispatcher_from_the_next_delivery_on() -> anyhow::Result<()>
{
    let setup = two_dispatchers("config_saved").await?;
    let outcome = async {
        let (tenant, tenant_id) = setup.tenant_cached_everywhere().await?;

        // Deliveries are answered from the cache, and the endpoint's health writes that follow
        // them (to the config's row) drop nothing.
        let loads = setup.loads().await?;
        let success_before = last_success_at(&setup.env, tenant_id).await?;
        // A dispatcher reports an endpoint's health at most once per interval (200 ms here), on
        // a delivery: deliver until one was written.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while last_success_at(&setup.env, tenant_id).await? <= success_before {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no health write after the deliveries"
            );
            setup.delivered_to(&tenant, "/first", 1).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        setup.delivered_to(&tenant, "/first", 4).await?;
        assert_eq!(
            setup.loads().await?,
            loads,
            "no load while the config stands"
        );

        // Saved through the api: both dispatchers use it from the next delivery on.
        tenant
            .configure(&setup.receiver.url("/second"), None)
            .await?;
        let first = setup.receiver.requests_to("/first");
        setup.delivered_to(&tenant, "/second", 8).await?;
        assert_eq!(setup.receiver.requests_to("/first"), first);
        let reloaded = setup.loads().await?;
        assert!(
            reloaded
                .iter()
                .zip(&loads)
                .all(|(after, before)| after > before),
            "each dispatcher loaded the saved config: {loads:?} -> {reloaded:?}"
        );
        Ok(())
    }
    .await;
    setup.env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_listener_is_lost_every_entry_is_loaded_again() -> anyhow::Result<()> {
    let setup = two_dispatchers("config_listener").await?;
    let outcome = async {
        let (tenant, tenant_id) = setup.tenant_cached_everywhere().await?;

        // The config changes in the transaction that ends both listening connections, after they
        // are gone: its notification reaches no one.
        let mut conn = fp_store::connect(&setup.env.database_url).await?;
        diesel::sql_query("BEGIN").execute(&mut conn).await?;
        diesel::sql_query("UPDATE webhook_configs SET url = $1 WHERE tenant_id = $2")
            .bind::<sql_types::Text, _>(setup.receiver.url("/third"))
            .bind::<sql_types::Uuid, _>(tenant_id)
            .execute(&mut conn)
            .await?;
        let ended = end_listeners(&mut conn, &CHANNEL).await?;
        diesel::sql_query("COMMIT").execute(&mut conn).await?;
        assert_eq!(ended, 2, "one listener per dispatcher");

        // Listening again, each dispatcher loads every entry anew: the change is used though its
        // notification was missed and the entries had an hour to live.
        listeners_reach(&setup.env, &CHANNEL, 2).await?;
        setup.delivered_to(&tenant, "/third", 8).await?;
        let logs = setup.env.service_logs()?;
        let lost = logs
            .iter()
            .filter(|(_, log)| log.contains("lost the listener for config changes"))
            .count();
        assert_eq!(lost, 2, "each dispatcher logs its outage");
        Ok(())
    }
    .await;
    setup.env.finish_after(outcome).await
}
