//! The dispatcher turns transparent huge pages off for itself: with them, its allocator's arenas
//! become resident 2 MiB at a time (`bench/README.md`, "the dispatcher on mimalloc").

use anyhow::Context;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::Pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_runs_without_transparent_huge_pages() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("thp").await?;
    let outcome = async {
        Pipeline::start(&mut env, 1).await?;
        let pid = env.pid("fp-dispatcher")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        // Linux 5.0 and later report the process's flag here (0: disabled by prctl).
        let thp = status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .context("/proc/<pid>/status has no THP_enabled line")?;
        anyhow::ensure!(
            thp.trim() == "0",
            "the dispatcher's THP_enabled is {}, not 0",
            thp.trim()
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
