use super::*;
use crate::registry::{PortView, ServiceView, Snapshot};
use crate::xds::node::test_sidecar;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use prost::Message;

const FQDN: &str = "helloworld.sample.svc.cluster.local";

pub(crate) fn snapshot() -> Snapshot {
    Snapshot {
        services: vec![std::sync::Arc::new(ServiceView {
            hostname: FQDN.into(),
            namespace: "sample".into(),
            ports: vec![PortView {
                name: "http".into(),
                port: 5000,
                ..Default::default()
            }],
            ..Default::default()
        })],
        gateways: vec![],
    }
}

fn hcm_of(l: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    assert!(any.type_url.ends_with("HttpConnectionManager"));
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

/// Istio `buildHTTPProxy`: node metadata `HTTP_PROXY_PORT` gives the listener
/// `127.0.0.1_<port>`, bound for real, whose HCM allows absolute URLs, takes RDS
/// `http_proxy` over ADS and runs the fault filter then the router; no port, no listener.
#[test]
fn http_proxy_port_gives_the_http_proxy_listener() {
    let s = snapshot();
    let src = Sources {
        snapshot: &s,
        virtual_services: &[],
        domain: "cluster.local",
    };
    let mut p = test_sidecar();
    assert!(
        listeners(&p, &src, "cluster.local")
            .iter()
            .all(|l| !l.name.starts_with("127.0.0.1_"))
    );
    p.http_proxy_port = Some(15001);
    let all = listeners(&p, &src, "cluster.local");
    let l = all
        .iter()
        .find(|l| l.name == "127.0.0.1_15001")
        .expect("http proxy");
    assert_eq!(l.address, Some(socket("127.0.0.1", 15001)));
    assert_eq!(l.bind_to_port, Some(BoolValue { value: true }));
    assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
    assert_eq!(l.filter_chains[0].filters[0].name, HCM_FILTER);
    let hcm = hcm_of(l);
    assert_eq!(hcm.stat_prefix, "outbound_127.0.0.1_15001");
    let Some(RouteSpecifier::Rds(r)) = &hcm.route_specifier else {
        panic!("not RDS")
    };
    assert_eq!(r.route_config_name, "http_proxy");
    assert!(
        r.config_source
            .as_ref()
            .unwrap()
            .config_source_specifier
            .is_some()
    );
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.fault", "envoy.filters.http.router"]
    );
    assert_eq!(
        hcm.http_protocol_options.unwrap().allow_absolute_url,
        Some(BoolValue { value: true })
    );
}

use crate::registry::EndpointView;
use crate::xds::node::Interception;
use crate::xds::virtual_service::{
    Destination, L4Match, RouteDestination, TcpRoute, VirtualService,
};
use envoy_types::pb::envoy::config::accesslog::v3::access_log;
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

const ECHO: &str = "tcp-echo.sample.svc.cluster.local";

fn port(name: &str, p: u16) -> PortView {
    PortView {
        name: name.into(),
        port: p,
        ..Default::default()
    }
}

/// helloworld (HTTP 5000, its pod 10.0.0.1 behind targetPort 15006 as in the kind bed),
/// tcp-echo (TCP 9000), and two TCP services sharing 3306.
fn mesh() -> Snapshot {
    let mut s = snapshot();
    std::sync::Arc::make_mut(&mut s.services[0]).endpoints = vec![EndpointView {
        cluster: "c1".into(),
        address: "10.0.0.1".into(),
        port: 15006,
        service_port: 5000,
        ..Default::default()
    }];
    let tcp = |host: &str, p: u16, vip: &str| ServiceView {
        hostname: host.into(),
        namespace: "sample".into(),
        ports: vec![port("tcp", p)],
        cluster_ips: [("c1".to_string(), vip.to_string())].into(),
        ..Default::default()
    };
    s.services
        .push(std::sync::Arc::new(tcp(ECHO, 9000, "10.96.0.9")));
    s.services.push(std::sync::Arc::new(tcp(
        "db-a.sample.svc.cluster.local",
        3306,
        "10.96.0.10",
    )));
    s.services.push(std::sync::Arc::new(tcp(
        "db-b.sample.svc.cluster.local",
        3306,
        "10.96.0.11",
    )));
    s.services.push(std::sync::Arc::new(tcp(
        "kube-dns.kube-system.svc.cluster.local",
        53,
        "10.96.0.53",
    )));
    let status = tcp("status.istio-system.svc.cluster.local", 15021, "10.96.0.21");
    s.services.push(std::sync::Arc::new(status));
    s
}

fn find<'a>(ls: &'a [Listener], name: &str) -> &'a Listener {
    ls.iter().find(|l| l.name == name).unwrap_or_else(|| {
        panic!(
            "no listener {name} in {:?}",
            ls.iter().map(|l| &l.name).collect::<Vec<_>>()
        )
    })
}

fn tcp_of(l: &Listener) -> TcpProxy {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    assert!(
        any.type_url.ends_with("tcp_proxy.v3.TcpProxy"),
        "{}",
        any.type_url
    );
    TcpProxy::decode(any.value.as_slice()).unwrap()
}

/// Istio `buildSidecarOutboundListeners` with capture (REDIRECT): `0.0.0.0_5000` for the
/// HTTP port (not bound, HCM with RDS "5000", stat prefix `outbound_0.0.0.0_5000`),
/// `0.0.0.0_9000` a TCP proxy to `outbound|9000||tcp-echo...`, and the TCP services sharing
/// 3306 each on their ClusterIP (`10.96.0.10_3306`).
#[test]
fn outbound_listeners_by_port_with_capture() {
    let s = mesh();
    let src = Sources {
        snapshot: &s,
        virtual_services: &[],
        domain: "cluster.local",
    };
    let p = test_sidecar();
    let ls = listeners(&p, &src, "cluster.local");
    let http = find(&ls, "0.0.0.0_5000");
    assert_eq!(http.bind_to_port, Some(BoolValue { value: false }));
    assert_eq!(http.address, Some(socket("0.0.0.0", 5000)));
    let hcm = hcm_of(http);
    assert_eq!(hcm.stat_prefix, "outbound_0.0.0.0_5000");
    let Some(RouteSpecifier::Rds(r)) = &hcm.route_specifier else {
        panic!("not RDS")
    };
    assert_eq!(r.route_config_name, "5000");
    let echo = tcp_of(find(&ls, "0.0.0.0_9000"));
    assert_eq!(
        echo.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(format!(
            "outbound|9000||{ECHO}"
        )))
    );
    let a = tcp_of(find(&ls, "10.96.0.10_3306"));
    assert_eq!(
        a.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|3306||db-a.sample.svc.cluster.local".into()
        ))
    );
    find(&ls, "10.96.0.11_3306");
    find(&ls, "0.0.0.0_53");
    find(&ls, "0.0.0.0_15021");
    assert!(!ls.iter().any(|l| l.name == "0.0.0.0_3306"));
}

/// The seed's tcp-echo 80/20 rule (`tcp[0].route` v1 80, v2 20): Istio
/// `buildOutboundNetworkFiltersWithWeightedClusters` gives `weighted_clusters`; a 0 weight
/// is dropped; a `tcp` route whose match names another port is skipped.
#[test]
fn tcp_routes_weight_the_tcp_proxy() {
    let d = |subset: &str, weight| RouteDestination {
        destination: Destination {
            host: ECHO.into(),
            subset: Some(subset.into()),
            port: Some(9000),
        },
        weight,
        headers: Default::default(),
    };
    let vs = VirtualService {
        namespace: "sample".into(),
        name: "tcp-echo".into(),
        created: String::new(),
        hosts: vec![ECHO.into()],
        gateways: vec![],
        mesh: true,
        export_to: vec![],
        http: vec![],
        tcp: vec![
            TcpRoute {
                matches: vec![L4Match {
                    port: Some(31400),
                    ..Default::default()
                }],
                route: vec![d("v3", 100)],
            },
            TcpRoute {
                matches: vec![],
                route: vec![d("v1", 80), d("v2", 20), d("v3", 0)],
            },
        ],
        warnings: vec![],
    };
    let s = mesh();
    let rules = [vs];
    let src = Sources {
        snapshot: &s,
        virtual_services: &rules,
        domain: "cluster.local",
    };
    let ls = listeners(&test_sidecar(), &src, "cluster.local");
    let t = tcp_of(find(&ls, "0.0.0.0_9000"));
    let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = t.cluster_specifier else {
        panic!("not weighted: {t:?}")
    };
    let got: Vec<(String, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight))
        .collect();
    assert_eq!(
        got,
        [
            (format!("outbound|9000|v1|{ECHO}"), 80),
            (format!("outbound|9000|v2|{ECHO}"), 20)
        ]
    );
}

/// `INTERCEPTION_MODE: NONE`: Istio binds outbound listeners on 127.0.0.1 for real; meshfed
/// (a documented deviation) leaves out the ports the proxy's own app serves (helloworld's pod
/// serves 5000), the HTTP proxy port, privileged ports (kube-dns 53: the kind bed's Envoy runs
/// as uid 101), Istio's reserved 15000-15090 (the agent's 15020, status 15021) and shared TCP
/// ports.
#[test]
fn without_capture_listeners_bind_loopback_and_skip_the_apps_ports() {
    let s = mesh();
    let src = Sources {
        snapshot: &s,
        virtual_services: &[],
        domain: "cluster.local",
    };
    let mut p = test_sidecar();
    p.interception = Interception::None;
    p.http_proxy_port = Some(9000);
    let ls = listeners(&p, &src, "cluster.local");
    let names: Vec<&str> = ls.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["127.0.0.1_9000", "virtualInbound"],
        "the app's 5000, the proxy port as TCP, 3306 shared"
    );
    assert!(
        find(&ls, "127.0.0.1_9000").filter_chains[0].filters[0].name == HCM_FILTER,
        "the HTTP proxy, not tcp-echo"
    );
    // A sleep pod (no endpoints of its own) gets 5000 bound on loopback and no inbound.
    p.ip = "10.0.0.2".into();
    p.http_proxy_port = Some(15001);
    let ls = listeners(&p, &src, "cluster.local");
    let l = find(&ls, "127.0.0.1_5000");
    assert_eq!(l.bind_to_port, Some(BoolValue { value: true }));
    assert_eq!(l.address, Some(socket("127.0.0.1", 5000)));
    find(&ls, "127.0.0.1_9000");
    find(&ls, "127.0.0.1_15001");
    assert!(!ls.iter().any(|l| l.name.ends_with("_53")));
    assert!(
        !ls.iter().any(|l| l.name.ends_with("_15021")),
        "Istio's reserved ports"
    );
    assert!(!ls.iter().any(|l| l.name == "virtualInbound"));
}

fn chain_match(m: &Option<FilterChainMatch>) -> (Option<u32>, String) {
    let m = m.as_ref().unwrap();
    (
        m.destination_port.map(|p| p.value),
        m.transport_protocol.clone(),
    )
}

/// Istio `virtualInbound` (listener_inbound.go): 0.0.0.0:15006, `tls` and `raw_buffer`
/// chains per own app port to `inbound|P||`, the tls one with a DownstreamTlsContext that
/// requires a client certificate of the trust domain and logs the peer. The kind bed's
/// convention (targetPort 15006) matches any destination port and leads to
/// `inbound|<service port>||`; another target port P is matched as `destination_port: P`.
#[test]
fn virtual_inbound_has_tls_and_plain_chains_per_own_port() {
    let mut s = mesh();
    std::sync::Arc::make_mut(&mut s.services[1]).endpoints = vec![EndpointView {
        cluster: "c1".into(),
        address: "10.0.0.1".into(),
        port: 9090,
        service_port: 9000,
        ..Default::default()
    }];
    let src = Sources {
        snapshot: &s,
        virtual_services: &[],
        domain: "cluster.local",
    };
    let mut p = test_sidecar();
    p.interception = Interception::None;
    let ls = listeners(&p, &src, "example.org");
    let l = find(&ls, "virtualInbound");
    assert_eq!(l.address, Some(socket("0.0.0.0", 15006)));
    assert_eq!(l.traffic_direction, TrafficDirection::Inbound as i32);
    let lf: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        lf,
        ["envoy.filters.listener.tls_inspector"],
        "no original_dst without capture"
    );
    let got: Vec<(Option<u32>, String)> = l
        .filter_chains
        .iter()
        .map(|c| chain_match(&c.filter_chain_match))
        .collect();
    assert_eq!(
        got,
        [
            (None, "tls".to_string()),
            (None, "raw_buffer".to_string()),
            (Some(9090), "tls".to_string()),
            (Some(9090), "raw_buffer".to_string()),
        ]
    );
    let to: Vec<String> = l
        .filter_chains
        .iter()
        .map(|c| {
            let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                panic!()
            };
            let t = TcpProxy::decode(any.value.as_slice()).unwrap();
            match t.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        to,
        [
            "inbound|5000||",
            "inbound|5000||",
            "inbound|9090||",
            "inbound|9090||"
        ]
    );
    let tls = &l.filter_chains[0];
    let ts = tls.transport_socket.as_ref().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &ts.config_type
    else {
        panic!()
    };
    let ctx = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        ctx.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let text = format!("{ctx:?}");
    assert!(
        text.contains("spiffe://example.org/")
            && text.contains("ROOTCA")
            && text.contains("default")
    );
    let Some(filter::ConfigType::TypedConfig(any)) = &tls.filters[0].config_type else {
        panic!()
    };
    let t = TcpProxy::decode(any.value.as_slice()).unwrap();
    assert!(t.access_log_options.unwrap().flush_access_log_on_connected);
    let Some(access_log::ConfigType::TypedConfig(log)) = &t.access_log[0].config_type else {
        panic!("no access log config")
    };
    assert!(log.type_url.ends_with("stream.v3.StdoutAccessLog"));
    // The format string travels as it is in the message's bytes.
    assert!(
        String::from_utf8_lossy(&log.value).contains("inbound_mtls peer=%DOWNSTREAM_PEER_URI_SAN%")
    );
    assert!(l.filter_chains[1].transport_socket.is_none());
    // With capture Istio reads the original destination first.
    p.interception = Interception::Redirect;
    let ls = listeners(&p, &src, "example.org");
    let l = find(&ls, "virtualInbound");
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.original_dst"
    );
}

/// What generate.rs serves an Envoy sidecar (as Istio's sidecars receive LDS/RDS/CDS):
/// wildcard LDS gives its listeners, RDS by name the port and `http_proxy` configurations,
/// and its CDS has its own `inbound|5000||` beside the outbound clusters; another sidecar
/// (no endpoints of its own) has none, and a proxyless client gets no Envoy listener.
#[test]
fn a_push_serves_envoy_sidecars_their_listeners_routes_and_inbound_clusters() {
    use crate::xds::generate::{Kind, Push, Subscription};
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    let push = Push::new(
        1,
        std::time::Instant::now(),
        mesh(),
        vec![],
        "cluster.local",
    );
    let mut p = test_sidecar();
    p.http_proxy_port = Some(15001);
    p.interception = Interception::None;
    let all = Subscription {
        wildcard: true,
        ..Default::default()
    };
    let lds = push.resources(&p, Kind::Listener, &all);
    let names: Vec<&str> = lds.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["127.0.0.1_15001", "127.0.0.1_9000", "virtualInbound"]
    );
    let rds = Subscription {
        wildcard: false,
        names: [
            "http_proxy".to_string(),
            "5000".to_string(),
            "nope".to_string(),
        ]
        .into(),
    };
    let routes = push.resources(&p, Kind::Route, &rds);
    assert_eq!(routes.keys().collect::<Vec<_>>(), ["5000", "http_proxy"]);
    let rc = RouteConfiguration::decode(routes["http_proxy"].body.value.as_slice()).unwrap();
    assert_eq!(rc.virtual_hosts[0].name, format!("{FQDN}:5000"));
    let cds = push.resources(&p, Kind::Cluster, &all);
    assert!(cds.contains_key("inbound|5000||"), "{:?}", cds.keys());
    assert!(cds.contains_key(&format!("outbound|5000||{FQDN}")));
    assert!(
        push.changes(&p, Kind::Cluster, &all).is_none(),
        "compared per client"
    );
    let mut sleep = p.clone();
    sleep.ip = "10.0.0.2".into();
    assert!(
        !push
            .resources(&sleep, Kind::Cluster, &all)
            .keys()
            .any(|n| n.starts_with("inbound|"))
    );
    let mut grpc = p.clone();
    grpc.generator = crate::xds::node::Generator::Grpc;
    assert!(
        !push
            .resources(&grpc, Kind::Listener, &all)
            .contains_key("virtualInbound")
    );
}
