//! A tenant's payload retention (issue 15): clearing the bodies and headers of attempts past each
//! tenant's setting and only those, in batches, keeping the rest of each record; the setting
//! through the api within the platform's `retention.max_days`; the logs api and the dashboard
//! saying that a payload was removed. Attempts are seeded straight into the database at exact
//! ages; the clearing is `fp_store::payload_retention::clear_expired_payloads`, as log-ingest's
//! maintenance runs it.

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fp_store::attempts::{AttemptRow, StoredHeaders};
use fp_store::payload_retention;
use fp_store::schema::delivery_attempts;
use fp_testkit::dashboard::{DashboardFixture, form_body, hidden_field_after, http_session};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, start_api};
use fp_testkit::seed::attempt_row;
use serde_json::{Value, json};
use uuid::Uuid;

/// The platform maximum the tests run with: not the default, so reading it is tested too.
const MAX_DAYS: &str = "14";

/// Now, to the microsecond (what PostgreSQL keeps), so stored times compare equal.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}

/// `count` attempts of `tenant_id`, `age` old, each with a body and headers sent and received;
/// two at a time share their second, so batches of two end inside a second's attempts.
fn attempts(tenant_id: Uuid, age: TimeDelta, count: usize, now: DateTime<Utc>) -> Vec<AttemptRow> {
    (0..count)
        .map(|n| AttemptRow {
            request_headers: StoredHeaders::of([
                ("content-type", "application/json"),
                ("x-n", &n.to_string()),
            ]),
            request_body: format!(r#"{{"text_feedback":"secret words {n}"}}"#).into_bytes(),
            response_status: Some(500),
            response_headers: StoredHeaders::of([("x-served-by", "receiver")]),
            response_body: b"upstream broke".to_vec(),
            error_kind: Some("http_status".to_owned()),
            error_message: Some("500 Internal Server Error".to_owned()),
            ..attempt_row(tenant_id, now - age - TimeDelta::seconds(n as i64 / 2))
        })
        .collect()
}

async fn create_tenant(env: &TestEnvironment, name: &str) -> anyhow::Result<Uuid> {
    let created: Value = serde_json::from_str(&env.fpctl(&["tenant", "create", name]).await?)?;
    Ok(Uuid::parse_str(
        created["tenant_id"].as_str().context("tenant_id")?,
    )?)
}

/// Every stored attempt by id, with whether and how its payload was cleared.
async fn stored(
    conn: &mut fp_store::PgConnection,
) -> anyhow::Result<Vec<(AttemptRow, Option<DateTime<Utc>>, Option<i32>)>> {
    Ok(delivery_attempts::table
        .select((
            AttemptRow::as_select(),
            delivery_attempts::payload_cleared_at,
            delivery_attempts::payload_retention_days,
        ))
        .load(conn)
        .await?)
}

/// `row` as the clearing leaves it: no bodies, no headers, everything else as it was.
fn cleared(row: &AttemptRow) -> AttemptRow {
    AttemptRow {
        request_headers: StoredHeaders::none(),
        request_body: Vec::new(),
        response_headers: StoredHeaders::none(),
        response_body: Vec::new(),
        ..row.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_removes_payloads_past_each_tenants_retention_and_only_those() -> anyhow::Result<()>
{
    let env = TestEnvironment::new("payload_clearing").await?;
    let outcome = async {
        let week = create_tenant(&env, "Keeps a week").await?;
        let unset = create_tenant(&env, "Chose nothing").await?;
        let two_days = create_tenant(&env, "Keeps two days").await?;
        let now = now();
        let mut conn = fp_store::connect(&env.database_url).await?;
        payload_retention::set(&mut conn, week, Some(7), now).await?;
        payload_retention::set(&mut conn, two_days, Some(2), now).await?;

        let week_old = attempts(week, TimeDelta::days(10), 5, now);
        let week_recent = attempts(week, TimeDelta::days(3), 3, now);
        let unset_old = attempts(unset, TimeDelta::days(10), 4, now);
        let two_days_old = attempts(two_days, TimeDelta::days(5), 3, now);
        let two_days_recent = attempts(two_days, TimeDelta::hours(12), 2, now);
        let mut seeded = Vec::new();
        for rows in [
            &week_old,
            &week_recent,
            &unset_old,
            &two_days_old,
            &two_days_recent,
        ] {
            fp_store::attempts::insert_batch(&mut conn, rows).await?;
            seeded.extend(rows.iter().cloned());
        }

        // Batches of 2, fewer than the 5 and the 3 to clear: the loop must go on until done.
        let count = payload_retention::clear_expired_payloads(&mut conn, now, 2).await?;
        assert_eq!(
            count, 8,
            "the week's 5 attempts past 7 days and the 3 past 2 days"
        );
        let expect_cleared = |row: &AttemptRow, days: i32| (cleared(row), Some(now), Some(days));
        let expect_kept = |row: &AttemptRow| (row.clone(), None, None);
        let mut expected: Vec<_> = week_old
            .iter()
            .map(|row| expect_cleared(row, 7))
            .chain(two_days_old.iter().map(|row| expect_cleared(row, 2)))
            .chain(
                week_recent
                    .iter()
                    .chain(&unset_old)
                    .chain(&two_days_recent)
                    .map(expect_kept),
            )
            .collect();
        expected.sort_by_key(|(row, _, _)| row.id);
        let mut found = stored(&mut conn).await?;
        found.sort_by_key(|(row, _, _)| row.id);
        assert_eq!(found, expected);

        // Nothing is rewritten: a second run at the same time finds nothing.
        assert_eq!(
            payload_retention::clear_expired_payloads(&mut conn, now, 2).await?,
            0
        );
        // A shorter retention reaches the attempts the longer one spared, and only those.
        payload_retention::set(&mut conn, week, Some(2), now).await?;
        assert_eq!(
            payload_retention::clear_expired_payloads(&mut conn, now, 2).await?,
            3
        );
        let week_recent_ids: Vec<Uuid> = week_recent.iter().map(|row| row.id).collect();
        for (row, cleared_at, days) in stored(&mut conn).await? {
            if week_recent_ids.contains(&row.id) {
                assert_eq!(
                    (row.request_body.len(), cleared_at, days),
                    (0, Some(now), Some(2))
                );
            }
        }
        // A tenant that drops its setting keeps what is left; what is gone stays gone.
        payload_retention::set(&mut conn, two_days, None, now).await?;
        let later = now + TimeDelta::days(1);
        assert_eq!(
            payload_retention::clear_expired_payloads(&mut conn, later, 2).await?,
            0,
            "two_days's recent attempts are past 2 days by now, but it chose none any more"
        );

        // What a log page looks up: the cleared among a page of rows, scoped by the tenant.
        let page: Vec<(Uuid, DateTime<Utc>)> = seeded
            .iter()
            .map(|row| (row.id, row.attempted_at))
            .collect();
        let of_week = payload_retention::cleared_among(&mut conn, Some(week), &page).await?;
        assert_eq!(of_week.len(), 8, "the week's 5 old and 3 recent attempts");
        assert!(of_week.iter().all(|clearing| clearing.cleared_at == now));
        let of_unset = payload_retention::cleared_among(&mut conn, Some(unset), &page).await?;
        assert!(of_unset.is_empty(), "{of_unset:?}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_and_sets_the_retention_within_the_maximum_and_the_log_says_what_was_cleared()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("payload_retention_api").await?;
    env.set("FP__RETENTION__MAX_DAYS", MAX_DAYS);
    let outcome = async {
        let api_address = start_api(&mut env).await?;
        let alice = TenantApi::create(&env, api_address, "Alice").await?;
        let bob = TenantApi::create(&env, api_address, "Bob").await?;
        let get = async |api: &TenantApi| -> anyhow::Result<Value> {
            let (status, body) = api
                .send(reqwest::Method::GET, "/api/v2/webhooks/retention", None)
                .await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            Ok(body)
        };
        let put = async |api: &TenantApi, body: &str| {
            api.send(
                reqwest::Method::PUT,
                "/api/v2/webhooks/retention",
                Some(body),
            )
            .await
        };

        let none = json!({"payload_days": null, "payload_days_in_force": 14, "record_days": 14});
        assert_eq!(get(&alice).await?, none);
        let week = json!({"payload_days": 7, "payload_days_in_force": 7, "record_days": 14});
        assert_eq!(
            put(&alice, r#"{"payload_days": 7}"#).await?,
            (200, week.clone())
        );
        assert_eq!(get(&alice).await?, week);
        assert_eq!(
            get(&bob).await?,
            none,
            "another tenant's setting is its own"
        );

        for (body, message) in [
            (r#"{"payload_days": 0}"#, "at least 1 day"),
            (r#"{"payload_days": -3}"#, "at least 1 day"),
            (r#"{"payload_days": 15}"#, "at most 14"),
            (r#"{"payload_days": 1.5}"#, ""),
            (r#"{}"#, ""),
            (r#"{"payload_days": 7, "days": 7}"#, ""),
        ] {
            let (status, answer) = put(&alice, body).await?;
            assert_eq!(status, 422, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_field", "{body}: {answer}");
            let error_message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(error_message.contains(message), "{body}: {answer}");
            if !message.is_empty() {
                assert_eq!(answer["error"]["field"], "payload_days", "{body}: {answer}");
            }
        }
        assert_eq!(get(&alice).await?, week, "a refused change changes nothing");
        assert_eq!(
            put(&alice, r#"{"payload_days": 14}"#).await?.0,
            200,
            "the maximum itself is allowed"
        );

        // The log says which payloads were cleared, and when, under how many days.
        put(&alice, r#"{"payload_days": 7}"#).await?;
        let tenant_id = Uuid::parse_str(&alice.tenant_id)?;
        let now = now();
        let old = attempts(tenant_id, TimeDelta::days(9), 1, now);
        let recent = attempts(tenant_id, TimeDelta::days(1), 1, now);
        let mut conn = fp_store::connect(&env.database_url).await?;
        fp_store::attempts::insert_batch(&mut conn, &old).await?;
        fp_store::attempts::insert_batch(&mut conn, &recent).await?;
        assert_eq!(
            payload_retention::clear_expired_payloads(&mut conn, now, 100).await?,
            1
        );
        let (status, page) = alice
            .send(reqwest::Method::GET, "/api/v2/webhooks/logs", None)
            .await?;
        assert_eq!(status, 200, "{page}");
        let entries = page["data"].as_array().context("data")?;
        let entry = |id: Uuid| {
            entries
                .iter()
                .find(|entry| entry["id"] == id.to_string())
                .cloned()
                .unwrap_or_default()
        };
        let old_entry = entry(old[0].id);
        assert_eq!(old_entry["payload_cleared"], true, "{old_entry}");
        assert_eq!(old_entry["payload_retention_days"], 7, "{old_entry}");
        assert!(old_entry["payload_cleared_at"].is_string(), "{old_entry}");
        assert_eq!(old_entry["payload"], "", "{old_entry}");
        assert_eq!(old_entry["response_body"], "", "{old_entry}");
        assert_eq!(
            old_entry["response_code"], 500,
            "metadata stays: {old_entry}"
        );
        let recent_entry = entry(recent[0].id);
        assert_eq!(recent_entry["payload_cleared"], false, "{recent_entry}");
        assert!(
            recent_entry["payload_cleared_at"].is_null(),
            "{recent_entry}"
        );
        assert_eq!(
            recent_entry["payload"], r#"{"text_feedback":"secret words 0"}"#,
            "{recent_entry}"
        );
        let (status, detail) = alice
            .send(
                reqwest::Method::GET,
                &format!("/api/v2/webhooks/logs/{}", old[0].id),
                None,
            )
            .await?;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["payload_cleared"], true, "{detail}");
        assert_eq!(detail["request_headers"], json!([]), "{detail}");
        assert_eq!(detail["attempts"][0]["payload_cleared"], true, "{detail}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_retention_changes_it_and_marks_a_cleared_attempt()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("payload_retention_dashboard").await?;
    env.set("FP__RETENTION__MAX_DAYS", MAX_DAYS);
    let outcome = async {
        let fixture = DashboardFixture::start(&mut env).await?;
        let client = http_session(
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
            "en",
        )
        .await?;
        let page = async |path: &str| -> anyhow::Result<(u16, String)> {
            let answer = client.get(fixture.url(path)).send().await?;
            Ok((answer.status().as_u16(), answer.text().await?))
        };
        let (_, logs) = page("/webhooks/logs").await?;
        assert!(
            logs.contains(r#"Payloads are kept for <strong id="log-retention-payload-days">14</strong> days, delivery records for <strong id="log-retention-record-days">14</strong> days."#),
            "{logs}"
        );

        let (status, settings) = page("/settings/retention").await?;
        assert_eq!(status, 200, "{settings}");
        let token = hidden_field_after(&settings, r#"action="/settings/retention""#, "csrf_token")
            .context("the retention form has no CSRF token")?;
        let post = async |pairs: &[(&str, &str)]| -> anyhow::Result<(u16, String)> {
            let answer = client
                .post(fixture.url("/settings/retention"))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form_body(pairs))
                .send()
                .await?;
            Ok((answer.status().as_u16(), answer.text().await?))
        };
        let (status, refused) = post(&[("csrf_token", &token), ("payload_days", "0")]).await?;
        assert_eq!(status, 422, "{refused}");
        assert!(refused.contains(r#"id="retention-error""#), "{refused}");
        assert!(refused.contains("at least 1 day"), "{refused}");
        let (status, refused) = post(&[("csrf_token", &token), ("payload_days", "15")]).await?;
        assert_eq!(status, 422, "{refused}");
        assert!(
            refused.contains("cannot be kept longer than the delivery records"),
            "{refused}"
        );
        let (status, _) = post(&[("payload_days", "3")]).await?;
        assert!(status >= 400, "a form without its CSRF token is refused ({status})");
        let (status, saved) = post(&[("csrf_token", &token), ("payload_days", "7")]).await?;
        assert_eq!(status, 200, "{saved}");
        assert!(saved.contains(r#"id="saved""#), "{saved}");
        assert!(
            saved.contains(r#"<dd id="payload-days-in-force">7 days</dd>"#),
            "{saved}"
        );
        let (_, answer) = fixture
            .api
            .send(reqwest::Method::GET, "/api/v2/webhooks/retention", None)
            .await?;
        assert_eq!(answer["payload_days"], 7, "{answer}");
        let (_, logs) = page("/webhooks/logs").await?;
        assert!(
            logs.contains(r#"Payloads are kept for <strong id="log-retention-payload-days">7</strong> days"#),
            "{logs}"
        );

        // A cleared attempt's page says so instead of showing empty bodies.
        let tenant_id = Uuid::parse_str(&fixture.api.tenant_id)?;
        let now = now();
        let old = attempts(tenant_id, TimeDelta::days(8), 1, now);
        let recent = attempts(tenant_id, TimeDelta::days(1), 1, now);
        let mut conn = fp_store::connect(&env.database_url).await?;
        fp_store::attempts::insert_batch(&mut conn, &old).await?;
        fp_store::attempts::insert_batch(&mut conn, &recent).await?;
        payload_retention::clear_expired_payloads(&mut conn, now, 100).await?;
        let (status, detail) = page(&format!("/webhooks/logs/{}", old[0].id)).await?;
        assert_eq!(status, 200, "{detail}");
        assert!(detail.contains(r#"id="payload-cleared""#), "{detail}");
        assert!(
            detail.contains("were removed on") && detail.contains("after 7 days"),
            "{detail}"
        );
        assert!(!detail.contains(r#"id="request-payload""#), "{detail}");
        assert!(!detail.contains(r#"id="response-body""#), "{detail}");
        assert!(
            !detail.contains(r#"id="redeliver""#),
            "nothing is left to send again: {detail}"
        );
        let (_, detail) = page(&format!("/webhooks/logs/{}", recent[0].id)).await?;
        assert!(!detail.contains(r#"id="payload-cleared""#), "{detail}");
        assert!(detail.contains("secret words 0"), "{detail}");
        assert!(detail.contains(r#"id="redeliver""#), "{detail}");

        // Nor does the api send an emptied request again, alone or in a recovery.
        fixture.configure_webhook().await?;
        let (status, refused) = fixture
            .api
            .send(
                reqwest::Method::POST,
                &format!("/api/v2/webhooks/logs/{}/redeliver", old[0].id),
                None,
            )
            .await?;
        assert_eq!(status, 409, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("removed after 7 days")),
            "{refused}"
        );
        let range = format!(
            "from={}&to={}",
            (now - TimeDelta::days(9)).format("%Y-%m-%dT%H:%M:%SZ"),
            (now + TimeDelta::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        );
        let (status, preview) = fixture
            .api
            .send(
                reqwest::Method::GET,
                &format!("/api/v2/webhooks/logs/redeliver/preview?{range}"),
                None,
            )
            .await?;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(preview["failed"], 1, "only the failure with its payload: {preview}");

        // The same in German.
        let german = http_session(
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
            "de",
        )
        .await?;
        let logs = german
            .get(fixture.url("/webhooks/logs"))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            logs.contains(r#"Nutzdaten werden <strong id="log-retention-payload-days">7</strong> Tage aufbewahrt, Zustellprotokolle <strong id="log-retention-record-days">14</strong> Tage."#),
            "{logs}"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
