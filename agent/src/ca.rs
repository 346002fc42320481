//! CA mode, as Istio's pilot-agent does it: the agent makes its private key in the pod, sends
//! a CSR for its SPIFFE id to the federation's CA (`IstioCertificateService/CreateCertificate`,
//! TLS, the pod's ServiceAccount token as `authorization: Bearer`), checks the answer, serves
//! it over SDS (and into `--output-dir` for proxyless gRPC), and renews at half-life.

pub mod check;
pub mod client;
pub mod identity;
pub mod renew;
pub mod schedule;

use std::path::PathBuf;
use std::time::Duration;

pub use client::CaClient;
pub use renew::Renewer;
pub use schedule::Backoff;

/// Where Istio mounts the root that istiod's serving certificate chains to.
pub const DEFAULT_CA_ROOT: &str = "/var/run/secrets/istio/root-cert.pem";
/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// One request to the CA (connect, TLS, answer) must finish within this.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the CA and what to ask it for.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The CA's TLS gRPC port, `HOST:PORT` (`[v6]:PORT` for an IPv6 address).
    pub address: String,
    /// The pod's ServiceAccount token (projected: re-read for every request).
    pub token_file: PathBuf,
    /// PEM root(s) the CA's serving certificate and the issued chains must lead to.
    pub root_file: PathBuf,
    /// The name checked in the CA's certificate; default the host of `address` (an IP
    /// address is checked as an IP SAN).
    pub server_name: Option<String>,
    /// Asked for as `validity_duration`; the CA may shorten it.
    pub cert_ttl: Duration,
    /// Also write `cert-chain.pem`, `key.pem` and `root-cert.pem` here (Istio's
    /// `OUTPUT_CERTS`), for proxyless gRPC's file_watcher certificate provider.
    pub output_dir: Option<PathBuf>,
    pub trust_domain: String,
    /// The identity's namespace and service account; when unset, read from the token.
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    /// Retry delays while the CA is unreachable or refuses.
    pub backoff: Backoff,
    pub request_timeout: Duration,
}

impl CaConfig {
    /// Istio's defaults for everything but the address and token.
    pub fn new(address: impl Into<String>, token_file: impl Into<PathBuf>) -> CaConfig {
        CaConfig {
            address: address.into(),
            token_file: token_file.into(),
            root_file: PathBuf::from(DEFAULT_CA_ROOT),
            server_name: None,
            cert_ttl: DEFAULT_CERT_TTL,
            output_dir: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            namespace: None,
            service_account: None,
            backoff: Backoff::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What stops a CA-mode agent from starting: configuration, not the CA being away.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--ca-address {0:?}: expected HOST:PORT")]
    Address(String),
    #[error("--ca-server-name {0:?}: not a DNS name or IP address")]
    ServerName(String),
    #[error("{}: {reason}", path.display())]
    Roots { path: PathBuf, reason: String },
    #[error("{}: {error}", path.display())]
    Token {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Identity(String),
    #[error(transparent)]
    Spiffe(#[from] meshfed_certs::Error),
    /// Anything else the channel to the CA refuses at start.
    #[error(transparent)]
    Channel(meshfed_proto::channel::Error),
}
