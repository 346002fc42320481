//! The seed's VirtualService examples (`samples/seed-vs`, the Istio walkthrough's files as
//! written) take effect on an Envoy sidecar: each file alone, applied to its namespace
//! (`default` when it names none, as `kubectl apply` does), gives the `http_proxy` routes the
//! walkthrough intends.

use super::*;
use crate::registry::{PortView, ServiceView, Snapshot};
use crate::xds::node::test_sidecar;
use crate::xds::virtual_service::{VirtualService, parse};
use envoy_types::pb::envoy::config::route::v3::RouteAction;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;
use serde_json::Value;
use std::path::Path;

/// The seed's bookinfo, httpbin and tcp-echo Services in namespace `ns`.
fn services(ns: &str) -> Snapshot {
    let svc = |name: &str, port: &str, number: u16| ServiceView {
        hostname: format!("{name}.{ns}.svc.cluster.local"),
        namespace: ns.to_string(),
        ports: vec![PortView {
            name: port.into(),
            port: number,
            ..Default::default()
        }],
        ..Default::default()
    };
    Snapshot {
        services: vec![
            svc("productpage", "http", 9080),
            svc("reviews", "http", 9080),
            svc("ratings", "http", 9080),
            svc("details", "http", 9080),
            svc("httpbin", "http", 8000),
            svc("tcp-echo", "tcp", 9000),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        gateways: vec![],
    }
}

/// The VirtualServices of one seed file and the namespace they go to.
fn rules(file: &str) -> (String, Vec<VirtualService>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/seed-vs")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut ns = String::from("default");
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        if obj["kind"] != "VirtualService" {
            continue;
        }
        ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap();
        out.push(parse(&ns, name, &obj, "cluster.local").unwrap());
    }
    (ns, out)
}

/// RDS `http_proxy` for a sidecar in the file's namespace with the file applied.
fn http_proxy_for(file: &str) -> (String, RouteConfiguration) {
    let (ns, vs) = rules(file);
    let s = services(&ns);
    let src = Sources {
        snapshot: &s,
        virtual_services: &vs,
        domain: "cluster.local",
    };
    let mut p = test_sidecar();
    p.namespace = ns.clone();
    p.http_proxy_port = Some(15001);
    (ns, http_proxy(&p, &src))
}

fn routes<'a>(rc: &'a RouteConfiguration, svc: &str, ns: &str, port: u16) -> &'a [Route] {
    let name = format!("{svc}.{ns}.svc.cluster.local:{port}");
    &rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vhost {name}"))
        .routes
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("{other:?}"),
    }
}

fn cluster(r: &Route) -> String {
    match &action(r).cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => c.clone(),
        other => panic!("not one cluster: {other:?}"),
    }
}

fn fault(r: &Route) -> HttpFault {
    let any = &r.typed_per_filter_config["envoy.filters.http.fault"];
    HttpFault::decode(any.value.as_slice()).unwrap()
}

fn subset(svc: &str, ns: &str, port: u16, subset: &str) -> String {
    format!("outbound|{port}|{subset}|{svc}.{ns}.svc.cluster.local")
}

/// Seed `virtual-service-reviews-test-v2.yaml` (Istio "request routing"): requests with
/// `end-user: jason` go to reviews v2, everyone else to v1, in that order.
#[test]
fn seed_header_route_sends_jason_to_reviews_v2() {
    let (ns, rc) = http_proxy_for("virtual-service-reviews-test-v2.yaml");
    let r = routes(&rc, "reviews", &ns, 9080);
    assert_eq!(r.len(), 2);
    let h = &r[0].r#match.as_ref().unwrap().headers;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].name, "end-user");
    let Some(HeaderMatchSpecifier::StringMatch(m)) = &h[0].header_match_specifier else {
        panic!("{h:?}")
    };
    assert_eq!(m.match_pattern, Some(MatchPattern::Exact("jason".into())));
    assert_eq!(cluster(&r[0]), subset("reviews", &ns, 9080, "v2"));
    assert!(r[1].r#match.as_ref().unwrap().headers.is_empty());
    assert_eq!(cluster(&r[1]), subset("reviews", &ns, 9080, "v1"));
}

/// Seed `virtual-service-reviews-50-v3.yaml` (Istio "traffic shifting"): 50/50 between
/// reviews v1 and v3 as weighted clusters.
#[test]
fn seed_traffic_shift_weights_reviews_50_50() {
    let (ns, rc) = http_proxy_for("virtual-service-reviews-50-v3.yaml");
    let r = routes(&rc, "reviews", &ns, 9080);
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action(&r[0]).cluster_specifier else {
        panic!("not weighted")
    };
    let got: Vec<(String, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        got,
        [
            (subset("reviews", &ns, 9080, "v1"), 50),
            (subset("reviews", &ns, 9080, "v3"), 50)
        ]
    );
}

/// Seed `virtual-service-ratings-test-abort.yaml` and `-delay.yaml` (Istio "fault
/// injection"): jason's ratings requests abort with HTTP 500, or wait 7 s, at 100 %
/// (`percentage.value: 100` is a million out of a million); the others pass untouched.
#[test]
fn seed_faults_abort_and_delay_jason() {
    let (ns, rc) = http_proxy_for("virtual-service-ratings-test-abort.yaml");
    let r = routes(&rc, "ratings", &ns, 9080);
    let abort = fault(&r[0]).abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault_abort::ErrorType::HttpStatus(500))
    );
    assert_eq!(abort.percentage.unwrap().numerator, 1_000_000);
    assert!(r[1].typed_per_filter_config.is_empty());
    assert_eq!(cluster(&r[1]), subset("ratings", &ns, 9080, "v1"));

    let (ns, rc) = http_proxy_for("virtual-service-ratings-test-delay.yaml");
    let r = routes(&rc, "ratings", &ns, 9080);
    let delay = fault(&r[0]).delay.unwrap();
    assert_eq!(
        delay.fault_delay_secifier,
        Some(fault_delay::FaultDelaySecifier::FixedDelay(PbDuration {
            seconds: 7,
            nanos: 0
        }))
    );
    assert_eq!(delay.percentage.unwrap().numerator, 1_000_000);
    assert!(r[1].typed_per_filter_config.is_empty());
}

/// Seed `virtual-service-timeouts.yaml` (Istio "request timeouts"): ratings is delayed 2 s
/// for everyone (the deprecated `percent: 100`, out of a hundred) and reviews v2 is cut off
/// at 0.5 s (`timeout` and `max_grpc_timeout`); with no `retries`, Istio's default policy.
#[test]
#[allow(deprecated)] // max_grpc_timeout: what Istio sends
fn seed_timeout_and_delay() {
    let (ns, rc) = http_proxy_for("virtual-service-timeouts.yaml");
    let ratings = routes(&rc, "ratings", &ns, 9080);
    let delay = fault(&ratings[0]).delay.unwrap();
    let p = delay.percentage.unwrap();
    assert_eq!((p.numerator, p.denominator), (100, 0), "100 out of HUNDRED");
    let reviews = routes(&rc, "reviews", &ns, 9080);
    let a = action(&reviews[0]);
    let half = Some(PbDuration {
        seconds: 0,
        nanos: 500_000_000,
    });
    assert_eq!((a.timeout, a.max_grpc_timeout), (half, half));
    assert_eq!(cluster(&reviews[0]), subset("reviews", &ns, 9080, "v2"));
    assert_eq!(
        a.retry_policy,
        Some(crate::xds::route::retry::default_policy())
    );
}

/// Seed `httpbin-mirror.yaml` (Istio "mirroring"): everything to httpbin v1 (one
/// destination: its `weight: 100` is ignored), mirrored to v2 at 100 %.
#[test]
fn seed_mirror_copies_httpbin_to_v2() {
    let (ns, rc) = http_proxy_for("httpbin-mirror.yaml");
    let r = routes(&rc, "httpbin", &ns, 8000);
    assert_eq!(cluster(&r[0]), subset("httpbin", &ns, 8000, "v1"));
    let m = &action(&r[0]).request_mirror_policies;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].cluster, subset("httpbin", &ns, 8000, "v2"));
    let f = m[0]
        .runtime_fraction
        .as_ref()
        .unwrap()
        .default_value
        .unwrap();
    assert_eq!(
        (f.numerator, f.denominator),
        (1_000_000, 2),
        "100 % of a MILLION"
    );
}

/// Seed `virtual-service-all-v1.yaml` (namespace bookinfo): every bookinfo service goes
/// to its v1 subset, reviews to v3 as the file says.
#[test]
fn seed_all_v1_routes_each_service_to_its_subset() {
    let (ns, rc) = http_proxy_for("virtual-service-all-v1.yaml");
    assert_eq!(ns, "bookinfo");
    for (svc, want) in [
        ("productpage", "v1"),
        ("reviews", "v3"),
        ("ratings", "v1"),
        ("details", "v1"),
    ] {
        let r = routes(&rc, svc, &ns, 9080);
        assert_eq!(r.len(), 1, "{svc}");
        assert_eq!(cluster(&r[0]), subset(svc, &ns, 9080, want), "{svc}");
    }
    // httpbin has no rule: Istio's default route.
    let r = routes(&rc, "httpbin", &ns, 8000);
    assert_eq!(r[0].name, "default");
}

/// Seed `tcp-echo-20-v2.yaml` binds `tcp-echo-gateway` only: sidecars keep tcp-echo's
/// plain TCP proxy to `outbound|9000||tcp-echo...` (Istio applies it to that gateway alone).
#[test]
fn seed_gateway_only_tcp_rule_leaves_sidecars_alone() {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    let (ns, vs) = rules("tcp-echo-20-v2.yaml");
    let s = services(&ns);
    let src = Sources {
        snapshot: &s,
        virtual_services: &vs,
        domain: "cluster.local",
    };
    let mut p = test_sidecar();
    p.namespace = ns.clone();
    let ls = crate::xds::lds::sidecar::listeners(&p, &src, "cluster.local");
    let l = ls.iter().find(|l| l.name == "0.0.0.0_9000").unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let t = TcpProxy::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        t.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(format!(
            "outbound|9000||tcp-echo.{ns}.svc.cluster.local"
        )))
    );
}
