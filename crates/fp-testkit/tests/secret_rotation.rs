//! Webhook secret rotation on the real parts: a receiver that knows only the old secret keeps
//! verifying during the grace period, one that knows only the new secret verifies from the start,
//! and after the grace only the new secret's signature is sent. Signatures are checked here with
//! ring directly, not with the product's signing code, against the exact bytes the receiver got.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{ReceivedRequest, TlsReceiver, always_ok};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET_A: &str = "rotation-secret-A-5f0c2e";
const SECRET_B: &str = "rotation-secret-B-9d41a7";

/// Standard base64 with padding (RFC 4648), so the test needs no base64 crate of its own.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                let sextet = (group >> (18 - 6 * index)) & 0x3f;
                text.push(char::from(ALPHABET[sextet as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

fn hmac(secret: &str, message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

/// The `webhook-signature` entries of a delivery, in order.
fn entries(request: &ReceivedRequest) -> Vec<&str> {
    request
        .header("webhook-signature")
        .map(|value| value.split(' ').collect())
        .unwrap_or_default()
}

/// What a Standard Webhooks receiver holding `secret` checks: some `v1` entry is the HMAC of
/// `{webhook-id}.{webhook-timestamp}.{body}`.
fn standard_entry(request: &ReceivedRequest, secret: &str) -> anyhow::Result<String> {
    let id = request.header("webhook-id").context("webhook-id")?;
    let timestamp = request
        .header("webhook-timestamp")
        .context("webhook-timestamp")?;
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.as_bytes(),
        b".",
        &request.body,
    ]
    .concat();
    Ok(format!("v1,{}", base64(&hmac(secret, &signed))))
}

fn verifies_with(request: &ReceivedRequest, secret: &str) -> anyhow::Result<bool> {
    let expected = standard_entry(request, secret)?;
    Ok(entries(request).contains(&expected.as_str()))
}

/// What a receiver of the product page's legacy header holding `secret` checks.
fn legacy_verifies_with(request: &ReceivedRequest, secret: &str) -> bool {
    let expected = format!("sha256={}", hex::encode(hmac(secret, &request.body)));
    request.header("x-feedbackpulse-signature") == Some(expected.as_str())
}

fn signing_time(request: &ReceivedRequest) -> anyhow::Result<i64> {
    Ok(request
        .header("webhook-timestamp")
        .context("webhook-timestamp")?
        .parse()?)
}

fn time_field(config: &Value, field: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    match &config[field] {
        Value::Null => Ok(None),
        value => Ok(Some(
            value
                .as_str()
                .with_context(|| format!("{field} is not a string: {config}"))?
                .parse()?,
        )),
    }
}

/// The api as a tenant uses it, keeping every answer so the test can check none shows a secret.
struct Tenant {
    api: TenantApi,
    answers: Vec<String>,
}

impl Tenant {
    async fn put(&mut self, body: Value) -> anyhow::Result<(u16, Value)> {
        let (status, answer) = self
            .api
            .send(
                reqwest::Method::PUT,
                "/api/v2/webhooks/config",
                Some(&body.to_string()),
            )
            .await?;
        self.answers.push(answer.to_string());
        Ok((status, answer))
    }

    async fn save(&mut self, body: Value) -> anyhow::Result<Value> {
        let (status, answer) = self.put(body).await?;
        anyhow::ensure!(status == 200, "config refused ({status}): {answer}");
        Ok(answer)
    }

    async fn get(&mut self) -> anyhow::Result<Value> {
        let (status, answer) = self
            .api
            .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
            .await?;
        self.answers.push(answer.to_string());
        anyhow::ensure!(status == 200, "config answered {status}: {answer}");
        Ok(answer)
    }

    /// Creates a submission whose feedback is `marker` and returns the delivery of its event.
    async fn deliver(
        &self,
        receiver: &TlsReceiver,
        marker: &str,
    ) -> anyhow::Result<ReceivedRequest> {
        self.api.submit(marker, None).await?;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(request) = receiver
                .requests()
                .into_iter()
                .find(|request| contains(&request.body, marker.as_bytes()))
            {
                return Ok(request);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no delivery of `{marker}` within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivers new events until one satisfies `done` (the dispatcher's config cache may still
    /// hold the config as it was: until it hears the change, or for up to its TTL while it does
    /// not listen yet); every earlier one must satisfy `stale`.
    async fn deliver_until(
        &self,
        receiver: &TlsReceiver,
        label: &str,
        stale: impl Fn(&ReceivedRequest) -> anyhow::Result<bool>,
        done: impl Fn(&ReceivedRequest) -> anyhow::Result<bool>,
    ) -> anyhow::Result<ReceivedRequest> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self
                .deliver(receiver, &format!("{label} #{attempt}"))
                .await?;
            if done(&request)? {
                return Ok(request);
            }
            anyhow::ensure!(
                stale(&request)?,
                "`{label}` delivery is neither the old nor the new config: {:?}",
                request.headers
            );
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no `{label}` delivery within {PATIENCE:?}"
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The secret columns of the tenant's `webhook_configs` row, read directly.
#[derive(Debug, diesel::QueryableByName)]
struct StoredSecrets {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
    secret_sealed: Option<Vec<u8>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
    previous_secret_sealed: Option<Vec<u8>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl StoredSecrets {
    async fn read(env: &TestEnvironment, tenant_id: &str) -> anyhow::Result<Self> {
        use diesel_async::RunQueryDsl;

        let mut conn = fp_store::connect(&env.database_url).await?;
        Ok(diesel::sql_query(
            "SELECT secret_sealed, previous_secret_sealed, previous_secret_expires_at \
             FROM webhook_configs WHERE tenant_id = $1::uuid",
        )
        .bind::<diesel::sql_types::Text, _>(tenant_id)
        .get_result(&mut conn)
        .await?)
    }

    /// Fails if either sealed column holds the plaintext of any of `secrets`.
    fn assert_no_plaintext(&self, secrets: &[&str]) {
        for column in [&self.secret_sealed, &self.previous_secret_sealed]
            .into_iter()
            .flatten()
        {
            for secret in secrets {
                assert!(
                    !contains(column, secret.as_bytes()),
                    "a stored secret column holds the plaintext {secret}"
                );
            }
        }
    }
}

/// An environment whose dispatcher trusts `receiver` and rereads configs every 200 ms.
async fn environment(
    label: &str,
    receiver: &TlsReceiver,
    grace: &str,
) -> anyhow::Result<TestEnvironment> {
    let mut env = TestEnvironment::new(label).await?;
    env.trust_receiver(receiver)?;
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "200");
    // The production default is 24 h; the same code runs here in seconds.
    env.set("FP__API__SECRET_ROTATION_GRACE", grace);
    Ok(env)
}

fn config_body(url: &str, secret: Option<Option<&str>>) -> Value {
    let mut body = json!({"url": url, "events": ["submission.created"]});
    if let Some(secret) = secret {
        body["secret"] = json!(secret);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one_until_the_grace_period_ends()
-> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = environment("rotation", &receiver, "3s").await?;
    // Whatever happens, the database and the broker namespace are removed.
    let outcome = rotation_scenario(&mut env, &receiver).await;
    env.finish().await?;
    outcome
}

async fn rotation_scenario(
    env: &mut TestEnvironment,
    receiver: &TlsReceiver,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::start(env, 1).await?;
    let mut tenant = Tenant {
        api: pipeline.tenant(env, "Rotating GmbH").await?,
        answers: Vec::new(),
    };
    let tenant_id = tenant.api.tenant_id.clone();
    let url = receiver.url("/hooks");

    // Secret A: every delivery is signed with A alone.
    let saved = tenant.save(config_body(&url, Some(Some(SECRET_A)))).await?;
    assert_eq!(saved["secret_set"], true, "{saved}");
    assert!(saved["secret_rotating_until"].is_null(), "{saved}");
    let first = tenant.deliver(receiver, "signed with A").await?;
    assert_eq!(entries(&first).len(), 1, "{:?}", first.headers);
    assert!(verifies_with(&first, SECRET_A)?);
    assert!(legacy_verifies_with(&first, SECRET_A));
    let stored_a = StoredSecrets::read(env, &tenant_id).await?;
    stored_a.assert_no_plaintext(&[SECRET_A]);
    let sealed_a = stored_a.secret_sealed.context("A is stored sealed")?;
    assert!(stored_a.previous_secret_sealed.is_none());

    // Rotating to B: A's sealed bytes move to the previous column, with the grace's end.
    let rotated = tenant.save(config_body(&url, Some(Some(SECRET_B)))).await?;
    assert_eq!(rotated["secret_set"], true, "{rotated}");
    let rotating_until =
        time_field(&rotated, "secret_rotating_until")?.context("B rotates A out")?;
    assert!(rotating_until > Utc::now(), "{rotated}");
    let stored = StoredSecrets::read(env, &tenant_id).await?;
    stored.assert_no_plaintext(&[SECRET_A, SECRET_B]);
    let sealed_b = stored.secret_sealed.clone().context("B is stored sealed")?;
    assert_ne!(sealed_b, sealed_a);
    assert_eq!(stored.previous_secret_sealed.as_ref(), Some(&sealed_a));
    let stored_until = stored
        .previous_secret_expires_at
        .context("the grace's end is stored")?;
    // PostgreSQL keeps microseconds; the answer may carry nanoseconds. The dispatcher reads the
    // stored value, so the checks below use it.
    assert!((stored_until - rotating_until).num_milliseconds().abs() < 1);

    // During the grace: one `webhook-signature` header, B's entry first, then A's; a receiver
    // holding either secret verifies. The legacy header carries B's signature only.
    let during = tenant
        .deliver_until(
            receiver,
            "during the grace",
            |request| Ok(entries(request).len() == 1 && verifies_with(request, SECRET_A)?),
            |request| verifies_with(request, SECRET_B),
        )
        .await?;
    let during_entries = entries(&during);
    assert_eq!(
        during_entries,
        [
            standard_entry(&during, SECRET_B)?,
            standard_entry(&during, SECRET_A)?
        ],
        "both entries during the grace (did the 3 s grace end before a delivery went out?)"
    );
    assert!(verifies_with(&during, SECRET_A)?);
    assert!(verifies_with(&during, SECRET_B)?);
    assert!(legacy_verifies_with(&during, SECRET_B));
    assert!(!legacy_verifies_with(&during, SECRET_A));
    assert!(signing_time(&during)? <= stored_until.timestamp());

    // Once the api says the grace is over, A signs nothing any more.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let config = tenant.get().await?;
        if config["secret_rotating_until"].is_null() {
            assert_eq!(config["secret_set"], true, "{config}");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the grace did not end: {config}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = tenant.deliver(receiver, "after the grace").await?;
    assert_eq!(
        entries(&after),
        [standard_entry(&after, SECRET_B)?],
        "only B's entry after the grace"
    );
    assert!(!verifies_with(&after, SECRET_A)?);
    assert!(legacy_verifies_with(&after, SECRET_B));
    assert!(signing_time(&after)? >= stored_until.timestamp());

    // Saving without `secret` keeps it, and so does saving the same secret: no rotation, the
    // sealed bytes untouched.
    for body in [
        config_body(&url, None),
        config_body(&url, Some(Some(SECRET_B))),
    ] {
        let kept = tenant.save(body).await?;
        assert_eq!(kept["secret_set"], true, "{kept}");
        assert!(kept["secret_rotating_until"].is_null(), "{kept}");
        let stored = StoredSecrets::read(env, &tenant_id).await?;
        assert_eq!(stored.secret_sealed.as_ref(), Some(&sealed_b));
    }
    let kept = tenant.deliver(receiver, "secret kept").await?;
    assert_eq!(entries(&kept), [standard_entry(&kept, SECRET_B)?]);
    assert!(legacy_verifies_with(&kept, SECRET_B));

    // A secret of the wrong length or type is refused, naming the field and echoing nothing.
    for bad in [json!("short"), json!(5)] {
        let mut body = config_body(&url, None);
        body["secret"] = bad.clone();
        let (status, answer) = tenant.put(body).await?;
        assert_eq!(status, 422, "{bad}: {answer}");
        assert_eq!(answer["error"]["field"], "secret", "{answer}");
    }

    // `null` removes the secret (and any previous one): deliveries go unsigned.
    let removed = tenant.save(config_body(&url, Some(None))).await?;
    assert_eq!(removed["secret_set"], false, "{removed}");
    assert!(removed["secret_rotating_until"].is_null(), "{removed}");
    let stored = StoredSecrets::read(env, &tenant_id).await?;
    assert!(stored.secret_sealed.is_none() && stored.previous_secret_sealed.is_none());
    assert!(stored.previous_secret_expires_at.is_none());
    let unsigned = tenant
        .deliver_until(
            receiver,
            "unsigned",
            |request| verifies_with(request, SECRET_B),
            |request| Ok(request.header("webhook-signature").is_none()),
        )
        .await?;
    assert_eq!(unsigned.header("x-feedbackpulse-signature"), None);

    tenant.get().await?;
    for answer in &tenant.answers {
        for secret in [SECRET_A, SECRET_B] {
            assert!(
                !answer.contains(secret),
                "an answer shows a secret: {answer}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_never_drop_the_replaced_secret() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = environment("rotation_race", &receiver, "1h").await?;
    let outcome = race_scenario(&mut env, &receiver).await;
    env.finish().await?;
    outcome
}

/// Two rotations saved at once are serialised by the row lock: whichever commits last replaces the
/// other's secret, which stays in grace. Without the lock both would read the same old secret,
/// and the secret saved first would vanish without a grace period.
async fn race_scenario(env: &mut TestEnvironment, receiver: &TlsReceiver) -> anyhow::Result<()> {
    let pipeline = Pipeline::start(env, 1).await?;
    let api = pipeline.tenant(env, "Racing GmbH").await?;
    let tenant_id = api.tenant_id.clone();
    let url = receiver.url("/race");
    let put = |secret: String| {
        let body = config_body(&url, Some(Some(&secret))).to_string();
        let api = &api;
        async move {
            let (status, answer) = api
                .send(reqwest::Method::PUT, "/api/v2/webhooks/config", Some(&body))
                .await?;
            anyhow::ensure!(status == 200, "config refused ({status}): {answer}");
            Ok(answer)
        }
    };
    put("race-secret-initial".to_owned()).await?;
    let rounds: Vec<(String, String)> = (0..5)
        .map(|round| {
            (
                format!("race-secret-{round}-left"),
                format!("race-secret-{round}-right"),
            )
        })
        .collect();
    for (round, (left, right)) in rounds.iter().enumerate() {
        let before = StoredSecrets::read(env, &tenant_id)
            .await?
            .secret_sealed
            .context("a secret is set")?;
        let (saved_left, saved_right) = tokio::join!(put(left.clone()), put(right.clone()));
        saved_left?;
        saved_right?;
        let stored = StoredSecrets::read(env, &tenant_id).await?;
        stored.assert_no_plaintext(&[left, right]);
        assert!(
            stored.previous_secret_sealed.is_some()
                && stored.previous_secret_sealed != Some(before),
            "round {round}: the secret in grace must be the one replaced last, not the one before"
        );
    }

    // No event was delivered before, so the dispatcher loads the config as the last round left
    // it: both of that round's secrets, the one saved last first.
    api.submit("after the race", None).await?;
    let delivery = receiver
        .wait_for(1, PATIENCE)
        .await?
        .into_iter()
        .next()
        .context("a delivery")?;
    let (left, right) = rounds.last().context("rounds ran")?;
    let signed = entries(&delivery);
    assert_eq!(signed.len(), 2, "{:?}", delivery.headers);
    let (newer, older) = if signed[0] == standard_entry(&delivery, left)? {
        (left, right)
    } else {
        (right, left)
    };
    assert_eq!(
        signed,
        [
            standard_entry(&delivery, newer)?,
            standard_entry(&delivery, older)?
        ]
    );
    assert!(legacy_verifies_with(&delivery, newer));
    Ok(())
}

#[test]
fn the_test_base64_matches_rfc_4648() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}
