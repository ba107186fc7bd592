//! The fault suite (`make chaos`): a bounded load through the real services (fp-api, one or two
//! fp-dispatchers, fp-log-ingest) on a PostgreSQL cluster and a RabbitMQ node of the suite's own,
//! with one fault a few seconds in: a service killed with SIGKILL (and started again, as an
//! orchestrator would), the broker or the database going away, a failing or hanging receiver,
//! unreadable messages on every queue the services consume. After each scenario it checks what
//! the platform promises (every accepted submission delivered and logged, every request the
//! receiver saw logged, duplicates only where an attempt went wrong, every service ready again
//! without help) and measures how long recovery took. The table goes to `target/chaos/report.md`
//! and to the terminal; the test fails after writing it if any scenario did.
//!
//! `FP_CHAOS_SCENARIOS=kill_api,poison_messages` runs only the scenarios with those labels.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use fp_broker::{Broker, OutgoingMessage};
use fp_testkit::environment::{ServiceEndpoints, TestEnvironment, binaries_dir};
use fp_testkit::journal::{Findings, LoadClient, SeenRequest, examine};
use fp_testkit::lock;
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::private_services::{PrivatePostgres, PrivateRabbit};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

const SUBMISSIONS_PER_SECOND: u32 = 25;
/// 8 s of load: the fault comes while it runs, whatever the fault.
const LOAD_SUBMISSIONS: usize = 200;
/// 38 s of load, so that it goes on across the whole database outage and past its end.
const DATABASE_OUTAGE_LOAD_SUBMISSIONS: usize = 950;
const FAULT_AFTER: Duration = Duration::from_secs(3);
/// Between a crash and the replacement process, as an orchestrator's restart takes a moment.
const RESTART_GAP: Duration = Duration::from_secs(1);
const BROKER_OUTAGE: Duration = Duration::from_secs(5);
const DATABASE_OUTAGE: Duration = Duration::from_secs(30);
const RECEIVER_FAULT: Duration = Duration::from_secs(5);
/// How long the receiver takes to answer normally: at the load's rate, several deliveries are in
/// flight whenever a fault strikes.
const ANSWER_DELAY: Duration = Duration::from_millis(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Past [`REQUEST_TIMEOUT`]: the dispatcher gives up before the receiver answers.
const HANG: Duration = Duration::from_secs(3);
/// About 23 s of retries in all: fast, yet longer than any receiver fault, so a delivery that
/// fails during one still has attempts left when the receiver is back.
const RETRY_SCHEDULE: &str = "1s,2s,4s,8s,8s";
/// How long after the fault's end everything accepted must be delivered and every service ready.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// How long the log may lag behind the receiver once everything is delivered.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// One HTTP call of the load or of the checks; a hanging api must not stall the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The dead-letter queue is read until it has been quiet this long.
const DEAD_LETTER_QUIET: Duration = Duration::from_secs(2);
const DEAD_LETTER_LIMIT: Duration = Duration::from_secs(30);
/// More log pages than any scenario can fill (200 entries each): a cursor that never ends is a bug.
const MAX_LOG_PAGES: usize = 100;
/// Field number 0 is never valid protobuf, so no decoder can mistake this for a message.
const POISON: &[u8] = b"\x00\xff\xfe not a protobuf message";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillDispatcher,
    KillOneOfTwoDispatchers,
    KillLogIngest,
    KillApi,
    BrokerAppRestart,
    BrokerNodeRestart,
    DatabaseOutage,
    ReceiverErrors,
    ReceiverHangs,
    PoisonMessages,
}

const SCENARIOS: [Fault; 10] = [
    Fault::KillDispatcher,
    Fault::KillOneOfTwoDispatchers,
    Fault::KillLogIngest,
    Fault::KillApi,
    Fault::BrokerAppRestart,
    Fault::BrokerNodeRestart,
    Fault::DatabaseOutage,
    Fault::ReceiverErrors,
    Fault::ReceiverHangs,
    Fault::PoisonMessages,
];

impl Fault {
    /// Names the scenario's database and namespace, and selects it in `FP_CHAOS_SCENARIOS`.
    fn label(self) -> &'static str {
        match self {
            Fault::KillDispatcher => "kill_dispatcher",
            Fault::KillOneOfTwoDispatchers => "kill_one_of_two",
            Fault::KillLogIngest => "kill_log_ingest",
            Fault::KillApi => "kill_api",
            Fault::BrokerAppRestart => "broker_app_restart",
            Fault::BrokerNodeRestart => "broker_node_restart",
            Fault::DatabaseOutage => "database_outage",
            Fault::ReceiverErrors => "receiver_errors",
            Fault::ReceiverHangs => "receiver_hangs",
            Fault::PoisonMessages => "poison_messages",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Fault::KillDispatcher => "SIGKILL of the dispatcher, a new one started",
            Fault::KillOneOfTwoDispatchers => "SIGKILL of one of two dispatchers",
            Fault::KillLogIngest => "SIGKILL of log-ingest, restarted",
            Fault::KillApi => "SIGKILL of the api, restarted on its address",
            Fault::BrokerAppRestart => "RabbitMQ stop_app / start_app",
            Fault::BrokerNodeRestart => "RabbitMQ node stop / start",
            Fault::DatabaseOutage => "PostgreSQL stopped for 30 s",
            Fault::ReceiverErrors => "receiver answers 500 for 5 s",
            Fault::ReceiverHangs => "receiver hangs past the timeout for 5 s",
            Fault::PoisonMessages => "garbage on every consumed queue",
        }
    }

    /// Its row number in the report, the same whichever scenarios run.
    fn number(self) -> usize {
        SCENARIOS
            .iter()
            .position(|fault| *fault == self)
            .map_or(0, |index| index + 1)
    }

    fn dispatchers(self) -> usize {
        if self == Fault::KillOneOfTwoDispatchers {
            2
        } else {
            1
        }
    }

    fn submissions(self) -> usize {
        if self == Fault::DatabaseOutage {
            DATABASE_OUTAGE_LOAD_SUBMISSIONS
        } else {
            LOAD_SUBMISSIONS
        }
    }
}

/// How the receiver answers right now.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum ReceiverMode {
    Answers = 0,
    Fails = 1,
    Hangs = 2,
}

/// The tenant's endpoint: a TLS receiver whose answers the scenario switches, with a journal of
/// every request and how it was answered.
struct Receiver {
    tls: TlsReceiver,
    mode: Arc<AtomicU8>,
    journal: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let mode = Arc::new(AtomicU8::new(ReceiverMode::Answers as u8));
        let journal: Arc<Mutex<Vec<SeenRequest>>> = Arc::new(Mutex::new(Vec::new()));
        let tls = TlsReceiver::start(
            "127.0.0.1:0".parse()?,
            Arc::new({
                let mode = mode.clone();
                let journal = journal.clone();
                move |request, _| {
                    let mode = mode.load(Ordering::SeqCst);
                    lock(&journal).push(SeenRequest::of(
                        request,
                        mode == ReceiverMode::Answers as u8,
                    ));
                    if mode == ReceiverMode::Fails as u8 {
                        CannedResponse::new(500, "failing on purpose")
                    } else if mode == ReceiverMode::Hangs as u8 {
                        CannedResponse {
                            delay: HANG,
                            ..CannedResponse::new(200, "too late")
                        }
                    } else {
                        CannedResponse {
                            delay: ANSWER_DELAY,
                            ..CannedResponse::new(200, "ok")
                        }
                    }
                }
            }),
        )
        .await?;
        Ok(Receiver { tls, mode, journal })
    }

    fn set_mode(&self, mode: ReceiverMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn journal(&self) -> Vec<SeenRequest> {
        lock(&self.journal).clone()
    }
}

#[derive(Default)]
struct LoadOutcome {
    accepted: BTreeSet<i64>,
    /// What the submissions that were not accepted got, by kind.
    not_accepted: BTreeMap<String, usize>,
    duration: Duration,
}

/// Sends `count` submissions at [`SUBMISSIONS_PER_SECOND`], each in its own task so a slow answer
/// does not slow the rate, and waits for every answer.
async fn run_load(client: LoadClient, count: usize) -> LoadOutcome {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / SUBMISSIONS_PER_SECOND);
    let mut submissions = JoinSet::new();
    for number in 0..count {
        ticks.tick().await;
        let client = client.clone();
        submissions.spawn(async move { client.submit(&format!("load {number}")).await });
    }
    let mut outcome = LoadOutcome::default();
    while let Some(joined) = submissions.join_next().await {
        match joined {
            Ok(Ok(id)) => {
                outcome.accepted.insert(id);
            }
            Ok(Err(kind)) => *outcome.not_accepted.entry(kind).or_default() += 1,
            Err(error) => *outcome.not_accepted.entry(error.to_string()).or_default() += 1,
        }
    }
    outcome.duration = started.elapsed();
    outcome
}

/// The `/readyz` of every service the scenario expects to be running.
struct Probes(Vec<(&'static str, String)>);

impl Probes {
    fn of(pipeline: &Pipeline) -> Self {
        let mut probes = vec![("fp-api", format!("http://{}/readyz", pipeline.api_health))];
        for dispatcher in &pipeline.dispatchers {
            probes.push(("fp-dispatcher", format!("http://{dispatcher}/readyz")));
        }
        probes.push((
            "fp-log-ingest",
            format!("http://{}/readyz", pipeline.log_ingest),
        ));
        Probes(probes)
    }

    /// The services not answering 200, with what they answered.
    async fn not_ready(&self, http: &reqwest::Client) -> Vec<String> {
        let mut not_ready = Vec::new();
        for (name, url) in &self.0 {
            match http.get(url).timeout(Duration::from_secs(2)).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => not_ready.push(format!("{name} {url}: {}", response.status())),
                Err(_) => not_ready.push(format!("{name} {url}: no answer")),
            }
        }
        not_ready
    }
}

/// The servers every scenario's deployment runs on, in sequence.
struct Servers {
    postgres: PrivatePostgres,
    rabbit: PrivateRabbit,
    endpoints: ServiceEndpoints,
}

/// A poison message and the queue it was published to.
struct Poison {
    queue: String,
    message_id: String,
}

struct Injected {
    /// Starts the recovery clock.
    ended: Instant,
    poison: Vec<Poison>,
}

async fn inject(
    fault: Fault,
    env: &mut TestEnvironment,
    pipeline: &mut Pipeline,
    servers: &mut Servers,
    receiver: &Receiver,
) -> anyhow::Result<Injected> {
    let mut poison = Vec::new();
    match fault {
        Fault::KillDispatcher | Fault::KillOneOfTwoDispatchers => {
            // The most recently started one, as `kill` picks it; it leaves the pipeline, so its
            // address is no longer probed.
            env.kill("fp-dispatcher").await?;
            pipeline
                .dispatchers
                .pop()
                .context("no dispatcher to kill")?;
            if fault == Fault::KillDispatcher {
                tokio::time::sleep(RESTART_GAP).await;
                let ended = Instant::now();
                pipeline.start_dispatcher(env).await?;
                return Ok(Injected { ended, poison });
            }
            // With two, the other carries on alone and nobody restarts the dead one.
        }
        Fault::KillLogIngest => {
            env.kill("fp-log-ingest").await?;
            tokio::time::sleep(RESTART_GAP).await;
            let ended = Instant::now();
            pipeline.restart_log_ingest(env).await?;
            return Ok(Injected { ended, poison });
        }
        Fault::KillApi => {
            env.kill("fp-api").await?;
            tokio::time::sleep(RESTART_GAP).await;
            let ended = Instant::now();
            pipeline.restart_api(env).await?;
            return Ok(Injected { ended, poison });
        }
        Fault::BrokerAppRestart => {
            servers.rabbit.stop_app().await?;
            tokio::time::sleep(BROKER_OUTAGE).await;
            servers.rabbit.start_app().await?;
        }
        Fault::BrokerNodeRestart => {
            servers.rabbit.stop().await?;
            tokio::time::sleep(BROKER_OUTAGE).await;
            servers.rabbit.start_again().await?;
        }
        Fault::DatabaseOutage => {
            servers.postgres.stop().await?;
            tokio::time::sleep(DATABASE_OUTAGE).await;
            servers.postgres.start_again().await?;
        }
        Fault::ReceiverErrors | Fault::ReceiverHangs => {
            receiver.set_mode(if fault == Fault::ReceiverErrors {
                ReceiverMode::Fails
            } else {
                ReceiverMode::Hangs
            });
            tokio::time::sleep(RECEIVER_FAULT).await;
            receiver.set_mode(ReceiverMode::Answers);
        }
        Fault::PoisonMessages => {
            poison = publish_poison(&servers.endpoints.broker_url, &env.namespace).await?;
        }
    }
    Ok(Injected {
        ended: Instant::now(),
        poison,
    })
}

/// Publishes [`POISON`] straight to every queue a service consumes (through the default
/// exchange, which routes by queue name).
async fn publish_poison(broker_url: &str, namespace: &str) -> anyhow::Result<Vec<Poison>> {
    let broker = Broker::connect(broker_url, namespace).await?;
    let names = broker.names.clone();
    let publisher = broker.publisher();
    let mut published = Vec::new();
    for queue in [
        &names.dispatcher_queue,
        &names.retry_queue,
        &names.attempts_queue,
        &names.endpoint_health_queue,
    ] {
        let message_id = format!("poison-{}", uuid::Uuid::new_v4().simple());
        let sent = publisher
            .publish(&OutgoingMessage {
                exchange: "",
                routing_key: queue,
                message_id: &message_id,
                parent: None,
                payload: POISON,
                headers: &[],
                expiration: None,
            })
            .await;
        if let Err(error) = sent {
            broker.close().await;
            return Err(error).with_context(|| format!("cannot publish poison to {queue}"));
        }
        published.push(Poison {
            queue: queue.clone(),
            message_id,
        });
    }
    broker.close().await;
    Ok(published)
}

/// A message found in the dead-letter queue: its id and the queue it says it came from.
struct DeadLetter {
    message_id: String,
    source: Option<String>,
}

/// Takes every message off the namespace's dead-letter queue, until it has been quiet for
/// [`DEAD_LETTER_QUIET`] and every id in `expected` has come (or [`DEAD_LETTER_LIMIT`] passed).
async fn drain_dead_letters(
    broker_url: &str,
    namespace: &str,
    expected: &[Poison],
) -> anyhow::Result<Vec<DeadLetter>> {
    let broker = Broker::connect(broker_url, namespace).await?;
    let mut deliveries = broker.consume(&broker.names.dead_letter_queue, "fault-suite", 50);
    let deadline = Instant::now() + DEAD_LETTER_LIMIT;
    let mut found: Vec<DeadLetter> = Vec::new();
    loop {
        match tokio::time::timeout(DEAD_LETTER_QUIET, deliveries.next()).await {
            Ok(Some(delivery)) => {
                found.push(DeadLetter {
                    message_id: delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    source: fp_broker::header_text(&delivery, fp_broker::DEAD_LETTER_SOURCE_HEADER),
                });
                fp_broker::ack(&delivery).await?;
            }
            Ok(None) => break,
            Err(_quiet) => {
                let all_came = expected.iter().all(|poison| {
                    found
                        .iter()
                        .any(|dead| dead.message_id == poison.message_id)
                });
                if all_came {
                    break;
                }
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    broker.close().await;
    Ok(found)
}

/// Whether every accepted submission has reached the receiver with a 2xx and is logged with a
/// 200; the log is read only once the receiver has them all.
async fn all_delivered(
    accepted: &BTreeSet<i64>,
    receiver: &Receiver,
    tenant: &TenantApi,
) -> anyhow::Result<bool> {
    let journal = receiver.journal();
    let reached: BTreeSet<i64> = journal
        .iter()
        .filter(|answered| answered.succeeded)
        .filter_map(|answered| answered.submission)
        .collect();
    if !accepted.is_subset(&reached) {
        return Ok(false);
    }
    let entries = tenant.all_log_entries(MAX_LOG_PAGES, CALL_TIMEOUT).await?;
    Ok(examine(accepted, &journal, &entries).delivered == accepted.len())
}

struct Row {
    accepted: usize,
    findings: Findings,
    dead_lettered: usize,
    recovery: Option<Duration>,
    /// Timings and what the submissions that were not accepted got.
    notes: String,
}

async fn run_scenario(fault: Fault, servers: &mut Servers) -> anyhow::Result<Row> {
    let receiver = Receiver::start().await?;
    let mut env = TestEnvironment::new_on(fault.label(), &servers.endpoints).await?;
    env.trust_receiver(&receiver.tls)?;
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", RETRY_SCHEDULE);
    env.set(
        "FP__DISPATCHER__REQUEST_TIMEOUT_MS",
        REQUEST_TIMEOUT.as_millis().to_string(),
    );
    let mut pipeline = Pipeline::start(&mut env, fault.dispatchers()).await?;
    let tenant = pipeline.tenant(&env, fault.label()).await?;
    tenant.configure(&receiver.tls.url("/hook"), None).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;

    let load_started = Instant::now();
    let load = tokio::spawn(run_load(
        LoadClient::of(&tenant, CALL_TIMEOUT),
        fault.submissions(),
    ));
    tokio::time::sleep(FAULT_AFTER).await;
    let fault_started = load_started.elapsed();
    let injected = inject(fault, &mut env, &mut pipeline, servers, &receiver).await?;
    // Every service the scenario expects to be running now.
    let probes = Probes::of(&pipeline);
    let fault_ended = injected.ended - load_started;
    let load = load.await?;

    // Recovery: every service ready and everything accepted delivered and logged.
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut last_log_error = None;
    let recovery = loop {
        if probes.not_ready(&http).await.is_empty() {
            match all_delivered(&load.accepted, &receiver, &tenant).await {
                Ok(true) => break Some(injected.ended.elapsed()),
                Ok(false) => {}
                Err(error) => last_log_error = Some(format!("{error:#}")),
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The attempt records of the last requests may still be on their way to the log.
    let settle_deadline = Instant::now() + SETTLE_LIMIT;
    let findings = loop {
        let entries = tenant.all_log_entries(MAX_LOG_PAGES, CALL_TIMEOUT).await?;
        let findings = examine(&load.accepted, &receiver.journal(), &entries);
        if findings.failures.is_empty() || Instant::now() > settle_deadline {
            break findings;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut row = Row {
        accepted: load.accepted.len(),
        findings,
        dead_lettered: 0,
        recovery,
        notes: format!(
            "fault from {:.1} s to {:.1} s into the load; load of {} submissions took {:.1} s; not accepted: {:?}",
            fault_started.as_secs_f64(),
            fault_ended.as_secs_f64(),
            fault.submissions(),
            load.duration.as_secs_f64(),
            load.not_accepted
        ),
    };
    let failures = &mut row.findings.failures;
    if recovery.is_none() {
        failures.push(format!(
            "not recovered within {RECOVERY_LIMIT:?} of the fault's end{}",
            last_log_error
                .map(|error| format!(" (last log read failed: {error})"))
                .unwrap_or_default()
        ));
    }
    for kind in load.not_accepted.keys() {
        if kind.starts_with("201") {
            failures.push(format!("a submission was accepted with {kind}"));
        }
    }
    let not_ready = probes.not_ready(&http).await;
    if !not_ready.is_empty() {
        failures.push(format!("not ready at the end: {not_ready:?}"));
    }

    let dead_letters = drain_dead_letters(
        &servers.endpoints.broker_url,
        &env.namespace,
        &injected.poison,
    )
    .await?;
    row.dead_lettered = dead_letters.len();
    for poison in &injected.poison {
        match dead_letters
            .iter()
            .find(|dead| dead.message_id == poison.message_id)
        {
            None => failures.push(format!(
                "the poison message on {} is not in the dead-letter queue",
                poison.queue
            )),
            Some(dead) if dead.source.as_deref() != Some(poison.queue.as_str()) => {
                failures.push(format!(
                    "the poison message on {} was dead-lettered with source {:?}",
                    poison.queue, dead.source
                ))
            }
            Some(_) => {}
        }
    }
    env.finish().await?;
    Ok(row)
}

fn selected_scenarios() -> Vec<Fault> {
    match std::env::var("FP_CHAOS_SCENARIOS") {
        Ok(labels) => SCENARIOS
            .into_iter()
            .filter(|fault| labels.split(',').any(|label| label.trim() == fault.label()))
            .collect(),
        Err(_) => SCENARIOS.to_vec(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".to_owned())
}

fn report(rows: &[(Fault, Result<Row, String>)], took: Duration) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut text = format!(
        "# Fault suite report\n\nDate: {}\n\nMachine: {cores} cores (nproc), {}\n\n\
         Each scenario: a load at {SUBMISSIONS_PER_SECOND} submissions/s (POST /api/v2/submissions), \
         the fault {} s in; the receiver answers in {} ms; retry schedule {RETRY_SCHEDULE}, request timeout {} ms. Recovery: from \
         the fault's end to every service ready and every accepted submission delivered and logged \
         (it includes the rest of the load where the load outlasts the fault). Whole suite: {:.0} s.\n\n\
         | scenario | accepted | delivered | receiver requests | log entries | interrupted | duplicates | dead-lettered | recovery (s) | verdict |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        cpu_model(),
        FAULT_AFTER.as_secs(),
        ANSWER_DELAY.as_millis(),
        REQUEST_TIMEOUT.as_millis(),
        took.as_secs_f64(),
    );
    let mut details = String::new();
    for (fault, outcome) in rows {
        let title = format!("{}. {}", fault.number(), fault.description());
        match outcome {
            Ok(row) => {
                let found = &row.findings;
                let verdict = if found.failures.is_empty() {
                    "pass"
                } else {
                    "FAIL"
                };
                let recovery = row.recovery.map_or("not recovered".to_owned(), |took| {
                    format!("{:.1}", took.as_secs_f64())
                });
                let _ = writeln!(
                    text,
                    "| {title} | {} | {} | {} | {} | {} | {} | {} | {recovery} | {verdict} |",
                    row.accepted,
                    found.delivered,
                    found.requests,
                    found.log_entries,
                    found.interrupted,
                    found.duplicates,
                    row.dead_lettered,
                );
                let _ = writeln!(details, "\n### {title}\n\n{}", row.notes);
                for failure in &found.failures {
                    let _ = writeln!(details, "- FAIL: {failure}");
                }
            }
            Err(error) => {
                let _ = writeln!(text, "| {title} | - | - | - | - | - | - | - | - | ERROR |");
                let _ = writeln!(details, "\n### {title}\n\n- ERROR: {error}");
            }
        }
    }
    text.push_str("\n## Scenarios\n");
    text.push_str(&details);
    text
}

fn passed(outcome: &Result<Row, String>) -> bool {
    outcome
        .as_ref()
        .is_ok_and(|row| row.findings.failures.is_empty())
}

fn report_path() -> anyhow::Result<PathBuf> {
    let binaries = binaries_dir()?;
    let target = binaries
        .parent()
        .context("the binaries dir has no parent")?;
    Ok(target.join("chaos").join("report.md"))
}

fn write_report(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("the report path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make chaos"]
async fn the_platform_survives_every_fault_of_the_suite() -> anyhow::Result<()> {
    let started = Instant::now();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let dir = binaries_dir()?
        .join("test-runs")
        .join(format!("chaos_{}", &suffix[..10]));
    let postgres = PrivatePostgres::start(&dir).await?;
    let rabbit = PrivateRabbit::start(&dir).await?;
    let endpoints = ServiceEndpoints::private(&postgres, &rabbit);
    let mut servers = Servers {
        postgres,
        rabbit,
        endpoints,
    };

    let mut rows = Vec::new();
    for fault in selected_scenarios() {
        eprintln!("fault suite: {} ...", fault.description());
        let scenario_started = Instant::now();
        let outcome = run_scenario(fault, &mut servers)
            .await
            .map_err(|error| format!("{error:#}"));
        eprintln!(
            "fault suite: {} {} in {:.0} s",
            fault.label(),
            if passed(&outcome) { "passed" } else { "FAILED" },
            scenario_started.elapsed().as_secs_f64()
        );
        rows.push((fault, outcome));
    }
    ensure!(!rows.is_empty(), "FP_CHAOS_SCENARIOS selected no scenario");

    let text = report(&rows, started.elapsed());
    let path = report_path()?;
    write_report(&path, &text)?;
    println!("{text}\nReport written to {}", path.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, outcome)| !passed(outcome))
        .map(|(fault, _)| fault.label())
        .collect();
    ensure!(failed.is_empty(), "failed scenarios: {failed:?}");
    Ok(())
}
