//! The server side of the TLS that [`crate::channel`] speaks: a rustls server configuration
//! with the ring provider and ALPN `h2` (gRPC needs HTTP/2), a serving chain and key from PEM,
//! and optionally client certificates required and checked against a root, as a mesh peer
//! checks another's.

use meshfed_certs::CertificateAuthority;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;

/// How long a serving certificate from [`serving_config`] is valid: longer than any test.
const SERVING_TTL: Duration = Duration::from_secs(86_400);

/// Why a server configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certs(#[from] meshfed_certs::Error),
    #[error("PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("{0}: holds no PEM certificate")]
    NoCertificate(&'static str),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A server configuration serving `chain_pem` (leaf first) with `key_pem`, offering ALPN `h2`.
/// With `client_roots_pem` every client must present a certificate chaining to one of those
/// roots; without, none is asked for.
pub fn server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
    client_roots_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain = certificates(chain_pem, "serving chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for root in certificates(pem, "client roots")? {
                roots.add(root)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration with a serving certificate `ca` issues for `names` (a name that
/// parses as an IP address is an IP SAN), no client certificates asked for: the
/// federation's secure port as its clients see it.
pub fn serving_config(
    ca: &CertificateAuthority,
    names: &[&str],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = ca.issue_server(&names, SERVING_TTL)?;
    server_config(cert.chain_pem().as_bytes(), cert.key_pem.as_bytes(), None)
}

/// Every certificate of `pem`; at least one.
fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(what));
    }
    Ok(certs)
}
