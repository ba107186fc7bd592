//! `make bench`: see `fp_bench::driver` and `bench/README.md`.

use clap::Parser;

// One thread: the load generator shares the machine's CPUs with the pipeline it measures, and on a
// multi-threaded runtime its work bounced between threads: 8.0 context switches a submission at
// 800/s against 1.7 on one thread, which also takes a third less CPU with submissions at the paced
// rates and a tenth less with events (bench/README.md, "the load generator on one thread").
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = fp_bench::driver::Args::parse();
    let code = fp_bench::driver::main(args).await?;
    std::process::exit(code);
}
