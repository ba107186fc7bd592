//! `GET /api/v2/webhooks/deliveries` on the real pipeline: one tenant's real deliveries in each
//! state (delivered, retrying against a 500, failed for good with a 410, blocked by the SSRF
//! policy after its name moved to a private address), plus seeded ones for what the pipeline
//! shows only for a moment (an attempt and a redelivery in flight) and for a delivery of several
//! attempts; the state filter, the search by delivery id, event id and submission id, keyset
//! paging over more deliveries than a page, a delivery's detail with its attempts, 422 for unknown
//! or bad parameters, and another tenant that sees none of it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use fp_store::attempts::AttemptRow;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, TlsReceiver};
use fp_testkit::seed::attempt_row;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);

/// Answers `/status/<code>` with that code.
fn answers_by_path() -> fp_testkit::receiver::Responder {
    Arc::new(|request: &ReceivedRequest, _: usize| {
        let status = request
            .target
            .strip_prefix("/status/")
            .and_then(|code| code.parse().ok())
            .unwrap_or(200);
        CannedResponse::new(status, "canned")
    })
}

/// Every delivery `query` lists, page after page (the cursor checked on the way).
async fn all_deliveries(tenant: &TenantApi, query: &str) -> anyhow::Result<Vec<Value>> {
    let mut deliveries = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("/api/v2/webhooks/deliveries?{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = tenant.send(Method::GET, &path, None).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {page}");
        deliveries.extend(page["data"].as_array().context("data")?.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(deliveries),
        }
    }
    anyhow::bail!("{query}: paging does not end")
}

/// The deliveries of the tenant, polled until `done` holds for them.
async fn deliveries_until(
    tenant: &TenantApi,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let deliveries = all_deliveries(tenant, "limit=200").await?;
        if done(&deliveries) {
            return Ok(deliveries);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count_in(deliveries: &[Value], state: &str) -> usize {
    deliveries
        .iter()
        .filter(|delivery| delivery["state"] == state)
        .count()
}

fn ids(deliveries: &[Value]) -> Vec<String> {
    deliveries
        .iter()
        .map(|delivery| {
            delivery["delivery_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Configures `url`, makes one submission and waits until its delivery is in `state`; returns the
/// submission id and the delivery.
async fn deliver_one(
    tenant: &TenantApi,
    url: &str,
    state: &str,
    before_submitting: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(i64, Value)> {
    tenant.configure(url, None).await?;
    before_submitting()?;
    let known = all_deliveries(tenant, "limit=200").await?.len();
    let submission = tenant.submit(&format!("towards {state}"), None).await?;
    let deliveries = deliveries_until(tenant, state, |deliveries| {
        deliveries.len() > known && deliveries[0]["state"] == state
    })
    .await?;
    Ok((submission, deliveries[0].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_by_state_searched_and_paged() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start_with_names(
        "127.0.0.1:0".parse()?,
        &["127.0.0.1", "rebinding.test"],
        answers_by_path(),
    )
    .await?;
    let mut env = TestEnvironment::new("deliveries").await?;
    env.trust_receiver(&receiver)?;
    // A failure waits an hour for its retry: long enough to be seen retrying.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "1h");
    // Each config change reaches the dispatcher at once.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "1");
    let hosts_file = env.dir.join("hosts");
    std::fs::write(&hosts_file, "127.0.0.1 rebinding.test\n")?;
    env.set(
        "FP__DISPATCHER__HOSTS_FILE",
        hosts_file.display().to_string(),
    );
    let outcome = run(&mut env, &receiver, &hosts_file).await;
    env.finish_after(outcome).await
}

async fn run(
    env: &mut TestEnvironment,
    receiver: &TlsReceiver,
    hosts_file: &std::path::Path,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::start(env, 1).await?;
    let acme = pipeline.tenant(env, "Acme").await?;
    let other = pipeline.tenant(env, "Other").await?;

    // Delivered: a submission and its status change, two events, two deliveries.
    let (created, _) =
        deliver_one(&acme, &receiver.url("/status/200"), "delivered", || Ok(())).await?;
    let (status, changed) = acme
        .send(
            Method::PATCH,
            &format!("/api/v2/submissions/{created}"),
            Some(&json!({"status": "approved"}).to_string()),
        )
        .await?;
    anyhow::ensure!(status == 200, "status change refused ({status}): {changed}");
    deliveries_until(&acme, "the status change delivered", |deliveries| {
        count_in(deliveries, "delivered") == 2
    })
    .await?;
    // Retrying: a 500, the next attempt an hour away.
    let (retrying_submission, retrying) =
        deliver_one(&acme, &receiver.url("/status/500"), "retrying", || Ok(())).await?;
    // Failed for good: 410.
    let (_, failed) = deliver_one(&acme, &receiver.url("/status/410"), "failed", || Ok(())).await?;
    // Blocked: the name passed the check when the config was saved, then moved to a private
    // address that is not on the allow-list.
    let (_, blocked) = deliver_one(
        &acme,
        &format!("https://rebinding.test:{}/hook", receiver.address().port()),
        "blocked",
        || Ok(std::fs::write(hosts_file, "10.0.0.1 rebinding.test\n")?),
    )
    .await?;

    // What the pipeline shows only for a moment, and a delivery of several attempts, seeded
    // before the real ones: a redelivery in flight, an attempt in flight, and 500, 500, 200, then
    // a redelivery that failed.
    let tenant_id: Uuid = acme.tenant_id.parse()?;
    let base = Utc::now() - TimeDelta::days(2);
    let in_flight = |minutes: i64, manual: bool| AttemptRow {
        response_status: None,
        error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
        error_message: Some(fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned()),
        is_final: false,
        manual,
        ..attempt_row(tenant_id, base + TimeDelta::minutes(minutes))
    };
    let manual_pending = in_flight(10, true);
    let pending = in_flight(20, false);
    let several = attempt_row(tenant_id, base);
    let mut seeded = vec![manual_pending.clone(), pending.clone()];
    for (n, status, manual) in [
        (1, 500, false),
        (2, 500, false),
        (3, 200, false),
        (4, 500, true),
    ] {
        seeded.push(AttemptRow {
            id: Uuid::now_v7(),
            attempt_number: n,
            response_status: Some(status),
            error_kind: (status != 200).then(|| "http_status".to_owned()),
            is_final: n >= 3,
            next_retry_at: (n < 3).then(|| base + TimeDelta::minutes(i64::from(n))),
            manual,
            delivery_id: several.delivery_id,
            event_id: several.event_id,
            ..attempt_row(tenant_id, base + TimeDelta::minutes(i64::from(n) - 1))
        });
    }
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &seeded).await?;

    // Everything, newest latest attempt first: each delivery once, in its state.
    let everything = all_deliveries(&acme, "").await?;
    let states: Vec<&str> = everything
        .iter()
        .map(|delivery| delivery["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        states,
        [
            "blocked",
            "failed",
            "retrying",
            "delivered",
            "delivered",
            "pending",
            "manual",
            "delivered"
        ],
        "{everything:#?}"
    );
    let last_at: Vec<&str> = everything
        .iter()
        .map(|delivery| delivery["last_attempt_at"].as_str().unwrap_or_default())
        .collect();
    let mut sorted = last_at.clone();
    sorted.sort_unstable_by(|a, b| {
        let time = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
        time(b).cmp(&time(a))
    });
    assert_eq!(last_at, sorted, "not newest first");

    // Each state says what the tenant needs: the next time, the answer, the explanation.
    let next_retry = retrying["next_retry_at"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .context("a retrying delivery says when it goes again")?;
    assert!(
        next_retry > Utc::now() + TimeDelta::minutes(30),
        "{retrying}"
    );
    assert_eq!(retrying["last_response_code"], 500);
    assert_eq!(retrying["last_explanation"]["id"], "server_error");
    assert_eq!(retrying["attempt_count"], 1);
    assert_eq!(failed["last_response_code"], 410);
    assert_eq!(failed["last_explanation"]["id"], "gone");
    assert!(failed["next_retry_at"].is_null(), "{failed}");
    assert_eq!(blocked["last_error"]["kind"], "blocked");
    assert_eq!(blocked["last_explanation"]["id"], "blocked");
    assert!(blocked["last_response_code"].is_null(), "{blocked}");
    let several_listed = everything
        .iter()
        .find(|delivery| delivery["delivery_id"] == several.delivery_id.to_string())
        .context("the delivery of several attempts")?;
    assert_eq!(several_listed["attempt_count"], 4);
    assert_eq!(several_listed["state"], "delivered");
    // Its last answer is the failed redelivery's.
    assert_eq!(several_listed["last_response_code"], 500);

    // The state filter, walked through pages of one: exactly the deliveries in that state.
    for state in [
        "delivered",
        "retrying",
        "failed",
        "blocked",
        "manual",
        "pending",
    ] {
        let listed = all_deliveries(&acme, &format!("state={state}&limit=1")).await?;
        let expected: Vec<String> = ids(&everything)
            .into_iter()
            .zip(&states)
            .filter(|(_, listed_state)| **listed_state == state)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids(&listed), expected, "state={state}");
    }

    // Paging: pages of three hold every delivery once, in the same order.
    assert_eq!(
        ids(&all_deliveries(&acme, "limit=3").await?),
        ids(&everything)
    );
    let (_, first_page) = acme
        .send(Method::GET, "/api/v2/webhooks/deliveries?limit=3", None)
        .await?;
    assert_eq!(first_page["data"].as_array().map(Vec::len), Some(3));
    assert!(first_page["next_cursor"].is_string(), "{first_page}");

    // Search: by delivery id, by event id, by submission id (its events' deliveries).
    let search = |q: String| {
        let acme = &acme;
        async move { all_deliveries(acme, &format!("q={q}")).await }
    };
    let by_delivery = search(failed["delivery_id"].as_str().context("id")?.to_owned()).await?;
    assert_eq!(ids(&by_delivery), ids(std::slice::from_ref(&failed)));
    let by_event = search(blocked["event_id"].as_str().context("id")?.to_owned()).await?;
    assert_eq!(ids(&by_event), ids(std::slice::from_ref(&blocked)));
    let by_submission = search(created.to_string()).await?;
    assert_eq!(by_submission.len(), 2, "{by_submission:#?}");
    assert!(
        by_submission
            .iter()
            .all(|delivery| delivery["state"] == "delivered"),
        "{by_submission:#?}"
    );
    let event_types: Vec<&str> = by_submission
        .iter()
        .map(|delivery| delivery["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        event_types,
        ["submission.status_changed", "submission.created"]
    );
    let by_retrying_submission = search(retrying_submission.to_string()).await?;
    assert_eq!(
        ids(&by_retrying_submission),
        ids(std::slice::from_ref(&retrying))
    );
    // Filters combine.
    assert!(
        all_deliveries(&acme, &format!("q={created}&state=failed"))
            .await?
            .is_empty()
    );
    assert!(search(Uuid::now_v7().to_string()).await?.is_empty());

    // A delivery's detail: the same entry, with its attempts and their explanations.
    let (status, detail) = acme
        .send(
            Method::GET,
            &format!("/api/v2/webhooks/deliveries/{}", several.delivery_id),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "detail answered {status}: {detail}");
    assert_eq!(detail["state"], "delivered");
    let numbers: Vec<i64> = detail["attempts"]
        .as_array()
        .context("attempts")?
        .iter()
        .map(|attempt| attempt["attempt_number"].as_i64().unwrap_or_default())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(detail["attempts"][0]["explanation"]["id"], "server_error");
    assert!(detail["attempts"][2]["explanation"].is_null(), "{detail}");
    assert_eq!(detail["attempts"][3]["manual"], true);
    let (status, detail) = acme
        .send(
            Method::GET,
            &format!(
                "/api/v2/webhooks/deliveries/{}",
                failed["delivery_id"].as_str().context("id")?
            ),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(detail["attempts"][0]["explanation"]["id"], "gone");
    assert_eq!(detail["attempts"][0]["response_code"], 410);

    // Unknown and bad parameters are refused by name.
    let refused = [
        ("status=500", "status"),
        ("state=lost", "state"),
        ("state=FAILED", "state"),
        ("q=acme", "q"),
        ("q=-4", "q"),
        ("cursor=nonsense", "cursor"),
        ("limit=0", "limit"),
        ("from=yesterday", "from"),
    ];
    for (query, field) in refused {
        let (status, answer) = acme
            .send(
                Method::GET,
                &format!("/api/v2/webhooks/deliveries?{query}"),
                None,
            )
            .await?;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }
    for path in ["not-a-delivery", &Uuid::now_v7().to_string()] {
        let (status, _) = acme
            .send(
                Method::GET,
                &format!("/api/v2/webhooks/deliveries/{path}"),
                None,
            )
            .await?;
        assert_eq!(status, 404, "{path}");
    }

    // Another tenant sees none of it, searched by any of its ids.
    let (status, _) = other
        .send(
            Method::GET,
            &format!(
                "/api/v2/webhooks/deliveries/{}",
                failed["delivery_id"].as_str().context("id")?
            ),
            None,
        )
        .await?;
    assert_eq!(status, 404);
    for q in [
        created.to_string(),
        failed["delivery_id"].as_str().context("id")?.to_owned(),
        blocked["event_id"].as_str().context("id")?.to_owned(),
    ] {
        assert!(
            all_deliveries(&other, &format!("q={q}")).await?.is_empty(),
            "{q}"
        );
    }
    assert!(all_deliveries(&other, "").await?.is_empty());
    // And without a key, nothing.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/v2/webhooks/deliveries", acme.base))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    Ok(())
}
