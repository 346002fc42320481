//! Memory under many distinct clients (issue 17): 2,000 delta clients, each with a label set
//! of its own, subscribed to every cluster and every endpoint of a 300-service mesh, leave the
//! process's RSS within [`BOUND_MIB`]. On an earlier main every distinct label set got a full
//! copy of the generated resources (about 0.4 MiB each here: 800 MiB for 2,000 clients). The
//! server runs in a process of its own (this test binary, run again as the server), so that
//! its RSS is the federation's alone and not the clients'.

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use meshfed_federation::FederationConfig;
use meshfed_federation::registry::{
    Kind, PodInfo, Registry, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo,
};
use meshfed_federation::xds::{self, generate::*};
use meshfed_proto::ads::Identity;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The documented bound (README, xDS server limits): what 2,000 clients with distinct labels
/// may add to the process, server and clients together.
const BOUND_MIB: u64 = 384;
const SERVICES: usize = 300;
const CLIENTS: usize = 2000;
const STREAMS_PER_CONNECTION: usize = 16;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn registry() -> Arc<Registry> {
    let registry = Arc::new(Registry::new(
        FederationConfig::new("cluster1", "network1").registry(),
    ));
    let generation = registry.add_generation("cluster1", "", Some("network1".into()), 1);
    registry.update("cluster1", generation, |d| {
        for s in 0..SERVICES {
            let name = format!("service-{s}");
            let port = ServicePort {
                name: "http".into(),
                port: 80,
                ..Default::default()
            };
            let svc = ServiceInfo {
                ports: vec![port],
                labels: Default::default(),
                cluster_ip: Some(format!("10.96.{}.{}", s / 250, s % 250)),
                external_addresses: vec![],
                ..Default::default()
            };
            d.services.insert(("ns".into(), name.clone()), svc);
            let endpoints = (0..10)
                .map(|e| SliceEndpoint {
                    addresses: vec![format!("10.{}.{}.{e}", s / 250, s % 250)],
                    ready: true,
                    pod: Some(("ns".into(), format!("{name}-pod"))),
                    node: None,
                    ..Default::default()
                })
                .collect();
            let slice = SliceInfo {
                service: name.clone(),
                ports: vec![("http".into(), 8080)],
                endpoints,
            };
            d.slices
                .insert(("ns".into(), format!("{name}-slice")), slice);
            let pod = PodInfo {
                labels: Default::default(),
                service_account: "sa".into(),
                node: None,
            };
            d.pods.insert(("ns".into(), format!("{name}-pod")), pod);
        }
    });
    registry.listed("cluster1", generation, Kind::Service);
    registry.mark_secrets_listed();
    registry
}

/// A sidecar with a label set nobody else has (`LABELS` as Istio's agent sends them).
fn node(i: usize) -> envoy_types::pb::envoy::config::core::v3::Node {
    let mut node = Identity {
        kind: "sidecar".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        ip: format!("10.200.{}.{}", i / 250, i % 250),
        pod: format!("client-{i}"),
        namespace: "ns".into(),
        ..Default::default()
    }
    .node();
    let s = |v: String| Value {
        kind: Some(value::Kind::StringValue(v)),
    };
    let labels = Struct {
        fields: [
            ("app".to_string(), s(format!("client-{i}"))),
            ("pod-template-hash".to_string(), s(format!("{i:08x}"))),
        ]
        .into_iter()
        .collect(),
    };
    if let Some(m) = node.metadata.as_mut() {
        let v = Value {
            kind: Some(value::Kind::StructValue(labels)),
        };
        m.fields.insert("LABELS".into(), v);
    }
    node
}

/// The names of every resource of `type_url`, over as many responses as the server splits
/// them into.
async fn take(
    inbound: &mut tonic::Streaming<
        envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse,
    >,
    type_url: &str,
) -> Vec<String> {
    let mut names = Vec::new();
    while names.len() < SERVICES {
        let r = inbound.message().await.unwrap().unwrap();
        assert_eq!(r.type_url, type_url);
        names.extend(r.resources.into_iter().map(|r| r.name));
    }
    assert_eq!(names.len(), SERVICES);
    names
}

/// One client: CDS for everything, then EDS for every cluster; returns once both arrived,
/// keeping the stream open (the sender) for as long as the caller holds it.
async fn client(
    mut ads: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    i: usize,
) -> mpsc::Sender<DeltaDiscoveryRequest> {
    let (tx, rx) = mpsc::channel(4);
    let first = DeltaDiscoveryRequest {
        node: Some(node(i)),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    };
    tx.send(first).await.unwrap();
    let mut inbound = ads
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let names = take(&mut inbound, CLUSTER_TYPE).await;
    let eds = DeltaDiscoveryRequest {
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    tx.send(eds).await.unwrap();
    take(&mut inbound, ENDPOINT_TYPE).await;
    // Keep reading, so that the server never waits on this client.
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tx
}

/// Set in the child: run as the xDS server, print its address, serve until killed.
const SERVER_ENV: &str = "MESHFED_XDS_MEMORY_SERVER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_server_process() {
    if std::env::var_os(SERVER_ENV).is_none() {
        return; // only the child of the test below serves
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    xds::serve(listener, registry(), xds::Debounce::default())
        .await
        .unwrap();
}

/// This test binary again, as the server; killed on drop.
struct Server(std::process::Child);

impl Server {
    fn start() -> (Server, String) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "xds_server_process", "--nocapture"])
            .env(SERVER_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("listening ").map(str::to_string))
            .expect("the server's address");
        (Server(child), format!("http://{line}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_with_distinct_labels_stay_within_the_bound() {
    if std::env::var_os(SERVER_ENV).is_some() {
        return;
    }
    let (server, url) = Server::start();
    let pid = server.0.id();
    let connect = || async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        AggregatedDiscoveryServiceClient::new(channel)
    };
    // Warm: the first client makes the server build its resources once.
    let warm = client(connect().await, CLIENTS).await;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / STREAMS_PER_CONNECTION {
        let ads = connect().await;
        let streams = (0..STREAMS_PER_CONNECTION)
            .map(|s| client(ads.clone(), chunk * STREAMS_PER_CONNECTION + s));
        held.extend(futures::future::join_all(streams).await);
    }
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    println!(
        "{} clients with distinct labels: the server's RSS grew by {grown_mib} MiB",
        held.len()
    );
    assert_eq!(held.len(), CLIENTS);
    assert!(
        grown_mib < BOUND_MIB,
        "RSS grew by {grown_mib} MiB for {CLIENTS} clients"
    );
    drop((held, warm, server));
}
