//! What meshfed serves the kind bed's Envoy sidecars instead of static listeners: for the
//! node each sidecar's bootstrap makes (rendered for cluster 1) and a registry like the
//! bed's (the helloworld and sleep Services as the manifests define them, helloworld v1 in
//! cluster 1 and v2 in cluster 2), the LDS, RDS and CDS meshfed builds decode as Envoy's types
//! by Envoy's descriptors, and the HTTP proxy listener's route for
//! `helloworld.sample.svc.cluster.local:5000` reaches `outbound|5000||...`.

use super::envoy_schema::Schema;
use super::*;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use meshfed_federation::registry::{EndpointView, PortView, ServiceView, Snapshot};
use meshfed_federation::xds::generate::{Kind, Push, Resources, Subscription};
use prost::Message;

const HELLO_IP: &str = "10.11.0.7";
const SLEEP_IP: &str = "10.11.0.8";

/// The bed's Services (ports and target ports from the manifests) with one pod each:
/// helloworld v1 and sleep in cluster1, helloworld v2 in cluster2.
fn registry(raw: &Objects) -> Snapshot {
    let view = |name: &str, pods: &[(&str, &str, &str)]| {
        let spec = service(raw, name).spec.clone().unwrap();
        let p = &spec.ports.unwrap()[0];
        let target = match &p.target_port {
            Some(IntOrString::Int(t)) => *t as u16,
            other => panic!("{name}: targetPort {other:?}"),
        };
        ServiceView {
            hostname: format!("{name}.sample.svc.cluster.local"),
            namespace: "sample".into(),
            ports: vec![PortView {
                name: p.name.clone().unwrap(),
                port: p.port as u16,
                ..Default::default()
            }],
            endpoints: pods
                .iter()
                .map(|(cluster, ip, version)| EndpointView {
                    cluster: (*cluster).into(),
                    network: cluster.replace("cluster", "network").into(),
                    address: ip.to_string(),
                    port: target,
                    service_port: p.port as u16,
                    labels: std::collections::BTreeMap::from(
                        [("app", name), ("version", version)]
                            .map(|(k, v)| (k.to_string(), v.to_string())),
                    )
                    .into(),
                    ready: true,
                    service_account: name.into(),
                    ..Default::default()
                })
                .collect(),
            cluster_ips: [("cluster1".to_string(), "10.96.0.20".to_string())].into(),
            ..Default::default()
        }
    };
    Snapshot {
        services: [
            view(
                "helloworld",
                &[
                    ("cluster1", HELLO_IP, "v1"),
                    ("cluster2", "10.12.0.7", "v2"),
                ],
            ),
            view("sleep", &[("cluster1", SLEEP_IP, "")]),
        ]
        .map(std::sync::Arc::new)
        .into(),
        gateways: vec![],
    }
}

/// Every resource's bytes as Envoy's `message` (and its type URL) by the descriptors.
fn decodes(schema: &Schema, message: &str, resources: &Resources) {
    assert!(!resources.is_empty(), "no {message}");
    for (name, r) in resources {
        assert_eq!(r.body.type_url, format!("type.googleapis.com/{message}"));
        let errors = schema.check_wire(message, &r.body.value);
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
    }
}

fn hcm(l: &Listener) -> Option<HttpConnectionManager> {
    let chain = l.filter_chains.first()?;
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters.first()?.config_type else {
        return None;
    };
    any.type_url
        .ends_with("HttpConnectionManager")
        .then(|| HttpConnectionManager::decode(any.value.as_slice()).unwrap())
}

fn wildcard() -> Subscription {
    Subscription {
        wildcard: true,
        ..Default::default()
    }
}

/// What one sidecar gets: its listeners, the route configurations they name, its clusters;
/// each decoded by Envoy's descriptors, every named route configuration answered.
fn served(push: &Push, p: &Proxy, schema: &Schema) -> (Vec<Listener>, Resources, Resources) {
    let lds = push.resources(p, Kind::Listener, &wildcard());
    decodes(schema, "envoy.config.listener.v3.Listener", &lds);
    let listeners: Vec<Listener> = lds
        .values()
        .map(|r| Listener::decode(r.body.value.as_slice()).unwrap())
        .collect();
    let names: BTreeSet<String> = listeners
        .iter()
        .filter_map(hcm)
        .filter_map(|h| match h.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(r)) => Some(r.route_config_name),
            _ => None,
        })
        .collect();
    let sub = Subscription {
        wildcard: false,
        names: names.clone(),
    };
    let rds = push.resources(p, Kind::Route, &sub);
    assert_eq!(rds.keys().cloned().collect::<BTreeSet<_>>(), names);
    decodes(schema, "envoy.config.route.v3.RouteConfiguration", &rds);
    let cds = push.resources(p, Kind::Cluster, &wildcard());
    decodes(schema, "envoy.config.cluster.v3.Cluster", &cds);
    (listeners, rds, cds)
}

/// The cluster the HTTP proxy's routes give `Host: <host>` (Envoy's exact domain match).
fn routed(rc: &RouteConfiguration, host: &str) -> String {
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == host))
        .unwrap_or_else(|| panic!("no virtual host for {host}"));
    match &vh.routes[0].action {
        Some(route::Action::Route(a)) => match &a.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Istio's sidecar LDS/RDS for a pod without capture (HTTP_PROXY_PORT 15001, INTERCEPTION_MODE
/// NONE), as the kind bed's sidecars now take them: sleep gets the HTTP proxy listener
/// `127.0.0.1_15001` whose RDS `http_proxy` routes `helloworld.sample.svc.cluster.local:5000`
/// (and the short `helloworld:5000`) to meshfed's `outbound|5000||...`, which its CDS has;
/// helloworld's pod also gets `virtualInbound` on the Services' targetPort (15006), mTLS and
/// plain chains to `inbound|5000||`, a CDS cluster at 127.0.0.1 on the app's container port,
/// and no outbound listener on the port its app listens on.
#[test]
fn meshfed_serves_the_sidecars_listeners_routes_and_clusters() {
    let schema = Schema::envoy();
    let raw = all_manifests(None);
    let push = Push::new(
        1,
        std::time::Instant::now(),
        registry(&raw),
        vec![],
        "cluster.local",
    );
    let o = all_manifests(Some(1));
    let template = bootstrap_of(&o);
    let proxy_of = |name: &str, ip: &str| {
        let yaml = start_sidecar(deployment(&o, name), &template, ip, "pod-0");
        let b: Value = serde_yaml::from_str(&yaml).unwrap();
        Proxy::from_node(&node_of(&b, name)).unwrap()
    };
    let want = ClusterName::new(5000, None, HELLOWORLD).cluster();

    let sleep = proxy_of("sleep", SLEEP_IP);
    let (listeners, rds, cds) = served(&push, &sleep, &schema);
    let names: BTreeSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains("127.0.0.1_15001"), "{names:?}");
    assert!(names.contains("127.0.0.1_5000"), "{names:?}");
    let rc = RouteConfiguration::decode(rds["http_proxy"].body.value.as_slice()).unwrap();
    for host in [format!("{HELLOWORLD}:5000"), "helloworld:5000".into()] {
        assert_eq!(routed(&rc, &host), want, "{host}");
    }
    assert!(cds.contains_key(&want), "CDS has the routed cluster");

    let hello = proxy_of("helloworld-v1", HELLO_IP);
    let (listeners, _, cds) = served(&push, &hello, &schema);
    let names: BTreeSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert!(
        !names.contains("127.0.0.1_5000"),
        "the app's own port: {names:?}"
    );
    let inbound = listeners
        .iter()
        .find(|l| l.name == "virtualInbound")
        .expect("virtualInbound");
    let target = match service(&raw, "helloworld")
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()[0]
        .target_port
        .clone()
    {
        Some(IntOrString::Int(t)) => t,
        other => panic!("{other:?}"),
    };
    let bound = format!("{:?}", inbound.address);
    assert!(bound.contains(&format!("PortValue({target})")), "{bound}");
    let protocols: BTreeSet<&str> = inbound
        .filter_chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .as_ref()
                .unwrap()
                .transport_protocol
                .as_str()
        })
        .collect();
    assert_eq!(protocols, BTreeSet::from(["raw_buffer", "tls"]));
    let app_port = container(deployment(&raw, "helloworld-${VERSION}"), "helloworld")
        .ports
        .as_ref()
        .unwrap()[0]
        .container_port;
    for chain in &inbound.filter_chains {
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("no tcp_proxy")
        };
        let t = TcpProxy::decode(any.value.as_slice()).unwrap();
        let Some(tcp_proxy::ClusterSpecifier::Cluster(to)) = t.cluster_specifier else {
            panic!("{t:?}")
        };
        assert_eq!(to, "inbound|5000||");
        assert!(cds.contains_key(&to), "CDS has {to}");
        let cluster = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(
            cds[&to].body.value.as_slice(),
        )
        .unwrap();
        let at = format!("{:?}", cluster.load_assignment);
        assert!(
            at.contains("\"127.0.0.1\"") && at.contains(&format!("PortValue({app_port})")),
            "{at}"
        );
    }
}

/// The wire check is real: a field number Listener does not have, or an `Any` of a type
/// Envoy does not know, is refused.
#[test]
fn the_wire_check_refuses_unknown_fields_and_types() {
    let schema = Schema::envoy();
    let l = Listener {
        name: "x".into(),
        ..Default::default()
    };
    let mut bytes = l.encode_to_vec();
    assert!(
        schema
            .check_wire("envoy.config.listener.v3.Listener", &bytes)
            .is_empty()
    );
    bytes.extend([0xb8, 0x3e, 0x01]); // field 999, varint 1
    let errors = schema.check_wire("envoy.config.listener.v3.Listener", &bytes);
    assert!(
        errors.len() == 1 && errors[0].contains("no field number 999"),
        "{errors:?}"
    );
    let mut l = l;
    l.filter_chains = vec![Default::default()];
    l.filter_chains[0].filters = vec![envoy_types::pb::envoy::config::listener::v3::Filter {
        name: "f".into(),
        config_type: Some(filter::ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/envoy.nope.v3.Nope".into(),
                value: vec![],
            },
        )),
    }];
    let errors = schema.check_wire("envoy.config.listener.v3.Listener", &l.encode_to_vec());
    assert!(
        errors.len() == 1 && errors[0].contains("envoy.nope.v3.Nope"),
        "{errors:?}"
    );
}
