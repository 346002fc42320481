//! A sidecar's listeners from its own endpoints as looked up in the push's index: the same
//! listeners, byte for byte, as from the scan of every endpoint the index replaced.

use super::*;
use crate::registry::{EndpointView, PortView, ServiceView, Snapshot};
use crate::xds::generate::{Kind, Push, Subscription};
use crate::xds::node::{Interception, test_sidecar};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Message;

fn ep(cluster: &str, address: &str, port: u16, service_port: u16) -> EndpointView {
    EndpointView {
        cluster: cluster.into(),
        address: address.into(),
        port,
        service_port,
        ..Default::default()
    }
}

fn svc(host: &str, ports: &[(&str, u16)], endpoints: Vec<EndpointView>) -> ServiceView {
    ServiceView {
        hostname: host.into(),
        namespace: "sample".into(),
        ports: ports
            .iter()
            .map(|&(name, port)| PortView {
                name: name.into(),
                port,
                ..Default::default()
            })
            .collect(),
        endpoints,
        ..Default::default()
    }
}

/// The pod at 10.0.0.1 in c1 is behind `a` (HTTP 8000 -> 8080) and `b` (HTTP 5000 -> the
/// sidecar's 15006, and HTTP 8001 -> 8080 again). A pod of c2 with the same IP is behind `c`
/// (TCP 7070), another pod of c1 behind `d` (TCP 6060).
fn mesh() -> Snapshot {
    Snapshot {
        services: vec![
            svc(
                "a.sample.svc.cluster.local",
                &[("http", 8000)],
                vec![ep("c1", "10.0.0.1", 8080, 8000)],
            ),
            svc(
                "b.sample.svc.cluster.local",
                &[("http", 5000), ("http-alt", 8001)],
                vec![
                    ep("c1", "10.0.0.1", 15006, 5000),
                    ep("c1", "10.0.0.1", 8080, 8001),
                ],
            ),
            svc(
                "c.sample.svc.cluster.local",
                &[("tcp", 7070)],
                vec![ep("c2", "10.0.0.1", 7070, 7070)],
            ),
            svc(
                "d.sample.svc.cluster.local",
                &[("tcp", 6060)],
                vec![ep("c1", "10.0.0.2", 6060, 6060)],
            ),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        gateways: vec![],
    }
}

fn sources(s: &Snapshot) -> Sources<'_> {
    Sources {
        snapshot: s,
        virtual_services: &[],
        domain: "cluster.local",
    }
}

fn cluster_of(c: &envoy_types::pb::envoy::config::listener::v3::FilterChain) -> String {
    let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
        panic!("no typed config")
    };
    match TcpProxy::decode(any.value.as_slice())
        .unwrap()
        .cluster_specifier
    {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

/// Istio finds a sidecar's service instances by its IP in its cluster: without capture
/// the pod's app ports under both Services (8000, 5000, 8001) get no outbound listener while
/// 7070 (the same IP, but c2's pod) and 6060 (another pod) do; `virtualInbound` has the
/// 15006 convention's chains to `inbound|5000||` and `destination_port: 8080` to
/// `inbound|8080||` (8080 serves two Services: one pair of chains), nothing for 7070; its CDS
/// has `inbound|5000||` and `inbound|8080||` only.
#[test]
fn a_sidecar_behind_two_services_gets_its_ports_and_not_another_clusters_pod() {
    let s = mesh();
    let mut p = test_sidecar();
    p.interception = Interception::None;
    let ls = listeners(&p, &sources(&s), "cluster.local");
    let names: Vec<&str> = ls.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["127.0.0.1_6060", "127.0.0.1_7070", "virtualInbound"]
    );
    let chains: Vec<(Option<u32>, String)> = ls[2]
        .filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.as_ref().unwrap();
            (m.destination_port.map(|p| p.value), cluster_of(c))
        })
        .collect();
    let want = |port: Option<u32>, app: &str| (port, format!("inbound|{app}||"));
    assert_eq!(
        chains,
        [
            want(None, "5000"),
            want(None, "5000"),
            want(Some(8080), "8080"),
            want(Some(8080), "8080"),
        ]
    );
    let push = Push::new(
        1,
        std::time::Instant::now(),
        mesh(),
        vec![],
        "cluster.local",
    );
    let all = Subscription {
        wildcard: true,
        ..Default::default()
    };
    let cds = push.resources(&p, Kind::Cluster, &all);
    let inbound: Vec<&str> = cds
        .keys()
        .map(String::as_str)
        .filter(|n| n.starts_with("inbound|"))
        .collect();
    assert_eq!(inbound, ["inbound|5000||", "inbound|8080||"]);
}

/// The listeners a push serves (its per-push index) are, byte for byte, those built from a
/// scan of every endpoint at the proxy's IP and cluster, for the pod in c1, the same IP in
/// c2, a proxy naming no cluster (every endpoint at its IP is its own), another pod and an
/// IP with no endpoints, with and without capture.
#[test]
fn a_push_serves_the_listeners_a_scan_of_every_endpoint_gives() {
    let s = mesh();
    let src = sources(&s);
    let push = Push::new(
        1,
        std::time::Instant::now(),
        mesh(),
        vec![],
        "cluster.local",
    );
    let all = Subscription {
        wildcard: true,
        ..Default::default()
    };
    let mut p = test_sidecar();
    for (ip, cluster) in [
        ("10.0.0.1", "c1"),
        ("10.0.0.1", "c2"),
        ("10.0.0.1", ""),
        ("10.0.0.2", "c1"),
        ("10.0.0.9", "c1"),
    ] {
        for interception in [Interception::None, Interception::Redirect] {
            p.ip = ip.into();
            p.cluster_id = cluster.into();
            p.interception = interception;
            let scanned: Vec<&EndpointView> = s
                .services
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.address == p.ip && (cluster.is_empty() || *e.cluster == *cluster))
                .collect();
            let want: Vec<(String, Vec<u8>)> =
                listeners_with(&p, &src, &scanned, &push.trust_domain)
                    .into_iter()
                    .map(|l| (l.name.clone(), l.encode_to_vec()))
                    .collect();
            let served: Vec<(String, Vec<u8>)> = push
                .resources(&p, Kind::Listener, &all)
                .into_iter()
                .map(|(n, r)| (n, r.body.value.clone()))
                .collect();
            let mut want = want;
            want.sort();
            assert_eq!(served, want, "{ip} in {cluster:?}, {interception:?}");
        }
    }
}
