//! A private CA and a server certificate for the names a receiver answers to, made fresh per receiver.
//! The certificate can also be wrong in the ways tenants' endpoints are: expired or self-signed (an
//! unknown CA is a receiver whose CA the client does not trust; a wrong host, other names).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct ServerIdentity {
    /// PEM of the CA: what a client must trust.
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// What the server certificate is like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCertificate {
    /// Issued by the CA, valid now.
    Valid,
    /// Issued by the CA, valid only in 2020.
    Expired,
    /// Signed with its own key and no CA: `ca_pem` is the certificate itself, and the chain
    /// holds only it.
    SelfSigned,
}

/// `names` are DNS names or IP addresses for the certificate's subject alternative names.
pub fn generate(names: &[&str]) -> anyhow::Result<ServerIdentity> {
    generate_as(names, ServerCertificate::Valid)
}

/// As [`generate`], with a certificate of the given kind.
pub fn generate_as(
    names: &[&str],
    certificate: ServerCertificate,
) -> anyhow::Result<ServerIdentity> {
    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )?;
    if certificate == ServerCertificate::SelfSigned {
        let server_cert = server_params.self_signed(&server_key)?;
        return Ok(ServerIdentity {
            ca_pem: server_cert.pem(),
            chain: vec![server_cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        });
    }
    if certificate == ServerCertificate::Expired {
        server_params.not_before = date_time_ymd(2020, 1, 1);
        server_params.not_after = date_time_ymd(2021, 1, 1);
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: a client trusting another receiver's CA of the same name would try that
    // key and report a bad signature instead of an unknown CA.
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("FeedbackPulse test receiver CA {}", uuid::Uuid::new_v4()),
    );
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer)?;
    Ok(ServerIdentity {
        ca_pem: ca_cert.pem(),
        chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    })
}
