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
use fp_domain::retry::{FailureKind, TlsFailure};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

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
    #[error("could not set up TLS: {0}")]
    Tls(String),
    #[error("could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why an attempt got no HTTP answer. The variant (with the TLS reason) is the attempt record's
/// error kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("blocked: {0}")]
    Blocked(Blocked),
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("connection refused: {0}")]
    ConnectionRefused(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {1}")]
    Tls(TlsFailure, String),
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
            DeliveryError::ConnectionRefused(_) => FailureKind::ConnectionRefused,
            DeliveryError::Connect(_) => FailureKind::Connect,
            DeliveryError::Tls(reason, _) => FailureKind::Tls(*reason),
            DeliveryError::Timeout(_) => FailureKind::Timeout,
            DeliveryError::Other(_) => FailureKind::Other,
        }
    }

    /// The attempt record's `error_kind`.
    pub fn kind(&self) -> &'static str {
        self.failure_kind().as_str()
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
    let mut refused = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(current) = cause {
        message = format!("{message}: {current}");
        if let Some(blocked) = current.downcast_ref::<resolver::BlockedByPolicy>() {
            return DeliveryError::Blocked(blocked.0.clone());
        }
        if let Some(failed) = current.downcast_ref::<LookupFailed>() {
            return DeliveryError::Dns(failed.to_string());
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return DeliveryError::Tls(tls_failure(tls), current.to_string());
        }
        let io_error = current.downcast_ref::<std::io::Error>();
        refused |= io_error
            .is_some_and(|io_error| io_error.kind() == std::io::ErrorKind::ConnectionRefused);
        // `io::Error::source` skips the error it wraps, which is where rustls puts its own.
        cause = match io_error.and_then(std::io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    if error.is_timeout() {
        DeliveryError::Timeout(message)
    } else if refused {
        DeliveryError::ConnectionRefused(message)
    } else if error.is_connect() {
        DeliveryError::Connect(message)
    } else {
        DeliveryError::Other(message)
    }
}

/// The reason of a failed handshake, as far as the tenant's fix differs.
fn tls_failure(error: &rustls::Error) -> TlsFailure {
    let rustls::Error::InvalidCertificate(certificate) = error else {
        return TlsFailure::Other;
    };
    match certificate {
        CertificateError::UnknownIssuer => TlsFailure::UnknownAuthority,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsFailure::WrongHost
        }
        CertificateError::Other(OtherError(other))
            if other.is::<SelfSignedCertificate>()
                || matches!(
                    other.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
        {
            TlsFailure::SelfSigned
        }
        _ => TlsFailure::Other,
    }
}

/// webpki's verdict on a self-signed certificate that is no CA.
#[derive(Debug, thiserror::Error)]
#[error("the certificate is self-signed")]
struct SelfSignedCertificate;

/// The webpki verifier, telling a self-signed certificate from one of an unknown CA: webpki calls
/// both `UnknownIssuer`, but their fixes differ. Everything else is webpki's own.
#[derive(Debug)]
struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                    if is_self_issued(end_entity) =>
                {
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(SelfSignedCertificate),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Whether the certificate names itself as its issuer.
fn is_self_issued(certificate: &CertificateDer<'_>) -> bool {
    webpki::EndEntityCert::try_from(certificate)
        .is_ok_and(|parsed| parsed.issuer() == parsed.subject())
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
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| ClientBuildError::Tls(err.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientBuildError::Tls(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { webpki }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(certificate: CertificateError) -> rustls::Error {
        rustls::Error::InvalidCertificate(certificate)
    }

    #[test]
    fn handshake_failures_are_told_apart_by_their_fix() {
        let cases = [
            (
                invalid(CertificateError::UnknownIssuer),
                TlsFailure::UnknownAuthority,
            ),
            (invalid(CertificateError::Expired), TlsFailure::Expired),
            (
                invalid(CertificateError::NotValidForName),
                TlsFailure::WrongHost,
            ),
            (
                invalid(CertificateError::Other(OtherError(Arc::new(
                    SelfSignedCertificate,
                )))),
                TlsFailure::SelfSigned,
            ),
            // A CA certificate served as the server's own: webpki refuses it before any issuer
            // is looked for.
            (
                invalid(CertificateError::Other(OtherError(Arc::new(
                    webpki::Error::CaUsedAsEndEntity,
                )))),
                TlsFailure::SelfSigned,
            ),
            (
                invalid(CertificateError::Other(OtherError(Arc::new(
                    webpki::Error::EndEntityUsedAsCa,
                )))),
                TlsFailure::Other,
            ),
            (invalid(CertificateError::Revoked), TlsFailure::Other),
            (
                rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
                TlsFailure::Other,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(tls_failure(&error), expected, "{error:?}");
        }
    }
}
