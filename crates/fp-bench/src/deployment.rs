//! One isolated deployment per bench run: its own database (`fp_bench_*`) and broker namespace,
//! and the real service binaries as child processes (as `fp_testkit::environment` does for tests,
//! plus the pids the measurements read `/proc` by).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use diesel_async::RunQueryDsl;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::arrivals::ReceiverAddresses;

use fp_testkit::environment::{ServiceEndpoints, fpctl_stdout, stop_child};
pub use fp_testkit::environment::{
    admin_database_url, broker_url, free_local_address, isolated_settings,
};

/// One started process.
pub struct Service {
    /// Binary name, e.g. `fp-dispatcher`.
    pub binary: String,
    /// Label in the report, e.g. `fp-dispatcher#1`.
    pub label: String,
    pub pid: u32,
    /// Health and metrics address (`/readyz`, `/metrics`), for the queue workers.
    pub health: Option<SocketAddr>,
    child: Child,
}

impl Service {
    async fn stop(&mut self) {
        stop_child(&mut self.child, &self.label).await;
    }
}

pub struct Deployment {
    pub name: String,
    /// Logs of every process and scratch files of the run.
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub database_url: String,
    pub master_key_hex: String,
    env: Vec<(String, String)>,
    pub services: Vec<Service>,
    /// How many processes of each binary were started so far.
    started: HashMap<String, usize>,
    /// Kept open so the receiver never writes into a closed pipe.
    _receiver_stdout: Vec<BufReader<ChildStdout>>,
}

impl Deployment {
    /// Creates the database and namespace with `fpctl setup-database` and `fpctl migrate`.
    /// `work_dir` receives a directory per run with the processes' logs.
    pub async fn create(bin_dir: &Path, work_dir: &Path) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("fp_bench_{}", &suffix[..10]);
        let dir = work_dir.join(&name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let database_url = format!("postgres://fp_app@127.0.0.1:5432/{name}");
        let env = isolated_settings("bench", &name, &dir, &ServiceEndpoints::shared());
        let master_key_hex = env
            .iter()
            .find(|(key, _)| key == "FP__SECRETS__MASTER_KEY")
            .map(|(_, value)| value.clone())
            .context("isolated settings carry a master key")?;
        let deployment = Deployment {
            name,
            dir,
            bin_dir: bin_dir.to_path_buf(),
            database_url,
            master_key_hex,
            env,
            services: Vec::new(),
            started: HashMap::new(),
            _receiver_stdout: Vec::new(),
        };
        let prepared = async {
            deployment
                .fpctl(&["setup-database", "--admin-url", &admin_database_url()])
                .await?;
            deployment.fpctl(&["migrate"]).await
        }
        .await;
        match prepared {
            Ok(_) => Ok(deployment),
            Err(error) => {
                // Whatever was made before the failure goes again.
                if let Err(cleanup) = deployment.finish().await {
                    eprintln!("cleaning up after a failed set-up: {cleanup:#}");
                }
                Err(error)
            }
        }
    }

    fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if !path.exists() {
            bail!(
                "{} is missing: build the binaries first (`cargo build --workspace --bins`, with `--release` for the release profile)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Sets a configuration variable for every process started from now on.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_owned(), value.into()));
    }

    /// Removes a configuration variable for every process started from now on.
    pub fn unset(&mut self, key: &str) {
        self.env.retain(|(existing, _)| existing != key);
    }

    /// Runs `fpctl` with the deployment's configuration; fails on a non-zero exit.
    pub async fn fpctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(self.binary("fpctl")?)
            .args(args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .await?;
        fpctl_stdout(args, output)
    }

    fn log_file(&self, label: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
        let path = self.dir.join(format!("{}.log", label.replace('#', "-")));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok((path, file))
    }

    /// Starts the receiver; it trusts nothing and is trusted by the dispatchers through
    /// `FP__DISPATCHER__EXTRA_ROOT_CERTS`, and reached through the loopback allow-list (never by
    /// switching the SSRF policy off).
    pub async fn start_receiver(&mut self) -> anyhow::Result<ReceiverAddresses> {
        let ca_path = self.dir.join("receiver-ca.pem");
        let (log_path, log) = self.log_file("fp-bench-receiver")?;
        let mut child = Command::new(self.binary("fp-bench-receiver")?)
            .arg("--ca-out")
            .arg(&ca_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start fp-bench-receiver")?;
        let pid = child.id().context("the receiver exited at once")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        self.services.push(Service {
            binary: "fp-bench-receiver".to_owned(),
            label: "fp-bench-receiver".to_owned(),
            pid,
            health: None,
            child,
        });
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line))
            .await
            .context("the receiver did not report its addresses within 30 s")??;
        let addresses: ReceiverAddresses =
            serde_json::from_str(line.trim()).with_context(|| {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                format!("the receiver's first line is not its addresses: {line:?}; its log:\n{log}")
            })?;
        self._receiver_stdout.push(reader);
        self.set(
            "FP__DISPATCHER__EXTRA_ROOT_CERTS",
            ca_path.display().to_string(),
        );
        self.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.1/32");
        // Every tenant's endpoint is on this one loopback host, thousands of deliveries a second:
        // the bench measures the pipeline, so the per-host bound is set far above what it reaches.
        self.set("FP__DISPATCHER__HOST_REQUESTS_PER_SECOND", "1000000");
        self.set("FP__DISPATCHER__HOST_REQUEST_BURST", "1000000");
        Ok(addresses)
    }

    /// Starts a service binary with the deployment's configuration plus `extra`, logging to
    /// `<dir>/<label>.log`, and waits until `ready_url` answers (200 when `need_ok`).
    pub async fn start_service(
        &mut self,
        binary_name: &str,
        extra: &[(&str, String)],
        ready_url: &str,
        need_ok: bool,
        health: Option<SocketAddr>,
    ) -> anyhow::Result<()> {
        // Numbered over the whole run, so a restarted service never reuses a stopped one's label.
        let started = self.started.entry(binary_name.to_owned()).or_default();
        *started += 1;
        let label = format!("{binary_name}#{started}");
        let (log_path, log) = self.log_file(&label)?;
        let child = Command::new(self.binary(binary_name)?)
            .envs(self.env.iter().cloned())
            .envs(extra.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {binary_name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{binary_name} exited at once"))?;
        self.services.push(Service {
            binary: binary_name.to_owned(),
            label: label.clone(),
            pid,
            health,
            child,
        });
        let client = reqwest::Client::builder().no_proxy().build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(ready_url).send().await
                && (!need_ok || response.status().is_success())
            {
                return Ok(());
            }
            let exited = self
                .services
                .last_mut()
                .and_then(|service| service.child.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{label} did not become ready ({exited:?}); its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts fp-api; returns its address.
    pub async fn start_api(&mut self) -> anyhow::Result<SocketAddr> {
        let address = free_local_address()?;
        self.start_service(
            "fp-api",
            &[("FP__API__LISTEN", address.to_string())],
            &format!("http://{address}/api/v2/webhooks/config"),
            false,
            None,
        )
        .await?;
        Ok(address)
    }

    /// Starts a queue worker (fp-dispatcher, fp-log-ingest) on its own health port.
    pub async fn start_worker(
        &mut self,
        binary_name: &str,
        health_key: &str,
    ) -> anyhow::Result<SocketAddr> {
        let health = free_local_address()?;
        self.start_service(
            binary_name,
            &[(health_key, health.to_string())],
            &format!("http://{health}/readyz"),
            true,
            Some(health),
        )
        .await?;
        Ok(health)
    }

    /// The started services of one binary.
    pub fn services_of<'a>(&'a self, binary_name: &'a str) -> impl Iterator<Item = &'a Service> {
        self.services
            .iter()
            .filter(move |service| service.binary == binary_name)
    }

    /// Stops every running process of one binary, as an operator would (SIGTERM: a dispatcher
    /// lets its in-flight deliveries finish, and unacked messages return to the queue).
    pub async fn stop_all(&mut self, binary_name: &str) {
        let (stopping, running): (Vec<Service>, Vec<Service>) = std::mem::take(&mut self.services)
            .into_iter()
            .partition(|service| service.binary == binary_name);
        self.services = running;
        for mut service in stopping {
            service.stop().await;
        }
    }

    /// Ends every process (SIGTERM, then SIGKILL after 10 s), deletes the broker namespace and
    /// drops the database. Runs every step even when one fails, and reports the first failure.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            service.stop().await;
        }
        let topology = self.fpctl(&["delete-topology"]).await;
        let raw_queue = delete_raw_queue(&self.name).await;
        let database = drop_database(&self.name).await;
        topology.context("deleting the broker namespace")?;
        raw_queue.context("deleting the raw-limit queue")?;
        database.context("dropping the bench database")?;
        Ok(())
    }
}

/// The broker limit's own queue is outside the namespace's topology; an interrupted run can leave
/// it, so it goes here too (deleting a queue that is not there succeeds).
async fn delete_raw_queue(namespace: &str) -> anyhow::Result<()> {
    let broker = fp_broker::Broker::connect(&broker_url(), namespace).await?;
    let deleted =
        crate::limits::delete_queue(&broker, &crate::limits::raw_queue_name(namespace)).await;
    broker.close().await;
    deleted
}

async fn drop_database(name: &str) -> anyhow::Result<()> {
    let mut admin = fp_store::connect(&admin_database_url()).await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}
