//! The Python publishing example (`examples/python-publisher/publish.py`, the one
//! docs/publishing-events.md shows) against the real services: run with the python of the venv that
//! `deploy/local/ensure-python-publisher.sh` installs (pika and protobuf from PyPI, the classes
//! generated from proto/), which `make test` names in `FP_PUBLISHER_PYTHON`, it publishes an event
//! as another service would, and the event reaches the tenant's endpoint, signed, and its log; a
//! broker it cannot use makes it fail with a message that says why.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};
use fp_broker::Names;
use fp_testkit::environment::{TestEnvironment, broker_url, free_local_address};
use fp_testkit::pipeline::Pipeline;
use fp_testkit::receiver::{TlsReceiver, always_ok};
use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
/// A run of the script that takes longer is stuck; it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "python-publisher-secret";

/// The python of the venv `make test` installs, or a failure that says how to get it.
fn publisher_python() -> anyhow::Result<PathBuf> {
    const HOW: &str = "run `make python-publisher` (which `make test` runs), or run \
                       `deploy/local/ensure-python-publisher.sh` and set FP_PUBLISHER_PYTHON to \
                       the path it prints";
    let Some(path) = std::env::var_os("FP_PUBLISHER_PYTHON") else {
        bail!("FP_PUBLISHER_PYTHON is not set, so the Python publisher test cannot run: {HOW}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!(
            "FP_PUBLISHER_PYTHON names {}, which does not exist: {HOW}",
            path.display()
        );
    }
    Ok(path)
}

/// Runs publish.py with `args`; its output whatever the exit code.
async fn publish(args: &[&str]) -> anyhow::Result<Output> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-publisher/publish.py");
    let run = Command::new(publisher_python()?)
        .arg(&script)
        .args(args)
        .env_remove("AMQP_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .with_context(|| format!("publish.py ran longer than {RUN_TIMEOUT:?}"))?
        .context("cannot run publish.py")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// HMAC-SHA256 computed here with ring directly, not with the product's signing code.
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_by_the_python_example_is_delivered_signed_and_logged()
-> anyhow::Result<()> {
    // Before anything starts: without the venv the test fails at once, naming the make target.
    publisher_python()?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("python_publisher").await?;
    env.trust_receiver(&receiver)?;
    // Finished (database and namespace removed) whether the test passes, fails or panics.
    let outcome = AssertUnwindSafe(async {
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let tenant = pipeline.tenant(&env, "Acme GmbH").await?;
        tenant
            .configure(&receiver.url("/hooks/feedbackpulse"), Some(SECRET))
            .await?;

        let event_id = Uuid::now_v7().to_string();
        let occurred_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let exchange = Names::new(&env.namespace).events_exchange;
        let output = publish(&[
            "--amqp-url",
            &env.endpoints.broker_url,
            "--exchange",
            &exchange,
            "--tenant-id",
            &tenant.tenant_id,
            "--event-type",
            "submission.status_changed",
            "--event-id",
            &event_id,
            "--occurred-at",
            &occurred_at,
            "--submission-id",
            "42",
            "--campaign-id",
            "7",
            "--star-rating",
            "4",
            "--text-feedback",
            "Schnell und freundlich ✓",
            "--customer-name",
            "Jane Doe",
            "--status",
            "approved",
            "--previous-status",
            "pending",
        ])
        .await?;
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        anyhow::ensure!(
            output.status.success(),
            "publish.py failed ({}): {stdout}{stderr}",
            output.status
        );
        assert!(
            stdout.contains(&event_id) && stdout.contains("confirmed"),
            "{stdout}"
        );

        let request = receiver
            .wait_for_request(PATIENCE, |request| {
                request.header("x-feedbackpulse-event") == Some("submission.status_changed")
            })
            .await?;
        assert_eq!(request.target, "/hooks/feedbackpulse");
        assert_eq!(
            request.header("x-feedbackpulse-signature"),
            Some(expected_signature(&request.body).as_str())
        );
        let body: Value = serde_json::from_slice(&request.body).context("the body is JSON")?;
        assert_eq!(
            body,
            json!({
                "event": "submission.status_changed",
                "timestamp": occurred_at,
                "data": {
                    "id": 42,
                    "campaign_id": 7,
                    "star_rating": 4,
                    "text_feedback": "Schnell und freundlich ✓",
                    "customer_name": "Jane Doe",
                    "status": "approved",
                    "previous_status": "pending",
                },
            })
        );

        let entries = tenant
            .logs_until(PATIENCE, |entries| {
                entries.iter().any(|entry| entry["event_id"] == event_id)
            })
            .await?;
        let logged: Vec<&Value> = entries
            .iter()
            .filter(|entry| entry["event_id"] == event_id)
            .collect();
        assert_eq!(logged.len(), 1, "{entries:?}");
        let entry = logged[0];
        assert_eq!(entry["event_type"], "submission.status_changed");
        assert_eq!(entry["response_code"], 200);
        assert_eq!(entry["final"], true);
        assert_eq!(entry["payload"], text(&request.body));
        assert_eq!(
            request.header("x-feedbackpulse-delivery"),
            entry["delivery_id"].as_str()
        );
        assert_eq!(receiver.requests().len(), 1, "delivered once");
        Ok(())
    })
    .catch_unwind()
    .await;
    env.finish_after_unwinding(outcome).await
}

/// publish.py with a broker it cannot use: exit code 1, one line that says why, and the password
/// of the URL is never printed. Returns what it printed on stderr.
async fn assert_refused(amqp_url: &str, password: &str, says: &[&str]) -> anyhow::Result<String> {
    let output = publish(&[
        "--amqp-url",
        amqp_url,
        "--attempts",
        "2",
        "--tenant-id",
        &Uuid::now_v7().to_string(),
        "--event-type",
        "submission.created",
        "--submission-id",
        "1",
        "--campaign-id",
        "1",
        "--star-rating",
        "5",
        "--text-feedback",
        "never sent",
        "--status",
        "pending",
    ])
    .await?;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "", "nothing claims success");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .with_context(|| format!("no error line in {stderr}"))?;
    for part in says {
        assert!(error.contains(part), "{part:?} missing in {error}");
    }
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(
        !stderr.contains(password),
        "the password is printed: {stderr}"
    );
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_fails_clearly_on_a_broker_it_cannot_use() -> anyhow::Result<()> {
    publisher_python()?;
    // Nothing listens there: tried twice, then given up.
    let nowhere = free_local_address()?;
    let stderr = assert_refused(
        &format!("amqp://guest:a-secret-password@{nowhere}/%2f"),
        "a-secret-password",
        &[
            "was not published",
            &format!("cannot reach RabbitMQ at amqp://guest:***@{nowhere}/%2f (attempts: 2)"),
            "Connection refused",
        ],
    )
    .await?;
    assert_eq!(stderr.matches("; retry in ").count(), 1, "{stderr}");

    // The real broker, with a wrong password: refused at once.
    let mut wrong_login = url::Url::parse(&broker_url())?;
    wrong_login
        .set_password(Some("not-the-password"))
        .map_err(|()| anyhow::anyhow!("the broker URL takes no password"))?;
    assert_refused(
        wrong_login.as_str(),
        "not-the-password",
        &["refused the connection", "ACCESS_REFUSED"],
    )
    .await?;
    Ok(())
}
