//! The ADS protocol across a reconnect and for names that do not exist, over the real
//! server: what Envoy and gRPC clients do when their stream breaks.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshfed_federation::FederationConfig;
use meshfed_federation::registry::{
    Kind, Registry, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo,
};
use meshfed_federation::xds::{self, generate::*};
use meshfed_proto::ads::Identity;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const T: Duration = Duration::from_secs(10);
const A: &str = "outbound|80||a.ns.svc.cluster.local";
const NOPE: &str = "outbound|80||nope.ns.svc.cluster.local";

/// The xDS server over a synced local cluster with service `a` (one ready endpoint).
async fn serve() -> String {
    let registry = Arc::new(Registry::new(
        FederationConfig::new("cluster1", "network1").registry(),
    ));
    let g = registry.add_generation("cluster1", "", Some("network1".into()), 1);
    registry.update("cluster1", g, |d| {
        let port = ServicePort {
            name: "http".into(),
            port: 80,
            ..Default::default()
        };
        let svc = ServiceInfo {
            ports: vec![port],
            cluster_ip: Some("10.96.0.10".into()),
            ..Default::default()
        };
        d.services.insert(("ns".into(), "a".into()), svc);
        let endpoint = SliceEndpoint {
            addresses: vec!["10.0.1.1".into()],
            ready: true,
            ..Default::default()
        };
        let slice = SliceInfo {
            service: "a".into(),
            ports: vec![("http".into(), 8080)],
            endpoints: vec![endpoint],
        };
        d.slices.insert(("ns".into(), "a-slice".into()), slice);
    });
    registry.listed("cluster1", g, Kind::Service);
    registry.mark_secrets_listed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(xds::serve(listener, registry, xds::Debounce::default()));
    url
}

fn node() -> envoy_types::pb::envoy::config::core::v3::Node {
    Identity {
        kind: "sidecar".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        ip: "10.0.1.50".into(),
        pod: "client".into(),
        namespace: "ns".into(),
        ..Default::default()
    }
    .node()
}

async fn next<M>(stream: &mut Streaming<M>) -> Option<M> {
    tokio::time::timeout(T, stream.message())
        .await
        .expect("an answer within 10 s")
        .expect("the stream is fine")
}

/// A state-of-the-world stream whose first request is `first`.
async fn sotw(
    url: &str,
    first: DiscoveryRequest,
) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
    let mut client = AggregatedDiscoveryServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.unwrap();
    let stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

/// Istio (`ShouldRespond`: no watched resource on this connection is INIT/RECONNECT,
/// answered whatever the nonce): Envoy reconnecting sends its last version and the old
/// stream's nonce in the first request of the new stream. It is answered, at once.
#[tokio::test]
async fn a_reconnecting_sotw_client_is_answered_on_its_new_stream() {
    let url = serve().await;
    let request = |nonce: &str, version: &str| DiscoveryRequest {
        node: Some(node()),
        type_url: ENDPOINT_TYPE.into(),
        resource_names: vec![A.into()],
        response_nonce: nonce.into(),
        version_info: version.into(),
        ..Default::default()
    };
    let (tx, mut old) = sotw(&url, request("", "")).await;
    let first = next(&mut old).await.expect("a response");
    drop((tx, old));
    let (_tx, mut new) = sotw(&url, request(&first.nonce, &first.version_info)).await;
    let again = next(&mut new).await.expect("the reconnect is answered");
    assert_eq!(again.resources, first.resources);
}

/// Istio (delta.go: watched names not generated go into `removed_resources`) and the xDS
/// protocol's "knowing when a requested resource does not exist" for the incremental
/// variants: a delta client asking for a name that does not exist hears so in the first
/// answer, not from its own does-not-exist timer (15 s in gRPC and Envoy).
#[tokio::test]
async fn a_delta_client_hears_at_once_that_a_name_does_not_exist() {
    let url = serve().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: vec![A.into(), NOPE.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let resp: DeltaDiscoveryResponse = next(&mut stream).await.expect("a response");
    let names: Vec<&str> = resp.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [A]);
    assert_eq!(resp.removed_resources, [NOPE]);
}
