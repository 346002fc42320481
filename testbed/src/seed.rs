//! The seed scenario's objects in a test bed cluster: the system namespace with its network,
//! a node with its region and zone, helloworld's Service, Pod and EndpointSlice, remote
//! secrets and the east-west gateway's Service. There is no kubelet: addresses and readiness
//! are what the test says they are.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshfed_model::labels::{TLS_MODE, TLS_MODE_ISTIO};
use serde_json::{Value, json};

/// One cluster of the seed scenario: its name, where it sits in the mesh (network, region,
/// zone) and the helloworld version it runs. Made once per cluster and passed whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    /// From 1, in the order the clusters were made; the test bed derives the cluster's
    /// service CIDR from it.
    pub index: usize,
    pub network: String,
    pub region: String,
    pub zone: String,
    pub version: String,
}

impl ClusterSpec {
    /// The test bed's cluster `index`: cluster<i> in network<i>, region<i>/zone<i>, running
    /// helloworld v<i>.
    pub fn numbered(index: usize) -> ClusterSpec {
        ClusterSpec {
            name: format!("cluster{index}"),
            index,
            network: format!("network{index}"),
            region: format!("region{index}"),
            zone: format!("zone{index}"),
            version: format!("v{index}"),
        }
    }

    /// The cluster's one node, which carries its region and zone.
    pub fn node(&self) -> String {
        format!("{}-node", self.name)
    }

    /// The name of helloworld's pod (and of the test bed's per-version Service) here.
    pub fn helloworld(&self) -> String {
        format!("helloworld-{}", self.version)
    }
}

/// One helloworld instance in one cluster.
#[derive(Debug, Clone)]
pub struct Workload {
    pub cluster: ClusterSpec,
    pub ip: String,
    /// The target port the endpoint listens on.
    pub port: u16,
}

impl Workload {
    fn slice(&self, ready: bool) -> Value {
        let (node, pod) = (self.cluster.node(), self.cluster.helloworld());
        json!({"metadata": {"name": pod, "labels": {"kubernetes.io/service-name": "helloworld"}},
            "addressType": "IPv4", "ports": [{"name": "grpc", "port": self.port}],
            "endpoints": [{"addresses": [self.ip], "conditions": {"ready": ready}, "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": "sample", "name": pod}}]})
    }
}

pub(crate) async fn create<K>(api: Api<K>, v: Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

/// Namespaces `istio-system` (labelled with the network) and `sample`, the node, and
/// helloworld (Service port 5000 named grpc, Pod with a sidecar's `tlsMode: istio` label, ready
/// EndpointSlice). The label makes it a mesh workload: the only kind a gateway routes to.
pub async fn helloworld(c: &kube::Client, w: &Workload) -> Result<(), kube::Error> {
    let cluster = &w.cluster;
    let ns: Api<Namespace> = Api::all(c.clone());
    create(ns.clone(), json!({"metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": cluster.network}}})).await?;
    create(ns, json!({"metadata": {"name": "sample"}})).await?;
    let labels = json!({"topology.kubernetes.io/region": cluster.region, "topology.kubernetes.io/zone": cluster.zone});
    create(
        Api::<Node>::all(c.clone()),
        json!({"metadata": {"name": cluster.node(), "labels": labels}}),
    )
    .await?;
    let sample = |c: &kube::Client| c.clone();
    create(
        Api::<Service>::namespaced(sample(c), "sample"),
        json!({"metadata": {"name": "helloworld"},
        "spec": {"ports": [{"name": "grpc", "port": 5000}], "selector": {"app": "helloworld"}}}),
    )
    .await?;
    create(Api::<Pod>::namespaced(sample(c), "sample"), json!({"metadata": {"name": cluster.helloworld(), "labels": {"app": "helloworld", "version": cluster.version, TLS_MODE: TLS_MODE_ISTIO}},
        "spec": {"serviceAccountName": "helloworld", "nodeName": cluster.node(), "containers": [{"name": "helloworld", "image": "helloworld"}]},
        "status": {"podIP": w.ip}})).await?;
    create(
        Api::<EndpointSlice>::namespaced(sample(c), "sample"),
        w.slice(true),
    )
    .await
}

/// Flips the endpoint's `ready` condition, as the endpoint controller would.
pub async fn set_ready(c: &kube::Client, w: &Workload, ready: bool) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(c.clone(), "sample");
    api.patch(
        &w.cluster.helloworld(),
        &PatchParams::default(),
        &Patch::Merge(&w.slice(ready)),
    )
    .await
    .map(|_| ())
}

/// A remote secret in Istio's layout: key = cluster id, value = kubeconfig.
pub async fn remote_secret(
    c: &kube::Client,
    cluster: &str,
    kubeconfig: &str,
) -> Result<(), kube::Error> {
    create(Api::<Secret>::namespaced(c.clone(), "istio-system"), json!({
        "metadata": {"name": format!("istio-remote-secret-{cluster}"), "labels": {"istio/multiCluster": "true"},
            "annotations": {"networking.istio.io/cluster": cluster}},
        "stringData": {cluster: kubeconfig}})).await
}

/// The east-west gateway's Service: network label, port 15443, a LoadBalancer address.
pub async fn gateway_service(c: &kube::Client, network: &str, ip: &str) -> Result<(), kube::Error> {
    create(Api::<Service>::namespaced(c.clone(), "istio-system"), json!({
        "metadata": {"name": "istio-eastwestgateway", "labels": {"topology.istio.io/network": network}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})).await
}

/// A test bed API server for cluster `name` on loopback and a client of it.
pub async fn cluster(name: &str) -> anyhow::Result<(crate::ApiServer, kube::Client)> {
    use crate::OneLine;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = crate::ApiServer::start(crate::ApiServerConfig::new(addr, name))
        .await
        .one_line()?;
    let client = crate::kubeconfig::client(&server.kubeconfig()).await?;
    Ok((server, client))
}
