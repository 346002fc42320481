use super::*;
use crate::registry::names::{Servers, tests as dns};
use crate::registry::types::{NodeInfo, ServicePort};
use crate::registry::{Registry, RegistryConfig};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn port(port: u16, node_port: Option<u16>) -> ServicePort {
    ServicePort {
        name: format!("p{port}"),
        port,
        node_port,
        ..Default::default()
    }
}

/// An east-west gateway Service of network2 with `ports`, reached on `addresses`.
fn gateway(ports: Vec<ServicePort>, addresses: &[&str]) -> ServiceInfo {
    ServiceInfo {
        ports,
        labels: labels(&[(label::NETWORK, "network2")]),
        external_addresses: addresses.iter().map(|a| a.to_string()).collect(),
        service_type: "LoadBalancer".into(),
        ..Default::default()
    }
}

fn cluster(svc: ServiceInfo) -> ClusterData {
    let mut d = ClusterData::default();
    d.services
        .insert(("istio-system".into(), "eastwest".into()), svc);
    d
}

fn names() -> Arc<GatewayNames> {
    let servers = Servers::Udp(Vec::new());
    GatewayNames::new(
        tokio::sync::watch::channel(0).0,
        servers,
        Duration::from_secs(30),
    )
}

fn find(data: &ClusterData) -> Found {
    of_cluster(
        "cluster2",
        data,
        data.services.keys(),
        &names(),
        &mut HashSet::new(),
    )
}

/// (address, port) of each gateway found.
fn reached(found: &Found) -> Vec<(String, u16)> {
    let mut out: Vec<_> = found
        .gateways
        .iter()
        .map(|g| (g.address.clone(), g.port))
        .collect();
    out.sort();
    out
}

/// Istio (getGatewayDetails): a Service labelled as a network's gateway is used only when it
/// exposes 15443 or the port its `networking.istio.io/gatewayPort` label names; otherwise it
/// is dropped ("labeled as gateway, but does not listen ...").
#[test]
fn a_gateway_must_expose_15443_or_its_gateway_port_label() {
    let without = find(&cluster(gateway(vec![port(80, None)], &["172.31.0.12"])));
    assert!(without.gateways.is_empty());
    assert_eq!(without.dropped.len(), 1);
    assert_eq!(without.dropped[0].kind, DropKind::NoGatewayPort);
    assert_eq!(without.dropped[0].service, "istio-system/eastwest");

    let with = find(&cluster(gateway(vec![port(15443, None)], &["172.31.0.12"])));
    assert_eq!(reached(&with), [("172.31.0.12".into(), 15443)]);

    let mut custom = gateway(vec![port(15443, None), port(16443, None)], &["172.31.0.12"]);
    custom
        .labels
        .insert(label::GATEWAY_PORT.into(), "16443".into());
    assert_eq!(
        reached(&find(&cluster(custom))),
        [("172.31.0.12".into(), 16443)]
    );
    let mut missing = gateway(vec![port(15443, None)], &["172.31.0.12"]);
    missing
        .labels
        .insert(label::GATEWAY_PORT.into(), "16443".into());
    assert_eq!(
        find(&cluster(missing)).dropped[0].kind,
        DropKind::NoGatewayPort
    );
}

/// Istio (conversion.go, updateServiceNodePortAddresses): a NodePort gateway annotated
/// `traffic.istio.io/nodeSelector` is reached on the ExternalIPs of the nodes the selector
/// matches, at the node port of its gateway port; a plain NodePort Service has no address.
#[test]
fn nodeport_gateways_are_reached_on_the_selected_nodes_at_the_node_port() {
    let mut svc = gateway(vec![port(15443, Some(31443))], &[]);
    svc.service_type = "NodePort".into();
    let plain = find(&cluster(svc.clone()));
    assert_eq!(plain.dropped[0].kind, DropKind::NoAddress);

    svc.node_selector = Some(labels(&[("gateway", "yes")]));
    let mut data = cluster(svc);
    let node = |l: &[(&str, &str)], ips: &[&str]| NodeInfo {
        labels: labels(l),
        external_ips: ips.iter().map(|i| i.to_string()).collect(),
        ..Default::default()
    };
    data.nodes
        .insert("n1".into(), node(&[("gateway", "yes")], &["203.0.113.1"]));
    data.nodes
        .insert("n2".into(), node(&[("gateway", "no")], &["203.0.113.2"]));
    data.nodes
        .insert("n3".into(), node(&[("gateway", "yes")], &[]));
    assert_eq!(reached(&find(&data)), [("203.0.113.1".into(), 31443)]);

    data.nodes.remove("n1");
    let none = find(&data);
    assert!(none.gateways.is_empty());
    assert_eq!(none.dropped[0].kind, DropKind::NoAddress);
}

/// Istio: a LoadBalancer gateway whose address is still pending has no gateway (dropped
/// with a reason, not reached at some other address).
#[test]
fn a_gateway_without_an_address_is_dropped_with_a_reason() {
    let found = find(&cluster(gateway(vec![port(15443, None)], &[])));
    assert!(found.gateways.is_empty());
    assert_eq!(found.dropped[0].kind, DropKind::NoAddress);
    assert!(found.dropped[0].reason.contains("no LoadBalancer address"));
}

fn config() -> RegistryConfig {
    RegistryConfig {
        system_namespace: "istio-system".into(),
        domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        stale_endpoint_ttl: None,
        sync_timeout: Duration::from_secs(30),
    }
}

/// Istio (RESOLVE_HOSTNAME_GATEWAYS): a LoadBalancer that publishes a hostname is a gateway on
/// the addresses the name resolves to; until it resolves the gateway is dropped, and
/// `/debug/clusterz` says why.
#[tokio::test]
async fn a_loadbalancer_hostname_becomes_its_addresses_once_resolved() {
    let records = dns::answer(Some(&[Ipv4Addr::new(192, 0, 2, 7)]));
    let server = dns::dns_server(records).await;
    let registry =
        Registry::with_gateway_dns(config(), Servers::Udp(vec![server]), Duration::from_secs(1));
    let mut changes = registry.subscribe();
    let generation = registry.add_generation("cluster2", "s", Some("network2".into()), 5);
    let svc = gateway(vec![port(15443, None)], &["lb.elb.example.com"]);
    registry.update("cluster2", generation, |d| *d = cluster(svc));
    changes.mark_unchanged();
    assert!(registry.snapshot().gateways.is_empty());
    let shown = &registry.clusters()[0].dropped_gateways;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].kind, DropKind::Unresolved);
    assert!(shown[0].reason.contains("lb.elb.example.com"));

    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("resolved within 10 s")
        .unwrap();
    let gateways = registry.snapshot().gateways;
    let got: Vec<(&str, &str, u16)> = gateways
        .iter()
        .map(|g| (g.network.as_str(), g.address.as_str(), g.port))
        .collect();
    assert_eq!(got, [("network2", "192.0.2.7", 15443)]);
    assert!(registry.clusters()[0].dropped_gateways.is_empty());
}
