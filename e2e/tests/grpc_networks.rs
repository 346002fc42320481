//! Proxyless gRPC across networks (issue 19 point 1), judged by gRPC's own xDS clients.
//!
//! Two clusters in network namespaces of their own (`testbed::netns`): the client in
//! cluster1/network1 has no route to cluster2's pod addresses, only to network2's east-west
//! gateway on the shared network. helloworld v2 in cluster2 is a mesh workload (`tlsMode:
//! istio`) serving gRPC behind mTLS with its own workload certificate (grpcio,
//! require_client_auth), as a proxyless gRPC server does. The client gets xDS from cluster1's
//! federation, its certificates from the bootstrap's `file_watcher` provider over the agent's
//! `--output-dir` layout (cert-chain.pem, key.pem, root-cert.pem), and must reach v2 through
//! the gateway, which only relays TLS whose SNI names a cluster (`outbound_.5000_._.<fqdn>`).

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use meshfed_e2e::judges::{self, ChannelCreds, Judge};
use meshfed_e2e::metrics;
use meshfed_e2e::proxyless;
use meshfed_federation::{Controllers, FederationConfig, xds};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{Gateway, GatewayConfig};
use meshfed_proto::ads::Identity;
use meshfed_testbed::ApiServer;
use meshfed_testbed::netns::{ClusterNet, Mode, Network, NsRuntime};
use meshfed_testbed::seed::{self, ClusterSpec, Workload};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const HOST: &str = "helloworld.sample.svc.cluster.local";
const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/sample/sa/sleep";
/// Pod numbers on a cluster's pod network.
const POD_XDS: u8 = 1;
const POD_GATEWAY_ADMIN: u8 = 2;
const POD_HELLOWORLD: u8 = 4;
const POD_SLEEP: u8 = 5;

/// The gateway metrics are process-wide: the tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Field order is drop order: processes, then the gateway's runtime, then the namespaces.
struct Bed {
    server: Judge,
    _gateway_rt: NsRuntime,
    routes: RouteHandle,
    _feds: (Controllers, Controllers),
    _servers: (ApiServer, ApiServer),
    certs: tempfile::TempDir,
    xds1: SocketAddr,
    server_addr: SocketAddr,
    net: Network,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

fn cluster<'a>(net: &'a Network, name: &str) -> &'a ClusterNet {
    net.cluster(name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// Isolated namespaces, required: these tests run as root, where a fallback to shared
/// loopback addresses would let a direct call pass for one through the gateway.
fn network() -> Network {
    let net = Network::create(&["cluster1", "cluster2"]).expect("cluster networks");
    let why = net.fallback_reason().unwrap_or("none").to_string();
    assert_eq!(net.mode(), Mode::Isolated, "netns needed (root): {why}");
    net
}

/// The mesh root, an intermediate per cluster, and sleep's (cluster1) and helloworld's
/// (cluster2) workload files in the agent's --output-dir layout under `dir/sleep` and
/// `dir/helloworld`; helloworld's certificate names ServiceAccount `server_sa`.
fn certificates(dir: &Path, server_sa: &str) {
    let key = KeyAlgorithm::EcdsaP256;
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed-e2e".into(),
        days: 30,
        key,
    })
    .unwrap();
    let files = [
        ("cluster1", "sleep", "sleep"),
        ("cluster2", server_sa, "helloworld"),
    ];
    for (cluster, sa, out) in files {
        let ca = root
            .issue_intermediate(&IntermediateOptions {
                cluster: cluster.into(),
                days: 10,
                key,
            })
            .unwrap();
        let id = SpiffeId::new("cluster.local", "sample", sa).unwrap();
        let cert = ca.issue_workload(&WorkloadOptions::new(id)).unwrap();
        meshfed_certs::write_outputs(&dir.join(out), &cert.files(), true).unwrap();
    }
}

/// A listener bound inside `net`'s namespace (sockets keep the namespace they were made in),
/// for the host runtime to serve.
fn listener_in(net: &ClusterNet, addr: SocketAddr) -> tokio::net::TcpListener {
    let std = net
        .spawn(move || async move { std::net::TcpListener::bind(addr) })
        .join_timeout(T)
        .unwrap()
        .unwrap();
    std.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(std).unwrap()
}

/// The mTLS helloworld v2 server in cluster2 on its pod address; returns it and its address.
async fn mtls_server(net: &ClusterNet, certs: &Path) -> (Judge, SocketAddr) {
    let ip = net.pod_ip(POD_HELLOWORLD).unwrap();
    let mut cmd = net.command(judges::python().unwrap().to_str().unwrap());
    cmd.arg(judges::script("grpc_mtls_backend.py"))
        .arg(format!("{ip}:0"))
        .arg("v2")
        .arg(certs.join("helloworld"));
    let mut j = Judge::spawn(cmd.into(), "mtls backend v2").unwrap();
    let line = j.line(T).await.unwrap();
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("mtls backend: {line}"));
    (j, SocketAddr::new(ip, port))
}

/// cluster1's system namespace (network1); cluster2's helloworld v2 (a mesh workload on its
/// pod address) and network2's gateway Service; cluster1's remote secret for cluster2.
async fn objects(
    k1: &kube::Client,
    k2: &kube::Client,
    s2: &ApiServer,
    server: SocketAddr,
    gateway: IpAddr,
) {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "istio-system",
        "labels": {"topology.istio.io/network": "network1"}}}))
    .unwrap();
    kube::Api::<Namespace>::all(k1.clone())
        .create(&Default::default(), &ns)
        .await
        .unwrap();
    let v2 = Workload {
        cluster: ClusterSpec::numbered(2),
        ip: server.ip().to_string(),
        port: server.port(),
    };
    seed::helloworld(k2, &v2).await.unwrap();
    seed::gateway_service(k2, "network2", &gateway.to_string())
        .await
        .unwrap();
    seed::remote_secret(k1, "cluster2", &s2.kubeconfig())
        .await
        .unwrap();
}

/// network2's east-west gateway in cluster2's namespace (it dials pods there), on 15443 of
/// the shared network, routing from cluster2's federation's xDS.
async fn gateway(net: &ClusterNet, xds2: SocketAddr) -> (NsRuntime, RouteHandle) {
    let rt = net.runtime().unwrap();
    let routes = RouteHandle::default();
    let admin = SocketAddr::new(net.pod_ip(POD_GATEWAY_ADMIN).unwrap(), 0);
    let config = GatewayConfig::new(SocketAddr::new(net.gateway_ip(), 15443), admin, admin);
    let gw = rt
        .spawn(Gateway::bind(config, routes.clone()))
        .await
        .unwrap()
        .unwrap();
    rt.spawn(gw.run(std::future::pending()));
    let id = Identity {
        kind: "router".into(),
        cluster_id: "cluster2".into(),
        network: "network2".into(),
        ip: net.gateway_ip().to_string(),
        pod: "istio-eastwestgateway".into(),
        namespace: "istio-system".into(),
        locality: Default::default(),
    };
    let metrics = meshfed_gateway::metrics::global();
    rt.spawn(meshfed_gateway::xds::run(
        format!("http://{xds2}"),
        id,
        routes.clone(),
        metrics,
    ));
    (rt, routes)
}

/// The federation's xDS for `net`'s clients, served from a listener in that namespace.
fn serve_xds(net: &ClusterNet, fed: &Controllers) -> SocketAddr {
    let listener = listener_in(net, SocketAddr::new(net.pod_ip(POD_XDS).unwrap(), 0));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(xds::serve(
        listener,
        fed.registry.clone(),
        xds::Debounce::default(),
    ));
    addr
}

async fn bed() -> Bed {
    bed_serving_as("helloworld").await
}

/// The bed with v2's server presenting a certificate for ServiceAccount `server_sa` (its pod
/// runs as `helloworld` either way).
async fn bed_serving_as(server_sa: &str) -> Bed {
    let serial = SERIAL.lock().await;
    meshfed_model::telemetry::prometheus();
    let net = network();
    let (n1, n2) = (cluster(&net, "cluster1"), cluster(&net, "cluster2"));
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), server_sa);
    let (server, server_addr) = mtls_server(n2, certs.path()).await;
    let (s1, k1) = seed::cluster("cluster1").await.unwrap();
    let (s2, k2) = seed::cluster("cluster2").await.unwrap();
    objects(&k1, &k2, &s2, server_addr, n2.gateway_ip()).await;
    let fed1 = Controllers::start(k1, &FederationConfig::new("cluster1", "network1"));
    let fed2 = Controllers::start(k2, &FederationConfig::new("cluster2", "network2"));
    let xds1 = serve_xds(n1, &fed1);
    let xds2 = serve_xds(n2, &fed2);
    let (gateway_rt, routes) = gateway(n2, xds2).await;
    until_registry(&fed1).await;
    until_routes(&routes, 1).await;
    Bed {
        server,
        _gateway_rt: gateway_rt,
        routes,
        _feds: (fed1, fed2),
        _servers: (s1, s2),
        certs,
        xds1,
        server_addr,
        net,
        _serial: serial,
    }
}

/// Until cluster1's federation knows v2's endpoint and network2's gateway.
async fn until_registry(fed: &Controllers) {
    let mut changes = fed.registry.subscribe();
    let known = || {
        let snap = fed.registry.snapshot();
        let endpoints = snap
            .services
            .iter()
            .filter(|s| s.hostname == HOST)
            .flat_map(|s| &s.endpoints)
            .count();
        endpoints == 1 && snap.gateways.iter().any(|g| g.network == "network2")
    };
    tokio::time::timeout(T, async {
        while !known() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("cluster1's federation knows v2 and network2's gateway");
}

/// Until the gateway's table gives the default cluster's SNI `n` endpoints.
async fn until_routes(routes: &RouteHandle, n: usize) {
    let mut changes = routes.subscribe();
    let has = || {
        routes
            .get()
            .lookup(SNI)
            .is_some_and(|c| c.endpoints.len() == n)
    };
    let ok = tokio::time::timeout(T, async {
        while !has() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(ok.is_ok(), "{}", routes.get().debug_json());
}

/// Istio's grpc bootstrap for sleep in cluster1 (pkg/istio-agent/grpcxds): plaintext xDS to
/// the federation, node metadata GENERATOR=grpc, and certificate provider `default`, the
/// `file_watcher` plugin over the agent's files with a 15 minute refresh.
fn bootstrap(b: &Bed) -> tempfile::NamedTempFile {
    let n1 = cluster(&b.net, "cluster1");
    let ip = n1.pod_ip(POD_SLEEP).unwrap();
    let xds = b.xds1.to_string();
    let mut boot =
        proxyless::sleep_bootstrap(&xds, &ChannelCreds::Insecure, &ip.to_string(), "sample");
    let file = |name: &str| b.certs.path().join("sleep").join(name);
    boot["certificate_providers"] = json!({"default": {"plugin_name": "file_watcher", "config": {
        "certificate_file": file("cert-chain.pem"), "private_key_file": file("key.pem"),
        "ca_certificate_file": file("root-cert.pem"), "refresh_interval": "900s"}}});
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), boot.to_string()).unwrap();
    f
}

/// grpcio in cluster1 with xDS channel credentials (no GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT:
/// on by default in 1.85). `a101`: gRFC A101's SNI, on by default in grpcio 1.85; `false`
/// sets GRPC_EXPERIMENTAL_XDS_SNI=false. `fail_fast`: the first call does not wait for the
/// channel (for calls expected to fail).
fn grpcio(b: &Bed, boot: &Path, a101: bool, fail_fast: bool) -> Judge {
    let n1 = cluster(&b.net, "cluster1");
    let mut cmd = n1.command(judges::python().unwrap().to_str().unwrap());
    cmd.arg(judges::script("grpc_client.py"))
        .arg(format!("xds:///{HOST}:5000"))
        .arg("--xds-creds")
        .env("GRPC_XDS_BOOTSTRAP", boot)
        .env_remove("GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT");
    if a101 {
        cmd.env_remove("GRPC_EXPERIMENTAL_XDS_SNI");
    } else {
        cmd.env("GRPC_EXPERIMENTAL_XDS_SNI", "false");
    }
    if fail_fast {
        cmd.arg("--fail-fast");
    }
    Judge::spawn(cmd.into(), "grpcio client").unwrap()
}

/// @grpc/grpc-js-xds in cluster1 with XdsChannelCredentials; `sni`: the server name it is
/// told to send (grpc.ssl_target_name_override), since it ignores UpstreamTlsContext.sni.
/// Without one the first call does not wait for the channel (it is expected to fail).
fn grpc_js(b: &Bed, boot: &Path, sni: Option<&str>) -> Judge {
    judges::node().unwrap();
    let n1 = cluster(&b.net, "cluster1");
    let mut cmd = n1.command("node");
    cmd.current_dir(judges::script(""))
        .arg("xds_client.js")
        .arg(format!("xds:///{HOST}:5000"))
        .arg("--xds-creds")
        .env("GRPC_XDS_BOOTSTRAP", boot);
    match sni {
        Some(sni) => cmd.args(["--sni", sni]),
        None => cmd.arg("--fail-fast"),
    };
    Judge::spawn(cmd.into(), "grpc-js-xds client").unwrap()
}

/// Connections the gateway has closed with `outcome` (meshfed_gateway_connections_total).
fn gateway_outcome(outcome: &str) -> u64 {
    metrics::sum(&format!(
        "meshfed_gateway_connections_total{{outcome=\"{outcome}\"}}"
    ))
}

/// Connections the gateway holds open to v2 for the default cluster's SNI.
fn relayed(b: &Bed) -> usize {
    let table = b.routes.get();
    let cluster = table.lookup(SNI).expect("the gateway routes the SNI");
    cluster
        .endpoints
        .iter()
        .map(|e| e.health.active.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// From cluster1, v2's pod address is unreachable (no route): any call that works went
/// through the gateway.
fn no_direct_route(b: &Bed) {
    let addr = b.server_addr;
    let direct = cluster(&b.net, "cluster1")
        .spawn(move || async move { tokio::net::TcpStream::connect(addr).await.map(|_| ()) })
        .join_timeout(T)
        .unwrap();
    let err = direct.expect_err("cluster1 reached cluster2's pod directly");
    assert_eq!(err.kind(), std::io::ErrorKind::NetworkUnreachable, "{err}");
}

/// The client's calls reach v2 through network2's gateway with mTLS both ways: the server
/// saw sleep's SPIFFE id over TLS from an address of cluster2 (the gateway dialing, not the
/// client), the gateway holds the client's connection open to v2 under the cluster's SNI,
/// and 20 more calls all reach v2.
async fn calls_go_through_the_gateway(mut b: Bed, mut client: Judge) {
    no_direct_route(&b);
    let ready = client.json(T).await.unwrap();
    assert_eq!(ready["ready"], "v2", "{ready}");
    let seen = b.server.json(T).await.unwrap();
    assert_eq!(seen["spiffe"], json!([CLIENT_ID]), "{seen}");
    assert_eq!(seen["security"], json!(["ssl"]), "{seen}");
    eprintln!("v2 saw {seen}");
    let peer = peer_ip(&seen);
    let n2 = cluster(&b.net, "cluster2");
    let in_cluster2 = [n2.gateway_ip(), n2.pod_ip(POD_XDS).unwrap()];
    assert!(
        in_cluster2.contains(&peer) || peer == b.server_addr.ip(),
        "the server's peer {peer} is not in cluster2"
    );
    assert_eq!(relayed(&b), 1, "{}", b.routes.get().debug_json());
    let r = client.ask("count 20", T).await.unwrap();
    assert_eq!(
        (r["counts"]["v2"].as_u64(), r["errors"].as_u64()),
        (Some(20), Some(0)),
        "{r}"
    );
    client.kill().await;
}

/// A client that does not send the cluster's SNI gets nothing through: the gateway, like
/// Istio's AUTO_PASSTHROUGH listener, routes only `outbound_` names and closes the rest,
/// counting each such hello as `outcome` (`no_sni`: no server name at all; `no_route`: a
/// name it has no cluster for), so the first call fails and nothing reached v2.
async fn without_the_sni_nothing_crosses(b: Bed, mut client: Judge, outcome: &str) {
    let before = gateway_outcome(outcome);
    let first = client.json(T).await.unwrap();
    let failed = first["error"].is_string()
        || first["ready"]
            .as_str()
            .is_some_and(|r| r.starts_with("error:"));
    assert!(failed, "{first}");
    eprintln!("without the SNI: {first}");
    assert_eq!(relayed(&b), 0, "{}", b.routes.get().debug_json());
    // The gateway counts a connection when it has closed it; the client may report first.
    let counted = async {
        while gateway_outcome(outcome) == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let counted = tokio::time::timeout(Duration::from_secs(5), counted).await;
    assert!(counted.is_ok(), "the gateway counted no {outcome} hello");
    client.kill().await;
}

fn peer_ip(seen: &Value) -> IpAddr {
    let peer = seen["peer"].as_str().unwrap_or_default();
    let addr = peer.strip_prefix("ipv4:").unwrap_or(peer);
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("peer {peer}: {e}"))
        .ip()
}

/// Istio's proxyless gRPC across networks (grpcgen UpstreamTlsContext with certificate
/// provider instances, gRFC A29; the SNI of gRFC A101): grpcio 1.85 with xDS credentials
/// and no extra settings sends the cluster's `outbound_` SNI, so network2's gateway relays
/// its mTLS to v2, which sees sleep's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reaches_another_network_through_its_gateway_with_mtls() {
    let b = bed().await;
    let boot = bootstrap(&b);
    let client = grpcio(&b, boot.path(), true, false);
    calls_go_through_the_gateway(b, client).await;
}

/// The same with @grpc/grpc-js-xds 1.14: its XdsChannelCredentials take the certificates
/// and SAN matchers from CDS but not `sni` (it sends its target's host), so it is given the
/// cluster's SNI as grpc.ssl_target_name_override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_reaches_another_network_through_its_gateway_with_mtls() {
    let b = bed().await;
    let boot = bootstrap(&b);
    let client = grpc_js(&b, boot.path(), Some(SNI));
    calls_go_through_the_gateway(b, client).await;
}

/// It is the `sni` from CDS that gets grpcio across: with gRFC A101 turned off
/// (GRPC_EXPERIMENTAL_XDS_SNI=false) its xDS credentials send no server name at all
/// (grpc.ssl_target_name_override does not change that), and the gateway has nothing to
/// route by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_without_a101_sends_no_server_name_and_cannot_cross() {
    let b = bed().await;
    let boot = bootstrap(&b);
    let client = grpcio(&b, boot.path(), false, true);
    without_the_sni_nothing_crosses(b, client, "no_sni").await;
}

/// grpc-js-xds 1.14 has no A101: left alone it sends its target's host
/// (`helloworld.sample.svc.cluster.local`) as the server name, which the gateway has no
/// route for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_without_a_server_name_override_cannot_cross() {
    let b = bed().await;
    let boot = bootstrap(&b);
    let client = grpc_js(&b, boot.path(), None);
    without_the_sni_nothing_crosses(b, client, "no_route").await;
}

/// Istio's SAN check for proxyless clients (match_subject_alt_names = the service's
/// identities): a server in network2 presenting a mesh certificate for another
/// ServiceAccount than helloworld's pods run as is refused by grpcio, though the gateway
/// relays the connection and the chain is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_refuses_a_server_whose_identity_is_not_the_services() {
    let mut b = bed_serving_as("impostor").await;
    let boot = bootstrap(&b);
    let mut client = grpcio(&b, boot.path(), true, true);
    let first = client.json(T).await.unwrap();
    let details = first["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("SANs from certificate did not match SANs from xDS control plane"),
        "{first}"
    );
    client.kill().await;
    b.server.kill().await;
}
