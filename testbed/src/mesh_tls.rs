//! Workload mTLS for the test bed's sidecar and helloworld: credentials that can be swapped
//! while running (the `cert-expire` fault), a client that checks the peer's SPIFFE identity
//! instead of a DNS name (as Envoy does with Istio's SAN matchers), and a server that
//! requires a client certificate chaining to the shared root.

use meshfed_certs::WorkloadCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use std::sync::{Arc, RwLock};
use x509_parser::error::X509Error;

/// Why credentials or a peer certificate are unusable. Each message names its cause itself
/// (no `source()`), so an anyhow chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate chain: {0}")]
    Chain(rustls::pki_types::pem::Error),
    #[error("private key: {0}")]
    Key(rustls::pki_types::pem::Error),
    #[error("root certificate: {0}")]
    RootPem(rustls::pki_types::pem::Error),
    #[error("root certificate: {0}")]
    Root(rustls::Error),
    /// No usable trust anchors for a verifier.
    #[error("{0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (protocol versions, certificate and key).
    #[error("{0}")]
    Config(rustls::Error),
    #[error("{0}")]
    Parse(x509_parser::nom::Err<X509Error>),
    #[error("{0}")]
    Extension(X509Error),
    #[error("no subjectAltName")]
    NoSubjectAltName,
    #[error("no SPIFFE URI SAN")]
    NoSpiffeId,
}

/// One workload's certificate chain, key and trust anchors.
#[derive(Debug)]
pub struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Material {
    pub fn from_workload(cert: &WorkloadCert) -> Result<Material, TlsError> {
        Material::from_pem(
            cert.chain_pem().as_bytes(),
            cert.key_pem.as_bytes(),
            cert.root_pem.as_bytes(),
        )
    }

    /// From PEM text: the chain (leaf first), its key, and the trust anchors.
    pub fn from_pem(chain: &[u8], key: &[u8], roots: &[u8]) -> Result<Material, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::Chain)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(TlsError::Key)?;
        let mut store = RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(roots) {
            store
                .add(root.map_err(TlsError::RootPem)?)
                .map_err(TlsError::Root)?;
        }
        Ok(Material {
            chain,
            key,
            roots: Arc::new(store),
        })
    }
}

/// A workload's current credentials; [`Credentials::replace`] swaps them for new connections.
#[derive(Debug, Clone)]
pub struct Credentials(Arc<RwLock<Arc<Material>>>);

impl Credentials {
    pub fn new(material: Material) -> Credentials {
        Credentials(Arc::new(RwLock::new(Arc::new(material))))
    }

    pub fn replace(&self, material: Material) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
    }

    fn current(&self) -> Arc<Material> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A client config presenting these credentials and accepting a server whose SPIFFE id
    /// is one of `allowed` (any id under the root when empty).
    pub fn client_config(&self, allowed: &[String]) -> Result<Arc<ClientConfig>, TlsError> {
        let m = self.current();
        let inner = WebPkiServerVerifier::builder_with_provider(m.roots.clone(), provider())
            .build()
            .map_err(TlsError::Verifier)?;
        let verifier = Arc::new(SpiffeVerifier {
            inner,
            allowed: allowed.to_vec(),
        });
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
            .map_err(TlsError::Config)?;
        Ok(Arc::new(config))
    }

    /// A server config presenting these credentials and requiring a client certificate that
    /// chains to the root.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let m = self.current();
        let verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider())
            .build()
            .map_err(TlsError::Verifier)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(m.chain.clone(), m.key.clone_key())
            .map_err(TlsError::Config)?;
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The peer as the other side sees it: its SPIFFE id and the subject of its issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub spiffe: String,
    pub issuer: String,
}

/// Reads the SPIFFE URI SAN and the issuer of a leaf certificate.
pub fn peer(leaf: &CertificateDer<'_>) -> Result<Peer, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(TlsError::Parse)?;
    let san = cert
        .subject_alternative_name()
        .map_err(TlsError::Extension)?
        .ok_or(TlsError::NoSubjectAltName)?;
    let spiffe = san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                Some(u.to_string())
            }
            _ => None,
        })
        .ok_or(TlsError::NoSpiffeId)?;
    Ok(Peer {
        spiffe,
        issuer: cert.issuer().to_string(),
    })
}

/// Istio peers have no DNS names: the chain is checked against the root as usual, then the
/// SPIFFE id against the identities CDS allows instead of the SNI.
#[derive(Debug)]
struct SpiffeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    allowed: Vec<String>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity) before the name, so a name mismatch alone
        // means the chain is good.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let id = peer(end_entity)
            .map_err(|e| rustls::Error::General(format!("peer identity: {e}")))?
            .spiffe;
        if self.allowed.is_empty() || self.allowed.contains(&id) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
