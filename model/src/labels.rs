//! The Kubernetes labels and annotations meshfed reads and writes, as Istio spells them.
//! Every crate that names one takes it from here, so a typo cannot split the mesh.

/// On the system namespace, a pod or a gateway Service: the network it is on.
pub const NETWORK: &str = "topology.istio.io/network";
/// On a gateway Service: the port cross-network traffic enters on, when not 15443.
pub const GATEWAY_PORT: &str = "networking.istio.io/gatewayPort";
/// On a pod: `istio` when it has a sidecar (or agent) and takes mTLS.
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
/// The value of [`TLS_MODE`] (and of the EDS metadata `tlsMode`) for mesh workloads.
pub const TLS_MODE_ISTIO: &str = "istio";
/// On a Node: its region, zone and (Istio's) subzone.
pub const REGION: &str = "topology.kubernetes.io/region";
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const SUBZONE: &str = "topology.istio.io/subzone";
/// The node labels Kubernetes used before the `topology.kubernetes.io` ones (still read).
pub const LEGACY_REGION: &str = "failure-domain.beta.kubernetes.io/region";
pub const LEGACY_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
/// On a pod: its locality, overriding its node's (`region/zone/subzone`, or with dots).
pub const LOCALITY: &str = "topology.istio.io/locality";
/// The older spelling of [`LOCALITY`] (`region.zone.subzone`), read when that is missing.
pub const LEGACY_LOCALITY: &str = "istio-locality";
/// On a NodePort gateway Service: which nodes' addresses it is reached on (a JSON label map).
pub const NODE_SELECTOR: &str = "traffic.istio.io/nodeSelector";
/// The cluster label `failoverPriority` may name (set by the registry, never read from pods).
pub const CLUSTER: &str = "topology.istio.io/cluster";
/// On a Secret: it is a remote secret (value `true`).
pub const MULTICLUSTER: &str = "istio/multiCluster";
/// On a remote secret: the cluster id it grants access to.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";

/// The east-west gateway's port when its Service says nothing else (Istio's 15443).
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;
