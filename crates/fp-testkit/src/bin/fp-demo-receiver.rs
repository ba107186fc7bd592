//! A demo HTTPS webhook receiver for `make run`: prints each delivery and answers `200 ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fp_testkit::receiver::{TlsReceiver, always_ok};

#[derive(Parser)]
struct Args {
    /// Address to listen on (loopback only: this is a demo).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Where to write the PEM of the receiver's CA, for FP__DISPATCHER__EXTRA_ROOT_CERTS.
    #[arg(long)]
    ca_pem: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receiver = TlsReceiver::start(args.listen, always_ok()).await?;
    receiver.write_ca_pem(&args.ca_pem)?;
    println!(
        "demo receiver listening at {}",
        receiver.url("/webhooks/feedbackpulse")
    );
    let mut shown = 0;
    loop {
        let requests = receiver
            .wait_for(shown + 1, Duration::from_secs(3600))
            .await;
        let Ok(requests) = requests else { continue };
        for request in &requests[shown..] {
            println!(
                "demo receiver got {} {} event={} delivery={}\n  {}",
                request.method,
                request.target,
                request.header("x-feedbackpulse-event").unwrap_or("-"),
                request.header("x-feedbackpulse-delivery").unwrap_or("-"),
                String::from_utf8_lossy(&request.body)
            );
        }
        shown = requests.len();
    }
}
