//! `fp-otlp-receiver`: the test OTLP receiver as a process, standing in for a collector when
//! `make bench` measures the cost of exporting traces. It counts spans and keeps none.
//!
//! `fp-otlp-receiver <listen address> <grpc|http/protobuf> [timings file]`: prints the span count
//! every 5 s and at Ctrl-C or SIGTERM. With a timings file it also writes each span's service,
//! name, ids and start and end times there, a line of JSON each, for
//! `bench/tools/span_breakdown.py`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use fp_testkit::otlp::{OtlpProtocol, OtlpReceiver};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .context("usage: fp-otlp-receiver <listen address> <grpc|http/protobuf> [timings file]")?
        .parse()
        .context("the listen address")?;
    let protocol = match args.next().as_deref() {
        Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") | None => OtlpProtocol::HttpProtobuf,
        Some(other) => bail!("unknown protocol `{other}`: grpc or http/protobuf"),
    };
    let receiver = match args.next() {
        Some(path) => {
            OtlpReceiver::start_writing_timings(listen, protocol, Path::new(&path)).await?
        }
        None => OtlpReceiver::start_on(listen, protocol, false).await?,
    };
    println!(
        "OTLP receiver ({}) at {}",
        protocol.env_value(),
        receiver.endpoint()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                println!("spans received: {}", receiver.count());
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    receiver.flush().context("writing the timings file")?;
    println!("spans received: {}", receiver.count());
    Ok(())
}
