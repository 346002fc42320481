//! The gateway in `--xds` mode: routes by SNI from endpoints pushed by the federation's xDS
//! server, only to its own network's endpoints and only to mesh workloads (not to an API server
//! a selector-less Service points at), and follows readiness at once. Judged by openssl
//! s_client, which must see each backend's own certificate through the gateway.

use meshfed_certs::{CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions};
use meshfed_e2e::judges::{self, openssl_peer};
use meshfed_e2e::kubectl;
use meshfed_federation::{Controllers, FederationConfig, xds};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{Gateway, GatewayConfig};
use meshfed_proto::ads::Identity;
use meshfed_testbed::seed::{self, ClusterSpec, Workload};
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const HOST: &str = "helloworld.sample.svc.cluster.local";

fn sni(subset: &str) -> String {
    format!("outbound_.5000_.{subset}_.{HOST}")
}

fn workload(cluster: &str, network: &str, version: &str, addr: SocketAddr) -> Workload {
    let index = cluster[cluster.len() - 1..].parse().expect("clusterN");
    Workload {
        cluster: ClusterSpec {
            name: cluster.into(),
            network: network.into(),
            zone: "zone1".into(),
            version: version.into(),
            ..ClusterSpec::numbered(index)
        },
        ip: addr.ip().to_string(),
        port: addr.port(),
    }
}

const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: sample}
spec:
  host: helloworld.sample.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// A Service without a selector whose one endpoint is `target`: not a mesh workload.
fn apiserver_alias(target: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: apiserver-alias, namespace: sample}}
spec:
  ports: [{{name: https, port: 443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: apiserver-alias, namespace: sample, labels: {{kubernetes.io/service-name: apiserver-alias}}}}
addressType: IPv4
ports: [{{name: https, port: {port}}}]
endpoints: [{{addresses: [\"{ip}\"], conditions: {{ready: true}}}}]
",
        ip = target.ip(),
        port = target.port()
    )
}

/// The API server behind `apiserver-alias` is not reachable through the gateway: openssl,
/// trusting the API server's own CA (so it would verify if the bytes got there, as it does
/// directly), sees no certificate through the gateway.
async fn the_api_server_is_not_relayed(
    gw: SocketAddr,
    routes: &RouteHandle,
    api: SocketAddr,
    ca: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("apiserver-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let alias = "outbound_.443_._.apiserver-alias.sample.svc.cluster.local".to_string();
    let direct = peer(api, alias.clone(), ca_file.clone()).await;
    assert!(direct.is_ok(), "the probe itself: {direct:?}");
    // The federation knows the Service by now (it was there before it started); if it sends
    // the cluster, the gateway holds it without endpoints.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while routes.get().lookup(&alias).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(c) = routes.get().lookup(&alias) {
        assert!(c.endpoints.is_empty(), "{}", routes.get().debug_json());
    }
    match peer(gw, alias, ca_file).await {
        Ok(seen) => panic!("the gateway relayed to the API server: {seen}"),
        Err(text) => assert!(!text.contains("BEGIN CERTIFICATE"), "{text}"),
    }
}

/// Waits until the gateway's table gives `sni` exactly `n` endpoints.
async fn until_routes(routes: &RouteHandle, sni: &str, n: usize) {
    let mut changes = routes.subscribe();
    let ok = tokio::time::timeout(T, async {
        loop {
            if routes
                .get()
                .lookup(sni)
                .is_some_and(|c| c.endpoints.len() == n)
            {
                return;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{sni} never had {n} endpoints: {}",
        routes.get().debug_json()
    );
}

async fn peer(gw: SocketAddr, sni: String, root: std::path::PathBuf) -> Result<String, String> {
    tokio::task::spawn_blocking(move || openssl_peer(gw, &sni, &root))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_by_sni_from_pushed_local_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "mesh".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap();
    let ca = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "cluster2".into(),
            days: 30,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let root_pem = dir.path().join("root.pem");
    std::fs::write(&root_pem, root.cert_pem()).unwrap();
    let v1 = judges::openssl_server(dir.path(), &ca, "helloworld-v1", "127.0.0.11").unwrap();
    let v2 = judges::openssl_server(dir.path(), &ca, "helloworld-v2", "127.0.0.12").unwrap();

    // cluster1 on network1 runs v1; cluster2 on network2 runs v2 and this gateway.
    let (s1, c1) = seed::cluster("cluster1").await.unwrap();
    let (s2, c2) = seed::cluster("cluster2").await.unwrap();
    seed::helloworld(&c1, &workload("cluster1", "network1", "v1", v1.addr))
        .await
        .unwrap();
    let w2 = workload("cluster2", "network2", "v2", v2.addr);
    seed::helloworld(&c2, &w2).await.unwrap();
    seed::remote_secret(&c2, "cluster1", &s1.kubeconfig())
        .await
        .unwrap();
    let kubeconfig = dir.path().join("cluster2.kubeconfig");
    s2.write_kubeconfig(&kubeconfig).unwrap();
    kubectl::apply(&kubeconfig, SUBSETS).unwrap();
    // The observed attack: a selector-less Service whose EndpointSlice names the API server.
    kubectl::apply(&kubeconfig, &apiserver_alias(s2.addr())).unwrap();

    let fed = Controllers::start(c2.clone(), &FederationConfig::new("cluster2", "network2"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(xds::serve(
        listener,
        fed.registry.clone(),
        xds::Debounce::default(),
    ));

    let routes = RouteHandle::default();
    let metrics = meshfed_gateway::metrics::global();
    let id = Identity {
        kind: "router".into(),
        cluster_id: "cluster2".into(),
        network: "network2".into(),
        ip: "127.0.0.1".into(),
        pod: "gw".into(),
        namespace: "istio-system".into(),
        locality: Default::default(),
    };
    tokio::spawn(meshfed_gateway::xds::run(
        xds_url,
        id,
        routes.clone(),
        metrics,
    ));
    let any = "127.0.0.1:0".parse().unwrap();
    let gw = Gateway::bind(GatewayConfig::new(any, any, any), routes.clone())
        .await
        .unwrap();
    let gw_addr = gw.local_addr().unwrap();
    tokio::spawn(gw.run(std::future::pending()));

    // Every SNI the mesh knows, with this network's endpoints only: v1 lives on network1.
    until_routes(&routes, &sni("v2"), 1).await;
    until_routes(&routes, &sni(""), 1).await;
    until_routes(&routes, &sni("v1"), 0).await;
    let root_path = root_pem.clone();
    let seen = peer(gw_addr, sni("v2"), root_path.clone()).await.unwrap();
    assert!(
        seen.contains("spiffe://cluster.local/ns/sample/sa/helloworld-v2"),
        "{seen}"
    );
    let seen = peer(gw_addr, sni(""), root_path.clone()).await.unwrap();
    assert!(seen.contains("sa/helloworld-v2"), "{seen}");
    assert!(
        peer(gw_addr, sni("v1"), root_path.clone()).await.is_err(),
        "v1 is not on this network"
    );
    assert!(
        peer(gw_addr, "example.com".into(), root_path.clone())
            .await
            .is_err(),
        "no open relay"
    );
    the_api_server_is_not_relayed(gw_addr, &routes, s2.addr(), s2.ca_pem()).await;

    // Readiness: v2 turns not-ready and the gateway stops routing to it at once; and back.
    seed::set_ready(&c2, &w2, false).await.unwrap();
    until_routes(&routes, &sni("v2"), 0).await;
    assert!(peer(gw_addr, sni("v2"), root_path.clone()).await.is_err());
    seed::set_ready(&c2, &w2, true).await.unwrap();
    until_routes(&routes, &sni("v2"), 1).await;
    assert!(
        peer(gw_addr, sni("v2"), root_path)
            .await
            .unwrap()
            .contains("sa/helloworld-v2")
    );
    drop((v1, v2, s1, s2));
}
