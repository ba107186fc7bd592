//! One isolated FeedbackPulse deployment per test: its own database, its own broker namespace, and
//! the real service binaries as child processes. Names are random, so tests run in parallel and can
//! be run again without clean-up.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use diesel_async::RunQueryDsl;
use tokio::process::{Child, Command};

use crate::receiver::TlsReceiver;

/// Superuser connection used to create and drop test databases (override: FP_TEST_ADMIN_DATABASE_URL).
pub fn admin_database_url() -> String {
    std::env::var("FP_TEST_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// RabbitMQ for tests (override: FP_TEST_BROKER_URL).
pub fn broker_url() -> String {
    std::env::var("FP_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Where a deployment's PostgreSQL server and RabbitMQ broker are: the shared ones by default, or
/// a test's own (`ServiceEndpoints::private`, for tests that stop and start them).
#[derive(Clone, Debug)]
pub struct ServiceEndpoints {
    /// Superuser connection used to create and drop the deployment's database.
    pub admin_database_url: String,
    /// `host:port` of that server, where the services log in with their own roles.
    pub database_host_port: String,
    /// One node's AMQP URL, or a cluster's, separated by commas (`broker.url`).
    pub broker_url: String,
    /// `broker.quorum_initial_group_size` of the deployment (3 on a three-node cluster); `None`
    /// leaves it to the broker.
    pub quorum_initial_group_size: Option<u32>,
}

impl ServiceEndpoints {
    /// The servers every test shares: PostgreSQL on 127.0.0.1:5432, RabbitMQ as [`broker_url`]
    /// says.
    pub fn shared() -> Self {
        ServiceEndpoints {
            admin_database_url: admin_database_url(),
            database_host_port: "127.0.0.1:5432".to_owned(),
            broker_url: broker_url(),
            quorum_initial_group_size: None,
        }
    }

    /// Connection of `role` to `database`, without a password: the test servers trust loopback.
    pub fn database_url(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@{}/{database}", self.database_host_port)
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_local_address() -> anyhow::Result<SocketAddr> {
    let [address] = free_local_addresses()?;
    Ok(address)
}

/// `N` loopback addresses with distinct ports that were free a moment ago, for servers a test
/// starts later (or starts again after stopping them).
///
/// The ports come from outside the kernel's ephemeral range: a port taken by binding port 0 and
/// then released lies in that range, where the kernel may hand it to any outgoing connection (of
/// another test running at the same time) before the server binds it, and the server then fails
/// with "Address already in use". Outside the range only an explicit bind takes a port.
pub fn free_local_addresses<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    static PORTS: OnceLock<TestPorts> = OnceLock::new();
    PORTS
        .get_or_init(|| TestPorts::new(PortWindow::beside(ephemeral_range())))
        .addresses()
}

/// At most this many ports make the tests' window.
const TEST_PORT_WINDOW: u16 = 12_000;

/// `len` ports starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortWindow {
    start: u16,
    len: u16,
}

impl PortWindow {
    /// Beside the ephemeral range `(first, last)`, on the side with more room (up to
    /// `TEST_PORT_WINDOW` ports), just below it when both have enough. A range that leaves no
    /// port on either side (Linux allows 1024-65535) leaves the race possible: the window is then
    /// the lowest ports above the privileged ones.
    fn beside((first, last): (u16, u16)) -> Self {
        const LOWEST: u16 = 1_024;
        let below = first.saturating_sub(LOWEST).min(TEST_PORT_WINDOW);
        let above = (u16::MAX - last).min(TEST_PORT_WINDOW);
        if below == 0 && above == 0 {
            PortWindow {
                start: LOWEST,
                len: TEST_PORT_WINDOW,
            }
        } else if below >= above {
            PortWindow {
                start: first - below,
                len: below,
            }
        } else {
            PortWindow {
                start: last + 1,
                len: above,
            }
        }
    }
}

/// Hands out the window's ports in turn, so no two callers of one process get the same one until
/// it has gone once round; each is still checked by binding it, against other processes.
struct TestPorts {
    window: PortWindow,
    next: AtomicU32,
}

impl TestPorts {
    fn new(window: PortWindow) -> Self {
        Self::starting_at(window, process_offset())
    }

    fn starting_at(window: PortWindow, offset: u32) -> Self {
        TestPorts {
            window,
            next: AtomicU32::new(offset % u32::from(window.len)),
        }
    }

    /// `N` free ports of the window. The listeners are held together, so that none is handed out
    /// twice in one call.
    fn addresses<const N: usize>(&self) -> anyhow::Result<[SocketAddr; N]> {
        let mut listeners = Vec::with_capacity(N);
        let mut tried = 0;
        while listeners.len() < N {
            if tried == self.window.len {
                bail!("no free loopback port in {:?}", self.window);
            }
            tried += 1;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", self.next_port())) {
                listeners.push(listener);
            }
        }
        let mut addresses = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
        for (address, listener) in addresses.iter_mut().zip(&listeners) {
            *address = listener.local_addr()?;
        }
        Ok(addresses)
    }

    fn next_port(&self) -> u16 {
        let step = self.next.fetch_add(1, Ordering::Relaxed) % u32::from(self.window.len);
        // The remainder is below the window's length, a u16, and the window ends by 65535.
        self.window.start + step as u16
    }
}

/// Where this process starts in a window: derived from the pid (scattered, not pid order), so
/// that test binaries running at the same time seldom walk the same ports.
fn process_offset() -> u32 {
    std::process::id().wrapping_mul(7_919)
}

/// The ports the kernel picks from for outgoing connections and port-0 binds: on Linux
/// `ip_local_port_range`, whose default is 32768-60999 (assumed where it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut ends = range.split_whitespace().map(str::parse);
            Some((ends.next()?.ok()?, ends.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// Directory of the workspace's built binaries (`target/debug`), found from the test executable
/// (`target/debug/deps/<test>`).
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test executable has no directory")?;
    let dir = if deps.ends_with("deps") {
        deps.parent().context("deps has no parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = binaries_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the service binaries first (`cargo build --workspace --bins`, which `make test` does)",
            path.display()
        );
    }
    Ok(path)
}

/// How to tell that a started service is ready.
pub enum Readiness {
    /// Any HTTP answer from this URL.
    Answers(String),
    /// A 200 from this URL (the `/readyz` of queue workers).
    Ok(String),
}

struct ServiceProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

/// 32 bytes as 64 hex characters (two random UUIDs: 244 random bits), the shape of the
/// services' keys.
pub fn random_key_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The configuration of a deployment of its own: database and broker namespace `name` (the
/// services' roles) on `endpoints`, fresh keys (secrets are sealed and sessions signed as in
/// production), and no config file (`config_dir` holds none, so only the defaults and these apply).
/// Tests and the bench both run their services this way.
pub fn isolated_settings(
    profile: &str,
    name: &str,
    config_dir: &Path,
    endpoints: &ServiceEndpoints,
) -> Vec<(String, String)> {
    [
        ("FP_PROFILE", profile.to_owned()),
        ("FP_CONFIG_DIR", config_dir.display().to_string()),
        ("FP__DATABASE__URL", endpoints.database_url("fp_app", name)),
        (
            "FP__DATABASE__READONLY_URL",
            endpoints.database_url("fp_dashboard", name),
        ),
        ("FP__DATABASE__READONLY_ROLE", "fp_dashboard".to_owned()),
        ("FP__BROKER__URL", endpoints.broker_url.clone()),
        ("FP__BROKER__NAMESPACE", name.to_owned()),
        ("FP__SECRETS__MASTER_KEY", random_key_hex()),
        ("FP__DASHBOARD__SESSION_KEY", random_key_hex()),
        // Any free port, so deployments side by side never share one; tests that probe a
        // service's health address set it explicitly.
        ("FP__API__HEALTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("FP__DASHBOARD__HEALTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("FP__DISPATCHER__HEALTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("FP__LOG_INGEST__HEALTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .chain(endpoints.quorum_initial_group_size.map(|size| {
        (
            "FP__BROKER__QUORUM_INITIAL_GROUP_SIZE".to_owned(),
            size.to_string(),
        )
    }))
    .collect()
}

pub struct TestEnvironment {
    pub name: String,
    /// Logs of every process and scratch files of the test.
    pub dir: PathBuf,
    pub database_url: String,
    pub namespace: String,
    /// The servers the database and namespace are on.
    pub endpoints: ServiceEndpoints,
    env: Vec<(String, String)>,
    processes: Vec<ServiceProcess>,
}

impl TestEnvironment {
    /// Creates the database and namespace on the shared servers and runs `fpctl setup-database`
    /// and `fpctl migrate`.
    pub async fn new(label: &str) -> anyhow::Result<Self> {
        Self::new_on(label, &ServiceEndpoints::shared()).await
    }

    /// As [`TestEnvironment::new`], on the servers `endpoints` names.
    pub async fn new_on(label: &str, endpoints: &ServiceEndpoints) -> anyhow::Result<Self> {
        let environment = Self::unmigrated_on(label, endpoints).await?;
        environment.fpctl(&["migrate"]).await?;
        Ok(environment)
    }

    /// As [`TestEnvironment::new`] without `fpctl migrate`: an empty database, for tests of the
    /// migrations themselves.
    pub async fn unmigrated(label: &str) -> anyhow::Result<Self> {
        Self::unmigrated_on(label, &ServiceEndpoints::shared()).await
    }

    async fn unmigrated_on(label: &str, endpoints: &ServiceEndpoints) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("fp_test_{label}_{}", &suffix[..10]);
        let dir = binaries_dir()?.join("test-runs").join(&name);
        std::fs::create_dir_all(&dir)?;
        let database_url = endpoints.database_url("fp_app", &name);
        let env = isolated_settings("test", &name, &dir, endpoints);
        let environment = TestEnvironment {
            namespace: name.clone(),
            name,
            dir,
            database_url,
            endpoints: endpoints.clone(),
            env,
            processes: Vec::new(),
        };
        environment
            .fpctl(&[
                "setup-database",
                "--admin-url",
                &environment.endpoints.admin_database_url,
            ])
            .await?;
        Ok(environment)
    }

    /// Sets a configuration variable for every process started from now on.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_owned(), value.into()));
    }

    /// A configuration variable as services started now would see it.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(existing, _)| existing == key)
            .map(|(_, value)| value.as_str())
    }

    /// Lets services started from now on deliver to `receiver` as to a tenant's endpoint: its
    /// private CA is trusted and 127.0.0.1, where it listens, passes the SSRF policy (through the
    /// allow-list, as in production config; never by switching the policy off).
    pub fn trust_receiver(&mut self, receiver: &TlsReceiver) -> anyhow::Result<()> {
        let ca_path = self.dir.join("receiver-ca.pem");
        receiver.write_ca_pem(&ca_path)?;
        self.set(
            "FP__DISPATCHER__EXTRA_ROOT_CERTS",
            ca_path.display().to_string(),
        );
        self.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.1/32");
        Ok(())
    }

    /// Runs `fpctl` with the environment's configuration; fails on a non-zero exit.
    pub async fn fpctl(&self, args: &[&str]) -> anyhow::Result<String> {
        fpctl_stdout(args, self.fpctl_output(args).await?)
    }

    /// Runs `fpctl` and returns its output whatever the exit code.
    pub async fn fpctl_output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(binary("fpctl")?)
            .args(args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .await?)
    }

    /// Starts a service binary with the environment's configuration plus `extra`, logging to
    /// `<dir>/<name>.log`, and waits until it is ready.
    pub async fn start(
        &mut self,
        binary_name: &str,
        extra: &[(&str, String)],
        readiness: Readiness,
    ) -> anyhow::Result<()> {
        let log_path = self
            .dir
            .join(format!("{binary_name}-{}.log", self.processes.len()));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary(binary_name)?)
            .envs(self.env.iter().cloned())
            .envs(extra.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {binary_name}"))?;
        self.processes.push(ServiceProcess {
            name: binary_name.to_owned(),
            child,
            log_path: log_path.clone(),
        });
        self.wait_ready(binary_name, &log_path, readiness).await
    }

    async fn wait_ready(
        &mut self,
        name: &str,
        log_path: &Path,
        readiness: Readiness,
    ) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (url, need_ok) = match &readiness {
                Readiness::Answers(url) => (url, false),
                Readiness::Ok(url) => (url, true),
            };
            if let Ok(response) = client.get(url).send().await
                && (!need_ok || response.status().is_success())
            {
                return Ok(());
            }
            let exited = self
                .processes
                .last_mut()
                .and_then(|process| process.child.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                bail!("{name} did not become ready ({exited:?}); its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the most recently started process of `binary_name` with SIGKILL: no drain, no acks, as
    /// in a crash.
    pub async fn kill(&mut self, binary_name: &str) -> anyhow::Result<()> {
        let mut process = self.take_process(binary_name)?;
        process.child.kill().await?;
        Ok(())
    }

    /// Stops the most recently started process of `binary_name` as an orchestrator would, with
    /// SIGTERM, and waits up to `limit` for it to exit. Returns its exit status and its whole log.
    pub async fn terminate(
        &mut self,
        binary_name: &str,
        limit: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let (status, log, ()) = self
            .terminate_while(binary_name, limit, |_| async { Ok(()) })
            .await?;
        Ok((status, log))
    }

    /// As [`TestEnvironment::terminate`], running the future `while_stopping` makes (given the
    /// path of the process's log) once the signal is sent, to look at the process as it stops;
    /// its result comes after the exit status and the log.
    pub async fn terminate_while<T, F: Future<Output = anyhow::Result<T>>>(
        &mut self,
        binary_name: &str,
        limit: Duration,
        while_stopping: impl FnOnce(PathBuf) -> F,
    ) -> anyhow::Result<(std::process::ExitStatus, String, T)> {
        let mut process = self.take_process(binary_name)?;
        let pid = process.child.id().context("the process has no pid")?;
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let (status, seen) = tokio::join!(
            tokio::time::timeout(limit, process.child.wait()),
            while_stopping(process.log_path.clone())
        );
        let status = status
            .with_context(|| format!("{binary_name} did not exit within {limit:?} of SIGTERM"))??;
        Ok((status, std::fs::read_to_string(&process.log_path)?, seen?))
    }

    /// The log of every service process started here so far, stopped ones included, as
    /// `(file name, text)`.
    pub fn service_logs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "log") {
                let name = path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                logs.push((name, std::fs::read_to_string(&path)?));
            }
        }
        Ok(logs)
    }

    /// The pid of the most recently started process of `binary_name`, still running.
    pub fn pid(&self, binary_name: &str) -> anyhow::Result<u32> {
        let index = self.latest_process(binary_name)?;
        self.processes[index]
            .child
            .id()
            .context("the process has exited")
    }

    fn take_process(&mut self, binary_name: &str) -> anyhow::Result<ServiceProcess> {
        let index = self.latest_process(binary_name)?;
        Ok(self.processes.remove(index))
    }

    /// Where the most recently started process of `binary_name` is in `processes`.
    fn latest_process(&self, binary_name: &str) -> anyhow::Result<usize> {
        self.processes
            .iter()
            .rposition(|process| process.name == binary_name)
            .with_context(|| format!("no {binary_name} is running"))
    }

    /// Ends every process, deletes the broker namespace and drops the database.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            stop_child(&mut process.child, &process.name).await;
        }
        self.fpctl(&["delete-topology"]).await?;
        let mut admin = fp_store::connect(&self.endpoints.admin_database_url).await?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }

    /// [`TestEnvironment::finish`] after a test's `outcome`, which it returns first; a failed
    /// test is told where the services' logs are.
    pub async fn finish_after(self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        if outcome.is_err() {
            eprintln!("the services' logs are in {}", self.dir.display());
        }
        let finished = self.finish().await;
        outcome.and(finished)
    }

    /// [`TestEnvironment::finish_after`] for a test run under `catch_unwind`: the environment is
    /// finished even when the test panicked, and the panic is resumed after it.
    pub async fn finish_after_unwinding(
        self,
        outcome: std::thread::Result<anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        match outcome {
            Ok(outcome) => self.finish_after(outcome).await,
            Err(panic) => {
                eprintln!("the services' logs are in {}", self.dir.display());
                if let Err(error) = self.finish().await {
                    eprintln!("finishing the test environment failed too: {error:#}");
                }
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// Stops a service as an operator would: SIGTERM (in-flight work finishes, unacked messages
/// return to their queue), then SIGKILL if it is still running after 10 s.
pub async fn stop_child(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        eprintln!("{name} did not stop on SIGTERM; killing it");
        let _ = child.kill().await;
    }
}

/// What `fpctl <args>` printed, or an error with everything it printed when it failed.
pub fn fpctl_stdout(args: &[&str], output: std::process::Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "fpctl {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn test_ports_are_distinct_and_outside_the_ephemeral_range() -> anyhow::Result<()> {
        // Read here on its own, not through the code under test.
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
        let ends: Vec<u16> = range
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let (first, last) = (ends[0], ends[1]);
        let three: [SocketAddr; 3] = free_local_addresses()?;
        let fourth = free_local_address()?;
        let mut ports: Vec<u16> = three
            .iter()
            .chain([&fourth])
            .map(SocketAddr::port)
            .collect();
        for port in &ports {
            assert!(
                !(first..=last).contains(port),
                "port {port} is inside the ephemeral range {first}-{last}"
            );
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4, "a port was handed out twice");
        Ok(())
    }

    #[test]
    fn the_window_takes_the_side_of_the_ephemeral_range_with_more_room() {
        let window = |start, len| PortWindow { start, len };
        assert_eq!(PortWindow::beside((32_768, 60_999)), window(20_768, 12_000));
        assert_eq!(PortWindow::beside((13_024, 60_999)), window(1_024, 12_000));
        assert_eq!(PortWindow::beside((13_000, 60_999)), window(1_024, 11_976));
        assert_eq!(PortWindow::beside((10_000, 40_000)), window(40_001, 12_000));
        assert_eq!(PortWindow::beside((10_000, 53_535)), window(53_536, 12_000));
        assert_eq!(PortWindow::beside((1_024, 65_000)), window(65_001, 535));
        assert_eq!(PortWindow::beside((1_024, 65_535)), window(1_024, 12_000));
    }

    #[test]
    fn a_window_ending_at_the_last_port_is_walked_round_without_overflow() {
        let window = PortWindow::beside((10_000, 53_535));
        let ports = TestPorts::starting_at(window, 0);
        let walked: Vec<u16> = (0..u32::from(window.len) + 1)
            .map(|_| ports.next_port())
            .collect();
        assert_eq!(walked[0], 53_536);
        assert_eq!(walked[walked.len() - 2], u16::MAX);
        assert_eq!(walked[walked.len() - 1], 53_536, "the walk starts again");
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() -> anyhow::Result<()> {
        // A counter of this test's own, half a window from the process's, so the other tests'
        // ports are not the ones it holds.
        let window = PortWindow::beside(ephemeral_range());
        let ports = TestPorts::starting_at(
            window,
            process_offset().wrapping_add(u32::from(window.len / 2)),
        );
        // Listen on a port of the window, as another process could, then go once round it.
        let held = (0..window.len)
            .find_map(|_| TcpListener::bind(("127.0.0.1", ports.next_port())).ok())
            .context("no free port in the window")?;
        let taken = held.local_addr()?;
        for _ in 0..window.len {
            let [address] = ports.addresses()?;
            assert_ne!(address, taken, "a port in use was handed out");
        }
        Ok(())
    }
}
