use super::*;
use crate::registry::{PortView, ServiceView, Snapshot};
use crate::xds::node::test_sidecar;
use crate::xds::route::retry::default_policy;
use crate::xds::virtual_service::{
    Destination, HttpMatch, HttpRoute, RouteDestination, StringMatch, VirtualService,
};
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Decorator, RouteAction};
use envoy_types::pb::google::protobuf::Duration as PbDuration;

const FQDN: &str = "helloworld.sample.svc.cluster.local";
const WEB: &str = "web.other.svc.cluster.local";

fn port(name: &str, port: u16) -> PortView {
    PortView {
        name: name.into(),
        port,
        ..Default::default()
    }
}

fn snapshot() -> Snapshot {
    let svc = |host: &str, ns: &str, ports| ServiceView {
        hostname: host.to_string(),
        namespace: ns.to_string(),
        ports,
        cluster_ips: [("c1".to_string(), "10.96.0.5".to_string())].into(),
        ..Default::default()
    };
    Snapshot {
        services: vec![
            svc(FQDN, "sample", vec![port("http", 5000)]),
            svc(WEB, "other", vec![port("http-web", 80), port("tcp", 9000)]),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        gateways: vec![],
    }
}

fn sources<'a>(s: &'a Snapshot, vs: &'a [VirtualService]) -> Sources<'a> {
    Sources {
        snapshot: s,
        virtual_services: vs,
        domain: "cluster.local",
    }
}

fn proxy() -> Proxy {
    let mut p = test_sidecar();
    p.namespace = "sample".into();
    p
}

fn vh<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vhost {name}"))
}

/// Istio `BuildDefaultHTTPOutboundRoute` for a sidecar: prefix `/`, the decorator
/// `fqdn:port/*`, `timeout` and `max_grpc_timeout` 0s (no limit, not Envoy's 15 s), Istio's
/// default retry policy and no `max_stream_duration` (that is proxyless's).
#[test]
#[allow(deprecated)] // max_grpc_timeout: what Istio sends
fn the_default_route_is_istios_for_envoy() {
    let s = snapshot();
    let rc = http_proxy(&proxy(), &sources(&s, &[]));
    let r = &vh(&rc, &format!("{FQDN}:5000")).routes;
    let zero = Some(PbDuration::default());
    let want = Route {
        name: "default".into(),
        r#match: Some(crate::xds::route::matching::catch_all()),
        decorator: Some(Decorator {
            operation: format!("{FQDN}:5000/*"),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(format!("outbound|5000||{FQDN}"))),
            timeout: zero,
            max_grpc_timeout: zero,
            retry_policy: Some(default_policy()),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_eq!(r, &vec![want]);
}

/// Istio `mergeAllVirtualHosts` for `http_proxy`: every HTTP service port, the vhost
/// `fqdn:port`; on port 5000 only the `:port` domains (with the proxy namespace's short
/// names and the VIP), on port 80 also the bare ones; TCP ports get none; `block_all` (502)
/// last; the port is matched (not ignored) so `Host: helloworld:5000` picks its service.
#[test]
fn http_proxy_has_every_http_service_port_with_port_domains() {
    let s = snapshot();
    let rc = by_name("http_proxy", &proxy(), &sources(&s, &[])).unwrap();
    assert_eq!(rc.name, "http_proxy");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            &format!("{FQDN}:5000") as &str,
            &format!("{WEB}:80"),
            "block_all"
        ]
    );
    assert_eq!(
        vh(&rc, &format!("{FQDN}:5000")).domains,
        [
            "helloworld.sample.svc.cluster.local:5000",
            "helloworld.sample.svc.cluster.local.:5000",
            "helloworld.sample.svc:5000",
            "helloworld.sample:5000",
            "helloworld:5000",
            "10.96.0.5:5000",
        ]
    );
    let web = &vh(&rc, &format!("{WEB}:80")).domains;
    assert!(web.contains(&WEB.to_string()) && web.contains(&format!("{WEB}:80")));
    assert!(web.contains(&"web.other:80".to_string()));
    assert!(
        !web.iter().any(|d| d.starts_with("web:") || d == "web"),
        "other namespace"
    );
    assert!(!rc.ignore_port_in_host_matching);
    assert_eq!(rc.validate_clusters, Some(BoolValue { value: false }));
    let last = rc.virtual_hosts.last().unwrap();
    assert_eq!(last.domains, ["*"]);
    assert_eq!(
        last.routes[0].action,
        Some(route::Action::DirectResponse(DirectResponseAction {
            status: 502,
            ..Default::default()
        }))
    );
}

/// Istio `buildSidecarOutboundHTTPRouteConfig` for `"<port>"`: the services on that port,
/// domains without ports (`ignore_port_in_host_matching`, `SidecarIgnorePort`), `block_all`
/// last; a port no HTTP service has, or a name that is no port, gives nothing.
#[test]
fn per_port_routes_ignore_the_port() {
    let s = snapshot();
    let src = sources(&s, &[]);
    let rc = by_name("5000", &proxy(), &src).unwrap();
    assert_eq!(rc.name, "5000");
    assert!(rc.ignore_port_in_host_matching);
    assert_eq!(
        rc.max_direct_response_body_size_bytes,
        Some(UInt32Value { value: 1_048_576 })
    );
    assert_eq!(rc.virtual_hosts.len(), 2);
    let d = &rc.virtual_hosts[0].domains;
    assert!(d.contains(&"helloworld".to_string()) && d.contains(&FQDN.to_string()));
    assert!(!d.iter().any(|x| x.contains(':')), "{d:?}");
    assert_eq!(rc.virtual_hosts[1].name, "block_all");
    assert!(by_name("9000", &proxy(), &src).is_none(), "a TCP port");
    assert!(by_name("5001", &proxy(), &src).is_none());
    assert!(by_name("outbound|5000||x", &proxy(), &src).is_none());
}

/// Istio: the client's VirtualService gives the vhost's routes in order (the seed's
/// `end-user: jason` rule: jason to v2, everyone else to v1).
#[test]
fn a_virtual_service_routes_the_http_proxy() {
    let to = |subset: &str| {
        vec![RouteDestination {
            destination: Destination {
                host: FQDN.into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight: 0,
            headers: Default::default(),
        }]
    };
    let mut m = HttpMatch::default();
    m.headers
        .insert("end-user".into(), StringMatch::Exact("jason".into()));
    let vs = VirtualService {
        namespace: "sample".into(),
        name: "helloworld".into(),
        created: String::new(),
        hosts: vec![FQDN.into()],
        gateways: vec![],
        mesh: true,
        export_to: vec![],
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
    };
    let s = snapshot();
    let rules = [vs];
    let rc = http_proxy(&proxy(), &sources(&s, &rules));
    let routes = &vh(&rc, &format!("{FQDN}:5000")).routes;
    let clusters: Vec<String> = routes
        .iter()
        .map(|r| match &r.action {
            Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
                ..
            })) => c.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        clusters,
        [
            format!("outbound|5000|v2|{FQDN}"),
            format!("outbound|5000|v1|{FQDN}")
        ]
    );
    assert_eq!(
        routes[0].r#match.as_ref().unwrap().headers[0].name,
        "end-user"
    );
    assert_eq!(
        routes[0].decorator.as_ref().unwrap().operation,
        format!("{FQDN}:5000/*")
    );
}
