//! The federation's certificate authority, istiod's `IstioCertificateService` on the secure
//! port: it signs workload CSRs with the cluster's `cacerts` intermediate after
//! authenticating the caller (a ServiceAccount token checked by TokenReview, or a workload
//! certificate over mTLS), for exactly the caller's SPIFFE identity.

pub mod authn;
pub mod cacerts;
pub mod review;
pub mod service;
pub mod serving;

use authn::Authenticator;
use meshfed_certs::CertificateAuthority;
use review::{CachedReviewer, KubeReviewer};
use serving::Serving;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Istio's default audience for tokens sent to its CA.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "istio-ca";
/// Istio's default (and maximum) workload certificate life.
pub const DEFAULT_MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CA's settings (part of [`crate::FederationConfig`]).
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// A `cacerts` directory; without it, the system namespace's `cacerts` Secret.
    pub cacerts: Option<PathBuf>,
    pub trust_domain: String,
    pub token_audience: String,
    pub max_workload_cert_ttl: Duration,
    /// More names (or IP addresses) for the secure port's certificate, as istiod's
    /// `ISTIOD_CUSTOM_HOST`: for clients that reach it by another name or by address.
    pub extra_hosts: Vec<String>,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            cacerts: None,
            trust_domain: meshfed_model::DEFAULT_DOMAIN.into(),
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            max_workload_cert_ttl: DEFAULT_MAX_WORKLOAD_CERT_TTL,
            extra_hosts: Vec::new(),
        }
    }
}

/// A loaded CA: what the secure port needs to serve.
pub struct Ca {
    pub authority: Arc<CertificateAuthority>,
    pub origin: cacerts::Origin,
    pub serving: Arc<Serving>,
    pub authn: Arc<Authenticator>,
    max_ttl: Duration,
}

impl Ca {
    /// Loads the signing material and issues the secure port's certificate; `None` when
    /// there is no material (the CA is off).
    pub async fn load(
        config: &CaConfig,
        client: &kube::Client,
        system_namespace: &str,
    ) -> Result<Option<Ca>, Error> {
        let Some((authority, origin)) =
            cacerts::load(config.cacerts.as_deref(), client, system_namespace).await?
        else {
            return Ok(None);
        };
        let reviewer = CachedReviewer::new(Box::new(KubeReviewer(client.clone())));
        let authn = Authenticator::new(reviewer, &config.token_audience, &config.trust_domain);
        Ok(Some(Ca::new(
            authority,
            origin,
            authn,
            config,
            system_namespace,
        )?))
    }

    pub fn new(
        authority: CertificateAuthority,
        origin: cacerts::Origin,
        authn: Authenticator,
        config: &CaConfig,
        system_namespace: &str,
    ) -> Result<Ca, Error> {
        let mut names = serving::names(system_namespace);
        names.extend(config.extra_hosts.iter().cloned());
        let serving = Serving::issue(&authority, names)?;
        Ok(Ca {
            authority: Arc::new(authority),
            origin,
            serving,
            authn: Arc::new(authn),
            max_ttl: config.max_workload_cert_ttl,
        })
    }

    /// The TLS acceptor of the secure port.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        let config = self.serving.server_config(&self.authority)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    pub fn service(&self) -> service::CaService {
        service::CaService::new(self.authority.clone(), self.authn.clone(), self.max_ttl)
    }

    /// Renews the serving certificate for as long as the returned task runs.
    pub fn renewal(&self) -> impl Future<Output = ()> + use<> {
        self.serving.clone().renew_forever(self.authority.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cacerts(#[from] cacerts::Error),
    #[error(transparent)]
    Serving(#[from] serving::Error),
}

/// A fresh root and an intermediate for cluster `c1` under it, for the CA modules' tests.
#[cfg(test)]
pub(crate) fn test_intermediate() -> CertificateAuthority {
    use meshfed_certs::{IntermediateOptions, KeyAlgorithm, RootOptions};
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "t".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    root.issue_intermediate(&IntermediateOptions {
        cluster: "c1".into(),
        days: 10,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}
