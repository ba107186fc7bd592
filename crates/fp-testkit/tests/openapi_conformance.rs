//! The api against its own OpenAPI document. schemathesis (from PyPI, pinned and installed into
//! `target/tools/schemathesis` by `deploy/local/ensure-schemathesis.sh`, which `make test` runs and
//! names in `FP_SCHEMATHESIS`) reads `GET /api/v2/openapi.json` from a real fp-api, generates
//! requests from it, valid and invalid, and fails on any 5xx and on any answer the document does
//! not describe: status code, content type, headers, body. It runs twice: with a tenant's key over
//! every operation, and with a superadmin key over the admin operations.
//!
//! The seed is random and printed; `FP_SCHEMATHESIS_SEED=<seed>` repeats a run, and
//! `FP_SCHEMATHESIS_ARGS` adds options to both runs (e.g. `--report har --max-examples 200`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::Pipeline;
use fp_testkit::receiver::{TlsReceiver, always_ok};
use serde_json::Value;
use tokio::process::Command;

/// Test cases per operation and phase: enough to find what a schema and a handler disagree on,
/// few enough that both runs take well under two minutes on two cores against a debug build.
const MAX_EXAMPLES: &str = "50";

/// A run that takes longer than this is stuck (e.g. requests waiting on DNS); it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Every check schemathesis has (`--checks all`) except these, which are wrong for this api:
/// - `positive_data_acceptance` wants a 2xx (or 401/403/404/409) for every request the document
///   allows. The api refuses some of those by design, with a documented 422, for reasons a JSON
///   schema cannot state: a `cursor` that is not one the api handed out (cursors are opaque and
///   signed), a webhook URL the SSRF policy blocks (private, loopback and metadata addresses, names
///   that resolve to them), a time range longer than the api serves. Those requests still go
///   through every other check, so a 5xx or an answer the document does not describe still fails.
const EXCLUDED_CHECKS: &[&str] = &["positive_data_acceptance"];

/// schemathesis' settings file, written into the test's directory and named with `--config-file`
/// (so no `schemathesis.toml` of the caller's applies). `negative_data_rejection` takes
/// schemathesis' default list of statuses that reject invalid data, plus 413: an invalid body that is
/// also larger than the api takes (64 KiB) is refused with the documented 413 before it is read.
const CONFIG: &str = r#"
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
"#;

/// The schemathesis binary `make test` installs, or a failure that says how to get it.
fn schemathesis_binary() -> anyhow::Result<PathBuf> {
    const HOW: &str = "run `make test`, or run `deploy/local/ensure-schemathesis.sh` and set \
                       FP_SCHEMATHESIS to the path it prints";
    let Some(path) = std::env::var_os("FP_SCHEMATHESIS") else {
        bail!("FP_SCHEMATHESIS is not set, so the OpenAPI conformance test cannot run: {HOW}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!(
            "FP_SCHEMATHESIS names {}, which does not exist: {HOW}",
            path.display()
        );
    }
    Ok(path)
}

/// `FP_SCHEMATHESIS_SEED` to repeat a run, otherwise a fresh random seed.
fn seed() -> anyhow::Result<u64> {
    match std::env::var("FP_SCHEMATHESIS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("FP_SCHEMATHESIS_SEED={text} is not a number")),
        Err(_) => Ok(uuid::Uuid::new_v4().as_u64_pair().0 >> 1),
    }
}

/// One schemathesis run: whose key it sends, and which operations it tests (no filters: all).
struct Run<'a> {
    label: &'a str,
    key: &'a str,
    filters: &'a [&'a str],
}

/// The outcome of a run: `Ok` with its summary, or `Err` with everything it printed.
async fn run_schemathesis(
    binary: &Path,
    dir: &Path,
    schema_url: &str,
    seed: u64,
    run: &Run<'_>,
) -> anyhow::Result<Result<String, String>> {
    let report_dir = dir.join(format!("schemathesis-{}", run.label));
    std::fs::create_dir_all(&report_dir)?;
    let seed = seed.to_string();
    let authorization = format!("Authorization: Bearer {}", run.key);
    let report_dir_arg = report_dir.display().to_string();
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, CONFIG)?;
    let config_arg = config_path.display().to_string();
    let mut args = vec![
        "--config-file",
        &config_arg,
        "--no-color",
        "run",
        schema_url,
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        &seed,
        // The seed alone decides the run: no examples replayed from earlier runs.
        "--generation-database",
        "none",
        "--header",
        &authorization,
        // One worker: with two, hypothesis (describing its strategies with `ast.parse` on two
        // threads) trips a CPython 3.11 race, "SystemError: AST constructor recursion depth
        // mismatch", reported as an error of the run.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        // What failed, in full: the api's error bodies say why.
        "--output-truncate",
        "false",
        "--report",
        "junit,ndjson",
        "--report-dir",
        &report_dir_arg,
    ];
    let excluded = EXCLUDED_CHECKS.join(",");
    if !excluded.is_empty() {
        args.extend(["--exclude-checks", &excluded]);
    }
    args.extend_from_slice(run.filters);
    let extra = std::env::var("FP_SCHEMATHESIS_ARGS").unwrap_or_default();
    args.extend(extra.split_whitespace());

    let started = Instant::now();
    let mut command = Command::new(binary);
    command
        .args(&args)
        // Any scratch files (hypothesis' directory) land in the test's own directory.
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The api is on loopback: no proxy, and no schemathesis settings from the caller's environment.
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "SCHEMATHESIS_HOOKS",
    ] {
        command.env_remove(name);
    }
    command.env("NO_PROXY", "*");
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .with_context(|| {
            format!(
                "schemathesis ({}) did not finish within {RUN_TIMEOUT:?}",
                run.label
            )
        })?
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let filters = if run.filters.is_empty() {
        "every operation".to_owned()
    } else {
        run.filters.join(" ")
    };
    let heading = format!(
        "schemathesis with the {} key ({filters}, seed {seed}) took {:.0?} and {}; reports in {}",
        run.label,
        started.elapsed(),
        output.status,
        report_dir.display()
    );
    Ok(if output.status.success() {
        eprintln!("{heading}:\n{printed}");
        Ok(heading)
    } else {
        Err(format!(
            "{heading}:\n{printed}\nrepeat with FP_SCHEMATHESIS_SEED={seed}"
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() -> anyhow::Result<()> {
    // Checked before anything starts, so a missing tool fails at once and says what to do.
    let binary = schemathesis_binary()?;
    let seed = seed()?;
    eprintln!("schemathesis seed: {seed} (FP_SCHEMATHESIS_SEED={seed} repeats the run)");

    let mut env = TestEnvironment::new("openapi").await?;
    // A real endpoint, so the tenant has a config, a delivery and its log entry to be read back:
    // the list and detail answers are then checked with data in them, not only empty.
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "Conformance GmbH").await?;
    tenant
        .configure(
            &receiver.url("/hooks/feedbackpulse"),
            Some("conformance secret"),
        )
        .await?;
    tenant.submit("Solid product", Some("Jane Doe")).await?;
    let logged = tenant
        .logs_until(Duration::from_secs(30), |entries| !entries.is_empty())
        .await?;
    anyhow::ensure!(
        !logged.is_empty(),
        "the submission's delivery was not logged"
    );
    // From here on schemathesis saves configs with URLs it invents; the dispatcher would only
    // retry deliveries to them in the background, which tells this test nothing.
    env.kill("fp-dispatcher").await?;

    let created: Value = serde_json::from_str(
        &env.fpctl(&["key", "create", "--superadmin", "--name", "conformance"])
            .await?,
    )?;
    let superadmin_key = created["api_key"]
        .as_str()
        .context("fpctl key create --superadmin: api_key")?
        .to_owned();

    // The document is public: no key needed to read it.
    let schema_url = format!("http://{}/api/v2/openapi.json", pipeline.api);
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&schema_url)
        .send()
        .await?;
    let status = response.status();
    let document = response.text().await?;
    if !status.is_success() {
        env.finish().await?;
        bail!("GET /api/v2/openapi.json without a key answered {status}: {document}");
    }
    serde_json::from_str::<Value>(&document)
        .with_context(|| format!("GET /api/v2/openapi.json is not JSON: {document}"))?;
    // Kept beside the reports: what the runs were judged against.
    std::fs::write(env.dir.join("openapi.json"), &document)?;

    let runs = [
        Run {
            label: "tenant",
            key: &tenant.key,
            // Every operation, the admin ones included: there the tenant's key must get a
            // documented 403.
            filters: &[],
        },
        Run {
            label: "superadmin",
            key: &superadmin_key,
            filters: &["--include-path-regex", "^/api/v2/admin/"],
        },
    ];
    let mut failures = Vec::new();
    let mut summaries = Vec::new();
    for run in &runs {
        match run_schemathesis(&binary, &env.dir, &schema_url, seed, run).await {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(failure)) => failures.push(failure),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    let api_logs = env.dir.display().to_string();
    env.finish().await?;
    if !failures.is_empty() {
        bail!(
            "schemathesis found answers that break /api/v2/openapi.json (api logs in {api_logs}):\n\n{}",
            failures.join("\n\n")
        );
    }
    for summary in summaries {
        eprintln!("passed: {summary}");
    }
    Ok(())
}
