use super::*;
use crate::registry::{PortView, ServiceView};
use crate::xds::node::Generator;
use crate::xds::virtual_service::{Abort, AbortStatus, Fault, Percentage, Retries, StringMatch};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use std::collections::BTreeMap;

const FQDN: &str = "helloworld.sample.svc.cluster.local";

fn snapshot() -> Snapshot {
    let svc = |host: &str, ports: &[u16]| ServiceView {
        hostname: host.into(),
        namespace: "sample".into(),
        ports: ports
            .iter()
            .map(|p| PortView {
                name: "grpc".into(),
                port: *p,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Snapshot {
        services: vec![
            svc(FQDN, &[5000]),
            svc("multi.sample.svc.cluster.local", &[80, 81]),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        gateways: vec![],
    }
}

fn dest(host: &str, subset: Option<&str>, weight: u32) -> RouteDestination {
    RouteDestination {
        destination: Destination {
            host: host.into(),
            subset: subset.map(String::from),
            port: None,
        },
        weight,
        headers: Default::default(),
    }
}

fn vs(http: Vec<HttpRoute>) -> VirtualService {
    VirtualService {
        namespace: "sample".into(),
        name: "helloworld".into(),
        created: String::new(),
        hosts: vec![FQDN.into()],
        gateways: vec![],
        mesh: true,
        export_to: vec![],
        http,
        tcp: vec![],
        warnings: vec![],
    }
}

fn build(v: &VirtualService, labels: &BTreeMap<String, String>) -> Vec<Route> {
    let s = snapshot();
    let t = Target {
        snapshot: &s,
        client: Client {
            namespace: "sample",
            labels,
            port: 5000,
        },
        generator: Generator::Grpc,
    };
    routes(v, &t)
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

fn zero() -> Option<PbDuration> {
    Some(PbDuration::default())
}

/// Istio `BuildDefaultHTTPOutboundRoute` for proxyless: prefix `/` to `outbound|port||fqdn`,
/// `timeout` and `max_stream_duration` 0s (no limit; not Envoy's 15 s, pitfall 16) and the
/// default retry policy (pitfall 12).
#[test]
fn default_route_has_no_timeout_and_the_default_retries() {
    let r = default_route(&ClusterName::new(5000, None, FQDN), Generator::Grpc);
    assert_eq!(r.r#match, Some(matching::catch_all()));
    let a = action(&r);
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster(format!("outbound|5000||{FQDN}")))
    );
    assert_eq!(a.timeout, zero());
    assert_eq!(a.max_stream_duration.unwrap().max_stream_duration, zero());
    assert_eq!(a.retry_policy, Some(retry::default_policy()));
}

/// Istio: routes in order, one per match; a catch-all ends translation (the seed's
/// `end-user: jason` → v2, else v1 rule, plus an unreachable third route).
#[test]
fn header_route_then_catch_all_in_order() {
    let mut jason = HttpMatch::default();
    jason
        .headers
        .insert("end-user".into(), StringMatch::Exact("jason".into()));
    let v = vs(vec![
        HttpRoute {
            matches: vec![jason],
            route: vec![dest(FQDN, Some("v2"), 0)],
            ..Default::default()
        },
        HttpRoute {
            route: vec![dest(FQDN, Some("v1"), 0)],
            ..Default::default()
        },
        HttpRoute {
            route: vec![dest(FQDN, Some("v3"), 0)],
            ..Default::default()
        },
    ]);
    let r = build(&v, &BTreeMap::new());
    assert_eq!(r.len(), 2, "nothing after the catch-all");
    assert_eq!(r[0].r#match.as_ref().unwrap().headers[0].name, "end-user");
    assert_eq!(
        action(&r[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|5000|v2|{FQDN}"
        )))
    );
    assert_eq!(
        action(&r[1]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|5000|v1|{FQDN}"
        )))
    );
}

/// Istio: several destinations become `weighted_clusters` with each weight wrapped and
/// the 0 weights dropped (pitfall 3); one destination is a plain `cluster` whatever its
/// weight; a destination port comes from the rule, else the service's only port.
#[test]
fn weighted_destinations() {
    let v = vs(vec![HttpRoute {
        route: vec![
            dest(FQDN, Some("v1"), 80),
            dest(FQDN, Some("v2"), 20),
            dest(FQDN, Some("v3"), 0),
        ],
        ..Default::default()
    }]);
    let r = build(&v, &BTreeMap::new());
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action(&r[0]).cluster_specifier else {
        panic!("not weighted")
    };
    let got: Vec<(&str, Option<u32>)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.map(|w| w.value)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "outbound|5000|v1|helloworld.sample.svc.cluster.local",
                Some(80)
            ),
            (
                "outbound|5000|v2|helloworld.sample.svc.cluster.local",
                Some(20)
            ),
        ]
    );
    #[allow(deprecated)]
    let total = w.total_weight;
    assert_eq!(total, None, "deprecated total_weight is not sent");
    let mut other = dest("multi.sample.svc.cluster.local", None, 100);
    let v = vs(vec![HttpRoute {
        route: vec![other.clone()],
        ..Default::default()
    }]);
    assert_eq!(
        action(&build(&v, &BTreeMap::new())[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|5000||multi.sample.svc.cluster.local".into()
        )),
        "a service with several ports: the port being routed"
    );
    other.destination.port = Some(81);
    let v = vs(vec![HttpRoute {
        route: vec![other],
        ..Default::default()
    }]);
    assert_eq!(
        action(&build(&v, &BTreeMap::new())[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|81||multi.sample.svc.cluster.local".into()
        ))
    );
}

/// Istio `setTimeout` for proxyless: the rule's timeout goes into
/// `max_stream_duration.max_stream_duration`, which gRPC reads (A31; pitfall 6), and
/// `timeout` too.
#[test]
fn timeout_goes_to_max_stream_duration() {
    let v = vs(vec![HttpRoute {
        route: vec![dest(FQDN, None, 0)],
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    }]);
    let a = action(&build(&v, &BTreeMap::new())[0]).clone();
    let half = Some(PbDuration {
        seconds: 0,
        nanos: 500_000_000,
    });
    assert_eq!(a.max_stream_duration.unwrap().max_stream_duration, half);
    assert_eq!(a.timeout, half);
}

/// Istio `ConvertPolicy` on a route: `attempts: 0` leaves no retry policy, retries with
/// `retryOn: unavailable` carry it (A44).
#[test]
fn route_retries() {
    let mk = |attempts| {
        vs(vec![HttpRoute {
            route: vec![dest(FQDN, None, 0)],
            retries: Some(Retries {
                attempts,
                per_try_timeout: None,
                retry_on: Some("unavailable".into()),
            }),
            ..Default::default()
        }])
    };
    assert_eq!(
        action(&build(&mk(0), &BTreeMap::new())[0]).retry_policy,
        None
    );
    let p = action(&build(&mk(4), &BTreeMap::new())[0])
        .retry_policy
        .clone()
        .unwrap();
    assert_eq!(
        (p.retry_on.as_str(), p.num_retries.unwrap().value),
        ("unavailable", 4)
    );
}

/// Istio `TranslateFault`: the fault is the route's `typed_per_filter_config` under
/// `envoy.filters.http.fault`, an `HTTPFault` (A33).
#[test]
fn fault_is_per_route_filter_config() {
    let v = vs(vec![HttpRoute {
        route: vec![dest(FQDN, None, 0)],
        fault: Some(Fault {
            delay: None,
            abort: Some(Abort {
                status: AbortStatus::Grpc("UNAVAILABLE".into(), 14),
                percentage: Percentage::Value(100.0),
            }),
        }),
        ..Default::default()
    }]);
    let r = &build(&v, &BTreeMap::new())[0];
    let any = &r.typed_per_filter_config["envoy.filters.http.fault"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    let f: HttpFault = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(f.abort.unwrap().percentage.unwrap().numerator, 1_000_000);
}

/// Istio `TranslateRoute`: a match on labels the client lacks is dropped (and with it
/// the catch-all stop it would have been), while a client with the labels gets it.
#[test]
fn source_labels_select_the_client() {
    let mut m = HttpMatch::default();
    m.source_labels.insert("version".into(), "v1".into());
    let v = vs(vec![
        HttpRoute {
            matches: vec![m],
            route: vec![dest(FQDN, Some("v1"), 0)],
            ..Default::default()
        },
        HttpRoute {
            route: vec![dest(FQDN, Some("v2"), 0)],
            ..Default::default()
        },
    ]);
    let none = build(&v, &BTreeMap::new());
    assert_eq!(none.len(), 1);
    assert_eq!(
        action(&none[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|5000|v2|{FQDN}"
        )))
    );
    let labels = [("version".to_string(), "v1".to_string())].into();
    let with = build(&v, &labels);
    assert_eq!(
        with.len(),
        1,
        "the first route is a catch-all for this client"
    );
    assert_eq!(
        action(&with[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|5000|v1|{FQDN}"
        )))
    );
}

/// Istio: the route name is `http.name` and `.match.name`.
#[test]
fn route_names() {
    let mut m = HttpMatch {
        name: "jason".into(),
        ..Default::default()
    };
    m.headers
        .insert("end-user".into(), StringMatch::Exact("jason".into()));
    let v = vs(vec![HttpRoute {
        name: "canary".into(),
        matches: vec![m],
        route: vec![dest(FQDN, None, 0)],
        ..Default::default()
    }]);
    assert_eq!(build(&v, &BTreeMap::new())[0].name, "canary.jason");
}

fn build_envoy(v: &VirtualService) -> Vec<Route> {
    let s = snapshot();
    let labels = BTreeMap::new();
    let t = Target {
        snapshot: &s,
        client: Client {
            namespace: "sample",
            labels: &labels,
            port: 5000,
        },
        generator: Generator::Envoy,
    };
    routes(v, &t)
}

/// Istio `setTimeout` for sidecars: `timeout` and `max_grpc_timeout` both the rule's
/// timeout (0s when unset), and no `max_stream_duration` (that is proxyless's).
#[test]
fn envoy_timeout_also_caps_grpc_timeouts() {
    let r = build_envoy(&vs(vec![HttpRoute {
        route: vec![dest(FQDN, None, 0)],
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    }]));
    let a = action(&r[0]);
    let half = Some(PbDuration {
        seconds: 0,
        nanos: 500_000_000,
    });
    assert_eq!(a.timeout, half);
    #[allow(deprecated)]
    let grpc = a.max_grpc_timeout;
    assert_eq!(grpc, half);
    assert_eq!(a.max_stream_duration, None);
    let d = default_route(&ClusterName::new(5000, None, FQDN), Generator::Envoy);
    #[allow(deprecated)]
    let grpc = action(&d).max_grpc_timeout;
    assert_eq!((action(&d).timeout, grpc), (zero(), zero()));
    assert_eq!(d.decorator.unwrap().operation, format!("{FQDN}:5000/*"));
}

/// Istio `TranslateFault` for sidecars: an abort without a percentage has none (Envoy
/// reads 0 %), a delay without one gets `percent` 0 out of a hundred; given percentages are
/// as for proxyless. (Proxyless always writes them; see `fault_is_per_route_filter_config`.)
#[test]
fn envoy_fault_percentages_as_istio_leaves_them() {
    use crate::xds::virtual_service::Delay;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    let r = build_envoy(&vs(vec![HttpRoute {
        route: vec![dest(FQDN, None, 0)],
        fault: Some(Fault {
            delay: Some(Delay {
                fixed_delay: Duration::from_secs(7),
                percentage: Percentage::Unset,
            }),
            abort: Some(Abort {
                status: AbortStatus::Http(500),
                percentage: Percentage::Unset,
            }),
        }),
        ..Default::default()
    }]));
    let any = &r[0].typed_per_filter_config["envoy.filters.http.fault"];
    let f: HttpFault = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(f.abort.unwrap().percentage, None);
    assert_eq!(
        f.delay.unwrap().percentage,
        Some(FractionalPercent {
            numerator: 0,
            denominator: 0
        })
    );
}

/// Istio `TranslateHeadersOperations` / `processDestination` /
/// `processWeightedDestination`: the route's header operations then a single destination's
/// on the Route, a weighted destination's on its ClusterWeight; `host` set becomes
/// `host_rewrite_literal`. Proxyless gets none of them.
#[test]
fn envoy_header_operations_on_routes_and_weighted_clusters() {
    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
    use envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier;
    let mut one = dest(FQDN, Some("v1"), 0);
    one.headers.request.set.insert("x-dest".into(), "1".into());
    one.headers
        .request
        .set
        .insert("host".into(), "rewritten".into());
    let mut http = HttpRoute {
        route: vec![one],
        ..Default::default()
    };
    http.headers.request.add.insert("x-add".into(), "a".into());
    http.headers.response.remove = vec!["x-secret".into()];
    let r = &build_envoy(&vs(vec![http.clone()]))[0];
    let keys: Vec<(&str, i32)> = r
        .request_headers_to_add
        .iter()
        .map(|o| (o.header.as_ref().unwrap().key.as_str(), o.append_action))
        .collect();
    assert_eq!(
        keys,
        [
            ("x-add", HeaderAppendAction::AppendIfExistsOrAdd as i32),
            ("x-dest", HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        ]
    );
    assert_eq!(r.response_headers_to_remove, ["x-secret"]);
    assert_eq!(
        action(r).host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral("rewritten".into()))
    );
    let p = &build(&vs(vec![http]), &BTreeMap::new())[0];
    assert!(p.request_headers_to_add.is_empty() && p.response_headers_to_remove.is_empty());

    let mut v2 = dest(FQDN, Some("v2"), 50);
    v2.headers.response.add.insert("x-v".into(), "2".into());
    let r = &build_envoy(&vs(vec![HttpRoute {
        route: vec![dest(FQDN, Some("v1"), 50), v2],
        ..Default::default()
    }]))[0];
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action(r).cluster_specifier else {
        panic!("not weighted")
    };
    assert!(w.clusters[0].response_headers_to_add.is_empty());
    assert_eq!(
        w.clusters[1].response_headers_to_add[0]
            .header
            .as_ref()
            .unwrap()
            .key,
        "x-v"
    );
    assert!(r.request_headers_to_add.is_empty());
    assert_eq!(
        r.decorator.as_ref().unwrap().operation,
        "helloworld:5000/*",
        "GetRouteOperation: several clusters give the rule's name"
    );
}

/// Istio `MirrorPercent`/`TranslateRequestMirrorPolicy`: `mirror` + `mirrorPercentage`
/// becomes a request mirror policy to the mirror's cluster (the seed's httpbin v1 → v2 at
/// 100 %); an explicit 0 % mirrors nothing; proxyless gets none.
#[test]
fn envoy_mirror_policies() {
    use crate::xds::virtual_service::Mirror;
    let mirror = |p| Mirror {
        destination: Destination {
            host: FQDN.into(),
            subset: Some("v2".into()),
            port: None,
        },
        percentage: p,
    };
    let http = HttpRoute {
        route: vec![dest(FQDN, Some("v1"), 100)],
        mirrors: vec![mirror(Some(100.0)), mirror(Some(0.0))],
        ..Default::default()
    };
    let r = &build_envoy(&vs(vec![http.clone()]))[0];
    let m = &action(r).request_mirror_policies;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].cluster, format!("outbound|5000|v2|{FQDN}"));
    let f = m[0]
        .runtime_fraction
        .as_ref()
        .unwrap()
        .default_value
        .unwrap();
    assert_eq!(f.numerator, 1_000_000);
    let p = &build(&vs(vec![http]), &BTreeMap::new())[0];
    assert!(action(p).request_mirror_policies.is_empty());
}
