//! The secure port's own certificate, as istiod's: issued from the cluster's intermediate for
//! `meshfed-federation.<ns>.svc` and `istiod.<ns>.svc` (so Istio agents with
//! `CA_ADDR=istiod.istio-system.svc:15012` work unchanged), and renewed at half its life
//! without dropping a connection (the resolver hands each new handshake the current one).
//! Client certificates are asked for, not required: a workload renewing over mTLS presents
//! one that must chain to our root; everyone else authenticates with a token.

use meshfed_certs::CertificateAuthority;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The serving certificate's life; it is renewed at half of it.
pub const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("issuing the serving certificate: {0}")]
    Issue(#[from] meshfed_certs::Error),
    #[error("the serving certificate: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the serving certificate: {0}")]
    Pem(String),
    #[error("the client verifier: {0}")]
    Verifier(String),
}

/// The names the serving certificate carries for the system namespace `ns`.
pub fn names(ns: &str) -> Vec<String> {
    vec![
        format!("meshfed-federation.{ns}.svc"),
        format!("istiod.{ns}.svc"),
    ]
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
pub struct Serving {
    current: RwLock<Arc<CertifiedKey>>,
    names: Vec<String>,
    not_after: RwLock<time::OffsetDateTime>,
}

impl ResolvesServerCert for Serving {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Serving {
    pub fn issue(ca: &CertificateAuthority, names: Vec<String>) -> Result<Arc<Serving>, Error> {
        let (key, not_after) = certified(ca, &names)?;
        Ok(Arc::new(Serving {
            current: RwLock::new(key),
            names,
            not_after: RwLock::new(not_after),
        }))
    }

    /// Issues a new certificate and serves it from the next handshake on.
    pub fn renew(&self, ca: &CertificateAuthority) -> Result<(), Error> {
        let (key, not_after) = certified(ca, &self.names)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        *self.not_after.write().unwrap_or_else(|p| p.into_inner()) = not_after;
        crate::metrics::ca_serving_expiry(not_after.unix_timestamp());
        Ok(())
    }

    pub fn not_after(&self) -> time::OffsetDateTime {
        *self.not_after.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews at half of each certificate's remaining life, forever.
    pub async fn renew_forever(self: Arc<Self>, ca: Arc<CertificateAuthority>) {
        loop {
            let left = self.not_after() - time::OffsetDateTime::now_utc();
            let wait = Duration::try_from(left / 2).unwrap_or(Duration::from_secs(60));
            tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
            if let Err(e) = self.renew(&ca) {
                tracing::error!(error = %e, "renewing the secure port's certificate failed");
            }
        }
    }

    /// A server config: this certificate, h2, client certificates asked for and checked
    /// against `ca`'s root.
    pub fn server_config(
        self: &Arc<Self>,
        ca: &CertificateAuthority,
    ) -> Result<rustls::ServerConfig, Error> {
        let mut roots = RootCertStore::empty();
        for der in pem_certs(ca.root_pem())? {
            roots.add(der)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn certified(
    ca: &CertificateAuthority,
    names: &[String],
) -> Result<(Arc<CertifiedKey>, time::OffsetDateTime), Error> {
    let cert = ca.issue_server(names, SERVING_TTL)?;
    let chain = pem_certs(&cert.chain_pem())?;
    let key = PrivateKeyDer::try_from(pem_der(&cert.key_pem)?).map_err(|e| Error::Pem(e.into()))?;
    let signing = provider().key_provider.load_private_key(key)?;
    crate::metrics::ca_serving_expiry(cert.not_after.unix_timestamp());
    Ok((Arc::new(CertifiedKey::new(chain, signing)), cert.not_after))
}

/// Every certificate of a PEM text, as DER.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| {
            p.map(|p| CertificateDer::from(p.contents))
                .map_err(|e| Error::Pem(e.to_string()))
        })
        .collect()
}

fn pem_der(pem: &str) -> Result<Vec<u8>, Error> {
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| Error::Pem(e.to_string()))?;
    Ok(p.contents)
}
