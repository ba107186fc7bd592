//! The verification kit, `docs/verifying-webhooks.md`: the guide shows the files of
//! `docs/verifying-webhooks/` byte for byte, and each of those verifiers accepts real deliveries
//! of a running dispatcher and rejects a tampered body, a wrong secret and an old timestamp,
//! before and during a secret rotation.
//!
//! PHP, Python, Node.js and Ruby each run their file in one process for all cases, through a
//! harness in `tests/verifier_harnesses/` (its README says the protocol); Go builds its harness
//! with the file once into `target/`; the Rust file is compiled into this test. A missing
//! interpreter fails the test: `deploy/local/ensure-verifiers.sh` (run by `make test`) installs
//! them.

#[path = "../../../docs/verifying-webhooks/verify.rs"]
mod verify;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use fp_testkit::doc_includes;
use fp_testkit::environment::{TestEnvironment, binaries_dir};
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{ReceivedRequest, TlsReceiver, always_ok};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(30);
/// How long one interpreter may take for all cases (Go: the build).
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// Set to rewrite the guide's code blocks from the files instead of checking them.
const UPDATE_GUIDE: &str = "FP_UPDATE_VERIFYING_WEBHOOKS_GUIDE";

/// A plain secret: its UTF-8 bytes are the key of both signatures.
const SECRET_A: &str = "verification-kit-secret-A";
/// A `whsec_` secret (the Standard Webhooks test secret): its base64 part is the key of
/// `webhook-signature`; `X-FeedbackPulse-Signature` still uses the whole text.
const SECRET_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WRONG_SECRET: &str = "not-the-tenants-secret";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn verifiers_dir() -> PathBuf {
    repository().join("docs/verifying-webhooks")
}

fn harnesses_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifier_harnesses")
}

#[test]
fn the_guide_shows_every_verifier_as_its_file_is() -> anyhow::Result<()> {
    let guide_path = repository().join("docs/verifying-webhooks.md");
    let included = doc_includes::check_or_update(&guide_path, UPDATE_GUIDE)?;

    let mut on_disk: Vec<String> = std::fs::read_dir(verifiers_dir())?
        .map(|entry| -> anyhow::Result<String> {
            Ok(format!(
                "verifying-webhooks/{}",
                entry?.file_name().to_string_lossy()
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    on_disk.sort();
    let mut shown = included.files.clone();
    shown.sort();
    assert_eq!(shown, on_disk, "the guide must show each verifier once");
    assert_eq!(included.text, std::fs::read_to_string(&guide_path)?);

    let readme = std::fs::read_to_string(repository().join("README.md"))?;
    assert!(
        readme.contains("](docs/verifying-webhooks.md)"),
        "the README links the guide"
    );
    Ok(())
}

/// What a receiver got: the raw body and the signature headers.
#[derive(Clone)]
struct Delivery {
    body: Vec<u8>,
    webhook_id: String,
    webhook_timestamp: String,
    webhook_signature: String,
    feedbackpulse_signature: String,
}

impl Delivery {
    fn of(request: &ReceivedRequest) -> anyhow::Result<Self> {
        let header = |name: &str| {
            request
                .header(name)
                .map(str::to_owned)
                .with_context(|| format!("the delivery has no {name}: {:?}", request.headers))
        };
        Ok(Delivery {
            body: request.body.clone(),
            webhook_id: header("webhook-id")?,
            webhook_timestamp: header("webhook-timestamp")?,
            webhook_signature: header("webhook-signature")?,
            feedbackpulse_signature: header("x-feedbackpulse-signature")?,
        })
    }

    fn sent_at(&self) -> anyhow::Result<u64> {
        Ok(self.webhook_timestamp.parse()?)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    StandardWebhooks,
    FeedbackPulse,
}

/// One verification a verifier is asked for, and the verdict it must give.
#[derive(Clone)]
struct Case {
    label: String,
    check: Check,
    secret: String,
    delivery: Delivery,
    /// The receiver's clock in Unix seconds; `None`: the verifier reads its own.
    now: Option<u64>,
    valid: bool,
}

impl Case {
    fn json(&self) -> Value {
        json!({
            "check": match self.check {
                Check::StandardWebhooks => "webhook-signature",
                Check::FeedbackPulse => "x-feedbackpulse-signature",
            },
            "secret": self.secret,
            "body_base64": BASE64.encode(&self.delivery.body),
            "webhook_id": self.delivery.webhook_id,
            "webhook_timestamp": self.delivery.webhook_timestamp,
            "webhook_signature": self.delivery.webhook_signature,
            "feedbackpulse_signature": self.delivery.feedbackpulse_signature,
            "now": self.now,
        })
    }

    /// The verdict of `docs/verifying-webhooks/verify.rs`.
    fn verify_in_rust(&self) -> bool {
        let delivery = &self.delivery;
        match self.check {
            Check::StandardWebhooks => verify::verify_webhook_signature(
                &self.secret,
                &delivery.webhook_id,
                &delivery.webhook_timestamp,
                &delivery.webhook_signature,
                &delivery.body,
                self.now.map_or_else(SystemTime::now, |seconds| {
                    UNIX_EPOCH + Duration::from_secs(seconds)
                }),
            ),
            Check::FeedbackPulse => verify::verify_feedbackpulse_signature(
                &self.secret,
                &delivery.body,
                &delivery.feedbackpulse_signature,
            ),
        }
    }
}

/// The cases of one delivery: `signers` are the secrets its `webhook-signature` was made with
/// (the new one first during a rotation); only the first signs `X-FeedbackPulse-Signature`.
fn cases_of(stage: &str, delivery: &Delivery, signers: &[&str]) -> anyhow::Result<Vec<Case>> {
    let sent = delivery.sent_at()?;
    let current = *signers.first().context("a delivery has a signer")?;
    let mut tampered = delivery.clone();
    tampered.body = String::from_utf8(delivery.body.clone())?
        .replace(stage, &stage.to_uppercase())
        .into_bytes();
    anyhow::ensure!(tampered.body != delivery.body, "the body holds `{stage}`");
    let mut other_timestamp = delivery.clone();
    other_timestamp.webhook_timestamp = (sent + 1).to_string();
    let mut other_id = delivery.clone();
    other_id.webhook_id.push('x');

    let case = |label: &str, check, secret: &str, delivery: &Delivery, now, valid| Case {
        label: format!("{stage}: {label}"),
        check,
        secret: secret.to_owned(),
        delivery: delivery.clone(),
        now,
        valid,
    };
    let mut cases = Vec::new();
    for &secret in signers {
        let standard = |label: &str, delivery: &Delivery, now, valid| {
            let label = format!("webhook-signature with {secret}, {label}");
            case(
                &label,
                Check::StandardWebhooks,
                secret,
                delivery,
                now,
                valid,
            )
        };
        cases.extend([
            standard("as delivered", delivery, None, true),
            standard(
                "received 4 min 50 s later",
                delivery,
                Some(sent + 290),
                true,
            ),
            standard("clock 4 min 50 s behind", delivery, Some(sent - 290), true),
            standard(
                "old timestamp (5 min 10 s)",
                delivery,
                Some(sent + 310),
                false,
            ),
            standard(
                "timestamp 5 min 10 s ahead",
                delivery,
                Some(sent - 310),
                false,
            ),
            standard("tampered body", &tampered, None, false),
            standard("webhook-timestamp changed", &other_timestamp, None, false),
            standard("webhook-id changed", &other_id, None, false),
        ]);
    }
    let legacy = |label: &str, secret: &str, delivery: &Delivery, valid| {
        let label = format!("X-FeedbackPulse-Signature with {secret}, {label}");
        case(&label, Check::FeedbackPulse, secret, delivery, None, valid)
    };
    cases.extend([
        case(
            "webhook-signature with a wrong secret",
            Check::StandardWebhooks,
            WRONG_SECRET,
            delivery,
            None,
            false,
        ),
        legacy("as delivered", current, delivery, true),
        legacy("tampered body", current, &tampered, false),
        legacy("a wrong secret", WRONG_SECRET, delivery, false),
    ]);
    // The legacy header has room for one signature: the new secret's.
    for &replaced in &signers[1..] {
        cases.push(legacy("the replaced secret", replaced, delivery, false));
    }
    Ok(cases)
}

/// Runs `program` with the cases on stdin; its verdicts, one a case.
async fn verdicts_of(
    language: &str,
    program: &Path,
    args: &[&Path],
    cases: &[Case],
) -> anyhow::Result<Vec<bool>> {
    let input = Value::Array(cases.iter().map(Case::json).collect()).to_string();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| missing_interpreter(language, program, error))?;
    let mut stdin = child.stdin.take().context("stdin is piped")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .with_context(|| format!("the {language} verifier ran longer than {RUN_LIMIT:?}"))??;
    anyhow::ensure!(
        output.status.success(),
        "the {language} verifier failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts = String::from_utf8(output.stdout)?
        .lines()
        .map(|line| match line {
            "valid" => Ok(true),
            "invalid" => Ok(false),
            other => anyhow::bail!("the {language} verifier printed {other:?}"),
        })
        .collect::<anyhow::Result<Vec<bool>>>()?;
    anyhow::ensure!(
        verdicts.len() == cases.len(),
        "the {language} verifier gave {} verdicts for {} cases",
        verdicts.len(),
        cases.len()
    );
    Ok(verdicts)
}

fn missing_interpreter(language: &str, program: &Path, error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot run {} for the {language} verifier ({error}); deploy/local/ensure-verifiers.sh \
         installs it (make test runs it)",
        program.display()
    )
}

/// Builds the Go harness with `verify.go` as its package `feedbackpulse`, under `target/`.
async fn go_harness() -> anyhow::Result<PathBuf> {
    let dir = binaries_dir()?.join("verifiers/go");
    std::fs::create_dir_all(dir.join("feedbackpulse"))?;
    std::fs::write(dir.join("go.mod"), "module verifierharness\n\ngo 1.19\n")?;
    std::fs::copy(harnesses_dir().join("harness.go"), dir.join("main.go"))?;
    std::fs::copy(
        verifiers_dir().join("verify.go"),
        dir.join("feedbackpulse/verify.go"),
    )?;
    let binary = dir.join("harness");
    let go = Path::new("go");
    let build = Command::new(go)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&dir)
        // Nothing to download, and no C toolchain needed.
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, build)
        .await
        .with_context(|| format!("go build ran longer than {RUN_LIMIT:?}"))?
        .map_err(|error| missing_interpreter("Go", go, error))?;
    anyhow::ensure!(
        output.status.success(),
        "go build of the Go verifier failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(binary)
}

/// Every verifier's verdicts on `cases`, by language.
async fn all_verdicts(cases: &[Case]) -> anyhow::Result<Vec<(&'static str, Vec<bool>)>> {
    let verifiers = verifiers_dir();
    let harnesses = harnesses_dir();
    let mut verdicts: Vec<(&str, Vec<bool>)> =
        vec![("Rust", cases.iter().map(Case::verify_in_rust).collect())];
    for (language, program, harness, verifier) in [
        ("PHP", "php", "harness.php", "verify.php"),
        ("Python", "python3", "harness.py", "verify.py"),
        ("Node.js", "node", "harness.js", "verify.js"),
        ("Ruby", "ruby", "harness.rb", "verify.rb"),
    ] {
        let args = [harnesses.join(harness), verifiers.join(verifier)];
        let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        verdicts.push((
            language,
            verdicts_of(language, Path::new(program), &args, cases).await?,
        ));
    }
    let go = go_harness().await?;
    verdicts.push(("Go", verdicts_of("Go", &go, &[], cases).await?));
    Ok(verdicts)
}

/// Creates a submission whose feedback is `marker` and returns its delivery.
async fn deliver(
    api: &TenantApi,
    receiver: &TlsReceiver,
    marker: &str,
) -> anyhow::Result<ReceivedRequest> {
    api.submit(marker, None).await?;
    receiver
        .wait_for_request(PATIENCE, |request| {
            String::from_utf8_lossy(&request.body).contains(marker)
        })
        .await
        .with_context(|| format!("no delivery of `{marker}`"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verifier_accepts_real_deliveries_and_rejects_forgeries() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("verifiers").await?;
    env.trust_receiver(&receiver)?;
    // The new config reaches the dispatcher at once, and the rotation lasts the whole test.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "200");
    env.set("FP__API__SECRET_ROTATION_GRACE", "1h");
    let outcome = verify_everywhere(&mut env, &receiver).await;
    env.finish_after(outcome).await
}

async fn verify_everywhere(
    env: &mut TestEnvironment,
    receiver: &TlsReceiver,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::start(env, 1).await?;
    let api = pipeline.tenant(env, "Verifying GmbH").await?;
    let url = receiver.url("/hooks/verify");

    api.configure(&url, Some(SECRET_A)).await?;
    let before = Delivery::of(&deliver(&api, receiver, "before the rotation").await?)?;
    let mut cases = cases_of("before the rotation", &before, &[SECRET_A])?;

    // Rotating to B: once the dispatcher has the new config, it signs with both.
    api.configure(&url, Some(SECRET_B)).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut attempt = 0;
    let during = loop {
        attempt += 1;
        let marker = format!("during the rotation {attempt}");
        let delivery = Delivery::of(&deliver(&api, receiver, &marker).await?)?;
        if delivery.webhook_signature.split(' ').count() == 2 {
            break (marker, delivery);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no delivery signed with both secrets within {PATIENCE:?}"
        );
    };
    cases.extend(cases_of(&during.0, &during.1, &[SECRET_B, SECRET_A])?);

    let mut wrong = Vec::new();
    for (language, verdicts) in all_verdicts(&cases).await? {
        for (case, valid) in cases.iter().zip(verdicts) {
            if valid != case.valid {
                let verdict = |valid| if valid { "valid" } else { "invalid" };
                wrong.push(format!(
                    "{language}: {}: {} (expected {})",
                    case.label,
                    verdict(valid),
                    verdict(case.valid)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    Ok(())
}
