//! Starting the services of a test deployment and talking to its api as a tenant.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use diesel_async::RunQueryDsl;
use fp_store::notifications::Channel;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::environment::{Readiness, TestEnvironment, free_local_address, free_local_addresses};

/// Addresses of a running api, dispatcher(s) and log-ingest.
pub struct Pipeline {
    pub api: SocketAddr,
    /// The api's health address (`/healthz`, `/readyz`, `/metrics`), apart from its public one.
    pub api_health: SocketAddr,
    /// Health and metrics address of each dispatcher started, in start order.
    pub dispatchers: Vec<SocketAddr>,
    pub log_ingest: SocketAddr,
}

impl Pipeline {
    /// Starts fp-api, `dispatchers` fp-dispatcher processes and fp-log-ingest, each ready.
    pub async fn start(env: &mut TestEnvironment, dispatchers: usize) -> anyhow::Result<Self> {
        let (api, api_health) = start_api_with_health(env).await?;
        let mut pipeline = Pipeline {
            api,
            api_health,
            dispatchers: Vec::new(),
            log_ingest: free_local_address()?,
        };
        for _ in 0..dispatchers {
            pipeline.start_dispatcher(env).await?;
        }
        start_log_ingest_on(env, pipeline.log_ingest, &[]).await?;
        Ok(pipeline)
    }

    /// Starts fp-api again on the address it had (after a crash, as an orchestrator restarts a
    /// service behind an unchanged address), and waits until it answers.
    pub async fn restart_api(&self, env: &mut TestEnvironment) -> anyhow::Result<()> {
        start_api_on(env, self.api, self.api_health).await
    }

    /// Starts fp-log-ingest again with the health address it had, and waits until it is ready.
    pub async fn restart_log_ingest(&self, env: &mut TestEnvironment) -> anyhow::Result<()> {
        start_log_ingest_on(env, self.log_ingest, &[]).await
    }

    /// Starts one more dispatcher (after a crash, or to scale out).
    pub async fn start_dispatcher(
        &mut self,
        env: &mut TestEnvironment,
    ) -> anyhow::Result<SocketAddr> {
        let health = free_local_address()?;
        env.start(
            "fp-dispatcher",
            &[("FP__DISPATCHER__HEALTH_LISTEN", health.to_string())],
            Readiness::Ok(format!("http://{health}/readyz")),
        )
        .await?;
        self.dispatchers.push(health);
        Ok(health)
    }

    /// Every health address (`/metrics`) of the deployment: the api's, each dispatcher's and
    /// log-ingest's.
    pub fn health_addresses(&self) -> Vec<SocketAddr> {
        [self.api_health, self.log_ingest]
            .into_iter()
            .chain(self.dispatchers.iter().copied())
            .collect()
    }

    /// A tenant created with `fpctl tenant create`, with a client for the api.
    pub async fn tenant(&self, env: &TestEnvironment, name: &str) -> anyhow::Result<TenantApi> {
        TenantApi::create(env, self.api, name).await
    }
}

/// Starts fp-api alone (for tests of the api) and returns its address once it answers.
pub async fn start_api(env: &mut TestEnvironment) -> anyhow::Result<SocketAddr> {
    Ok(start_api_with_health(env).await?.0)
}

/// Starts fp-api alone and returns its public and its health address once it answers.
pub async fn start_api_with_health(
    env: &mut TestEnvironment,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let [api, health] = free_local_addresses()?;
    start_api_on(env, api, health).await?;
    Ok((api, health))
}

/// Starts fp-api on `api` (and its health on `health`), e.g. again after it was killed, and
/// waits until it answers.
pub async fn start_api_on(
    env: &mut TestEnvironment,
    api: SocketAddr,
    health: SocketAddr,
) -> anyhow::Result<()> {
    env.start(
        "fp-api",
        &[
            ("FP__API__LISTEN", api.to_string()),
            ("FP__API__HEALTH_LISTEN", health.to_string()),
        ],
        Readiness::Answers(format!("http://{api}/api/v2/webhooks/config")),
    )
    .await
}

/// Starts fp-log-ingest alone, with `settings` besides its health address; returns that address
/// once it is ready.
pub async fn start_log_ingest(
    env: &mut TestEnvironment,
    settings: &[(&str, String)],
) -> anyhow::Result<SocketAddr> {
    let health = free_local_address()?;
    start_log_ingest_on(env, health, settings).await?;
    Ok(health)
}

async fn start_log_ingest_on(
    env: &mut TestEnvironment,
    health: SocketAddr,
    settings: &[(&str, String)],
) -> anyhow::Result<()> {
    let mut variables = vec![("FP__LOG_INGEST__HEALTH_LISTEN", health.to_string())];
    variables.extend_from_slice(settings);
    env.start(
        "fp-log-ingest",
        &variables,
        Readiness::Ok(format!("http://{health}/readyz")),
    )
    .await
}

/// Starts fp-dashboard with its writes going to `api`; returns its public and its health address
/// once it is ready.
pub async fn start_dashboard(
    env: &mut TestEnvironment,
    api: SocketAddr,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let [address, health] = free_local_addresses()?;
    env.start(
        "fp-dashboard",
        &[
            ("FP__DASHBOARD__LISTEN", address.to_string()),
            ("FP__DASHBOARD__HEALTH_LISTEN", health.to_string()),
            // Its writes go through the api, with the signed-in user's session.
            ("FP__DASHBOARD__API_URL", format!("http://{api}")),
        ],
        Readiness::Ok(format!("http://{health}/readyz")),
    )
    .await?;
    Ok((address, health))
}

/// Waits until `expected` connections listen on `channel` (each names itself, then `LISTEN`s,
/// then idles). A dispatcher serves before it listens, and what it caches meanwhile lives only the
/// short TTL: a test whose entries must be dropped by a notification waits for this first.
pub async fn listeners_reach(
    env: &TestEnvironment,
    channel: &Channel,
    expected: i64,
) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    backends_reach(
        &mut conn,
        "application_name = $1 AND state = 'idle' AND query NOT LIKE 'SET application_name%'",
        channel.application_name,
        expected,
    )
    .await
    .with_context(|| format!("connections listening for {}", channel.heard))
}

/// Waits until `expected` connections to this database wait for a lock (`conn`'s is not one).
pub async fn lock_waiters_reach(
    conn: &mut diesel_async::AsyncPgConnection,
    expected: i64,
) -> anyhow::Result<()> {
    backends_reach(conn, "wait_event_type = $1", "Lock", expected)
        .await
        .context("connections waiting for a lock")
}

/// Polls, for up to 30 s, how many connections to this database meet `condition` (an SQL
/// condition on `pg_stat_activity`, `$1` bound to `bound`), until they are `expected`.
async fn backends_reach(
    conn: &mut diesel_async::AsyncPgConnection,
    condition: &str,
    bound: &str,
    expected: i64,
) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Backends {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let query = format!(
        "SELECT count(*) AS count FROM pg_stat_activity \
         WHERE datname = current_database() AND {condition}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let backends: Backends = diesel::sql_query(&query)
            .bind::<diesel::sql_types::Text, _>(bound)
            .get_result(conn)
            .await?;
        if backends.count == expected {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of them after 30 s, not {expected}",
            backends.count
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends every connection listening on `channel`, waiting until each is gone; returns how many
/// there were. Run inside a transaction, a change it makes before committing reaches none of them.
pub async fn end_listeners(
    conn: &mut diesel_async::AsyncPgConnection,
    channel: &Channel,
) -> anyhow::Result<usize> {
    #[derive(diesel::QueryableByName)]
    struct Ended {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ended: bool,
    }
    let ended: Vec<Ended> = diesel::sql_query(
        "SELECT pg_terminate_backend(pid, 5000) AS ended FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind::<diesel::sql_types::Text, _>(channel.application_name)
    .load(conn)
    .await?;
    anyhow::ensure!(
        ended.iter().all(|ended| ended.ended),
        "a listener for {} did not end",
        channel.heard
    );
    Ok(ended.len())
}

/// A counter from a service's `/metrics`, summed over all its label sets; 0 when absent.
pub async fn metric(health: SocketAddr, name: &str) -> anyhow::Result<u64> {
    Ok(sum_of_series(&metrics_text(health).await?, name).round() as u64)
}

/// Waits until a counter shows `expected` (a counter may lag what it counts by a few
/// milliseconds: it moves once the work's answer is in); fails on a higher value at once, and on a
/// lower one after `patience`.
pub async fn metric_reaches(
    health: SocketAddr,
    name: &str,
    expected: u64,
    patience: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let value = metric(health, name).await?;
        if value == expected {
            return Ok(());
        }
        anyhow::ensure!(
            value < expected && tokio::time::Instant::now() < deadline,
            "{name} is {value}, not {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A service's whole `/metrics` exposition.
pub async fn metrics_text(health: SocketAddr) -> anyhow::Result<String> {
    Ok(scrape_client()?
        .get(format!("http://{health}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// One client for every scrape of the process: building one loads and parses every system CA
/// certificate, which `fp-bench` paid 20 times a second while measuring (its sampler reads
/// log-ingest's counter every 50 ms). No connection is kept between scrapes, so a test's runtime
/// never inherits a pooled connection from another test's, already dropped.
fn scrape_client() -> anyhow::Result<&'static reqwest::Client> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?;
    Ok(CLIENT.get_or_init(|| client))
}

/// The sum of every sample of `name` in a Prometheus text exposition (`name 3`, `name{a="b"} 2`).
pub fn sum_of_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name_more` is another metric; `name{` or `name ` is this one.
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once('}')?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Publishes one attempt record alone to the attempts exchange (its id as the message id), as a
/// dispatcher finishing an attempt would, for log-ingest to store.
pub async fn publish_attempt_record(
    broker: &fp_broker::Broker,
    record: &fp_contracts::v1::DeliveryAttempt,
) -> Result<(), fp_broker::BrokerError> {
    use fp_contracts::ProtoMessage;
    broker
        .publisher()
        .publish(&fp_broker::OutgoingMessage {
            exchange: &broker.names.attempts_exchange,
            routing_key: &record.event_type,
            message_id: &record.attempt_id,
            parent: None,
            payload: &record.encode_to_vec(),
            headers: &[],
            expiration: None,
        })
        .await
}

/// A queue of the test's own, bound to the events exchange beside the dispatchers' queues: it
/// holds a copy of every event published while it exists, for a test to read without a dispatcher.
/// Exclusive and auto-deleted, it goes with its connection.
pub struct EventsQueue {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: lapin::Queue,
}

impl EventsQueue {
    /// Declares the queue on a connection of its own and binds it to every event type.
    pub async fn bind(env: &TestEnvironment) -> anyhow::Result<Self> {
        let connection = lapin::Connection::connect(
            &env.endpoints.broker_url,
            lapin::ConnectionProperties::default(),
        )
        .await?;
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let events_exchange = fp_broker::Names::new(&env.namespace).events_exchange;
        channel
            .queue_bind(
                queue.name().clone(),
                events_exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            channel,
            queue,
        })
    }

    /// How many messages wait in the queue now.
    pub async fn waiting(&self) -> anyhow::Result<u32> {
        Ok(self
            .channel
            .queue_declare(
                self.queue.name().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?
            .message_count())
    }

    /// The queue's messages as they come, taken without acknowledgements.
    pub async fn consume(&self, consumer_tag: &str) -> anyhow::Result<lapin::Consumer> {
        Ok(self
            .channel
            .basic_consume(
                self.queue.name().clone(),
                consumer_tag.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?)
    }

    /// Closes the connection, and with it the queue.
    pub async fn close(self) -> anyhow::Result<()> {
        Ok(self.connection.close(200, "done".into()).await?)
    }
}

/// One answer of the api, JSON.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl ApiAnswer {
    /// `Retry-After` in seconds, if the answer has one.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
    }
}

/// A tenant's view of the api.
#[derive(Clone)]
pub struct TenantApi {
    pub base: String,
    pub key: String,
    pub tenant_id: String,
    pub http: reqwest::Client,
}

/// How long a test gives a key revoked in another process to be refused by an api: the
/// revocation's notification's way through PostgreSQL to the api's listener, on a busy machine.
pub const KEY_REVOCATION_PATIENCE: Duration = Duration::from_secs(10);

impl TenantApi {
    /// Creates a tenant with `fpctl tenant create` and a client for the api at `api`.
    pub async fn create(
        env: &TestEnvironment,
        api: SocketAddr,
        name: &str,
    ) -> anyhow::Result<Self> {
        let created: Value = serde_json::from_str(&env.fpctl(&["tenant", "create", name]).await?)?;
        Ok(TenantApi {
            base: format!("http://{api}"),
            tenant_id: created["tenant_id"]
                .as_str()
                .context("tenant_id")?
                .to_owned(),
            key: created["api_key"].as_str().context("api_key")?.to_owned(),
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    /// The same tenant with another of its keys.
    pub fn with_key(&self, key: &str) -> Self {
        TenantApi {
            base: self.base.clone(),
            key: key.to_owned(),
            tenant_id: self.tenant_id.clone(),
            http: self.http.clone(),
        }
    }

    /// The same tenant and key at another api process (`api`), e.g. a second instance.
    pub fn on(&self, api: SocketAddr) -> Self {
        TenantApi {
            base: format!("http://{api}"),
            ..self.with_key(&self.key)
        }
    }

    /// A superadmin key from `fpctl key create --superadmin`, for the api `self` calls; its
    /// `tenant_id` is empty.
    pub async fn superadmin(&self, env: &TestEnvironment) -> anyhow::Result<Self> {
        let created: Value = serde_json::from_str(
            &env.fpctl(&["key", "create", "--superadmin", "--name", "ops"])
                .await?,
        )?;
        Ok(TenantApi {
            base: self.base.clone(),
            key: created["api_key"].as_str().context("api_key")?.to_owned(),
            tenant_id: String::new(),
            http: self.http.clone(),
        })
    }

    /// Sends a request with the tenant's key; returns the status and the JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let answer = self.request(method, path, body).await?;
        Ok((answer.status, answer.body))
    }

    /// Status of a call any live key of the tenant may make: 401 once the key is refused, 404
    /// while the tenant has no webhook config.
    pub async fn config_status(&self) -> anyhow::Result<u16> {
        Ok(self
            .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
            .await?
            .0)
    }

    /// Waits up to `patience` for the tenant's key to be refused (401). A key revoked by another
    /// process (another api instance, `fpctl`, SQL) leaves an api's key cache when that api hears
    /// the revocation's notification, sent at commit, or when the api loses its listener; only
    /// the instance that revoked it drops it before answering. Until then the key must still be
    /// answered as live (404: the tenant has no config).
    pub async fn refused_within(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let status = self.config_status().await?;
            if status == 401 {
                return Ok(());
            }
            anyhow::ensure!(status == 404, "a live key, no config: got {status}");
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} still accepts the revoked key after {patience:?}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// As [`TenantApi::send`], with the answer's headers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<ApiAnswer> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        Ok(ApiAnswer {
            status,
            headers,
            body,
        })
    }

    /// Saves the webhook config for both event types; fails unless the api accepts it.
    pub async fn configure(&self, url: &str, secret: Option<&str>) -> anyhow::Result<Value> {
        self.configure_events(
            url,
            &["submission.created", "submission.status_changed"],
            secret,
        )
        .await
    }

    /// Saves the webhook config for `events`; fails unless the api accepts it.
    pub async fn configure_events(
        &self,
        url: &str,
        events: &[&str],
        secret: Option<&str>,
    ) -> anyhow::Result<Value> {
        let body = json!({"url": url, "events": events, "secret": secret});
        let (status, config) = self
            .send(
                reqwest::Method::PUT,
                "/api/v2/webhooks/config",
                Some(&body.to_string()),
            )
            .await?;
        anyhow::ensure!(status == 200, "config refused ({status}): {config}");
        Ok(config)
    }

    /// Creates a submission; returns its id.
    pub async fn submit(
        &self,
        text_feedback: &str,
        customer_name: Option<&str>,
    ) -> anyhow::Result<i64> {
        let body = json!({
            "campaign_id": 1,
            "star_rating": 4,
            "text_feedback": text_feedback,
            "customer_name": customer_name,
        });
        let (status, created) = self
            .send(
                reqwest::Method::POST,
                "/api/v2/submissions",
                Some(&body.to_string()),
            )
            .await?;
        anyhow::ensure!(status == 201, "submission refused ({status}): {created}");
        created["id"].as_i64().context("submission id")
    }

    /// Every log entry of the tenant, page after page (at most `max_pages` of 200), each page
    /// asked for within `timeout`.
    pub async fn all_log_entries(
        &self,
        max_pages: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages {
            let mut url = url::Url::parse(&format!("{}/api/v2/webhooks/logs", self.base))?;
            url.query_pairs_mut().append_pair("limit", "200");
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            let response = self
                .http
                .get(url)
                .bearer_auth(&self.key)
                .timeout(timeout)
                .send()
                .await?;
            let status = response.status();
            let page: Value = serde_json::from_str(&response.text().await?)?;
            anyhow::ensure!(status.is_success(), "logs answered {status}: {page}");
            entries.extend(
                page["data"]
                    .as_array()
                    .context("a log page without data")?
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(entries),
            }
        }
        anyhow::bail!("the log did not end within {max_pages} pages")
    }

    /// The tenant's log entries (newest first), polled until `done` holds and no attempt may still
    /// be in flight, or `timeout` passes; then the last entries seen.
    pub async fn logs_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, page) = self
                .send(
                    reqwest::Method::GET,
                    "/api/v2/webhooks/logs?limit=200",
                    None,
                )
                .await?;
            anyhow::ensure!(status == 200, "logs answered {status}: {page}");
            let entries = page["data"].as_array().cloned().unwrap_or_default();
            let settled = !entries.iter().any(possibly_in_flight);
            if (done(&entries) && settled) || tokio::time::Instant::now() > deadline {
                return Ok(entries);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How long after its start an `interrupted` row may still be an attempt in flight (its outcome
/// on the way) rather than one that was really interrupted: the tests' receivers answer well
/// within it.
const IN_FLIGHT_HORIZON: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Whether a log entry shows its attempt as interrupted (or not yet ended).
pub fn is_interrupted(entry: &Value) -> bool {
    entry["error"]["kind"] == "interrupted"
}

/// An attempt shows as `interrupted` from just before its request until its outcome is logged.
fn possibly_in_flight(entry: &Value) -> bool {
    is_interrupted(entry)
        && entry["timestamp"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .is_some_and(|at| chrono::Utc::now().signed_duration_since(at) < IN_FLIGHT_HORIZON)
}

#[cfg(test)]
mod tests {
    use super::sum_of_series;

    #[test]
    fn a_metric_is_summed_over_its_labels_and_not_confused_with_longer_names() {
        let text = "# TYPE fp_x_total counter\nfp_x_total{a=\"1\"} 2\nfp_x_total{a=\"}\"} 3\nfp_x_total_more 40\nfp_y 7\n";
        assert_eq!(sum_of_series(text, "fp_x_total"), 5.0);
        assert_eq!(sum_of_series("fp_y 7\n", "fp_y"), 7.0);
        assert_eq!(sum_of_series("", "fp_y"), 0.0);
    }
}
