//! Real HTTPS deliveries through `DeliveryClient` with scripted DNS answers: the guard refuses
//! private answers before connecting, pins each connection to the answers that passed (so DNS
//! rebinding has no window), never follows redirects, and bounds time and response size.
//!
//! 127.0.0.1 plays a public address (the only allow-listed one) and 127.0.0.2 a private one. Both
//! receivers listen on the same port, so a connection that slipped past the guard would really land
//! on the private receiver and show in its connection count.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use fp_delivery::{
    AttemptOutcome, DeliveryClient, DeliveryConfig, DeliveryError, HostLookup, LookupFailed,
};
use fp_domain::address_policy::{AddressPolicy, Blocked};
use fp_domain::retry::TlsFailure;
use fp_testkit::receiver::{CannedResponse, Responder, TlsReceiver, always_ok};

const NAME: &str = "hooks.example.test";
const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const PRIVATE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// DNS with scripted answers for [`NAME`] (any other name does not exist), counting lookups.
struct ScriptedLookup {
    /// The addresses of the `n`th lookup (0-based).
    answer: Box<dyn Fn(usize) -> Vec<IpAddr> + Send + Sync>,
    calls: AtomicUsize,
}

impl ScriptedLookup {
    fn new(answer: impl Fn(usize) -> Vec<IpAddr> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScriptedLookup {
            answer: Box::new(answer),
            calls: AtomicUsize::new(0),
        })
    }

    fn always(addresses: &[IpAddr]) -> Arc<Self> {
        let addresses = addresses.to_vec();
        Self::new(move |_| addresses.clone())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl HostLookup for ScriptedLookup {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, LookupFailed>> + Send + 'a>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = if name == NAME {
            Ok((self.answer)(call))
        } else {
            Err(LookupFailed {
                name: name.to_owned(),
                reason: "no such name".to_owned(),
            })
        };
        Box::pin(async move { answer })
    }
}

/// The "public" receiver on 127.0.0.1 and the "private" one on 127.0.0.2, on one port.
struct Receivers {
    public: TlsReceiver,
    private: TlsReceiver,
    port: u16,
    /// The public receiver's CA. The private one is deliberately not trusted: reaching it at all is
    /// the failure, and its connection count shows it whether or not TLS would succeed.
    ca_pem: PathBuf,
}

impl Receivers {
    async fn start(public_responder: Responder) -> anyhow::Result<Self> {
        fp_testkit::install_crypto_provider();
        // The port the kernel picks on 127.0.0.1 may be taken on 127.0.0.2: try a few.
        for _ in 0..10 {
            let public = TlsReceiver::start_with_names(
                SocketAddr::new(PUBLIC, 0),
                &[NAME, "127.0.0.1"],
                public_responder.clone(),
            )
            .await?;
            let port = public.address().port();
            let Ok(private) = TlsReceiver::start_with_names(
                SocketAddr::new(PRIVATE, port),
                &[NAME, "127.0.0.2"],
                always_ok(),
            )
            .await
            else {
                continue;
            };
            let ca_pem = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("pinning-ca-{}-{port}.pem", std::process::id()));
            public.write_ca_pem(&ca_pem)?;
            return Ok(Receivers {
                public,
                private,
                port,
                ca_pem,
            });
        }
        bail!("found no port free on both 127.0.0.1 and 127.0.0.2")
    }

    /// `https://<host>:<port>/hook`, reaching whichever receiver `host` leads to.
    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/hook", self.port)
    }

    /// A fresh client (with its own connection pool) that trusts the public receiver and lets
    /// only 127.0.0.1 through among the private addresses.
    fn client(
        &self,
        lookup: Arc<ScriptedLookup>,
        config: &DeliveryConfig,
    ) -> anyhow::Result<DeliveryClient> {
        let policy = AddressPolicy::with_allow_list(vec!["127.0.0.1/32".parse()?]);
        Ok(DeliveryClient::with_lookup(
            config,
            Arc::new(policy),
            Some(&self.ca_pem),
            lookup,
        )?)
    }

    fn assert_private_untouched(&self) {
        assert_eq!(
            self.private.connections(),
            0,
            "a connection reached the private address"
        );
    }
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        response_body_cap: 64 * 1024,
    }
}

async fn deliver(client: &DeliveryClient, url: &str) -> AttemptOutcome {
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    client
        .post(url, &headers, Bytes::from_static(br#"{"event":"test"}"#))
        .await
}

fn assert_blocked(outcome: &AttemptOutcome, url: &str) {
    assert!(
        matches!(outcome.result, Err(DeliveryError::Blocked(_))),
        "{url}: expected blocked, got {:?}",
        outcome.result
    );
}

#[tokio::test]
async fn a_name_with_only_a_private_answer_is_blocked_before_connecting() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    let lookup = ScriptedLookup::always(&[PRIVATE]);
    let client = receivers.client(lookup.clone(), &config())?;
    let url = receivers.url(NAME);
    assert_blocked(&deliver(&client, &url).await, &url);
    assert!(lookup.calls() >= 1, "the name was never looked up");
    receivers.assert_private_untouched();
    Ok(())
}

#[tokio::test]
async fn one_private_answer_among_public_ones_blocks_the_name() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    let client = receivers.client(ScriptedLookup::always(&[PUBLIC, PRIVATE]), &config())?;
    let url = receivers.url(NAME);
    assert_blocked(&deliver(&client, &url).await, &url);
    // Not even the public answer is tried: the whole name is refused.
    assert_eq!(receivers.public.connections(), 0);
    receivers.assert_private_untouched();
    Ok(())
}

#[tokio::test]
async fn dns_rebinding_never_reaches_the_private_address() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    // Public for the first lookup (the one a naive check would make), private ever after.
    let lookup = ScriptedLookup::new(|call| vec![if call == 0 { PUBLIC } else { PRIVATE }]);
    let url = receivers.url(NAME);
    let mut delivered = 0;
    let mut blocked = 0;
    // Each client has its own pool, so each one opens (and resolves for) a new connection.
    for _ in 0..3 {
        let client = receivers.client(lookup.clone(), &config())?;
        for _ in 0..3 {
            let outcome = deliver(&client, &url).await;
            match &outcome.result {
                Ok(response) if response.status == 200 => delivered += 1,
                Err(DeliveryError::Blocked(_)) => blocked += 1,
                other => panic!("expected 200 from 127.0.0.1 or blocked, got {other:?}"),
            }
        }
    }
    assert!(
        lookup.calls() >= 2,
        "the rebound answer was never asked for"
    );
    assert!(
        delivered >= 1 && blocked >= 1,
        "{delivered} delivered, {blocked} blocked"
    );
    assert_eq!(receivers.public.requests().len(), delivered);
    receivers.assert_private_untouched();
    Ok(())
}

#[tokio::test]
async fn ip_literals_are_judged_without_a_lookup() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    let lookup = ScriptedLookup::always(&[PUBLIC]);
    let client = receivers.client(lookup.clone(), &config())?;
    let private_url = receivers.url("127.0.0.2");
    assert_blocked(&deliver(&client, &private_url).await, &private_url);
    receivers.assert_private_untouched();
    // The allow-listed literal goes through, also without DNS.
    let public = deliver(&client, &receivers.url("127.0.0.1")).await;
    assert_eq!(
        public.result.map(|response| response.status).ok(),
        Some(200)
    );
    assert_eq!(lookup.calls(), 0, "an IP literal must never be resolved");
    Ok(())
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_returned_not_followed() -> anyhow::Result<()> {
    // The location needs the port, which is known only once the receivers listen.
    let port = Arc::new(AtomicU16::new(0));
    let responder: Responder = {
        let port = port.clone();
        Arc::new(move |_, _| {
            let mut redirect = CannedResponse::new(302, "");
            let location = format!("https://127.0.0.2:{}/", port.load(Ordering::SeqCst));
            redirect.headers.push(("location".to_owned(), location));
            redirect
        })
    };
    let receivers = Receivers::start(responder).await?;
    port.store(receivers.port, Ordering::SeqCst);
    let client = receivers.client(ScriptedLookup::always(&[PUBLIC]), &config())?;
    let response = deliver(&client, &receivers.url(NAME))
        .await
        .result
        .map_err(|err| anyhow::anyhow!("expected the 302 itself, got {err}"))?;
    assert_eq!(response.status, 302);
    let location = response
        .headers
        .iter()
        .find(|(name, _)| name == "location")
        .map(|(_, value)| value.as_str());
    assert_eq!(
        location,
        Some(format!("https://127.0.0.2:{}/", receivers.port).as_str())
    );
    assert_eq!(receivers.public.requests().len(), 1);
    receivers.assert_private_untouched();
    Ok(())
}

#[tokio::test]
async fn a_receiver_slower_than_the_request_timeout_times_out() -> anyhow::Result<()> {
    let receivers = Receivers::start(Arc::new(|_, _| CannedResponse {
        delay: Duration::from_secs(3),
        ..CannedResponse::new(200, "late")
    }))
    .await?;
    let config = DeliveryConfig {
        request_timeout: Duration::from_secs(1),
        ..config()
    };
    let client = receivers.client(ScriptedLookup::always(&[PUBLIC]), &config)?;
    let outcome = deliver(&client, &receivers.url(NAME)).await;
    assert!(
        matches!(outcome.result, Err(DeliveryError::Timeout(_))),
        "{:?}",
        outcome.result
    );
    // reqwest names the URL in its errors; ours go to logs, where a path's token must not.
    let message = format!("{:?}", outcome.result);
    assert!(!message.contains("/hook"), "the URL is in `{message}`");
    assert!(
        outcome.duration < Duration::from_secs(3),
        "{:?}",
        outcome.duration
    );
    Ok(())
}

#[tokio::test]
async fn response_bodies_are_cut_at_the_cap() -> anyhow::Result<()> {
    const CAP: usize = 1000;
    // The first answer is ten times the cap; the second fits.
    let receivers = Receivers::start(Arc::new(|_, n| {
        let body = if n == 0 {
            "x".repeat(10 * CAP)
        } else {
            "ok".to_owned()
        };
        CannedResponse::new(200, &body)
    }))
    .await?;
    let config = DeliveryConfig {
        response_body_cap: CAP,
        ..config()
    };
    let client = receivers.client(ScriptedLookup::always(&[PUBLIC]), &config)?;
    let url = receivers.url(NAME);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = deliver(&client, &url)
            .await
            .result
            .map_err(|err| anyhow::anyhow!("delivery failed: {err}"))?;
        bodies.push((response.body.len(), response.body_truncated));
    }
    assert_eq!(bodies, [(CAP, true), (2, false)]);
    Ok(())
}

#[tokio::test]
async fn userinfo_and_plain_http_are_blocked_before_anything_is_sent() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    let lookup = ScriptedLookup::always(&[PUBLIC]);
    let client = receivers.client(lookup.clone(), &config())?;
    let port = receivers.port;
    let cases = [
        (
            format!("https://user:pass@{NAME}:{port}/hook"),
            Blocked::Userinfo,
        ),
        (
            format!("https://{NAME}@127.0.0.1:{port}/hook"),
            Blocked::Userinfo,
        ),
        (
            format!("http://{NAME}:{port}/hook"),
            Blocked::NotHttps("http".to_owned()),
        ),
        (
            format!("http://127.0.0.1:{port}/hook"),
            Blocked::NotHttps("http".to_owned()),
        ),
    ];
    for (url, expected) in cases {
        let outcome = deliver(&client, &url).await;
        assert_eq!(
            outcome.result.err(),
            Some(DeliveryError::Blocked(expected)),
            "{url}"
        );
    }
    assert_eq!(lookup.calls(), 0);
    assert_eq!(receivers.public.connections(), 0);
    receivers.assert_private_untouched();
    Ok(())
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure() -> anyhow::Result<()> {
    let receivers = Receivers::start(always_ok()).await?;
    let policy = AddressPolicy::with_allow_list(vec!["127.0.0.1/32".parse()?]);
    // No extra roots: the receiver's private CA is unknown to this client.
    let client = DeliveryClient::with_lookup(
        &config(),
        Arc::new(policy),
        None,
        ScriptedLookup::always(&[PUBLIC]),
    )?;
    let outcome = deliver(&client, &receivers.url("127.0.0.1")).await;
    assert!(
        matches!(
            outcome.result,
            Err(DeliveryError::Tls(TlsFailure::UnknownAuthority, _))
        ),
        "expected a TLS failure, got {:?}",
        outcome.result
    );
    Ok(())
}
