//! The watchers' projections (issue 21) against a test bed API server: objects shaped as a
//! real API server serves them (the unit tests' `src/watch/projection/testdata`, with
//! managedFields, annotations, containers and status) are listed and watched into the
//! registry view Istio would build from them.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectList;
use meshfed_federation::registry::names::{MIN_TTL, Servers};
use meshfed_federation::registry::{GatewayView, Registry, Snapshot};
use meshfed_federation::{Controllers, FederationConfig};
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

const TESTDATA: &str = "src/watch/projection/testdata";

fn items<K: Clone + DeserializeOwned>(file: &str) -> Vec<K> {
    let path = format!("{}/{TESTDATA}/{file}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<ObjectList<K>>(&body).unwrap().items
}

/// Creates every object of a list body in the namespace it names.
async fn create_namespaced<K>(c: &kube::Client, file: &str)
where
    K: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    for o in items::<K>(file) {
        let ns = o.meta().namespace.clone().unwrap();
        let api: Api<K> = Api::namespaced(c.clone(), &ns);
        api.create(&PostParams::default(), &o).await.unwrap();
    }
}

async fn create_cluster_scoped<K>(c: &kube::Client, file: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    for o in items::<K>(file) {
        Api::<K>::all(c.clone())
            .create(&PostParams::default(), &o)
            .await
            .unwrap();
    }
}

/// Waits (bounded) until the registry's view satisfies `ok`.
async fn until(registry: &Registry, what: &str, ok: impl Fn(&Snapshot) -> bool) {
    let mut changes = registry.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if registry.ready() && ok(&registry.snapshot()) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out waiting for {what}: {:?}\n{:?}",
        registry.clusters(),
        registry.snapshot()
    );
}

fn endpoints(s: &Snapshot, hostname: &str) -> Vec<(String, bool, String, String)> {
    s.services
        .iter()
        .filter(|v| v.hostname == hostname)
        .flat_map(|v| &v.endpoints)
        .map(|e| {
            let hostname = e.hostname.clone().unwrap_or_default();
            (e.address.clone(), e.ready, e.locality.to_string(), hostname)
        })
        .collect()
}

fn gateway(network: &str, address: &str, port: u16) -> GatewayView {
    GatewayView {
        network: network.into(),
        cluster: "cluster2".into(),
        address: address.into(),
        port,
    }
}

/// Istio's kube registry, read through the projections: endpoints with Pod and node
/// localities (GA and legacy topology labels), not-ready ones kept as unhealthy,
/// terminating ones and FQDN slices left out, a StatefulSet's hostnames; gateways on a
/// LoadBalancer ingress IP, on externalIPs at `networking.istio.io/gatewayPort`, and at a
/// NodePort Service's node port on the ExternalIPs of the nodes its
/// `traffic.istio.io/nodeSelector` annotation selects; a changed annotation, arriving as a
/// watch event, moves the NodePort gateway to the newly selected node.
#[tokio::test]
async fn api_server_objects_are_watched_through_the_projections() {
    let server = ApiServer::start(ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "c2"))
        .await
        .unwrap();
    let c = meshfed_federation::kubeconfig::client(&server.kubeconfig(), false)
        .await
        .unwrap();
    create_cluster_scoped::<Namespace>(&c, "namespaces.json").await;
    create_cluster_scoped::<Node>(&c, "nodes.json").await;
    create_namespaced::<Service>(&c, "services.json").await;
    create_namespaced::<Pod>(&c, "pods.json").await;
    create_namespaced::<EndpointSlice>(&c, "endpointslices.json").await;

    let cfg = FederationConfig::new("cluster2", "network-default");
    // No DNS servers: the LoadBalancer hostname stays unresolved without a lookup.
    let dns = Servers::Udp(Vec::new());
    let registry = Arc::new(Registry::with_gateway_dns(cfg.registry(), dns, MIN_TTL));
    let fed = Controllers::start_on(registry, c.clone(), &cfg);
    let registry = &fed.registry;
    until(registry, "the gateways", |s| s.gateways.len() == 3).await;
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.gateways,
        [
            gateway("network2", "198.51.100.7", 15443),
            gateway("network3", "203.0.113.10", 30443),
            gateway("network4", "192.0.2.50", 16443),
        ]
    );
    let (east, west) = ("us-east1/us-east1-b/rack1", "us-west1/us-west1-a");
    let ep = |address: &str, ready, locality: &str, hostname: &str| {
        (address.into(), ready, locality.into(), hostname.into())
    };
    assert_eq!(
        endpoints(&snapshot, "helloworld.sample.svc.cluster.local"),
        [
            ep("10.244.1.5", true, east, ""),
            ep("10.244.2.6", false, west, ""),
            ep("fd00:10:244:1::5", true, east, ""),
        ]
    );
    assert_eq!(
        endpoints(&snapshot, "mysql-headless.sample.svc.cluster.local"),
        [
            ep("10.244.3.10", false, "us-east1/us-east1-c", "mysql-1"),
            ep("10.244.3.9", true, "eu-west1/eu-west1-b/rack9", "mysql-0"),
        ]
    );
    assert!(endpoints(&snapshot, "external-db.sample.svc.cluster.local").is_empty());

    let selector = json!({"metadata": {"annotations": {
        "traffic.istio.io/nodeSelector": "{\"kubernetes.io/hostname\": \"node-b\"}"
    }}});
    Api::<Service>::namespaced(c.clone(), "istio-system")
        .patch(
            "istio-nodeport-gateway",
            &PatchParams::default(),
            &Patch::Merge(&selector),
        )
        .await
        .unwrap();
    let moved = gateway("network3", "203.0.113.11", 30443);
    until(registry, "the NodePort gateway on node-b", |s| {
        s.gateways.contains(&moved) && s.gateways.len() == 3
    })
    .await;
}
