//! The load generator: events published to `fp.events` as internal services publish them, or
//! submissions created through the api (whose outbox relay publishes the events).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::DateTime;
use diesel::sql_types::{BigInt, Bytea};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fp_broker::{OutgoingMessage, Publisher};
use fp_domain::{Change, DeliveryId, Event, Submission, SubmissionStatus};
use futures_util::{StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::arrivals::now_ns;

/// One tenant of the run.
pub struct Tenant {
    pub id: Uuid,
    /// Its endpoint on the receiver (`/hook/<n>`).
    pub url: String,
    /// Its API key, for creating submissions.
    pub api_key: String,
}

/// What the load generator sends and where.
pub struct LoadTarget {
    pub publisher: Publisher,
    pub events_exchange: String,
    pub api: SocketAddr,
    pub api_client: reqwest::Client,
    pub database_url: String,
    pub tenants: Vec<Tenant>,
    /// The submissions' `text_feedback`.
    pub text: String,
}

/// Never set: a load of exactly its count.
static EXACTLY_COUNT: AtomicBool = AtomicBool::new(false);

/// Runs `work(index)` for `0..count`, and on while `keep_going` is set, `window` at once, started
/// at `rate` per second when given.
async fn drive<T, Work, Started>(
    count: u64,
    keep_going: &AtomicBool,
    rate: Option<f64>,
    window: usize,
    work: Work,
) -> anyhow::Result<Vec<T>>
where
    Work: Fn(u64) -> Started,
    Started: Future<Output = anyhow::Result<T>>,
{
    let started = tokio::time::Instant::now();
    futures_util::stream::iter(0..)
        .take_while(|index| {
            std::future::ready(*index < count || keep_going.load(Ordering::Relaxed))
        })
        .then(|index| async move {
            if let Some(rate) = rate {
                tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate))
                    .await;
            }
            index
        })
        .map(work)
        .buffer_unordered(window.max(1))
        .try_collect()
        .await
}

impl LoadTarget {
    fn tenant(&self, index: u64) -> anyhow::Result<&Tenant> {
        let count = self.tenants.len() as u64;
        self.tenants
            .get(usize::try_from(
                index.checked_rem(count).context("no tenants")?,
            )?)
            .context("tenant index")
    }

    /// Publishes `count` events round-robin over the tenants, `window` unconfirmed at once.
    /// Returns each expected delivery's event time.
    pub async fn publish_events(
        &self,
        count: u64,
        rate: Option<f64>,
        window: usize,
    ) -> anyhow::Result<HashMap<u128, u64>> {
        self.publish_events_while(count, &EXACTLY_COUNT, rate, window)
            .await
    }

    /// [`LoadTarget::publish_events`], and on at the same pace while `keep_going` is set (a load
    /// that lasts as long as the work beside it).
    pub async fn publish_events_while(
        &self,
        count: u64,
        keep_going: &AtomicBool,
        rate: Option<f64>,
        window: usize,
    ) -> anyhow::Result<HashMap<u128, u64>> {
        let published = drive(count, keep_going, rate, window, |index| {
            self.publish_event(index)
        })
        .await?;
        Ok(published.into_iter().collect())
    }

    /// One publish: the event is made (and its time taken) just before it is published, with
    /// confirms, as the outbox relay publishes.
    async fn publish_event(&self, index: u64) -> anyhow::Result<(u128, u64)> {
        let tenant = self.tenant(index)?;
        let occurred_ns = now_ns();
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            occurred_at: DateTime::from_timestamp_nanos(i64::try_from(occurred_ns)?),
            change: Change::SubmissionCreated {
                submission: Submission {
                    id: i64::try_from(index)? + 1,
                    campaign_id: 1,
                    star_rating: 4,
                    text_feedback: self.text.clone(),
                    customer_name: Some("Bench Customer".to_owned()),
                    status: SubmissionStatus::Pending,
                },
            },
        };
        let payload = fp_contracts::encode_event(&event);
        self.publisher
            .publish(&OutgoingMessage {
                exchange: &self.events_exchange,
                routing_key: event.event_type().as_str(),
                message_id: &event.id.to_string(),
                parent: None,
                payload: &payload,
                headers: &[],
                expiration: None,
            })
            .await?;
        let delivery = DeliveryId::for_event_and_endpoint(event.id, &tenant.url);
        Ok((delivery.0.as_u128(), occurred_ns))
    }

    /// Creates `count` submissions through `POST /api/v2/submissions`, round-robin over the
    /// tenants with each one's key, `window` requests at once. The expected deliveries come from
    /// the events the api wrote to its outbox. Each one's latency starts when its request was
    /// sent, not at the event's time: the api sets that inside its transaction, after any wait
    /// in its queue for a group commit, which the tenant's application waited through too.
    pub async fn create_submissions(
        &self,
        count: u64,
        rate: Option<f64>,
        window: usize,
    ) -> anyhow::Result<HashMap<u128, u64>> {
        let mut conn = fp_store::connect(&self.database_url).await?;
        let outbox_before = last_outbox_id(&mut conn).await?;
        let sent: HashMap<i64, u64> =
            drive(count, &EXACTLY_COUNT, rate, window, |index| async move {
                let sent_ns = now_ns();
                Ok((self.create_submission(index).await?, sent_ns))
            })
            .await?
            .into_iter()
            .collect();
        let written = outbox_events_after(&mut conn, outbox_before).await?;
        if written.len() as u64 != count {
            bail!(
                "the api wrote {} outbox events for {count} submissions",
                written.len()
            );
        }
        let urls: HashMap<Uuid, &str> = self
            .tenants
            .iter()
            .map(|tenant| (tenant.id, tenant.url.as_str()))
            .collect();
        written
            .iter()
            .map(|event| {
                let url = urls
                    .get(&event.tenant_id)
                    .context("an outbox event of an unknown tenant")?;
                let delivery = DeliveryId::for_event_and_endpoint(event.id, url);
                let sent_ns = event
                    .submission_id()
                    .and_then(|id| sent.get(&id))
                    .context("an outbox event of a submission the run did not create")?;
                Ok((delivery.0.as_u128(), *sent_ns))
            })
            .collect()
    }

    /// Creates a submission of tenant `index` (round-robin) through the api; returns its id.
    pub async fn create_submission(&self, index: u64) -> anyhow::Result<i64> {
        let body = serde_json::to_vec(&serde_json::json!({
            "campaign_id": 1,
            "star_rating": 4,
            "text_feedback": self.text,
            "customer_name": "Bench Customer",
        }))?;
        let answer = self
            .post_as_tenant(index, "/api/v2/submissions", body)
            .await?;
        let created: Created = serde_json::from_slice(&answer)
            .context("the api's answer to POST /api/v2/submissions")?;
        Ok(created.id)
    }

    /// Erases submission `submission_id` of tenant `index` through
    /// `POST /api/v2/submissions/{id}/erase`; returns the api's account of what it changed.
    pub async fn erase_submission(
        &self,
        index: u64,
        submission_id: i64,
    ) -> anyhow::Result<serde_json::Value> {
        let answer = self
            .post_as_tenant(
                index,
                &format!("/api/v2/submissions/{submission_id}/erase"),
                Vec::new(),
            )
            .await?;
        serde_json::from_slice(&answer).context("the api's answer to the erasure")
    }

    /// POSTs `body` (JSON) to the api's `path` with tenant `index`'s key; fails unless it succeeded.
    async fn post_as_tenant(
        &self,
        index: u64,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<bytes::Bytes> {
        let tenant = self.tenant(index)?;
        let mut request = self
            .api_client
            .post(format!("http://{}{path}", self.api))
            .bearer_auth(&tenant.api_key);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "POST {path} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.bytes().await?)
    }
}

#[derive(serde::Deserialize)]
struct Created {
    id: i64,
}

async fn last_outbox_id(conn: &mut AsyncPgConnection) -> anyhow::Result<i64> {
    let last: LastId = diesel::sql_query("SELECT coalesce(max(id), 0) AS id FROM outbox")
        .get_result(conn)
        .await?;
    Ok(last.id)
}

/// The events the api wrote to its outbox after row `after`, in order.
async fn outbox_events_after(
    conn: &mut AsyncPgConnection,
    after: i64,
) -> anyhow::Result<Vec<Event>> {
    let rows: Vec<OutboxPayload> =
        diesel::sql_query("SELECT payload FROM outbox WHERE id > $1 ORDER BY id")
            .bind::<BigInt, _>(after)
            .load(conn)
            .await?;
    rows.iter()
        .map(|row| fp_contracts::decode_event(&row.payload))
        .collect::<Result<Vec<_>, _>>()
        .context("an outbox event that does not decode")
}

#[derive(diesel::QueryableByName)]
struct LastId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(diesel::QueryableByName)]
struct OutboxPayload {
    #[diesel(sql_type = Bytea)]
    payload: Vec<u8>,
}
