//! The registry's plain data: what a watcher keeps of each cluster's objects, the status of a
//! cluster, and the merged view (services, endpoints, gateways) the xDS server builds from.

use meshfed_model::Locality;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A label map shared by every object and endpoint that carries the same labels (a
/// Deployment's pods, and each of their endpoints): see [`super::intern`].
pub type Labels = Arc<BTreeMap<String, String>>;

/// The kinds watched in every cluster; a cluster is synced once each has listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
    Node,
    DestinationRule,
    VirtualService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Syncing,
    Synced,
    Timeout,
    Unreachable,
    Error,
}

impl Status {
    /// As `/debug/clusterz` and `/metrics` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Syncing => "syncing",
            Status::Synced => "synced",
            Status::Timeout => "timeout",
            Status::Unreachable => "unreachable",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP` (Kubernetes' default is TCP; empty reads as TCP).
    pub protocol: String,
    pub app_protocol: Option<String>,
    /// Set for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceInfo {
    pub ports: Vec<ServicePort>,
    pub labels: BTreeMap<String, String>,
    /// `None` (the string) for a headless Service, as Kubernetes writes it.
    pub cluster_ip: Option<String>,
    /// LoadBalancer ingress addresses, then externalIPs.
    pub external_addresses: Vec<String>,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName` (empty reads as ClusterIP).
    pub service_type: String,
    /// The target name of an ExternalName Service.
    pub external_name: Option<String>,
    /// The `traffic.istio.io/nodeSelector` annotation, when present (an unreadable one selects
    /// every node, as in Istio): a NodePort gateway is reached on the selected nodes.
    pub node_selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub ready: bool,
    /// `conditions.terminating`: the pod is shutting down (Istio never sends these).
    pub terminating: bool,
    pub pod: Option<(String, String)>,
    pub node: Option<String>,
    /// The endpoint's `hostname` (a StatefulSet pod's, under a headless Service).
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceInfo {
    pub service: String,
    /// Port name -> target port number.
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodInfo {
    pub labels: Labels,
    pub service_account: Arc<str>,
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    /// From the topology labels (the legacy `failure-domain.beta.kubernetes.io` ones when the
    /// GA ones are missing).
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
    /// The node's `ExternalIP` addresses: where a NodePort gateway is reached (Istio uses only
    /// these).
    pub external_ips: Vec<String>,
}

/// Everything one connection to one cluster's API server has seen.
#[derive(Debug, Default)]
pub struct ClusterData {
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    pub services: HashMap<(String, String), ServiceInfo>,
    pub slices: HashMap<(String, String), SliceInfo>,
    pub pods: HashMap<(String, String), PodInfo>,
    pub nodes: HashMap<String, NodeInfo>,
    pub destination_rules: HashMap<(String, String), serde_json::Value>,
    /// Unparsed, as served (with `metadata.creationTimestamp`, which orders them); the xDS
    /// layer parses them on each push.
    pub virtual_services: HashMap<(String, String), serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub id: String,
    pub secret: String,
    /// Bumped on every new connection (e.g. rotated credentials).
    pub generation: u64,
    pub status: Status,
    pub error: Option<String>,
    pub last_sync_age_s: Option<f64>,
    pub services: usize,
    pub endpoints: usize,
    /// Services labelled as network gateways that are not used, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_gateways: Vec<DroppedGateway>,
}

/// A Service labelled with a network that gives no usable gateway address (or one of its
/// hostnames that does not resolve).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DroppedGateway {
    pub cluster: String,
    /// `namespace/name` of the Service.
    pub service: String,
    pub network: String,
    /// What kind of problem, as the `reason` label of `meshfed_registry_dropped_gateways`.
    pub kind: DropKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// It exposes neither 15443 nor its `networking.istio.io/gatewayPort`.
    NoGatewayPort,
    /// No LoadBalancer address or externalIP, and no node to reach a NodePort on.
    NoAddress,
    /// A LoadBalancer hostname that has not resolved (yet, or at all).
    Unresolved,
}

impl DropKind {
    pub const ALL: [DropKind; 3] = [
        DropKind::NoGatewayPort,
        DropKind::NoAddress,
        DropKind::Unresolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::NoGatewayPort => "no_gateway_port",
            DropKind::NoAddress => "no_address",
            DropKind::Unresolved => "unresolved",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Sorted by hostname. A service that did not change between two snapshots is the same
    /// `Arc` in both, so comparing them (and what is built from them) is cheap.
    pub services: Vec<Arc<ServiceView>>,
    pub gateways: Vec<GatewayView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceView {
    pub hostname: String,
    pub namespace: String,
    pub ports: Vec<PortView>,
    pub endpoints: Vec<EndpointView>,
    /// The ClusterIP in each cluster that has the Service (cluster id -> address).
    pub cluster_ips: BTreeMap<String, String>,
    /// The clusters where the Service is headless (`clusterIP: None`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headless_in: Vec<String>,
    /// The ExternalName target, where some cluster defines the Service as ExternalName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub port: u16,
    /// `TCP` (also for empty), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// One endpoint of one service port. The strings many endpoints repeat are shared (`Arc`),
/// so a million endpoints cost little more than their addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointView {
    pub cluster: Arc<str>,
    pub network: Arc<str>,
    pub address: String,
    /// The target port; `service_port` says which service port it serves.
    pub port: u16,
    pub service_port: u16,
    pub locality: Arc<str>,
    pub labels: Labels,
    pub ready: bool,
    pub service_account: Arc<str>,
    /// The EndpointSlice's `hostname` for this endpoint (StatefulSet pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayView {
    pub network: String,
    pub cluster: String,
    pub address: String,
    pub port: u16,
}
