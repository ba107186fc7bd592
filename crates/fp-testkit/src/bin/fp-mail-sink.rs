//! A local SMTP server for `make run`: takes every message fp-api sends (the endpoint
//! notifications) and writes it to `<dir>/<UTC time>-<n>.eml` instead of delivering it, so the
//! emails can be read there (any mail client opens .eml files).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Parser;
use fp_testkit::mail_sink::{MailSink, ReceivedMail};

#[derive(Parser)]
struct Args {
    /// Address to listen on; fp-api's FP__NOTIFICATIONS__SMTP_URL is smtp://<this address>.
    #[arg(long, default_value = "127.0.0.1:2525")]
    listen: SocketAddr,
    /// Folder the messages are written to (made if missing).
    #[arg(long)]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot make {}", args.dir.display()))?;
    let dir = args.dir.clone();
    let written = AtomicU64::new(0);
    let write = move |mail: &ReceivedMail| {
        let n = written.fetch_add(1, Ordering::Relaxed) + 1;
        let time = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let path = dir.join(format!("{time}-{n}.eml"));
        match std::fs::write(&path, &mail.data) {
            Ok(()) => println!(
                "{} to {}: {}",
                path.display(),
                mail.to.join(", "),
                mail.header("subject").unwrap_or_default()
            ),
            Err(error) => eprintln!("cannot write {}: {error}", path.display()),
        }
    };
    let sink = MailSink::start(args.listen, Some(Arc::new(write))).await?;
    println!(
        "mail sink at {}: messages go to {}",
        sink.url(),
        args.dir.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
