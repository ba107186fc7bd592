//! HTTPS delivery: a reqwest client that can only reach what the address policy allows.
//!
//! The SSRF guard lives here at delivery time, not only at save time: IP literals are judged before
//! any packet leaves; names go through [`PinningResolver`], which resolves A and AAAA once, judges every
//! answer and hands hyper only the addresses that passed, so a second lookup (DNS rebinding) has no
//! window. Redirects are never followed and no proxy is ever used.

mod resolver;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fp_domain::address_policy::{AddressPolicy, Blocked};
use fp_domain::retry::FailureKind;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use resolver::{
    HickoryLookup, HostLookup, HostsFileLookup, LookupFailed, PinningResolver, ResolveRefused,
    system_lookup,
};

/// How the client is built.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Response bodies are read up to this many bytes; the rest is discarded and marked truncated.
    pub response_body_cap: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("could not read extra root certificates from {path}: {reason}")]
    RootCerts { path: String, reason: String },
    #[error("could not set up DNS resolution: {0}")]
    Resolver(String),
    #[error("could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why an attempt got no HTTP answer. The variant is the attempt record's error kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("blocked: {0}")]
    Blocked(Blocked),
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("request failed: {0}")]
    Other(String),
}

impl DeliveryError {
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            DeliveryError::Blocked(_) => FailureKind::Blocked,
            DeliveryError::Dns(_) => FailureKind::Dns,
            DeliveryError::Connect(_) => FailureKind::Connect,
            DeliveryError::Tls(_) => FailureKind::Tls,
            DeliveryError::Timeout(_) => FailureKind::Timeout,
            DeliveryError::Other(_) => FailureKind::Other,
        }
    }

    /// The attempt record's `error_kind`.
    pub fn kind(&self) -> &'static str {
        match self.failure_kind() {
            FailureKind::Blocked => "blocked",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Other => "other",
        }
    }
}

/// What came back from the receiver.
#[derive(Debug, Clone)]
pub struct DeliveryResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_truncated: bool,
}

/// One attempt's result and how long it took.
#[derive(Debug)]
pub struct AttemptOutcome {
    pub result: Result<DeliveryResponse, DeliveryError>,
    pub duration: Duration,
}

/// The dispatcher's HTTP client. Cheap to clone; connections are pooled per host.
#[derive(Clone)]
pub struct DeliveryClient {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    response_body_cap: usize,
}

impl DeliveryClient {
    /// Builds the client with the system resolver (behind `hosts_file`, if given) and the webpki
    /// roots plus any PEM file of extra roots.
    pub fn new(
        config: &DeliveryConfig,
        policy: Arc<AddressPolicy>,
        extra_root_certs: Option<&Path>,
        hosts_file: Option<&Path>,
    ) -> Result<Self, ClientBuildError> {
        let lookup =
            system_lookup(hosts_file).map_err(|err| ClientBuildError::Resolver(err.to_string()))?;
        Self::with_lookup(config, policy, extra_root_certs, lookup)
    }

    /// As [`DeliveryClient::new`], resolving names through `lookup` (tests inject answers here).
    pub fn with_lookup(
        config: &DeliveryConfig,
        policy: Arc<AddressPolicy>,
        extra_root_certs: Option<&Path>,
        lookup: Arc<dyn HostLookup>,
    ) -> Result<Self, ClientBuildError> {
        let tls = tls_config(extra_root_certs)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(PinningResolver::new(lookup, policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(DeliveryClient {
            client,
            policy,
            response_body_cap: config.response_body_cap,
        })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// POSTs `body` to `url` with `headers`, unless the policy refuses the URL.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> AttemptOutcome {
        let started = Instant::now();
        let result = self.try_post(url, headers, body).await;
        AttemptOutcome {
            result,
            duration: started.elapsed(),
        }
    }

    async fn try_post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<DeliveryResponse, DeliveryError> {
        // IP literals never reach the resolver, so the URL is judged here first.
        let checked = self.policy.check_url(url).map_err(DeliveryError::Blocked)?;
        let mut request = self.client.post(checked.url).body(body);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let response_headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut body_truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            let room = self.response_body_cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                body_truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(DeliveryResponse {
            status,
            headers: response_headers,
            body,
            body_truncated,
        })
    }
}

/// Maps a reqwest error to the attempt's error kind by walking its causes. reqwest writes the URL,
/// with a Slack or Discord token in its path, into its errors: it is dropped first, so the message
/// can go to logs (the tenant's log has the URL in its own column).
fn classify(error: reqwest::Error) -> DeliveryError {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(current) = cause {
        message = format!("{message}: {current}");
        if let Some(blocked) = current.downcast_ref::<resolver::BlockedByPolicy>() {
            return DeliveryError::Blocked(blocked.0.clone());
        }
        if let Some(failed) = current.downcast_ref::<LookupFailed>() {
            return DeliveryError::Dns(failed.to_string());
        }
        if current.downcast_ref::<rustls::Error>().is_some() {
            return DeliveryError::Tls(current.to_string());
        }
        // `io::Error::source` skips the error it wraps, which is where rustls puts its own.
        cause = match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    if error.is_timeout() {
        DeliveryError::Timeout(message)
    } else if error.is_connect() {
        DeliveryError::Connect(message)
    } else {
        DeliveryError::Other(message)
    }
}

/// rustls with the ring provider, trusting the webpki roots plus the operator's extra roots.
fn tls_config(extra_root_certs: Option<&Path>) -> Result<rustls::ClientConfig, ClientBuildError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_root_certs {
        let root_error = |reason: String| ClientBuildError::RootCerts {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|err| root_error(err.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| root_error(err.to_string()))?;
        if certs.is_empty() {
            return Err(root_error("no certificate in the file".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| root_error(err.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientBuildError::Resolver(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
