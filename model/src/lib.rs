//! The vocabulary meshfed's components share, in one place: the Istio names that travel
//! between clusters (SNI `outbound_.port_.subset_.fqdn`, cluster `outbound|port|subset|fqdn`),
//! localities and endpoints.

pub mod admin;
pub mod labels;
mod locality;
mod sni;
pub mod telemetry;

pub use locality::Locality;
pub use sni::{ClusterName, NameError};

/// The cluster DNS domain services live under (`svc.ns.svc.cluster.local`).
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// Istio's control-plane namespace: remote secrets, `cacerts`, the network label.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "istio-system";

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One backend address of a service port, with what routing decisions need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub locality: Locality,
}

/// True when every label of `selector` is on `labels` with the same value (a subset's rule).
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
