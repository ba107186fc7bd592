//! A PostgreSQL cluster and a RabbitMQ node of a test's own, for tests that stop and start the
//! servers under a running deployment. The shared servers (PostgreSQL on 5432, the node `rabbit`
//! on 5672) serve every other test at the same time, so they are never touched here: each private
//! server has its own data directory, its own loopback ports and, for RabbitMQ, its own node name,
//! and only processes this module started are ever stopped or killed.
//!
//! The servers run as the `postgres` and `rabbitmq` users (PostgreSQL refuses to run as root, and
//! `rabbitmqctl` needs the `rabbitmq` user's Erlang cookie), so the test process must be root, as
//! it is on the project's machines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::environment::{ServiceEndpoints, free_local_address, free_local_addresses};

const POSTGRES_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The scripts behind Debian's `/usr/sbin` wrappers, which would log to the system node's
/// `/var/log/rabbitmq` and switch users themselves.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQ_CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// Holds the Erlang cookie that the node and `rabbitmqctl` must share.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";

/// Longest wait for a server to start, stop or answer a control command.
const SERVER_WAIT: Duration = Duration::from_secs(60);
/// Longest run of one control program: past [`SERVER_WAIT`], so that the program's own time-out,
/// with its better message, comes first.
const COMMAND_LIMIT: Duration = Duration::from_secs(90);
/// How many lines of a server's log an error quotes.
const LOG_TAIL_LINES: usize = 40;

/// A PostgreSQL 15 cluster of its own on 127.0.0.1, superuser `postgres` with trust
/// authentication (pg_hba admits only the Unix socket and loopback).
pub struct PrivatePostgres {
    /// Owned by `postgres`: `data/`, `server.log` and the Unix socket.
    base: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster in a new directory under `dir`, starts it and waits until it accepts
    /// connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let base = owned_directory(dir, "postgres")?;
        // From here on, Drop removes whatever the set-up left.
        let postgres = PrivatePostgres {
            base,
            port: free_local_address()?.port(),
        };
        run_bounded(
            as_user("postgres", &postgres_program("initdb"))
                .current_dir(&postgres.base)
                .arg("--pgdata")
                .arg(postgres.data_dir())
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            "initdb",
            &postgres.log_path(),
        )
        .await?;
        // Appended to postgresql.conf, so that start_again starts the same server.
        let settings = format!(
            "\n# fp-testkit private cluster\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nfsync = off\n",
            postgres.port,
            postgres.base.display()
        );
        append_to_file(&postgres.data_dir().join("postgresql.conf"), &settings)?;
        postgres.start_again().await?;
        Ok(postgres)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's connection to the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Fast shutdown (sessions are ended, no new ones are accepted); returns once the server is
    /// down and connections are refused.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["stop", "--mode=fast"]).await
    }

    /// Starts the stopped cluster again, on the same data and port, and waits until it accepts
    /// connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        self.pg_ctl(&["start", "--log", &log_path.display().to_string()])
            .await
    }

    /// `pg_ctl <args>`, waiting (bounded) until the server has done it.
    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let timeout = SERVER_WAIT.as_secs().to_string();
        run_bounded(
            as_user("postgres", &postgres_program("pg_ctl"))
                .current_dir(&self.base)
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--wait", "--timeout", &timeout])
                .args(args),
            &format!("pg_ctl {}", args.join(" ")),
            &self.log_path(),
        )
        .await?;
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.base.join("server.log")
    }
}

fn postgres_program(name: &str) -> PathBuf {
    Path::new(POSTGRES_BIN_DIR).join(name)
}

impl Drop for PrivatePostgres {
    /// Immediate shutdown (nothing worth a checkpoint), then the cluster's files go.
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let stopped = std::process::Command::new("setpriv")
                .args(setpriv_args("postgres"))
                .arg(postgres_program("pg_ctl"))
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--wait", "--timeout", "30", "stop", "--mode=immediate"])
                .current_dir(&self.base)
                .stdin(Stdio::null())
                .output();
            match stopped {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "pg_ctl stop of the private PostgreSQL on port {} failed: {}",
                    self.port,
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => eprintln!(
                    "cannot stop the private PostgreSQL on port {}: {error}",
                    self.port
                ),
            }
        }
        remove_directory(&self.base);
    }
}

/// A RabbitMQ node of its own (`fp-test-…@localhost`), AMQP and Erlang distribution on 127.0.0.1,
/// no plugins, the default `guest` user (which RabbitMQ admits only from loopback).
pub struct PrivateRabbit {
    node_name: String,
    amqp_port: u16,
    /// Owned by `rabbitmq`: configuration, Mnesia and quorum-queue data, logs.
    base: PathBuf,
    /// The node's environment, for the server and for `rabbitmqctl` alike.
    env: Vec<(String, String)>,
    /// The `rabbitmq-server` script while the node runs; the Erlang VM is its child.
    server: Option<Child>,
}

impl PrivateRabbit {
    /// Creates a node in a new directory under `dir`, starts it and waits until it has booted
    /// and answers AMQP.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let base = owned_directory(dir, "rabbitmq")?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let node_name = format!("fp-test-{}@localhost", &suffix[..10]);
        let [amqp, distribution] = free_local_addresses()?;
        let (amqp_port, distribution_port) = (amqp.port(), distribution.port());
        // Files of the node's own instead of the system node's /etc/rabbitmq ones; no plugins,
        // so no management listener on the system node's 15672.
        std::fs::write(base.join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            base.join("rabbitmq.conf"),
            "# the private node of an fp-testkit test\n",
        )?;
        let path = |name: &str| base.join(name).display().to_string();
        let env = [
            ("HOME", RABBITMQ_HOME.to_owned()),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
            // The CLI warns, and names may be misread, under a non-UTF-8 locale.
            ("LC_ALL", "C.UTF-8".to_owned()),
            ("RABBITMQ_NODENAME", node_name.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_owned()),
            ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", distribution_port.to_string()),
            // The distribution port otherwise listens on every interface.
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".to_owned(),
            ),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_LOGS", path("log/node.log")),
            ("RABBITMQ_PID_FILE", path("node.pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("ERL_CRASH_DUMP", path("erl_crash.dump")),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let mut rabbit = PrivateRabbit {
            node_name,
            amqp_port,
            base,
            env,
            server: None,
        };
        rabbit.start_again().await?;
        Ok(rabbit)
    }

    /// E.g. `fp-test-0123456789@localhost`, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Stops the RabbitMQ application; the Erlang node stays up (as during a node's maintenance).
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["stop_app"]).await
    }

    /// Starts the application stopped by [`PrivateRabbit::stop_app`]; returns once it has booted.
    pub async fn start_app(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["start_app"]).await
    }

    /// Stops the whole node; returns once the Erlang VM has exited and the AMQP port is closed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        // Checked first: `rabbitmqctl stop <pid file>` would wait for a pid file that never comes.
        if self.server.is_none() {
            bail!("node {} is not running", self.node_name);
        }
        let pid_file = self.base.join("node.pid").display().to_string();
        // With the pid file, `stop` waits until that process has exited.
        self.rabbitmqctl(&["stop", &pid_file]).await?;
        if let Some(mut server) = self.server.take() {
            tokio::time::timeout(SERVER_WAIT, server.wait())
                .await
                .with_context(|| {
                    format!(
                        "rabbitmq-server of {} did not exit{}",
                        self.node_name,
                        self.log_tails()
                    )
                })??;
        }
        let deadline = tokio::time::Instant::now() + SERVER_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.amqp_port))
            .await
            .is_ok()
        {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "port {} is still open after the node stopped",
                    self.amqp_port
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Starts the stopped node again, with the same name, ports and data (durable queues and
    /// their persistent messages are back), and waits until it has booted and answers AMQP.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            bail!("node {} is already running", self.node_name);
        }
        let console_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.console_log_path())?;
        let server = as_user("rabbitmq", Path::new(RABBITMQ_SERVER))
            .env_clear()
            .envs(self.env.iter().cloned())
            .current_dir(&self.base)
            .stdout(console_log.try_clone()?)
            .stderr(console_log)
            .spawn()
            .context("cannot start rabbitmq-server")?;
        self.server = Some(server);
        self.wait_until_answering_amqp().await?;
        self.rabbitmqctl(&["await_startup"]).await
    }

    /// Polls the AMQP port with a real connection (the port opens late in the boot); fails early
    /// if the server exits.
    async fn wait_until_answering_amqp(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SERVER_WAIT;
        let url = self.amqp_url();
        loop {
            // Bounded too: a listener that accepts but does not answer yet must not stall this.
            let connected = tokio::time::timeout(
                Duration::from_secs(5),
                fp_broker::Broker::connect(&url, "readiness"),
            )
            .await;
            if let Ok(Ok(broker)) = connected {
                broker.close().await;
                return Ok(());
            }
            let exited = match self.server.as_mut() {
                Some(server) => server.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.server = None;
                bail!(
                    "rabbitmq-server of {} exited ({status}){}",
                    self.node_name,
                    self.log_tails()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "node {} did not answer AMQP on port {} within {:?}{}",
                    self.node_name,
                    self.amqp_port,
                    SERVER_WAIT,
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `rabbitmqctl -n <node> <args>`, bounded; an error carries the node's log.
    async fn rabbitmqctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let timeout = SERVER_WAIT.as_secs().to_string();
        let mut command = as_user("rabbitmq", Path::new(RABBITMQ_CTL));
        command
            .env_clear()
            .envs(self.env.iter().cloned())
            .current_dir(&self.base)
            .args(["-n", &self.node_name, "--timeout", &timeout])
            .args(args);
        run_bounded(
            &mut command,
            &format!("rabbitmqctl {}", args.join(" ")),
            &self.node_log_path(),
        )
        .await
        .map_err(|error| error.context(format!("console output:{}", self.console_tail())))?;
        Ok(())
    }

    fn node_log_path(&self) -> PathBuf {
        self.base.join("log").join("node.log")
    }

    fn console_log_path(&self) -> PathBuf {
        self.base.join("console.log")
    }

    fn console_tail(&self) -> String {
        log_tail(&self.console_log_path())
    }

    fn log_tails(&self) -> String {
        format!(
            "\nnode log:{}\nconsole output:{}",
            log_tail(&self.node_log_path()),
            self.console_tail()
        )
    }

    /// OS pids of this node's Erlang VM: the `rabbitmq-server` script's child and the pid file's
    /// process, each only if its environment names this node, so no other VM is ever signalled.
    fn node_os_pids(&self) -> Vec<u32> {
        let mut candidates: Vec<u32> = Vec::new();
        if let Some(script_pid) = self.server.as_ref().and_then(Child::id) {
            let children = format!("/proc/{script_pid}/task/{script_pid}/children");
            candidates.extend(
                std::fs::read_to_string(children)
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
        if let Ok(pid_file) = std::fs::read_to_string(self.base.join("node.pid"))
            && let Ok(pid) = pid_file.trim().parse::<u32>()
        {
            candidates.push(pid);
        }
        let own_node = format!("RABBITMQ_NODENAME={}", self.node_name);
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|environ| {
                    environ
                        .split(|byte| *byte == 0)
                        .any(|entry| entry == own_node.as_bytes())
                })
                .unwrap_or(false)
        });
        candidates
    }
}

impl Drop for PrivateRabbit {
    /// Kills this node's VM (nothing of it is worth a clean shutdown), then its files go.
    fn drop(&mut self) {
        for pid in self.node_os_pids() {
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            if let Err(error) = killed {
                eprintln!("cannot kill node {} (pid {pid}): {error}", self.node_name);
            }
        }
        if let Some(mut server) = self.server.take() {
            // The script exits once its VM has; after that no process writes into the files.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(server.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.start_kill();
        }
        remove_directory(&self.base);
    }
}

impl ServiceEndpoints {
    /// A deployment's database on `postgres` and broker namespace on `rabbit`.
    pub fn private(postgres: &PrivatePostgres, rabbit: &PrivateRabbit) -> Self {
        ServiceEndpoints {
            admin_database_url: postgres.admin_url(),
            database_host_port: format!("127.0.0.1:{}", postgres.port()),
            broker_url: rabbit.amqp_url(),
            quorum_initial_group_size: None,
        }
    }
}

fn setpriv_args(user: &str) -> [String; 4] {
    [
        format!("--reuid={user}"),
        format!("--regid={user}"),
        "--init-groups".to_owned(),
        "--".to_owned(),
    ]
}

/// `program` as `user`: `setpriv` execs it, so the child's pid is the program's own.
fn as_user(user: &str, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(setpriv_args(user))
        .arg(program)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end within [`COMMAND_LIMIT`]; a failure quotes its output and the tail
/// of `log`.
async fn run_bounded(command: &mut Command, what: &str, log: &Path) -> anyhow::Result<()> {
    let output = tokio::time::timeout(COMMAND_LIMIT, command.output())
        .await
        .with_context(|| {
            format!(
                "{what} did not finish within {COMMAND_LIMIT:?}; log:{}",
                log_tail(log)
            )
        })?
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}\nlog:{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            log_tail(log)
        );
    }
    Ok(())
}

/// A new directory `<dir>/<user>-<random>`, owned by `user` (and its group of the same name) and
/// closed to others.
fn owned_directory(dir: &Path, user: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let base = dir.join(format!("{user}-{}", &suffix[..10]));
    let status = std::process::Command::new("install")
        .args(["-d", "-o", user, "-g", user, "-m", "700"])
        .arg(&base)
        .status()
        .context("cannot run install")?;
    if !status.success() {
        bail!("cannot create {} for {user} ({status})", base.display());
    }
    Ok(base)
}

fn append_to_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The last lines of a log, or a note that it cannot be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            format!("\n{}", lines[start..].join("\n"))
        }
        Err(error) => format!(" ({} unreadable: {error})", path.display()),
    }
}

fn remove_directory(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("cannot remove {}: {error}", path.display());
    }
}
