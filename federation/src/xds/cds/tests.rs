use super::*;
use crate::registry::{EndpointView, PortView};
use crate::xds::node::{Generator, ProxyKind};
use serde_json::json;

const HOST: &str = "helloworld.sample.svc.cluster.local";

fn snapshot() -> Snapshot {
    let ep = |sa: &str| EndpointView {
        cluster: "cluster1".into(),
        network: "network1".into(),
        address: "10.10.0.5".into(),
        port: 5000,
        service_port: 5000,
        locality: "region1/zone1".into(),
        labels: Default::default(),
        ready: true,
        service_account: sa.into(),
        ..Default::default()
    };
    Snapshot {
        services: vec![std::sync::Arc::new(ServiceView {
            hostname: HOST.into(),
            namespace: "sample".into(),
            ports: vec![PortView {
                name: "http".into(),
                port: 5000,
                ..Default::default()
            }],
            endpoints: vec![ep("helloworld"), ep("helloworld"), ep("other")],
            cluster_ips: Default::default(),
            ..Default::default()
        })],
        gateways: vec![],
    }
}

fn proxy(kind: ProxyKind, generator: Generator) -> Proxy {
    Proxy {
        id: "x".into(),
        kind,
        ip: "10.10.0.9".into(),
        namespace: "sample".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        locality: Default::default(),
        generator,
        labels: Default::default(),
        http_proxy_port: None,
        interception: Default::default(),
    }
}

/// The seed's failover rule (001/003 walkthroughs), as kubectl would store it.
fn seed_rule() -> Rule {
    let dr = json!({"spec": {"host": "helloworld.sample.svc.cluster.local",
        "trafficPolicy": {
            "connectionPool": {"http": {"maxRequestsPerConnection": 1}},
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true,
                "failover": [{"from": "region1", "to": "region2"}]}},
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "1m"}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}});
    Rule::from_object("sample", "helloworld", &dr, "cluster.local").unwrap()
}

#[test]
fn a_cluster_per_port_and_subset_with_the_rule_applied() {
    let snap = snapshot();
    let rules = vec![seed_rule()];
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let specs = specs(&snap, &rules, &p);
    let names: Vec<String> = specs.iter().map(|s| resource_name(&p, &s.name)).collect();
    assert_eq!(
        names,
        [
            "outbound|5000||helloworld.sample.svc.cluster.local",
            "outbound|5000|v1|helloworld.sample.svc.cluster.local",
            "outbound|5000|v2|helloworld.sample.svc.cluster.local"
        ]
    );
    let c = cluster(&p, &specs[1], "cluster.local");
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    let od = c.outlier_detection.unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 1);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
    assert_eq!(od.interval.unwrap().seconds, 1);
    assert_eq!(od.base_ejection_time.unwrap().seconds, 60);
    let eds = c.eds_cluster_config.unwrap();
    assert_eq!(eds.service_name, names[1]);
    assert!(matches!(
        eds.eds_config.unwrap().config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
}

#[test]
fn envoy_sidecars_get_istio_mtls_with_the_sni_for_gateway_endpoints() {
    let snap = snapshot();
    let rules = vec![seed_rule()];
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let spec = &specs(&snap, &rules, &p)[2];
    let c = cluster(&p, spec, "cluster.local");
    assert_eq!(c.transport_socket_matches.len(), 2);
    let m = &c.transport_socket_matches[0];
    assert_eq!(
        m.r#match.as_ref().unwrap().fields["tlsMode"],
        Value {
            kind: Some(value::Kind::StringValue("istio".into()))
        }
    );
    let Some(transport_socket::ConfigType::TypedConfig(any)) =
        m.transport_socket.as_ref().unwrap().config_type.clone()
    else {
        panic!()
    };
    let tls: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        tls.sni,
        "outbound_.5000_.v2_.helloworld.sample.svc.cluster.local"
    );
    let ctx = tls.common_tls_context.unwrap();
    assert_eq!(ctx.tls_certificate_sds_secret_configs[0].name, "default");
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        ctx.validation_context_type
    else {
        panic!()
    };
    assert_eq!(
        v.validation_context_sds_secret_config.unwrap().name,
        "ROOTCA"
    );
    let sans: Vec<_> = v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names
        .into_iter()
        .map(|m| match m.matcher.unwrap().match_pattern.unwrap() {
            string_matcher::MatchPattern::Exact(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            "spiffe://cluster.local/ns/sample/sa/helloworld",
            "spiffe://cluster.local/ns/sample/sa/other"
        ]
    );
}

/// `--trust-domain`: the SANs peers are checked against name the mesh's trust domain, as
/// Istio's `spiffe://<trust domain>/ns/<ns>/sa/<sa>` (not a hard-coded cluster.local).
#[test]
fn peer_sans_are_in_the_configured_trust_domain() {
    let snap = snapshot();
    let rules = vec![seed_rule()];
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let c = cluster(&p, &specs(&snap, &rules, &p)[2], "mesh.example");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = c.transport_socket_matches[0]
        .transport_socket
        .as_ref()
        .unwrap()
        .config_type
        .clone()
    else {
        panic!()
    };
    let tls: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).unwrap();
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!()
    };
    let sans: Vec<_> = v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names
        .into_iter()
        .map(|m| format!("{:?}", m.matcher.unwrap().match_pattern.unwrap()))
        .collect();
    assert_eq!(
        sans,
        [
            "Exact(\"spiffe://mesh.example/ns/sample/sa/helloworld\")",
            "Exact(\"spiffe://mesh.example/ns/sample/sa/other\")"
        ]
    );
}

#[test]
fn grpc_clients_and_routers_get_no_transport_socket_and_routers_sni_names() {
    let snap = snapshot();
    let rules = vec![seed_rule()];
    let grpc = proxy(ProxyKind::Sidecar, Generator::Grpc);
    let spec = &specs(&snap, &rules, &grpc)[1];
    assert!(
        cluster(&grpc, spec, "cluster.local")
            .transport_socket_matches
            .is_empty()
    );
    let router = proxy(ProxyKind::Router, Generator::Envoy);
    let c = cluster(&router, spec, "cluster.local");
    assert!(c.transport_socket_matches.is_empty());
    assert_eq!(
        c.name,
        "outbound_.5000_.v1_.helloworld.sample.svc.cluster.local"
    );
}

#[test]
fn load_balancer_and_locality_settings() {
    let snap = snapshot();
    let dr = json!({"spec": {"host": "helloworld", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST",
        "localityLbSetting": {"distribute": [{"from": "region1/*", "to": {"region1/*": 80, "region2/*": 20}}]}},
        "outlierDetection": {"consecutiveGatewayErrors": 3, "minHealthPercent": 50}}}});
    let rules = vec![Rule::from_object("sample", "d", &dr, "cluster.local").unwrap()];
    let p = proxy(ProxyKind::Sidecar, Generator::Grpc);
    let c = cluster(&p, &specs(&snap, &rules, &p)[0], "cluster.local");
    assert_eq!(c.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    let common = c.common_lb_config.unwrap();
    assert!(matches!(
        common.locality_config_specifier,
        Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));
    assert_eq!(common.healthy_panic_threshold.unwrap().value, 50.0);
    let od = c.outlier_detection.unwrap();
    assert_eq!(od.consecutive_gateway_failure.unwrap().value, 3);
    assert!(od.consecutive_5xx.is_none());
}

#[test]
fn no_rule_means_round_robin_and_no_outlier_detection() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let specs = specs(&snap, &[], &p);
    assert_eq!(specs.len(), 1);
    let c = cluster(&p, &specs[0], "cluster.local");
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert!(c.outlier_detection.is_none() && c.common_lb_config.is_none());
}

fn rule(tp: serde_json::Value) -> Rule {
    let dr = json!({"spec": {"host": "helloworld", "trafficPolicy": tp,
        "subsets": [{"name": "v1", "labels": {"version": "v1"},
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}});
    Rule::from_object("sample", "dr", &dr, "cluster.local").unwrap()
}

fn clusters(snap: &Snapshot, rules: &[Rule], p: &Proxy) -> Vec<Cluster> {
    specs(snap, rules, p)
        .iter()
        .map(|s| cluster(p, s, "cluster.local"))
        .collect()
}

/// Istio (`applyOutlierDetection`): with `outlierDetection` set, success-rate ejection is off
/// (`enforcing_success_rate: 0`) and the healthy panic threshold is `minHealthPercent`, 0 when
/// unset; interval and max ejection percent are left to Envoy unless set.
#[test]
fn outlier_detection_is_configured_as_istio_does() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let c = &clusters(
        &snap,
        &[rule(
            json!({"outlierDetection": {"consecutive5xxErrors": 0}}),
        )],
        &p,
    )[0];
    let od = c.outlier_detection.clone().unwrap();
    assert_eq!(od.enforcing_success_rate.unwrap().value, 0);
    assert_eq!(od.consecutive_5xx.unwrap().value, 0);
    assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 0);
    assert!(od.interval.is_none() && od.max_ejection_percent.is_none());
    let common = c.common_lb_config.clone().unwrap();
    assert_eq!(common.healthy_panic_threshold.unwrap().value, 0.0);
    let split = json!({"outlierDetection": {"splitExternalLocalOriginErrors": true,
        "consecutiveLocalOriginFailures": 2, "maxEjectionPercent": 30, "minHealthPercent": 20}});
    let c = &clusters(&snap, &[rule(split)], &p)[0];
    let od = c.outlier_detection.clone().unwrap();
    assert!(od.split_external_local_origin_errors);
    assert_eq!(od.consecutive_local_origin_failure.unwrap().value, 2);
    assert_eq!(
        od.enforcing_consecutive_local_origin_failure.unwrap().value,
        100
    );
    assert_eq!(od.enforcing_local_origin_success_rate.unwrap().value, 0);
    assert_eq!(od.max_ejection_percent.unwrap().value, 30);
    let panic = c.common_lb_config.clone().unwrap().healthy_panic_threshold;
    assert_eq!(panic.unwrap().value, 20.0);
}

/// Istio (`MergeTrafficPolicy`): the subset's cluster gets the subset's load balancer and
/// still the rule's outlier detection; `portLevelSettings` apply to their port's clusters.
#[test]
fn subset_and_port_level_policies_reach_the_clusters() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let r = rule(json!({"loadBalancer": {"simple": "LEAST_REQUEST"},
        "outlierDetection": {"consecutive5xxErrors": 2}}));
    let cs = clusters(&snap, &[r], &p);
    assert_eq!(
        cs[1].name,
        "outbound|5000|v1|helloworld.sample.svc.cluster.local"
    );
    assert_eq!(cs[1].lb_policy, cluster::LbPolicy::Random as i32);
    assert_eq!(
        cs[1]
            .outlier_detection
            .clone()
            .unwrap()
            .consecutive_5xx
            .unwrap()
            .value,
        2
    );
    let r = rule(json!({"loadBalancer": {"simple": "LEAST_REQUEST"},
        "portLevelSettings": [{"port": {"number": 5000}, "outlierDetection": {"consecutive5xxErrors": 4}}]}));
    let cs = clusters(&snap, &[r], &p);
    assert_eq!(cs[0].lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert_eq!(
        cs[0]
            .outlier_detection
            .clone()
            .unwrap()
            .consecutive_5xx
            .unwrap()
            .value,
        4
    );
    assert_eq!(cs[1].lb_policy, cluster::LbPolicy::Random as i32);
}

/// Istio (`PushContext.destinationRule`): a rule in the root namespace (the federation's
/// system namespace) applies when neither the client's nor the service's namespace has one;
/// one the service's namespace keeps to itself (`exportTo: ["."]`) does not reach others.
#[test]
fn the_rule_lookup_follows_istio_in_cds() {
    let snap = snapshot();
    let root = Rule::from_object(
        "istio-system",
        "mesh",
        &json!({"spec": {"host": "*.svc.cluster.local", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}}),
        "cluster.local",
    )
    .unwrap()
    .in_root("istio-system");
    let private = Rule::from_object(
        "sample",
        "own",
        &json!({"spec": {"host": "helloworld", "exportTo": ["."],
            "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}}),
        "cluster.local",
    )
    .unwrap();
    let rules = [root, private];
    let mut p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    assert_eq!(
        clusters(&snap, &rules, &p)[0].lb_policy,
        cluster::LbPolicy::LeastRequest as i32
    );
    p.namespace = "client".into();
    assert_eq!(
        clusters(&snap, &rules, &p)[0].lb_policy,
        cluster::LbPolicy::Random as i32
    );
}

fn ports_snapshot() -> Snapshot {
    let mut snap = snapshot();
    let port = |name: &str, port: u16, protocol: &str, app: Option<&str>| PortView {
        name: name.into(),
        port,
        protocol: protocol.into(),
        app_protocol: app.map(str::to_string),
    };
    std::sync::Arc::make_mut(&mut snap.services[0]).ports = vec![
        port("grpc", 1, "TCP", None),
        port("http2-web", 2, "TCP", None),
        port("GRPC-Web-x", 3, "TCP", None),
        port("web", 4, "TCP", Some("kubernetes.io/h2c")),
        port("grpc", 5, "TCP", Some("http")),
        port("http", 6, "TCP", None),
        port("grpcx", 7, "TCP", None),
        port("dns", 53, "UDP", None),
        port("web", 8, "", Some("grpc")),
    ];
    snap
}

fn is_http2(c: &Cluster) -> bool {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options as hpo,
    };
    let Some(any) = c
        .typed_extension_protocol_options
        .get(protocol::HTTP_PROTOCOL_OPTIONS)
    else {
        return false;
    };
    let o: HttpProtocolOptions = prost::Message::decode(any.value.as_slice()).unwrap();
    matches!(
        o.upstream_protocol_options,
        Some(hpo::UpstreamProtocolOptions::ExplicitHttpConfig(
            hpo::ExplicitHttpConfig {
                protocol_config: Some(
                    hpo::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)
                ),
            }
        ))
    )
}

/// Istio (`ConvertProtocol`, `setUpstreamProtocol`): ports Istio reads as GRPC, GRPC-Web or
/// HTTP2 (name prefix before `-`, case-insensitive; `appProtocol` instead of the name when
/// set, `kubernetes.io/h2c` included) get explicit HTTP/2 upstream options for Envoy; UDP
/// ports get no cluster; proxyless gRPC clients get no protocol options (as Istio's grpcgen).
#[test]
fn http2_ports_get_http2_upstream_options_and_udp_ports_no_cluster() {
    let snap = ports_snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let cs = clusters(&snap, &[], &p);
    let h2: Vec<(String, bool)> = cs
        .iter()
        .map(|c| (c.name.split('|').nth(1).unwrap().to_string(), is_http2(c)))
        .collect();
    let want = [
        ("1", true),
        ("2", true),
        ("3", true),
        ("4", true),
        ("5", false),
        ("6", false),
        ("7", false),
        ("8", true),
    ];
    assert_eq!(h2, want.map(|(p, h)| (p.to_string(), h)));
    let grpc = proxy(ProxyKind::Sidecar, Generator::Grpc);
    let cs = clusters(&snap, &[], &grpc);
    assert_eq!(cs.len(), 8);
    assert!(
        cs.iter()
            .all(|c| c.typed_extension_protocol_options.is_empty())
    );
}

/// Istio (`shouldH2Upgrade`): `h2UpgradePolicy: UPGRADE` upgrades an HTTP/1 port to HTTP/2,
/// unless `useClientProtocol` is set.
#[test]
fn h2_upgrade_policy_upgrades_unless_the_client_protocol_is_used() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let up = rule(json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}));
    assert!(is_http2(&clusters(&snap, &[up], &p)[0]));
    let client = rule(
        json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": true}}}),
    );
    assert!(!is_http2(&clusters(&snap, &[client], &p)[0]));
    assert!(!is_http2(&clusters(&snap, &[], &p)[0]));
}

/// Istio (`LocalityLBSettings.ApplyToCluster`): `failover` with outlier detection turns on
/// Envoy's locality weights, so the weights EDS sends are used within each priority.
#[test]
fn failover_with_outlier_detection_weighs_localities() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let c = &clusters(&snap, &[seed_rule()], &p)[0];
    assert!(matches!(
        c.common_lb_config
            .clone()
            .unwrap()
            .locality_config_specifier,
        Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));
    let plain = rule(json!({"outlierDetection": {"consecutive5xxErrors": 1}}));
    let c = &clusters(&snap, &[plain], &p)[0];
    assert!(
        c.common_lb_config
            .clone()
            .unwrap()
            .locality_config_specifier
            .is_none()
    );
}

fn http_options(
    c: &Cluster,
) -> Option<envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions> {
    let any = c
        .typed_extension_protocol_options
        .get(protocol::HTTP_PROTOCOL_OPTIONS)?;
    Some(prost::Message::decode(any.value.as_slice()).unwrap())
}

/// The DEFAULT-priority thresholds as (max_connections, max_pending_requests, max_requests,
/// max_retries, track_remaining); the cluster must have exactly one.
fn thresholds(c: &Cluster) -> (Option<u32>, Option<u32>, Option<u32>, Option<u32>, bool) {
    let cb = c.circuit_breakers.as_ref().expect("circuit breakers");
    assert_eq!(cb.thresholds.len(), 1, "{cb:?}");
    let t = &cb.thresholds[0];
    assert_eq!(t.priority, 0, "DEFAULT priority");
    let v =
        |w: &Option<envoy_types::pb::google::protobuf::UInt32Value>| w.as_ref().map(|w| w.value);
    (
        v(&t.max_connections),
        v(&t.max_pending_requests),
        v(&t.max_requests),
        v(&t.max_retries),
        t.track_remaining,
    )
}

/// Istio (`applyTrafficPolicy` with an empty pool, `getDefaultCircuitBreakerThresholds`):
/// every Envoy cluster, with or without a rule, gets one DEFAULT breaker with all four limits
/// at u32::MAX and `track_remaining` (Envoy's own 1024/1024/1024/3 would trip under churn),
/// the mesh's 10 s connect timeout and no keepalive; proxyless gRPC gets no breaker, as
/// grpcgen sends one only with `http2MaxRequests`, leaving gRPC's default of 1024 (A32).
#[test]
fn envoy_clusters_get_istios_default_circuit_breakers_and_grpc_none() {
    let snap = snapshot();
    let max = Some(u32::MAX);
    let envoy = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let router = proxy(ProxyKind::Router, Generator::Envoy);
    let no_pool = rule(json!({"loadBalancer": {"simple": "ROUND_ROBIN"}}));
    for (p, rules) in [
        (&envoy, vec![]),
        (&envoy, vec![no_pool.clone()]),
        (&router, vec![]),
    ] {
        for c in clusters(&snap, &rules, p) {
            assert_eq!(thresholds(&c), (max, max, max, max, true), "{}", c.name);
            assert_eq!(c.connect_timeout.as_ref().map(|d| d.seconds), Some(10));
            assert!(c.upstream_connection_options.is_none());
            assert!(c.typed_extension_protocol_options.is_empty(), "{}", c.name);
        }
    }
    let grpc = proxy(ProxyKind::Sidecar, Generator::Grpc);
    let pool_without_h2 = rule(json!({"connectionPool": {"tcp": {"maxConnections": 5},
        "http": {"http1MaxPendingRequests": 5, "maxRetries": 2, "http2MaxRequests": 0}}}));
    for rules in [vec![], vec![no_pool], vec![pool_without_h2]] {
        assert!(
            clusters(&snap, &rules, &grpc)
                .iter()
                .all(|c| c.circuit_breakers.is_none())
        );
    }
}

/// Istio (`applyConnectionPool`): each limit replaces its default when above zero
/// (`tcp.maxConnections` → max_connections, `http.http1MaxPendingRequests` →
/// max_pending_requests, `http.http2MaxRequests` → max_requests, `http.maxRetries` →
/// max_retries); `tcp.connectTimeout` is the cluster's connect timeout and `tcp.tcpKeepalive`
/// its upstream SO_KEEPALIVE (time and interval in seconds); subset pools replace the rule's.
#[test]
fn envoy_circuit_breakers_connect_timeout_and_keepalive_from_the_pool() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let r = rule(json!({"connectionPool": {
        "tcp": {"maxConnections": 100, "connectTimeout": "250ms",
            "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"}},
        "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 20, "maxRetries": 0}}}));
    let cs = clusters(&snap, &[r], &p);
    let max = Some(u32::MAX);
    // maxRetries 0 keeps the default (Istio: only values above zero apply).
    assert_eq!(
        thresholds(&cs[0]),
        (Some(100), Some(10), Some(20), max, true)
    );
    let t = cs[0].connect_timeout.as_ref().unwrap();
    assert_eq!((t.seconds, t.nanos), (0, 250_000_000));
    let ka = cs[0]
        .upstream_connection_options
        .as_ref()
        .unwrap()
        .tcp_keepalive
        .as_ref()
        .unwrap();
    let v =
        |w: &Option<envoy_types::pb::google::protobuf::UInt32Value>| w.as_ref().map(|w| w.value);
    assert_eq!(
        (
            v(&ka.keepalive_probes),
            v(&ka.keepalive_time),
            v(&ka.keepalive_interval)
        ),
        (Some(3), Some(7200), Some(75))
    );
    let subset = rule(json!({}));
    let mut subset = subset;
    subset.subsets[0].traffic_policy = json!({"connectionPool": {"http": {"maxRetries": 9}}});
    let cs = clusters(&snap, &[subset], &p);
    assert_eq!(thresholds(&cs[0]), (max, max, max, max, true));
    assert_eq!(thresholds(&cs[1]), (max, max, max, Some(9), true));
}

/// gRFC A32 and Istio's grpcgen `applyCircuitBreakers`: proxyless gRPC gets one threshold
/// with `max_requests` from `http.http2MaxRequests` and nothing else (no other limit, no
/// connect timeout change, no protocol options).
#[test]
fn grpc_gets_only_max_requests() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Grpc);
    let r = rule(json!({"connectionPool": {
        "tcp": {"maxConnections": 100, "connectTimeout": "1s"},
        "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 2, "maxRetries": 4,
            "maxRequestsPerConnection": 1}}}));
    let c = &clusters(&snap, &[r], &p)[0];
    assert_eq!(thresholds(c), (None, None, Some(2), None, false));
    assert_eq!(c.connect_timeout.as_ref().map(|d| d.seconds), Some(10));
    assert!(c.typed_extension_protocol_options.is_empty());
    assert!(c.upstream_connection_options.is_none());
}

/// Istio (`applyConnectionPool`, `clusterWrapper.build`): the seed's locality rule's
/// `maxRequestsPerConnection: 1` reaches Envoy as
/// `HttpProtocolOptions.common_http_protocol_options.max_requests_per_connection`, with
/// explicit HTTP/1.1 upstream (Envoy requires one) on its HTTP/1 port, on every subset.
#[test]
fn the_seeds_max_requests_per_connection_reaches_envoy() {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options as hpo;
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let cs = clusters(&snap, &[seed_rule()], &p);
    assert_eq!(cs.len(), 3);
    for c in &cs {
        let o = http_options(c).expect("HttpProtocolOptions");
        let common = o.common_http_protocol_options.expect("common options");
        assert_eq!(common.max_requests_per_connection.map(|v| v.value), Some(1));
        assert!(common.idle_timeout.is_none());
        assert!(matches!(
            o.upstream_protocol_options,
            Some(hpo::UpstreamProtocolOptions::ExplicitHttpConfig(
                hpo::ExplicitHttpConfig {
                    protocol_config: Some(
                        hpo::explicit_http_config::ProtocolConfig::HttpProtocolOptions(_)
                    ),
                }
            ))
        ));
    }
}

/// Istio (`applyConnectionPool`): on an HTTP/2 port the pool's HTTP options join the HTTP/2
/// upstream options in one `HttpProtocolOptions`: `http.idleTimeout` (else `tcp.idleTimeout`)
/// as idle_timeout, `tcp.maxConnectionDuration`, `maxRequestsPerConnection`, and
/// `http.maxConcurrentStreams` on the HTTP/2 options.
#[test]
fn pool_http_options_merge_with_http2_options() {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options as hpo;
    let mut snap = snapshot();
    std::sync::Arc::make_mut(&mut snap.services[0]).ports[0].name = "grpc".into();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let r = rule(json!({"connectionPool": {
        "tcp": {"idleTimeout": "1h", "maxConnectionDuration": "30s"},
        "http": {"idleTimeout": "90s", "maxRequestsPerConnection": 5, "maxConcurrentStreams": 7}}}));
    let c = &clusters(&snap, &[r], &p)[0];
    assert!(is_http2(c));
    assert_eq!(c.typed_extension_protocol_options.len(), 1);
    let o = http_options(c).unwrap();
    let common = o.common_http_protocol_options.unwrap();
    assert_eq!(common.idle_timeout.map(|d| d.seconds), Some(90));
    assert_eq!(common.max_connection_duration.map(|d| d.seconds), Some(30));
    assert_eq!(common.max_requests_per_connection.map(|v| v.value), Some(5));
    let Some(hpo::UpstreamProtocolOptions::ExplicitHttpConfig(hpo::ExplicitHttpConfig {
        protocol_config: Some(hpo::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)),
    })) = o.upstream_protocol_options
    else {
        panic!("not HTTP/2");
    };
    assert_eq!(h2.max_concurrent_streams.map(|v| v.value), Some(7));
    // tcp.idleTimeout applies when http.idleTimeout is unset.
    let r = rule(json!({"connectionPool": {"tcp": {"idleTimeout": "1h"}}}));
    let o = http_options(&clusters(&snap, &[r], &p)[0]).unwrap();
    assert_eq!(
        o.common_http_protocol_options
            .unwrap()
            .idle_timeout
            .map(|d| d.seconds),
        Some(3600)
    );
}

/// Istio (`applyRetryBudget`): a `retryBudget` puts Envoy's retry budget on the breaker,
/// 20 % and 3 concurrent retries unless set.
#[test]
fn retry_budget_on_the_breaker() {
    let snap = snapshot();
    let p = proxy(ProxyKind::Sidecar, Generator::Envoy);
    let r = rule(json!({"retryBudget": {"percent": {"value": 50.0}}}));
    let c = &clusters(&snap, &[r], &p)[0];
    let b = c.circuit_breakers.as_ref().unwrap().thresholds[0]
        .retry_budget
        .unwrap();
    assert_eq!(b.budget_percent.map(|p| p.value), Some(50.0));
    assert_eq!(b.min_retry_concurrency.map(|v| v.value), Some(3));
    let c = &clusters(&snap, &[rule(json!({"retryBudget": {}}))], &p)[0];
    let b = c.circuit_breakers.as_ref().unwrap().thresholds[0]
        .retry_budget
        .unwrap();
    assert_eq!(b.budget_percent.map(|p| p.value), Some(20.0));
}
