//! `make bench`: see `fp_bench::driver` and `bench/README.md`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = fp_bench::driver::Args::parse();
    let code = fp_bench::driver::main(args).await?;
    std::process::exit(code);
}
