//! `fp-demo-receiver` (the receiver of `make run`) on the real pipeline: it says VALID for both
//! signatures of a genuine delivery and INVALID for forged ones, and after `POST
//! /_demo/respond/500` it answers deliveries with 500 until `POST /_demo/respond/200`, so the
//! dispatcher's retry of the same delivery shows.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fp_testkit::environment::{TestEnvironment, binaries_dir};
use fp_testkit::pipeline::Pipeline;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "demo-receiver-test-secret";

/// What the demo receiver has printed so far.
struct Printed {
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read, for failure messages.
    seen: Vec<String>,
}

impl Printed {
    /// Reads printed lines until one contains `text`; returns it.
    async fn wait_for_line(&mut self, text: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| format!("no line with {text:?}: {:#?}", self.seen))??
                .with_context(|| format!("the receiver exited: {:#?}", self.seen))?;
            self.seen.push(line.clone());
            if line.contains(text) {
                return Ok(line);
            }
        }
    }

    /// The next delivery whose body holds `marker`: the lines printed for it, from the first
    /// (`demo receiver got ...`) to the body's.
    async fn wait_for_delivery(&mut self, marker: &str) -> anyhow::Result<String> {
        self.wait_for_line(marker).await?;
        let start = self
            .seen
            .iter()
            .rposition(|line| line.starts_with("demo receiver got "))
            .context("a delivery starts with its request line")?;
        Ok(self.seen[start..].join("\n"))
    }
}

/// The demo receiver process, killed when dropped.
struct DemoReceiver {
    _process: Child,
    printed: Printed,
    base: String,
    /// A client that trusts the receiver's CA.
    http: reqwest::Client,
}

impl DemoReceiver {
    async fn start(env: &TestEnvironment) -> anyhow::Result<Self> {
        let mut process = Command::new(binaries_dir()?.join("fp-demo-receiver"))
            .args(["--listen", "127.0.0.1:0", "--ca-pem"])
            .arg(ca_pem(env))
            .env("FP_DEMO_SECRET", SECRET)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context(
                "fp-demo-receiver: build the binaries first (cargo build --workspace --bins)",
            )?;
        let mut printed = Printed {
            lines: BufReader::new(process.stdout.take().context("stdout is piped")?).lines(),
            seen: Vec::new(),
        };
        // Printed once the CA is written.
        let listening = printed.wait_for_line("listening at ").await?;
        let base = listening
            .split_whitespace()
            .last()
            .and_then(|url| url.strip_suffix("/webhooks/feedbackpulse"))
            .with_context(|| format!("no URL in {listening:?}"))?
            .to_owned();
        fp_testkit::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem(env))?)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca])
            .build()?;
        Ok(DemoReceiver {
            _process: process,
            printed,
            base,
            http,
        })
    }

    fn url(&self) -> String {
        format!("{}/webhooks/feedbackpulse", self.base)
    }

    /// `POST /_demo/respond/<status>`; the answer's status.
    async fn respond_with(&self, status: &str) -> anyhow::Result<u16> {
        let response = self
            .http
            .post(format!("{}/_demo/respond/{status}", self.base))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

fn ca_pem(env: &TestEnvironment) -> std::path::PathBuf {
    env.dir.join("demo-receiver-ca.pem")
}

fn delivery_id(printed: &str) -> anyhow::Result<&str> {
    printed
        .split_whitespace()
        .find_map(|word| word.strip_prefix("delivery="))
        .map(|id| id.trim_end_matches(','))
        .context("the request line names the delivery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_receiver_verifies_signatures_and_fails_on_request() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("demo_receiver").await?;
    let outcome = run(&mut env).await;
    env.finish_after(outcome).await
}

async fn run(env: &mut TestEnvironment) -> anyhow::Result<()> {
    let mut receiver = DemoReceiver::start(env).await?;
    env.set(
        "FP__DISPATCHER__EXTRA_ROOT_CERTS",
        ca_pem(env).display().to_string(),
    );
    env.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.1/32");
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "1s,1s,1s");
    let pipeline = Pipeline::start(env, 1).await?;
    let api = pipeline.tenant(env, "Demo Receiver GmbH").await?;
    api.configure(&receiver.url(), Some(SECRET)).await?;

    api.submit("demo genuine", None).await?;
    let genuine = receiver.printed.wait_for_delivery("demo genuine").await?;
    assert!(genuine.contains("answered 200"), "{genuine}");
    assert!(
        genuine.contains("X-FeedbackPulse-Signature: VALID"),
        "{genuine}"
    );
    assert!(genuine.contains("webhook-signature: VALID"), "{genuine}");

    // Told to fail: the delivery gets 500, and its retry 200 once told to recover.
    assert_eq!(receiver.respond_with("500").await?, 200);
    api.submit("demo retried", None).await?;
    let failed = receiver.printed.wait_for_delivery("demo retried").await?;
    assert!(failed.contains("answered 500"), "{failed}");
    assert!(failed.contains("webhook-signature: VALID"), "{failed}");
    assert_eq!(receiver.respond_with("200").await?, 200);
    // A retry due before the switch may have got 500 too; every one is the same delivery.
    loop {
        let retried = receiver.printed.wait_for_delivery("demo retried").await?;
        assert_eq!(delivery_id(&retried)?, delivery_id(&failed)?, "{retried}");
        if retried.contains("answered 200") {
            break;
        }
        assert!(retried.contains("answered 500"), "{retried}");
    }
    assert_eq!(receiver.respond_with("teapot").await?, 400);

    // A forged request: neither signature verifies.
    let now = chrono::Utc::now().timestamp().to_string();
    let forged = receiver
        .http
        .post(receiver.url())
        .header(
            "x-feedbackpulse-signature",
            format!("sha256={}", "0".repeat(64)),
        )
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", now)
        .header(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )
        .body("demo forged")
        .send()
        .await?;
    assert_eq!(forged.status().as_u16(), 200);
    let forged = receiver.printed.wait_for_delivery("demo forged").await?;
    assert!(
        forged.contains("X-FeedbackPulse-Signature: INVALID"),
        "{forged}"
    );
    assert!(forged.contains("webhook-signature: INVALID"), "{forged}");
    Ok(())
}
