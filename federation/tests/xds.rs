//! The ADS protocol as Envoy's clients speak it, with a registry fed directly: state of the
//! world (ACK, NACK, stale nonces, per-client pushes) and delta (diffs, removals, resumption).

use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use meshfed_federation::registry::{
    NodeInfo, PodInfo, Registry, RegistryConfig, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo,
};
use meshfed_federation::xds::{self, generate::*};
use meshfed_model::Locality;
use meshfed_proto::ads::Identity;
use meshfed_proto::nds::NameTable;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const T: Duration = Duration::from_secs(10);

struct Mesh {
    registry: Arc<Registry>,
    generation: u64,
    url: String,
}

impl Mesh {
    /// A served registry: the local cluster synced with services a and b, no remote secrets.
    async fn start() -> Mesh {
        let mesh = Mesh::unsynced(Duration::from_secs(30)).await;
        mesh.registry.mark_secrets_listed();
        mesh.service("a", &["10.0.0.1"]);
        mesh.service("b", &["10.0.0.2"]);
        mesh.synced();
        mesh
    }

    /// The xDS server over a registry whose local cluster has not listed yet (as after a
    /// restart while the API server is down); remote clusters time out after `sync_timeout`.
    async fn unsynced(sync_timeout: Duration) -> Mesh {
        Mesh::with(sync_timeout, xds::Limits::default()).await
    }

    /// A synced mesh with services a and b, served with `limits`.
    async fn limited(limits: xds::Limits) -> Mesh {
        let mesh = Mesh::with(Duration::from_secs(30), limits).await;
        mesh.registry.mark_secrets_listed();
        mesh.service("a", &["10.0.0.1"]);
        mesh.service("b", &["10.0.0.2"]);
        mesh.synced();
        mesh
    }

    async fn with(sync_timeout: Duration, limits: xds::Limits) -> Mesh {
        let registry = Arc::new(Registry::new(RegistryConfig {
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout,
        }));
        let generation = registry.add_generation("cluster1", "", Some("network1".into()), 1);
        registry.update("cluster1", generation, |d| {
            let locality = Locality::new("region1", "zone1", "");
            let node = NodeInfo {
                locality,
                ..Default::default()
            };
            d.nodes.insert("node1".into(), node);
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let debounce = xds::Debounce::default();
        tokio::spawn(xds::serve_with(
            listener,
            registry.clone(),
            debounce,
            limits,
        ));
        Mesh {
            registry,
            generation,
            url,
        }
    }

    /// The local cluster has listed everything.
    fn synced(&self) {
        let kind = meshfed_federation::registry::Kind::Service;
        self.registry.listed("cluster1", self.generation, kind);
    }

    /// Service `name` in namespace `ns` with ready endpoints at `ips` (replacing any before).
    fn service(&self, name: &str, ips: &[&str]) {
        let (name, ips) = (
            name.to_string(),
            ips.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        self.registry.update("cluster1", self.generation, |d| {
            let key = ("ns".to_string(), name.clone());
            d.services.insert(
                key.clone(),
                ServiceInfo {
                    ports: vec![ServicePort {
                        name: "http".into(),
                        port: 80,
                        ..Default::default()
                    }],
                    labels: Default::default(),
                    cluster_ip: Some(format!("10.96.0.{}", name.len())),
                    external_addresses: vec![],
                    ..Default::default()
                },
            );
            let endpoints = ips
                .iter()
                .map(|ip| SliceEndpoint {
                    addresses: vec![ip.clone()],
                    ready: true,
                    pod: Some(("ns".into(), format!("{name}-pod"))),
                    node: Some("node1".into()),
                    ..Default::default()
                })
                .collect();
            d.slices.insert(
                ("ns".into(), format!("{name}-slice")),
                SliceInfo {
                    service: name.clone(),
                    ports: vec![("http".into(), 8080)],
                    endpoints,
                },
            );
            d.pods.insert(
                ("ns".into(), format!("{name}-pod")),
                PodInfo {
                    labels: Default::default(),
                    service_account: name.as_str().into(),
                    node: Some("node1".into()),
                },
            );
        });
    }

    fn remove_service(&self, name: &str) {
        self.registry.update("cluster1", self.generation, |d| {
            d.services.remove(&("ns".to_string(), name.to_string()));
            d.slices
                .remove(&("ns".to_string(), format!("{name}-slice")));
        });
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }
}

/// A sidecar of cluster1/network1 in region1/zone1, under `id` (which may be malformed).
fn node(id: &str) -> Node {
    let mut n = Identity {
        kind: "sidecar".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        locality: EnvoyLocality {
            region: "region1".into(),
            zone: "zone1".into(),
            sub_zone: String::new(),
        },
        ..Default::default()
    }
    .node();
    n.id = id.into();
    n
}

const SIDECAR: &str = "sidecar~10.0.0.9~client.ns~ns.svc.cluster.local";
const CLUSTER_A: &str = "outbound|80||a.ns.svc.cluster.local";
const CLUSTER_B: &str = "outbound|80||b.ns.svc.cluster.local";

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(mesh: &Mesh) -> Sotw {
        let (tx, rx) = mpsc::channel(8);
        let rx = mesh
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Sotw { tx, rx }
    }

    async fn send(
        &self,
        type_url: &str,
        names: &[&str],
        last: Option<&DiscoveryResponse>,
        error: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            node: Some(node(SIDECAR)),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: last.map(|l| l.version_info.clone()).unwrap_or_default(),
            response_nonce: last.map(|l| l.nonce.clone()).unwrap_or_default(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(T, self.rx.message())
            .await
            .expect("a response")
            .unwrap()
            .unwrap()
    }
}

fn cla_addresses(any: &envoy_types::pb::google::protobuf::Any) -> (String, Vec<String>) {
    let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
    let addrs = format!("{:?}", cla.endpoints);
    let mut out: Vec<String> = addrs
        .split("address: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_string))
        .collect();
    out.sort();
    (cla.cluster_name, out)
}

#[tokio::test]
async fn sotw_ack_nack_stale_and_pushes_of_what_changed() {
    let mesh = Mesh::start().await;
    let mut c = Sotw::open(&mesh).await;
    c.send(CLUSTER_TYPE, &[], None, None).await;
    let cds = c.next().await;
    assert_eq!(cds.type_url, CLUSTER_TYPE);
    assert_eq!(cds.resources.len(), 2, "wildcard CDS: both services");
    c.send(CLUSTER_TYPE, &[], Some(&cds), None).await; // ACK
    c.send(ENDPOINT_TYPE, &[CLUSTER_A], None, None).await;
    let eds = c.next().await;
    assert_eq!(
        eds.type_url, ENDPOINT_TYPE,
        "the ACK got no answer; EDS is next"
    );
    assert_eq!(
        cla_addresses(&eds.resources[0]),
        (CLUSTER_A.into(), vec!["10.0.0.1".into()])
    );
    c.send(ENDPOINT_TYPE, &[CLUSTER_A], Some(&eds), None).await;

    // An endpoint change of b (not subscribed), then of a: only a's EDS comes.
    mesh.service("b", &["10.0.0.2", "10.0.0.3"]);
    mesh.service("a", &["10.0.0.1", "10.0.0.4"]);
    let push = c.next().await;
    assert_eq!(
        push.type_url, ENDPOINT_TYPE,
        "CDS did not change: no CDS push"
    );
    assert_eq!(
        cla_addresses(&push.resources[0]).1,
        ["10.0.0.1", "10.0.0.4"]
    );

    // A NACK is not answered (the client keeps its last good version); a stale nonce neither.
    c.send(
        ENDPOINT_TYPE,
        &[CLUSTER_A],
        Some(&push),
        Some("bad endpoints"),
    )
    .await;
    c.send(ENDPOINT_TYPE, &[CLUSTER_B], Some(&eds), None).await;
    // A new subscription with the current nonce is answered with the whole subscribed set.
    c.send(ENDPOINT_TYPE, &[CLUSTER_A, CLUSTER_B], Some(&push), None)
        .await;
    let both = c.next().await;
    let mut names: Vec<String> = both.resources.iter().map(|r| cla_addresses(r).0).collect();
    names.sort();
    assert_eq!(names, [CLUSTER_A, CLUSTER_B]);
    assert_ne!(both.nonce, push.nonce);

    // A service goes away: CDS (state of the world) no longer lists it.
    mesh.remove_service("b");
    let cds2 = c.next().await;
    assert_eq!(
        (cds2.type_url.as_str(), cds2.resources.len()),
        (CLUSTER_TYPE, 1)
    );
}

#[tokio::test]
async fn pushes_reach_only_clients_whose_resources_changed() {
    let mesh = Mesh::start().await;
    let (mut ca, mut cb) = (Sotw::open(&mesh).await, Sotw::open(&mesh).await);
    for (c, name) in [(&mut ca, CLUSTER_A), (&mut cb, CLUSTER_B)] {
        c.send(ENDPOINT_TYPE, &[name], None, None).await;
        let r = c.next().await;
        c.send(ENDPOINT_TYPE, &[name], Some(&r), None).await;
    }
    mesh.service("a", &["10.0.0.5"]);
    assert_eq!(cla_addresses(&ca.next().await.resources[0]).1, ["10.0.0.5"]);
    mesh.service("b", &["10.0.0.6"]);
    // b's client was not sent a's change: its next message is b's.
    let r = cb.next().await;
    assert_eq!(
        cla_addresses(&r.resources[0]),
        (CLUSTER_B.into(), vec!["10.0.0.6".into()])
    );
}

#[tokio::test]
async fn a_stream_without_an_istio_node_is_refused() {
    let mesh = Mesh::start().await;
    let (tx, rx) = mpsc::channel(1);
    let mut s = mesh
        .client()
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(DiscoveryRequest {
        node: Some(node("not-istio")),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(T, s.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not-istio"), "{}", err.message());
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(mesh: &Mesh) -> Delta {
        Delta::on(mesh.client().await).await
    }

    async fn on(mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>) -> Delta {
        let (tx, rx) = mpsc::channel(8);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Delta { tx, rx }
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx
            .send(DeltaDiscoveryRequest {
                node: Some(node(SIDECAR)),
                ..req
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(T, self.rx.message())
            .await
            .expect("a response")
            .unwrap()
            .unwrap()
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

#[tokio::test]
async fn delta_sends_only_changes_and_removals_and_resumes() {
    let mesh = Mesh::start().await;
    let mut c = Delta::open(&mesh).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await;
    let first = c.next().await;
    assert_eq!(first.resources.len(), 2);
    c.ack(&first).await;
    let held: std::collections::HashMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();

    mesh.service("a", &["10.0.0.7"]);
    let d = c.next().await;
    assert_eq!(d.resources.len(), 1, "only a's endpoints changed");
    assert_eq!(d.resources[0].name, CLUSTER_A);
    c.ack(&d).await;
    mesh.remove_service("a");
    let d = c.next().await;
    assert_eq!(
        (d.resources.len(), d.removed_resources.clone()),
        (0, vec![CLUSTER_A.to_string()])
    );
    drop(c);

    // Reconnecting with what it holds: b is unchanged and not resent; a is gone.
    let mut c = Delta::open(&mesh).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: held,
        ..Default::default()
    })
    .await;
    let r = c.next().await;
    assert!(r.resources.is_empty(), "{:?}", r.resources);
    assert_eq!(r.removed_resources, [CLUSTER_A]);
}

#[tokio::test]
async fn nds_state_of_the_world_is_one_table_and_delta_one_entry_per_host() {
    let mesh = Mesh::start().await;
    let mut c = Sotw::open(&mesh).await;
    c.send(NAME_TABLE_TYPE, &[], None, None).await;
    let r = c.next().await;
    assert_eq!(r.resources.len(), 1);
    let table = NameTable::decode(r.resources[0].value.as_slice()).unwrap();
    let a = &table.table["a.ns.svc.cluster.local"];
    assert_eq!(
        (a.ips.clone(), a.shortname.as_str(), a.namespace.as_str()),
        (vec!["10.96.0.1".to_string()], "a", "ns")
    );

    let mut d = Delta::open(&mesh).await;
    d.send(DeltaDiscoveryRequest {
        type_url: NAME_TABLE_TYPE.into(),
        ..Default::default()
    })
    .await;
    let r = d.next().await;
    let mut names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a.ns.svc.cluster.local", "b.ns.svc.cluster.local"]);
}

/// A federation restarted while its API server is down must not withdraw what clients hold:
/// nothing is answered until the local cluster has synced, so the first answer is the whole
/// state (on an earlier main the first answer was an empty table and the gateway dropped every
/// route). `/healthz/ready` follows the same rule.
#[tokio::test]
async fn nothing_is_served_until_the_local_cluster_has_synced() {
    let mesh = Mesh::unsynced(Duration::from_millis(50)).await;
    mesh.registry.mark_secrets_listed();
    let mut c = Delta::open(&mesh).await;
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    })
    .await;
    // Past the sync timeout: only remote clusters may time out, never the local one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!mesh.registry.ready(), "ready without the local cluster");
    mesh.service("a", &["10.0.0.1"]);
    mesh.service("b", &["10.0.0.2"]);
    mesh.synced();
    let first = c.next().await;
    let mut names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [CLUSTER_A, CLUSTER_B],
        "the first answer is the synced state"
    );
    assert!(first.removed_resources.is_empty());
    assert!(mesh.registry.ready());
}

/// A delta client resuming with `initial_resource_versions` is not told that a remote
/// cluster's resources were removed while that cluster has not synced again (it timed out);
/// once it has synced, what is really gone is removed.
#[tokio::test]
async fn a_resuming_client_keeps_what_an_unsynced_cluster_had() {
    let mesh = Mesh::unsynced(Duration::from_millis(50)).await;
    mesh.service("a", &["10.0.0.1"]);
    mesh.synced();
    let remote = mesh.registry.add_generation("cluster2", "secret2", None, 1);
    mesh.registry.mark_secrets_listed();
    let remote_only = "outbound|80||r.ns.svc.cluster.local";
    let gone = "outbound|80||gone.ns.svc.cluster.local";
    let held = [CLUSTER_A, remote_only, gone]
        .map(|n| (n.to_string(), "0".to_string()))
        .into_iter()
        .collect();
    let mut c = Delta::open(&mesh).await;
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        initial_resource_versions: held,
        ..Default::default()
    })
    .await;
    let first = c.next().await; // served once cluster2 passed its sync timeout
    assert_eq!(first.resources.len(), 1, "a, in its current version");
    assert!(
        first.removed_resources.is_empty(),
        "{:?}",
        first.removed_resources
    );
    c.ack(&first).await;

    // cluster2 syncs with r: the push is complete, so `gone` is removed and r is sent.
    mesh.registry.update("cluster2", remote, |d| {
        let svc = meshfed_federation::registry::ServiceInfo {
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                ..Default::default()
            }],
            labels: Default::default(),
            cluster_ip: Some("10.97.0.1".into()),
            external_addresses: vec![],
            ..Default::default()
        };
        d.services.insert(("ns".into(), "r".into()), svc);
    });
    mesh.registry.listed(
        "cluster2",
        remote,
        meshfed_federation::registry::Kind::Service,
    );
    let settled = c.next().await;
    assert_eq!(settled.removed_resources, [gone]);
    let sent: Vec<&str> = settled.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent, [remote_only]);
}

/// A client that takes no response for the send timeout is disconnected, instead of pinning
/// responses in the server's buffers for good.
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let limits = xds::Limits {
        send_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let mesh = Mesh::limited(limits).await;
    // Far more than the client's 64 KiB window and the server's send buffer: the first
    // response alone fills them.
    for i in 0..3000 {
        mesh.service(&format!("service-with-a-long-name-{i}"), &["10.0.0.3"]);
    }
    let channel = tonic::transport::Endpoint::from_shared(mesh.url.clone())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut c = Delta::on(AggregatedDiscoveryServiceClient::new(channel)).await;
    c.send(DeltaDiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    })
    .await;
    // Pushes keep coming while the client does not read (the first response is in flight
    // in HTTP/2's buffers, the next ones queue), for longer than the send timeout.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        mesh.remove_service(&format!("service-with-a-long-name-{i}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What the client then reads ends in an error before the whole first answer: the
    // server closed the connection.
    let mut got = 0;
    let end = loop {
        match tokio::time::timeout(T, c.rx.message())
            .await
            .expect("an end")
        {
            Ok(Some(r)) if got + r.resources.len() < 3002 => got += r.resources.len(),
            other => break other.map(|r| r.map(|r| got + r.resources.len())),
        }
    };
    assert!(end.is_err(), "the stream carried on: {end:?}");
}

/// Subscriptions are bounded per stream: past the limit the stream ends with
/// RESOURCE_EXHAUSTED and nothing is kept for it.
#[tokio::test]
async fn subscriptions_past_the_limit_end_the_stream() {
    let limits = xds::Limits {
        max_subscriptions: 3,
        ..Default::default()
    };
    let mesh = Mesh::limited(limits).await;
    let mut c = Delta::open(&mesh).await;
    c.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: (0..4)
            .map(|i| format!("outbound|80||s{i}.ns.svc.cluster.local"))
            .collect(),
        ..Default::default()
    })
    .await;
    let end = loop {
        match tokio::time::timeout(T, c.rx.message())
            .await
            .expect("an answer")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = end.expect_err("a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
}

/// The secure port (istiod's 15012) in front of `mesh`: the CA from a fresh root and
/// intermediate, tokens reviewed by a test bed API server with ServiceAccounts ns/client,
/// ns/other and istio-system/meshfed-gateway. Returns the port, the root and the API server.
async fn secure_port(mesh: &Mesh) -> (std::net::SocketAddr, String, meshfed_testbed::ApiServer) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use meshfed_certs::{CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions};
    use meshfed_federation::ca::{self, authn::Authenticator, review};
    let cfg = meshfed_testbed::ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "cluster1");
    let api = meshfed_testbed::ApiServer::start(cfg).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(kcfg).unwrap();
    let pp = kube::api::PostParams::default();
    let ns_api: kube::Api<Namespace> = kube::Api::all(client.clone());
    for name in ["ns", "istio-system"] {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        ns_api.create(&pp, &ns).await.unwrap();
    }
    for (ns, name) in [
        ("ns", "client"),
        ("ns", "other"),
        ("istio-system", "meshfed-gateway"),
    ] {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.into());
        let sa_api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
        sa_api.create(&pp, &sa).await.unwrap();
    }
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "t".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap();
    let authority = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "cluster1".into(),
            days: 10,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let reviewer = review::CachedReviewer::new(Box::new(review::KubeReviewer(client)));
    let authn = Authenticator::new(reviewer, "istio-ca", "cluster.local");
    let origin = ca::cacerts::Origin::Dir("test".into());
    let ca = ca::Ca::new(
        authority,
        origin,
        authn,
        &ca::CaConfig::default(),
        "istio-system",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_pusher, pushes) = xds::start_pusher(mesh.registry.clone(), xds::Debounce::default());
    let gateways = vec!["istio-system/meshfed-gateway".parse().unwrap()];
    let port =
        meshfed_federation::secure::serve(listener, ca, pushes, xds::Limits::default(), gateways)
            .unwrap();
    tokio::spawn(port);
    (addr, root.cert_pem().to_string(), api)
}

/// The first answer (or refusal) of a delta stream on the secure port for `id`, sent with
/// `token` (none: no authorization header) over TLS checked against `root`.
async fn secure_first(
    addr: std::net::SocketAddr,
    root: &str,
    token: Option<&str>,
    id: &str,
) -> Result<DeltaDiscoveryResponse, tonic::Status> {
    use meshfed_proto::channel::{ClientTls, XdsServer};
    let dir = tempfile::tempdir().unwrap();
    let token_file = token.map(|t| {
        let path = dir.path().join("token");
        std::fs::write(&path, t).unwrap();
        path
    });
    let server = XdsServer {
        address: addr.to_string(),
        tls: Some(ClientTls {
            roots_pem: root.as_bytes().to_vec(),
            server_name: Some("istiod.istio-system.svc".into()),
        }),
        token_file,
    };
    let (channel, bearer) = server.connect().await.unwrap();
    let mut client = AggregatedDiscoveryServiceClient::with_interceptor(channel, bearer);
    let (tx, rx) = mpsc::channel(1);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(id)),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(T, stream.message()).await.unwrap();
    first.map(|m| m.unwrap())
}

/// Istio's xDS on 15012: a client authenticates (here with a ServiceAccount token reviewed by
/// the API server for audience istio-ca) and may only be a proxy of its own namespace; a
/// router must be the gateway's identity. Without a token, or with one for another audience,
/// nothing is served.
#[tokio::test]
async fn the_secure_port_serves_xds_only_to_the_nodes_callers_may_claim() {
    let mesh = Mesh::start().await;
    let (addr, root, api) = secure_port(&mesh).await;
    let hour = Duration::from_secs(3600);
    let client = api.token("ns", "client", &["istio-ca"], hour).unwrap();
    let ok = secure_first(addr, &root, Some(&client), SIDECAR)
        .await
        .unwrap();
    let names: Vec<_> = ok.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&CLUSTER_A) && names.contains(&CLUSTER_B),
        "{names:?}"
    );

    let code = |r: Result<DeltaDiscoveryResponse, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    let foreign = "sidecar~10.0.0.9~client.elsewhere~elsewhere.svc.cluster.local";
    assert_eq!(
        code(secure_first(addr, &root, Some(&client), foreign).await),
        tonic::Code::PermissionDenied
    );
    let router = "router~10.0.0.10~gw.istio-system~istio-system.svc.cluster.local";
    assert_eq!(
        code(secure_first(addr, &root, Some(&client), router).await),
        tonic::Code::PermissionDenied
    );
    let gateway = api
        .token("istio-system", "meshfed-gateway", &["istio-ca"], hour)
        .unwrap();
    assert!(
        secure_first(addr, &root, Some(&gateway), router)
            .await
            .is_ok()
    );
    // A router claimed by another account of the gateway's namespace is refused too.
    let ns_router = "router~10.0.0.10~gw.ns~ns.svc.cluster.local";
    let other = api.token("ns", "other", &["istio-ca"], hour).unwrap();
    assert_eq!(
        code(secure_first(addr, &root, Some(&other), ns_router).await),
        tonic::Code::PermissionDenied
    );

    assert_eq!(
        code(secure_first(addr, &root, None, SIDECAR).await),
        tonic::Code::Unauthenticated
    );
    let wrong_audience = api.token("ns", "client", &["other"], hour).unwrap();
    assert_eq!(
        code(secure_first(addr, &root, Some(&wrong_audience), SIDECAR).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(secure_first(addr, &root, Some("not-a-token"), SIDECAR).await),
        tonic::Code::Unauthenticated
    );
}
