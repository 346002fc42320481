use super::*;
use crate::registry::{PortView, ServiceView};
use crate::xds::node::{Generator, test_sidecar};
use crate::xds::virtual_service::{
    Destination, HttpMatch, HttpRoute, RouteDestination, StringMatch,
};
use envoy_types::pb::envoy::config::route::v3::{route, route_action::ClusterSpecifier};

const FQDN: &str = "helloworld.sample.svc.cluster.local";

fn snapshot() -> Snapshot {
    Snapshot {
        services: vec![std::sync::Arc::new(ServiceView {
            hostname: FQDN.into(),
            namespace: "sample".into(),
            ports: vec![PortView {
                name: "grpc".into(),
                port: 5000,
                ..Default::default()
            }],
            cluster_ips: [("c1".to_string(), "10.0.0.5".to_string())].into(),
            ..Default::default()
        })],
        gateways: vec![],
    }
}

fn proxy(ns: &str) -> Proxy {
    let mut p = test_sidecar();
    p.generator = Generator::Grpc;
    p.namespace = ns.into();
    p
}

fn to(subset: &str) -> Vec<RouteDestination> {
    vec![RouteDestination {
        destination: Destination {
            host: FQDN.into(),
            subset: Some(subset.into()),
            port: None,
        },
        weight: 0,
        headers: Default::default(),
    }]
}

/// The seed's `end-user: jason` rule: jason to v2, everyone else to v1.
fn jason_rule(export_to: &[&str]) -> VirtualService {
    let mut m = HttpMatch::default();
    m.headers
        .insert("end-user".into(), StringMatch::Exact("jason".into()));
    VirtualService {
        namespace: "sample".into(),
        name: "helloworld".into(),
        created: "2026-01-01T00:00:00Z".into(),
        hosts: vec![FQDN.into()],
        gateways: vec![],
        mesh: true,
        export_to: export_to.iter().map(|s| s.to_string()).collect(),
        http: vec![
            HttpRoute {
                matches: vec![m],
                route: to("v2"),
                ..Default::default()
            },
            HttpRoute {
                route: to("v1"),
                ..Default::default()
            },
        ],
        tcp: vec![],
        warnings: vec![],
    }
}

fn clusters(rc: &RouteConfiguration) -> Vec<String> {
    rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match &r.action {
            Some(route::Action::Route(a)) => match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => c.clone(),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// Istio grpcgen: the RDS name is the service port's cluster key, the one vhost is
/// `fqdn:port` with the client's domain forms (no `*`), and without a VirtualService the
/// route is Istio's default route.
#[test]
fn without_a_rule_the_default_route() {
    let s = snapshot();
    let src = Sources {
        snapshot: &s,
        virtual_services: &[],
        domain: "cluster.local",
    };
    let c = ClusterName::new(5000, None, FQDN);
    let rc = grpc(&c, &proxy("sample"), &src);
    assert_eq!(rc.name, format!("outbound|5000||{FQDN}"));
    assert_eq!(
        rc.virtual_hosts.len(),
        1,
        "no catch-all vhost for proxyless"
    );
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, format!("{FQDN}:5000"));
    assert!(vh.domains.contains(&"helloworld:5000".to_string()));
    assert!(vh.domains.contains(&"10.0.0.5:5000".to_string()));
    assert!(!vh.domains.contains(&"*".to_string()));
    assert_eq!(
        vh.routes,
        vec![crate::xds::route::default_route(&c, Generator::Grpc)]
    );
}

/// Istio: the VirtualService that applies gives the routes, in order; a client that
/// cannot see it (exportTo `.`) keeps the default route.
#[test]
fn the_rule_visible_to_the_client_gives_the_routes() {
    let s = snapshot();
    let rules = [jason_rule(&["."])];
    let src = Sources {
        snapshot: &s,
        virtual_services: &rules,
        domain: "cluster.local",
    };
    let c = ClusterName::new(5000, None, FQDN);
    let rc = grpc(&c, &proxy("sample"), &src);
    assert_eq!(
        clusters(&rc),
        [
            format!("outbound|5000|v2|{FQDN}"),
            format!("outbound|5000|v1|{FQDN}")
        ]
    );
    let rc = grpc(&c, &proxy("other"), &src);
    assert_eq!(clusters(&rc), [format!("outbound|5000||{FQDN}")]);
    assert!(
        !rc.virtual_hosts[0]
            .domains
            .contains(&"helloworld:5000".to_string())
    );
}

/// RDS names: only `outbound|port||fqdn` of a known service port stands for a route
/// configuration.
#[test]
fn rds_names_are_service_port_clusters() {
    let s = snapshot();
    assert_eq!(
        target(&format!("outbound|5000||{FQDN}"), &s),
        Some(ClusterName::new(5000, None, FQDN))
    );
    assert_eq!(target(&format!("outbound|5001||{FQDN}"), &s), None);
    assert_eq!(target(&format!("outbound|5000|v1|{FQDN}"), &s), None);
    assert_eq!(target("helloworld.sample:5000", &s), None);
}

/// End to end through a push, as a proxyless client asks: the listener `helloworld:5000`
/// names RDS `outbound|5000||fqdn`, and that RouteConfiguration carries the seed's
/// `end-user: jason` VirtualService (parsed from its object) with a fault and a timeout.
#[test]
fn a_push_serves_the_virtual_service_to_a_proxyless_client() {
    use crate::xds::generate::{Kind, Push, Subscription};
    use crate::xds::virtual_service::status::parse_all;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use prost::Message;
    use serde_json::json;
    let obj = json!({"metadata": {"name": "helloworld", "namespace": "sample",
        "creationTimestamp": "2026-01-02T03:04:05Z"},
      "spec": {"hosts": ["helloworld"], "http": [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "helloworld", "subset": "v2"}}]},
        {"timeout": "0.5s", "route": [{"destination": {"host": "helloworld", "subset": "v1"}}]}]}});
    let parsed = parse_all(
        &[("sample".into(), "helloworld".into(), obj)],
        &[],
        "cluster.local",
    );
    let push = Push::new(
        1,
        std::time::Instant::now(),
        snapshot(),
        vec![],
        "cluster.local",
    )
    .virtual_services(parsed);
    let p = proxy("sample");
    let sub = |n: &str| Subscription {
        wildcard: false,
        names: [n.to_string()].into(),
    };
    let lds = push.resources(&p, Kind::Listener, &sub("helloworld:5000"));
    let l = Listener::decode(lds["helloworld:5000"].body.value.as_slice()).unwrap();
    let hcm_any = l.api_listener.unwrap().api_listener.unwrap();
    let hcm = HttpConnectionManager::decode(hcm_any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no RDS")
    };
    let name = rds.route_config_name;
    assert_eq!(name, format!("outbound|5000||{FQDN}"));
    let res = push.resources(&p, Kind::Route, &sub(&name));
    let rc = RouteConfiguration::decode(res[&name].body.value.as_slice()).unwrap();
    assert_eq!(
        clusters(&rc),
        [
            format!("outbound|5000|v2|{FQDN}"),
            format!("outbound|5000|v1|{FQDN}")
        ]
    );
    let routes = &rc.virtual_hosts[0].routes;
    assert!(
        routes[0]
            .typed_per_filter_config
            .contains_key("envoy.filters.http.fault")
    );
    let Some(route::Action::Route(a)) = &routes[1].action else {
        panic!("no route action")
    };
    assert_eq!(
        a.max_stream_duration
            .unwrap()
            .max_stream_duration
            .unwrap()
            .nanos,
        500_000_000
    );
    assert!(
        push.resources(&p, Kind::Route, &sub("helloworld.sample:5000"))
            .is_empty(),
        "the old RDS name (the listener's) is no longer a route configuration"
    );
}
