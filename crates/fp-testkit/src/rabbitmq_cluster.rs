//! A three-node RabbitMQ cluster in containers of its own (`deploy/docker/rabbitmq-cluster.sh`):
//! the services run as host processes and reach the nodes at their container addresses. Tests stop
//! a node, start it again, cut one off the network and heal it. The cluster is taken down (its
//! containers, volumes and network) when the handle is dropped, also when a test fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::environment::{ServiceEndpoints, admin_database_url};

/// Nodes of the cluster, numbered as the script numbers them.
pub const NODES: [u8; 3] = [1, 2, 3];

/// One quorum queue as the cluster reports it.
#[derive(Debug, Clone)]
pub struct QueueReplicas {
    pub name: String,
    /// The node (1, 2 or 3) of its leader, if it has one.
    pub leader: Option<u8>,
    /// The nodes that hold a replica.
    pub members: Vec<u8>,
    /// Its x-arguments as the broker prints them.
    pub arguments: String,
}

pub struct RabbitCluster {
    name: String,
    urls: String,
    down: bool,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/docker/rabbitmq-cluster.sh")
}

impl RabbitCluster {
    /// Starts the cluster named `name` (its containers and network are `name-1`.., `name-net`),
    /// building the local RabbitMQ image first if it is missing; fails with the reason when
    /// docker is not there or does not answer.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let docker = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdin(Stdio::null())
            .output()
            .await;
        match docker {
            Ok(output) if output.status.success() => {}
            Ok(output) => bail!(
                "this test needs docker, which does not answer (`docker info`: {}); start the docker daemon",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => bail!("this test needs docker, which cannot be run: {error}"),
        }
        let mut cluster = RabbitCluster {
            name: name.to_owned(),
            urls: String::new(),
            down: false,
        };
        cluster.run(&["up"]).await?;
        cluster.urls = cluster.run(&["urls"]).await?.trim().to_owned();
        Ok(cluster)
    }

    /// The `broker.url` of every node, comma-separated.
    pub fn broker_url(&self) -> &str {
        &self.urls
    }

    /// The machine's PostgreSQL and this cluster, with quorum queues on all three nodes.
    pub fn endpoints(&self) -> ServiceEndpoints {
        ServiceEndpoints {
            admin_database_url: admin_database_url(),
            database_host_port: "127.0.0.1:5432".to_owned(),
            broker_url: self.urls.clone(),
            quorum_initial_group_size: Some(3),
        }
    }

    /// `docker stop` of one node (a clean shutdown, as an orchestrator's stop).
    pub async fn stop_node(&self, node: u8) -> anyhow::Result<()> {
        self.run(&["stop", &node.to_string()]).await.map(drop)
    }

    /// Starts a stopped node and waits until it runs (not yet until it has rejoined).
    pub async fn start_node(&self, node: u8) -> anyhow::Result<()> {
        self.run(&["start", &node.to_string()]).await.map(drop)
    }

    /// Takes a node off the cluster's network: neither the other nodes nor the services reach it.
    pub async fn cut(&self, node: u8) -> anyhow::Result<()> {
        self.run(&["cut", &node.to_string()]).await.map(drop)
    }

    /// Puts a cut node back on the network, at its address.
    pub async fn heal(&self, node: u8) -> anyhow::Result<()> {
        self.run(&["heal", &node.to_string()]).await.map(drop)
    }

    /// Waits until every node sees three running nodes.
    pub async fn wait_whole(&self, limit: Duration) -> anyhow::Result<()> {
        self.run(&["wait", &limit.as_secs().to_string()])
            .await
            .map(drop)
    }

    /// The quorum queues whose names start with `prefix`, asked of the first node that answers.
    pub async fn queues(&self, prefix: &str) -> anyhow::Result<Vec<QueueReplicas>> {
        let mut last_error = None;
        for node in NODES {
            let output = self
                .exec(
                    node,
                    &[
                        "rabbitmqctl",
                        "list_queues",
                        "name",
                        "leader",
                        "members",
                        "arguments",
                    ],
                )
                .await?;
            if !output.status.success() {
                last_error = Some(String::from_utf8_lossy(&output.stderr).into_owned());
                continue;
            }
            let listed: Value = serde_json::from_slice(&output.stdout).with_context(|| {
                format!(
                    "list_queues printed no JSON: {}",
                    String::from_utf8_lossy(&output.stdout)
                )
            })?;
            return Ok(listed
                .as_array()
                .context("list_queues printed no list")?
                .iter()
                .filter(|queue| {
                    queue["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .map(|queue| QueueReplicas {
                    name: queue["name"].as_str().unwrap_or_default().to_owned(),
                    leader: queue["leader"]
                        .as_str()
                        .and_then(|leader| self.node_of(leader)),
                    members: queue["members"]
                        .as_array()
                        .map(|members| {
                            members
                                .iter()
                                .filter_map(|member| self.node_of(member.as_str()?))
                                .collect()
                        })
                        .unwrap_or_default(),
                    arguments: queue["arguments"].to_string(),
                })
                .collect());
        }
        bail!(
            "no node answered list_queues: {}",
            last_error.unwrap_or_default()
        )
    }

    /// Waits until every replica of the quorum queue `queue` is a leader or follower and their
    /// commit indexes are within `slack` entries of each other: a node that rejoined has caught
    /// up, so the queue keeps a working majority if another node goes. Returns how long it took.
    pub async fn wait_replicas_in_sync(
        &self,
        queue: &str,
        slack: u64,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = tokio::time::Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            for node in NODES {
                let output = self
                    .exec(node, &["rabbitmq-queues", "quorum_status", queue])
                    .await?;
                if !output.status.success() {
                    continue;
                }
                let members: Value = match serde_json::from_slice(&output.stdout) {
                    Ok(members) => members,
                    Err(_) => continue,
                };
                last = members.to_string();
                let members = members.as_array().cloned().unwrap_or_default();
                let states_ok = members.iter().all(|member| {
                    matches!(
                        member["Raft State"].as_str(),
                        Some("leader") | Some("follower")
                    )
                });
                let commits: Vec<u64> = members
                    .iter()
                    .filter_map(|member| member["Commit Index"].as_u64())
                    .collect();
                let spread = commits.iter().max().zip(commits.iter().min());
                if members.len() == NODES.len()
                    && states_ok
                    && commits.len() == NODES.len()
                    && spread.is_some_and(|(max, min)| max - min <= slack)
                {
                    return Ok(started.elapsed());
                }
                break;
            }
            // Each look boots a CLI tool's Erlang VM (about a CPU-second): not every second.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        bail!("the replicas of {queue} were not in sync within {limit:?}; last status: {last}")
    }

    /// The node that leads `queue` now.
    pub async fn leader_of(&self, queue: &str) -> anyhow::Result<u8> {
        self.queues(queue)
            .await?
            .into_iter()
            .find(|found| found.name == queue)
            .with_context(|| format!("no queue {queue} in the cluster"))?
            .leader
            .with_context(|| format!("{queue} has no leader"))
    }

    /// Writes each node's log (`docker logs`) to `<dir>/rabbitmq-<n>.log`, for a post-mortem.
    pub async fn save_logs(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        for node in NODES {
            let output = Command::new("docker")
                .args(["logs", &self.container(node)])
                .stdin(Stdio::null())
                .output()
                .await?;
            let mut text = output.stdout;
            text.extend_from_slice(&output.stderr);
            std::fs::write(dir.join(format!("rabbitmq-{node}.log")), text)?;
        }
        Ok(())
    }

    /// Takes the cluster down now (dropping the handle does it too).
    pub async fn down(mut self) -> anyhow::Result<()> {
        self.down = true;
        self.run(&["down"]).await.map(drop)
    }

    /// Runs a RabbitMQ CLI command (`tool`, then its arguments) quietly on `node`, asking for JSON.
    async fn exec(&self, node: u8, command: &[&str]) -> anyhow::Result<std::process::Output> {
        let container = self.container(node);
        let (tool, arguments) = command.split_first().context("no CLI tool named")?;
        Ok(Command::new("docker")
            .args(["exec", &container, tool, "-q"])
            .args(arguments)
            .args(["--formatter", "json"])
            .stdin(Stdio::null())
            .output()
            .await?)
    }

    fn container(&self, node: u8) -> String {
        format!("{}-{node}", self.name)
    }

    /// 1, 2 or 3 for `rabbit@<name>-<n>`.
    fn node_of(&self, node_name: &str) -> Option<u8> {
        let suffix = node_name.strip_prefix(&format!("rabbit@{}-", self.name))?;
        NODES.into_iter().find(|node| suffix == node.to_string())
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(script())
            .args(args)
            .env("FP_RMQ_CLUSTER", &self.name)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {}", script().display()))?;
        if !output.status.success() {
            bail!(
                "rabbitmq-cluster.sh {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        if !self.down {
            let _ = std::process::Command::new(script())
                .arg("down")
                .env("FP_RMQ_CLUSTER", &self.name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
