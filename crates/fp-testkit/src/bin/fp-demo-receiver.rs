//! A demo HTTPS webhook receiver for `make run` and the compose `demo` profile: prints each delivery
//! and answers `200 ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fp_testkit::receiver::{TlsReceiver, always_ok};

#[derive(Parser)]
struct Args {
    /// Address to listen on (loopback by default; 0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// A DNS name or IP address the certificate is for (repeatable); the first one is in the URL
    /// printed at start. In a container: the name the dispatcher reaches it by.
    #[arg(long = "name", default_values = ["127.0.0.1", "localhost"])]
    names: Vec<String>,
    /// Where to write the PEM of the receiver's CA, for FP__DISPATCHER__EXTRA_ROOT_CERTS.
    #[arg(long)]
    ca_pem: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let receiver = TlsReceiver::start_with_names(args.listen, &names, always_ok()).await?;
    receiver.write_ca_pem(&args.ca_pem)?;
    println!(
        "demo receiver listening at https://{}:{}/webhooks/feedbackpulse",
        names[0],
        receiver.address().port()
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
