//! A client that names no cluster and no network (a DNS proxy or sidecar started without
//! `CLUSTER_ID`/`NETWORK`) is served as one of the federation's own cluster, on the network
//! the registry knows for it, over the real ADS server.

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshfed_federation::FederationConfig;
use meshfed_federation::registry::{
    Kind, PodInfo, Registry, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo,
};
use meshfed_federation::xds::{self, generate::*};
use meshfed_model::labels;
use meshfed_proto::ads::Identity;
use meshfed_proto::nds::NameTable;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const T: Duration = Duration::from_secs(10);
const HOST: &str = "a.ns.svc.cluster.local";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Service `a` in namespace `ns` with one mesh workload at `ip`, ClusterIP `cluster_ip`;
/// and this cluster's east-west gateway for `network` at `gateway`.
fn fill(registry: &Registry, id: &str, generation: u64, seen: [&str; 4]) {
    let [cluster_ip, ip, network, gateway] = seen;
    registry.update(id, generation, |d| {
        let port = |name: &str, port| ServicePort {
            name: name.into(),
            port,
            ..Default::default()
        };
        d.services.insert(
            ("ns".into(), "a".into()),
            ServiceInfo {
                ports: vec![port("http", 80)],
                cluster_ip: Some(cluster_ip.into()),
                ..Default::default()
            },
        );
        d.slices.insert(
            ("ns".into(), "a-slice".into()),
            SliceInfo {
                service: "a".into(),
                ports: vec![("http".into(), 8080)],
                endpoints: vec![SliceEndpoint {
                    addresses: vec![ip.into()],
                    ready: true,
                    pod: Some(("ns".into(), "a-pod".into())),
                    ..Default::default()
                }],
            },
        );
        d.pods.insert(
            ("ns".into(), "a-pod".into()),
            PodInfo {
                labels: map(&[(labels::TLS_MODE, labels::TLS_MODE_ISTIO)]).into(),
                service_account: "a".into(),
                ..Default::default()
            },
        );
        d.services.insert(
            ("istio-system".into(), "eastwest".into()),
            ServiceInfo {
                ports: vec![port("tls", 15443)],
                labels: map(&[(labels::NETWORK, network)]),
                cluster_ip: Some("10.96.9.9".into()),
                external_addresses: vec![gateway.into()],
                ..Default::default()
            },
        );
    });
    registry.listed(id, generation, Kind::Service);
}

/// cluster1 (local; configured network `configured`, but its system namespace is labelled
/// network1, which wins) and cluster2 on network2, each with service `a` and a gateway.
async fn serve() -> String {
    let registry = Arc::new(Registry::new(
        FederationConfig::new("cluster1", "network1").registry(),
    ));
    let g1 = registry.add_generation("cluster1", "", Some("configured".into()), 1);
    registry.update("cluster1", g1, |d| {
        let label = map(&[(labels::NETWORK, "network1")]);
        d.namespaces.insert("istio-system".into(), label);
    });
    fill(
        &registry,
        "cluster1",
        g1,
        ["10.96.0.10", "10.0.1.1", "network1", "192.0.2.1"],
    );
    let g2 = registry.add_generation("cluster2", "remote-secret", Some("network2".into()), 1);
    fill(
        &registry,
        "cluster2",
        g2,
        ["10.97.0.10", "10.0.2.1", "network2", "192.0.2.2"],
    );
    registry.mark_secrets_listed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(xds::serve(listener, registry, xds::Debounce::default()));
    url
}

/// One state-of-the-world request of `type_url` for `names` from `who`: the answer.
async fn ask(url: &str, who: &Identity, type_url: &str, names: &[&str]) -> DiscoveryResponse {
    let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: Some(who.node()),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(T, responses.message())
        .await
        .expect("an answer")
        .unwrap()
        .expect("a response")
}

fn sidecar(cluster_id: &str, network: &str) -> Identity {
    Identity {
        kind: "sidecar".into(),
        cluster_id: cluster_id.into(),
        network: network.into(),
        ip: "10.0.1.50".into(),
        pod: "client".into(),
        namespace: "ns".into(),
        ..Default::default()
    }
}

async fn name_table(url: &str, who: &Identity) -> Vec<String> {
    let resp = ask(url, who, NAME_TABLE_TYPE, &[]).await;
    let table = NameTable::decode(resp.resources[0].value.as_slice()).unwrap();
    table.table[HOST].ips.clone()
}

async fn endpoints(url: &str, who: &Identity) -> Vec<String> {
    let resp = ask(
        url,
        who,
        ENDPOINT_TYPE,
        &["outbound|80||a.ns.svc.cluster.local"],
    )
    .await;
    let cla = ClusterLoadAssignment::decode(resp.resources[0].value.as_slice()).unwrap();
    let mut out: Vec<String> = format!("{:?}", cla.endpoints)
        .split("address: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Istio: `CLUSTER_ID` defaults to `Kubernetes` in both the agent and istiod, so a proxy that
/// sends none is in istiod's own cluster and its name table answers that cluster's
/// ClusterIPs (`GetAddressForProxy`), not auto-allocated VIPs. A client naming cluster2 gets
/// cluster2's ClusterIP.
#[tokio::test]
async fn a_client_without_cluster_id_gets_its_own_clusters_cluster_ips_in_nds() {
    let url = serve().await;
    assert_eq!(name_table(&url, &sidecar("", "")).await, ["10.96.0.10"]);
    assert_eq!(
        name_table(&url, &sidecar("cluster2", "")).await,
        ["10.97.0.10"]
    );
}

/// Istio: a sidecar's network is its cluster's (the system namespace's
/// `topology.istio.io/network` label, else the configured one), so one that sends no
/// `NETWORK` reaches its own network's endpoints directly and only the other network's
/// through that network's gateway. A client naming cluster2 is on network2.
#[tokio::test]
async fn a_client_without_network_reaches_its_clusters_network_directly_in_eds() {
    let url = serve().await;
    assert_eq!(
        endpoints(&url, &sidecar("", "")).await,
        ["10.0.1.1", "192.0.2.2"]
    );
    assert_eq!(
        endpoints(&url, &sidecar("cluster2", "")).await,
        ["10.0.2.1", "192.0.2.1"]
    );
}
