//! What `DeliveryClient` records for the failures tenants' endpoints have, against real HTTPS
//! receivers: a closed port, and each certificate problem whose fix differs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fp_delivery::{DeliveryClient, DeliveryConfig, DeliveryError, DeliveryResponse};
use fp_domain::address_policy::AddressPolicy;
use fp_domain::retry::TlsFailure;
use fp_testkit::certificates::{self, ServerCertificate};
use fp_testkit::receiver::{TlsReceiver, always_ok};

const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// One POST to a receiver serving `identity`; the client trusts the receiver's CA if `trusted`.
async fn post_to(
    identity: certificates::ServerIdentity,
    trusted: bool,
) -> anyhow::Result<Result<DeliveryResponse, DeliveryError>> {
    let receiver =
        TlsReceiver::start_with_identity("127.0.0.1:0".parse()?, identity, always_ok()).await?;
    let roots = if trusted {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "failure-kinds-ca-{}-{}.pem",
            std::process::id(),
            receiver.address().port()
        ));
        receiver.write_ca_pem(&path)?;
        Some(path)
    } else {
        None
    };
    post(&receiver.url("/hook"), roots).await
}

async fn post(
    url: &str,
    extra_roots: Option<PathBuf>,
) -> anyhow::Result<Result<DeliveryResponse, DeliveryError>> {
    fp_testkit::install_crypto_provider();
    let config = DeliveryConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        response_body_cap: 1024,
    };
    let policy = AddressPolicy::with_allow_list(vec!["127.0.0.1/32".parse()?]);
    let client = DeliveryClient::new(&config, Arc::new(policy), extra_roots.as_deref(), None)?;
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    Ok(client
        .post(url, &headers, Bytes::from_static(b"{}"))
        .await
        .result)
}

fn tls_failure(result: &Result<DeliveryResponse, DeliveryError>) -> Option<TlsFailure> {
    match result {
        Err(DeliveryError::Tls(reason, _)) => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn a_trusted_valid_certificate_is_delivered_to() -> anyhow::Result<()> {
    // The control for the cases below: the same set-up with nothing wrong succeeds.
    let identity = certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::Valid)?;
    let result = post_to(identity, true).await?;
    assert_eq!(result.map(|response| response.status).ok(), Some(200));
    Ok(())
}

#[tokio::test]
async fn each_certificate_problem_has_its_own_kind() -> anyhow::Result<()> {
    let cases = [
        (
            "unknown CA",
            certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::Valid)?,
            false,
            TlsFailure::UnknownAuthority,
        ),
        (
            "self-signed",
            certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::SelfSigned)?,
            false,
            TlsFailure::SelfSigned,
        ),
        (
            "expired",
            certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::Expired)?,
            true,
            TlsFailure::Expired,
        ),
        (
            "wrong host",
            certificates::generate_as(&["hooks.other.test"], ServerCertificate::Valid)?,
            true,
            TlsFailure::WrongHost,
        ),
    ];
    for (name, identity, trusted, expected) in cases {
        let result = post_to(identity, trusted).await?;
        assert_eq!(tls_failure(&result), Some(expected), "{name}: {result:?}");
        let kind = result.err().map(|error| error.kind());
        assert!(
            kind.is_some_and(|kind| kind.starts_with("tls_")),
            "{name}: {kind:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_a_refused_connection() -> anyhow::Result<()> {
    // A port that was free a moment ago: nothing listens on it.
    let address: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let result = post(&format!("https://{address}/hook"), None).await?;
    assert!(
        matches!(result, Err(DeliveryError::ConnectionRefused(_))),
        "{result:?}"
    );
    assert_eq!(
        result.err().map(|error| error.kind()),
        Some("connection_refused")
    );
    Ok(())
}
