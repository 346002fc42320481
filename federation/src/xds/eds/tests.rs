use super::*;
use crate::registry::{GatewayView, PortView, ServiceView};
use serde_json::json;

const HOST: &str = "helloworld.sample.svc.cluster.local";

fn ep(
    cluster: &str,
    network: &str,
    address: &str,
    locality: &str,
    version: &str,
    ready: bool,
) -> EndpointView {
    EndpointView {
        cluster: cluster.into(),
        network: network.into(),
        address: address.into(),
        port: 5000,
        service_port: 5000,
        locality: locality.into(),
        labels: [("version".to_string(), version.to_string())]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into(),
        ready,
        service_account: "helloworld".into(),
        ..Default::default()
    }
}

/// A mesh workload (`security.istio.io/tlsMode: istio`): what a gateway may route to.
fn mesh(mut e: EndpointView) -> EndpointView {
    std::sync::Arc::make_mut(&mut e.labels).insert(TLS.into(), "istio".into());
    e
}

const TLS: &str = "security.istio.io/tlsMode";

fn snapshot(remote_ready: [bool; 2]) -> Snapshot {
    let endpoints = vec![
        ep(
            "cluster1",
            "network1",
            "10.10.0.5",
            "region1/zone1",
            "v1",
            true,
        ),
        mesh(ep(
            "cluster2",
            "network2",
            "10.20.0.5",
            "region2/zone2",
            "v2",
            remote_ready[0],
        )),
        mesh(ep(
            "cluster2",
            "network2",
            "10.20.0.6",
            "region2/zone2",
            "v2",
            remote_ready[1],
        )),
    ];
    Snapshot {
        services: vec![std::sync::Arc::new(ServiceView {
            hostname: HOST.into(),
            namespace: "sample".into(),
            ports: vec![PortView {
                name: "http".into(),
                port: 5000,
                ..Default::default()
            }],
            endpoints,
            cluster_ips: BTreeMap::new(),
            ..Default::default()
        })],
        gateways: vec![GatewayView {
            network: "network2".into(),
            cluster: "cluster2".into(),
            address: "172.31.0.12".into(),
            port: 15443,
        }],
    }
}

fn proxy() -> Place {
    Place {
        locality: "region1/zone1".parse().unwrap(),
        network: "network1".into(),
        cluster: "cluster1".into(),
        labels: Default::default(),
        weight: 1,
    }
}

/// (address:port, weight, tlsMode?)
type HostSummary = (String, u32, bool);

/// (region, priority, locality weight, hosts)
fn summary(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32, Vec<HostSummary>)> {
    cla.endpoints
        .iter()
        .map(|l| {
            let eps = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        panic!()
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref().and_then(|a| a.address.clone())
                    else {
                        panic!()
                    };
                    let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier
                    else {
                        panic!()
                    };
                    (
                        format!("{}:{port}", sa.address),
                        e.load_balancing_weight
                            .as_ref()
                            .map(|w| w.value)
                            .unwrap_or(0),
                        e.metadata.is_some(),
                    )
                })
                .collect();
            (
                l.locality
                    .as_ref()
                    .map(|x| x.region.clone())
                    .unwrap_or_default(),
                l.priority,
                l.load_balancing_weight
                    .as_ref()
                    .map(|w| w.value)
                    .unwrap_or(0),
                eps,
            )
        })
        .collect()
}

fn name(subset: Option<&str>) -> ClusterName {
    ClusterName::new(5000, subset, HOST)
}

#[test]
fn remote_endpoints_become_their_gateway_weighted_by_count() {
    let cla = load_assignment(
        &name(None),
        &snapshot([true, true]),
        &proxy(),
        &BTreeMap::new(),
        &LocalityPolicy::default(),
    );
    assert_eq!(
        cla.cluster_name,
        "outbound|5000||helloworld.sample.svc.cluster.local"
    );
    assert_eq!(
        summary(&cla),
        [
            (
                "region1".into(),
                0,
                1,
                vec![("10.10.0.5:5000".into(), 1, false)]
            ),
            (
                "region2".into(),
                0,
                2,
                vec![("172.31.0.12:15443".into(), 2, true)]
            ),
        ]
    );
}

#[test]
fn not_ready_remote_endpoints_leave_the_gateway_weight_at_once() {
    let one = load_assignment(
        &name(None),
        &snapshot([true, false]),
        &proxy(),
        &BTreeMap::new(),
        &LocalityPolicy::default(),
    );
    assert_eq!(
        summary(&one)[1].3,
        [("172.31.0.12:15443".to_string(), 1, true)]
    );
    let none = load_assignment(
        &name(None),
        &snapshot([false, false]),
        &proxy(),
        &BTreeMap::new(),
        &LocalityPolicy::default(),
    );
    assert_eq!(
        summary(&none).len(),
        1,
        "a gateway with nothing ready behind it must not be listed"
    );
}

#[test]
fn subsets_select_by_labels() {
    let v2: BTreeMap<String, String> = [("version".to_string(), "v2".to_string())]
        .into_iter()
        .collect();
    let cla = load_assignment(
        &name(Some("v2")),
        &snapshot([true, true]),
        &proxy(),
        &v2,
        &LocalityPolicy::default(),
    );
    assert_eq!(
        cla.cluster_name,
        "outbound|5000|v2|helloworld.sample.svc.cluster.local"
    );
    assert_eq!(
        summary(&cla),
        [(
            "region2".into(),
            0,
            2,
            vec![("172.31.0.12:15443".into(), 2, true)]
        )]
    );
}

#[test]
fn seed_failover_and_distribute_rules_shape_priorities_and_weights() {
    let failover = LocalityPolicy::from_traffic_policy(
        &json!({"loadBalancer": {"localityLbSetting": {"enabled": true, "failover": [{"from": "region1", "to": "region2"}]}}, "outlierDetection": {"consecutive5xxErrors": 1}}),
    );
    let cla = load_assignment(
        &name(None),
        &snapshot([true, true]),
        &proxy(),
        &BTreeMap::new(),
        &failover,
    );
    let p: Vec<(String, u32)> = summary(&cla).into_iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(p, [("region1".into(), 0), ("region2".into(), 1)]);

    let distribute = LocalityPolicy::from_traffic_policy(
        &json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "region1/*", "to": {"region1/*": 80, "region2/*": 20}}]}}}),
    );
    let cla = load_assignment(
        &name(None),
        &snapshot([true, true]),
        &proxy(),
        &BTreeMap::new(),
        &distribute,
    );
    let w: Vec<(String, u32, u32)> = summary(&cla).into_iter().map(|s| (s.0, s.1, s.2)).collect();
    assert_eq!(w, [("region1".into(), 0, 80), ("region2".into(), 0, 20)]);
}

#[test]
fn not_ready_local_endpoints_are_marked_unhealthy() {
    let mut snap = snapshot([true, true]);
    std::sync::Arc::make_mut(&mut snap.services[0]).endpoints[0].ready = false;
    let cla = load_assignment(
        &name(None),
        &snap,
        &proxy(),
        &BTreeMap::new(),
        &LocalityPolicy::default(),
    );
    assert_eq!(
        cla.endpoints[0].lb_endpoints[0].health_status,
        HealthStatus::Unhealthy as i32
    );
}

#[test]
fn local_pods_with_a_sidecar_are_marked_for_istio_mtls() {
    let assign = |snap: &Snapshot| {
        load_assignment(
            &name(None),
            snap,
            &proxy(),
            &BTreeMap::new(),
            &LocalityPolicy::default(),
        )
    };
    let mut snap = snapshot([true, true]);
    std::sync::Arc::make_mut(
        &mut std::sync::Arc::make_mut(&mut snap.services[0]).endpoints[0].labels,
    )
    .insert("security.istio.io/tlsMode".into(), "istio".into());
    let cla = assign(&snap);
    let marked: Vec<bool> = summary(&cla)
        .into_iter()
        .flat_map(|(_, _, _, eps)| eps.into_iter().map(|(_, _, tls)| tls))
        .collect();
    assert_eq!(marked, [true, true], "the local pod and the remote gateway");
    std::sync::Arc::make_mut(
        &mut std::sync::Arc::make_mut(&mut snap.services[0]).endpoints[0].labels,
    )
    .insert("security.istio.io/tlsMode".into(), "disabled".into());
    let cla = assign(&snap);
    assert!(cla.endpoints[0].lb_endpoints[0].metadata.is_none());
}

fn gateway(cluster: &str, address: &str) -> GatewayView {
    GatewayView {
        network: "network2".into(),
        cluster: cluster.into(),
        address: address.into(),
        port: 15443,
    }
}

fn assign(snap: &Snapshot) -> Vec<(String, u32, u32, Vec<HostSummary>)> {
    let cla = load_assignment(
        &name(None),
        snap,
        &proxy(),
        &BTreeMap::new(),
        &LocalityPolicy::default(),
    );
    summary(&cla)
}

/// Istio (NetworkGateways, selectNetworkGateways, splitWeightAmongGateways): weights are scaled
/// by the lcm of the gateway counts per network and per network+cluster (here 3, 1 and 2: 6);
/// an endpoint goes through its own cluster's gateways of its network when there are some
/// (cluster2's two endpoints: all 12 on 172.31.0.1), splitting its weight evenly among them
/// (cluster3's: 3 each on .2 and .3), else through every gateway of its network (cluster4's:
/// 2 on each of the three).
#[test]
fn gateways_of_one_network_share_its_weight_preferring_the_endpoints_own_cluster() {
    let mut snap = snapshot([true, true]);
    snap.gateways = vec![
        gateway("cluster2", "172.31.0.1"),
        gateway("cluster3", "172.31.0.2"),
        gateway("cluster3", "172.31.0.3"),
    ];
    let remote = |cluster: &str, address: &str, locality: &str| {
        mesh(ep(cluster, "network2", address, locality, "v2", true))
    };
    let eps = &mut std::sync::Arc::make_mut(&mut snap.services[0]).endpoints;
    eps.push(remote("cluster3", "10.30.0.5", "region3/zone3"));
    eps.push(remote("cluster4", "10.40.0.5", "region4/zone4"));
    let host = |a: &str, w| (format!("{a}:15443"), w, true);
    assert_eq!(
        assign(&snap),
        [
            (
                "region1".into(),
                0,
                6,
                vec![("10.10.0.5:5000".into(), 6, false)]
            ),
            ("region2".into(), 0, 12, vec![host("172.31.0.1", 12)]),
            (
                "region3".into(),
                0,
                6,
                vec![host("172.31.0.2", 3), host("172.31.0.3", 3)]
            ),
            (
                "region4".into(),
                0,
                6,
                vec![
                    host("172.31.0.1", 2),
                    host("172.31.0.2", 2),
                    host("172.31.0.3", 2)
                ]
            ),
        ]
    );
}

/// Istio (EndpointsByNetworkFilter): endpoints on a network that has no gateway are kept as
/// direct endpoints ("access all endpoints directly"), not dropped.
#[test]
fn a_network_without_a_gateway_is_reached_directly() {
    let mut snap = snapshot([true, true]);
    snap.gateways.clear();
    let hosts: Vec<HostSummary> = assign(&snap).into_iter().flat_map(|l| l.3).collect();
    assert_eq!(
        hosts,
        [
            ("10.10.0.5:5000".to_string(), 1, false),
            ("10.20.0.5:5000".to_string(), 1, true),
            ("10.20.0.6:5000".to_string(), 1, true)
        ]
    );
}

/// Istio (EndpointsByNetworkFilter, isMtlsEnabled): cross-network traffic relies on mTLS for
/// the gateway's SNI routing, so an endpoint on another network that is not a mesh workload
/// (no `tlsMode: istio`) is left out rather than sent through the gateway.
#[test]
fn remote_endpoints_that_are_not_mesh_workloads_do_not_go_through_gateways() {
    let mut snap = snapshot([true, true]);
    std::sync::Arc::make_mut(
        &mut std::sync::Arc::make_mut(&mut snap.services[0]).endpoints[1].labels,
    )
    .remove(TLS);
    assert_eq!(
        assign(&snap)[1].3,
        [("172.31.0.12:15443".to_string(), 1, true)]
    );
    std::sync::Arc::make_mut(
        &mut std::sync::Arc::make_mut(&mut snap.services[0]).endpoints[2].labels,
    )
    .remove(TLS);
    assert_eq!(assign(&snap).len(), 1, "no gateway for plaintext endpoints");
}
