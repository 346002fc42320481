//! The federation's settings and their defaults, in one place: the library's
//! [`FederationConfig::new`] and the CLI's flags both take their defaults from here.

pub use crate::ca::{CaConfig, DEFAULT_MAX_WORKLOAD_CERT_TTL, DEFAULT_TOKEN_AUDIENCE};
use crate::registry::RegistryConfig;
pub use crate::xds::pusher::DEFAULT_PUSH_DEBOUNCE;
use crate::xds::{Debounce, Limits};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

pub use meshfed_model::{DEFAULT_DOMAIN, DEFAULT_SYSTEM_NAMESPACE};
/// Where plaintext ADS usually listens (istiod's 15010); off unless asked for.
pub const PLAINTEXT_XDS_PORT: u16 = 15010;
/// The CA (and authenticated xDS) over TLS, as istiod's 15012.
pub const DEFAULT_SECURE_LISTEN: SocketAddr = addr(Ipv4Addr::UNSPECIFIED, 15012);
/// `/healthz/ready`, `/metrics` and `/debug/*`: local only, as istiod's 15014 should be.
pub const DEFAULT_ADMIN: SocketAddr = addr(Ipv4Addr::LOCALHOST, 15014);
/// A cluster still syncing after this stops holding readiness back.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

const fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[derive(Debug, Clone)]
pub struct FederationConfig {
    pub cluster_id: String,
    /// The local cluster's network, used where neither pods nor the system namespace say.
    pub network: String,
    pub system_namespace: String,
    pub domain: String,
    pub stale_endpoint_ttl: Option<Duration>,
    pub sync_timeout: Duration,
    /// Plaintext ADS for anyone who can connect: opt-in (tests, flat trusted networks).
    pub xds_listen: Option<SocketAddr>,
    /// TLS: the CA's `CreateCertificate` and authenticated ADS (served only when the CA
    /// has material).
    pub secure_listen: SocketAddr,
    pub ca: CaConfig,
    /// ServiceAccounts that may subscribe as routers; empty means the east-west gateway's
    /// (`<system namespace>/meshfed-gateway`).
    pub gateway_identities: Vec<crate::xds::auth::Account>,
    pub admin: SocketAddr,
    /// A public port serving `/healthz/ready` only (off unless given).
    pub status: Option<SocketAddr>,
    pub debounce: Debounce,
    pub xds_limits: Limits,
    /// Accept remote kubeconfigs that run commands, read local files or skip TLS checks.
    pub allow_insecure_kubeconfig_options: bool,
}

impl FederationConfig {
    pub fn new(cluster_id: &str, network: &str) -> Self {
        FederationConfig {
            cluster_id: cluster_id.to_string(),
            network: network.to_string(),
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.into(),
            domain: DEFAULT_DOMAIN.into(),
            stale_endpoint_ttl: None,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            xds_listen: None,
            secure_listen: DEFAULT_SECURE_LISTEN,
            ca: CaConfig::default(),
            gateway_identities: Vec::new(),
            admin: DEFAULT_ADMIN,
            status: None,
            debounce: Debounce::after(DEFAULT_PUSH_DEBOUNCE),
            xds_limits: Limits::default(),
            allow_insecure_kubeconfig_options: false,
        }
    }

    /// The router identities in force (the default when none were given).
    pub fn gateways(&self) -> Vec<crate::xds::auth::Account> {
        if !self.gateway_identities.is_empty() {
            return self.gateway_identities.clone();
        }
        vec![crate::xds::auth::Account {
            namespace: self.system_namespace.clone(),
            name: crate::xds::auth::DEFAULT_GATEWAY_ACCOUNT.into(),
        }]
    }

    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            system_namespace: self.system_namespace.clone(),
            domain: self.domain.clone(),
            trust_domain: self.ca.trust_domain.clone(),
            stale_endpoint_ttl: self.stale_endpoint_ttl,
            sync_timeout: self.sync_timeout,
        }
    }
}
