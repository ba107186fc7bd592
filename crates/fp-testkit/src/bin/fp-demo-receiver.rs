//! A demo HTTPS webhook receiver for `make run` and the compose `demo` profile: prints each delivery
//! with whether its two signatures verify with the demo secret, and answers `200 ok`, or the status
//! it was told to: `POST /_demo/respond/500` makes the deliveries that follow fail (so the
//! dispatcher's retries show), `POST /_demo/respond/200` makes them succeed again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use clap::Parser;
use fp_domain::signing::{
    WebhookSecret, verify_feedbackpulse_signature, verify_standard_webhooks_signature,
};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, Responder, TlsReceiver};

/// The path whose last segment sets the status deliveries are answered with.
const RESPOND_PATH: &str = "/_demo/respond/";
/// How far `webhook-timestamp` may be from this clock, as docs/verifying-webhooks.md advises.
const TIMESTAMP_TOLERANCE_SECONDS: u64 = 5 * 60;

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
    /// The demo tenant's webhook secret, to verify both signature headers with. Without it the
    /// signatures are shown as not checked.
    #[arg(long, env = "FP_DEMO_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let secret = args.secret.map(WebhookSecret::new);
    let receiver =
        TlsReceiver::start_with_names(args.listen, &names, demo_responder(secret)).await?;
    receiver.write_ca_pem(&args.ca_pem)?;
    let base = format!("https://{}:{}", names[0], receiver.address().port());
    println!("demo receiver listening at {base}/webhooks/feedbackpulse");
    println!(
        "  to see retries: curl -k -X POST {base}{RESPOND_PATH}500 (and {RESPOND_PATH}200 to recover)"
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Answers control requests, and deliveries with the status last set, printing each delivery.
fn demo_responder(secret: Option<WebhookSecret>) -> Responder {
    let status = Arc::new(AtomicU16::new(200));
    Arc::new(move |request: &ReceivedRequest, _: usize| {
        if let Some(chosen) = request.target.strip_prefix(RESPOND_PATH) {
            return match chosen.parse::<u16>() {
                Ok(code) if request.method == "POST" && (200..=599).contains(&code) => {
                    status.store(code, Ordering::SeqCst);
                    println!("demo receiver: deliveries are answered {code} from now on");
                    CannedResponse::new(200, &format!("deliveries are answered {code} now\n"))
                }
                _ => CannedResponse::new(400, "use POST /_demo/respond/<status 200-599>\n"),
            };
        }
        let code = status.load(Ordering::SeqCst);
        // One print per delivery, so lines of deliveries arriving together never interleave.
        println!(
            "demo receiver got {} {} event={} delivery={}, answered {code}\n  \
             X-FeedbackPulse-Signature: {}\n  webhook-signature: {}\n  {}",
            request.method,
            request.target,
            request.header("x-feedbackpulse-event").unwrap_or("-"),
            request.header("x-feedbackpulse-delivery").unwrap_or("-"),
            feedbackpulse_verdict(secret.as_ref(), request),
            standard_webhooks_verdict(secret.as_ref(), request),
            String::from_utf8_lossy(&request.body)
        );
        let body = if code < 300 { "ok" } else { "demo failure" };
        CannedResponse::new(code, body)
    })
}

fn feedbackpulse_verdict(secret: Option<&WebhookSecret>, request: &ReceivedRequest) -> String {
    let Some(secret) = secret else {
        return "not checked (no --secret)".to_owned();
    };
    match request.header("x-feedbackpulse-signature") {
        None => "MISSING".to_owned(),
        Some(header) if verify_feedbackpulse_signature(secret, &request.body, header) => {
            "VALID".to_owned()
        }
        Some(_) => "INVALID".to_owned(),
    }
}

fn standard_webhooks_verdict(secret: Option<&WebhookSecret>, request: &ReceivedRequest) -> String {
    let Some(secret) = secret else {
        return "not checked (no --secret)".to_owned();
    };
    let (Some(id), Some(timestamp), Some(header)) = (
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        request.header("webhook-signature"),
    ) else {
        return "MISSING".to_owned();
    };
    let Ok(sent) = timestamp.parse::<i64>() else {
        return "INVALID (webhook-timestamp is not a number)".to_owned();
    };
    let offset = chrono::Utc::now().timestamp().saturating_sub(sent);
    if offset.unsigned_abs() > TIMESTAMP_TOLERANCE_SECONDS {
        return format!("INVALID (webhook-timestamp is {offset} s off this clock)");
    }
    if verify_standard_webhooks_signature(secret, id, sent, &request.body, header) {
        "VALID".to_owned()
    } else {
        "INVALID".to_owned()
    }
}
