//! Decoding the LDS/RDS resources Istio sends an Envoy sidecar (hand-built here as Istio's
//! `buildHTTPProxy` and `route.go` write them), and refusing what the sidecar cannot honour.
//! The builders are shared with the proxy's tests.

use super::*;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
use envoy_types::pb::envoy::config::route::v3::retry_policy::RetryHostPredicate;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::FaultAbort;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, Rds,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use rt::route_action::ClusterSpecifier;

pub(crate) fn http_filter(name: &str, any: Option<Any>) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: any.map(http_filter::ConfigType::TypedConfig),
        ..Default::default()
    }
}

/// Istio's HTTP proxy listener: HCM with RDS `rds` and [fault, router].
pub(crate) fn proxy_listener(name: &str, rds: &str, filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "outbound_0.0.0.0_15001".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: None,
            route_config_name: rds.into(),
        })),
        http_filters: filters,
        ..Default::default()
    };
    Listener {
        name: name.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn istio_filters() -> Vec<HttpFilter> {
    vec![
        http_filter(FAULT_FILTER, Some(pack_any(HttpFault::default()))),
        http_filter(ROUTER_FILTER, None),
    ]
}

pub(crate) fn secs(s: f64) -> PbDuration {
    let d = Duration::from_secs_f64(s);
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub(crate) fn percent(p: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: p,
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    }
}

/// A RouteAction to one cluster with Istio's `0s` timeout.
pub(crate) fn to_cluster(cluster: &str) -> rt::RouteAction {
    rt::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
        timeout: Some(secs(0.0)),
        ..Default::default()
    }
}

pub(crate) fn weighted_to(clusters: &[(&str, u32)]) -> rt::RouteAction {
    rt::RouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(rt::WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(n, w)| rt::weighted_cluster::ClusterWeight {
                    name: (*n).into(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        timeout: Some(secs(0.0)),
        ..Default::default()
    }
}

pub(crate) fn route(prefix: &str, action: rt::RouteAction) -> rt::Route {
    rt::Route {
        name: "r".into(),
        r#match: Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix(prefix.into())),
            case_sensitive: Some(BoolValue { value: true }),
            ..Default::default()
        }),
        action: Some(rt::route::Action::Route(action)),
        ..Default::default()
    }
}

/// Istio's `string_match` header matcher.
pub(crate) fn header(name: &str, pattern: string_matcher::MatchPattern) -> rt::HeaderMatcher {
    rt::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(rt::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            },
        )),
        ..Default::default()
    }
}

pub(crate) fn with_fault(mut r: rt::Route, fault: HttpFault) -> rt::Route {
    r.typed_per_filter_config
        .insert(FAULT_FILTER.into(), pack_any(fault));
    r
}

pub(crate) fn abort(status: u32, pct: Option<u32>) -> HttpFault {
    HttpFault {
        abort: Some(FaultAbort {
            percentage: pct.map(percent),
            error_type: Some(fault_abort::ErrorType::HttpStatus(status)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn delay(s: f64, pct: u32) -> HttpFault {
    HttpFault {
        delay: Some(FaultDelay {
            percentage: Some(percent(pct)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(secs(s))),
        }),
        ..Default::default()
    }
}

pub(crate) fn retry_policy(on: &str, n: u32, per_try: Option<f64>) -> rt::RetryPolicy {
    rt::RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: n }),
        per_try_timeout: per_try.map(secs),
        retry_host_predicate: vec![RetryHostPredicate {
            name: PREVIOUS_HOSTS.into(),
            config_type: None,
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

pub(crate) fn add(key: &str, value: &str, action: i32) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action,
        ..Default::default()
    }
}

/// RouteConfiguration `http_proxy` with one vhost.
pub(crate) fn config(domains: &[&str], routes: Vec<rt::Route>) -> rt::RouteConfiguration {
    rt::RouteConfiguration {
        name: "http_proxy".into(),
        virtual_hosts: vec![rt::VirtualHost {
            name: "helloworld.sample.svc.cluster.local:5000".into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn decoded(routes: Vec<rt::Route>) -> anyhow::Result<RouteTable> {
    route_configuration(&config(&["h:5000"], routes))
}

fn forward_of(t: &RouteTable) -> &Forward {
    match &t.vhosts[0].routes[0].action {
        Action::Forward(f) => f,
        other => panic!("not a forward: {other:?}"),
    }
}

/// Istio `buildHTTPProxy`: the listener `127.0.0.1_<HTTP_PROXY_PORT>` carries an HTTP
/// connection manager taking RDS `http_proxy` through [fault, router]; an empty fault filter
/// config injects nothing.
#[test]
fn the_http_proxy_listener_names_its_rds() {
    let l = proxy_listener("127.0.0.1_15001", "http_proxy", istio_filters());
    let got = listener(&l).expect("decodes");
    assert_eq!(
        got,
        Some(HttpProxyListener {
            rds: "http_proxy".into(),
            fault: None
        })
    );
    let tcp = Listener {
        name: "10.0.0.1_9000".into(),
        filter_chains: vec![FilterChain::default()],
        ..Default::default()
    };
    assert_eq!(
        listener(&tcp).expect("not HTTP"),
        None,
        "TCP proxy listeners are skipped"
    );
}

/// Envoy refuses an HTTP filter chain whose router is not last or that names a filter it
/// does not have (unless `is_optional`), and the sidecar refuses inline route configs.
#[test]
fn filter_chains_envoy_would_refuse_are_nacked() {
    let router_first = vec![
        http_filter(ROUTER_FILTER, None),
        http_filter(FAULT_FILTER, None),
    ];
    let unknown = vec![
        http_filter("envoy.filters.http.lua", None),
        http_filter(ROUTER_FILTER, None),
    ];
    for filters in [router_first, unknown, vec![]] {
        let l = proxy_listener("127.0.0.1_15001", "http_proxy", filters);
        assert!(listener(&l).is_err());
    }
    let mut optional = http_filter("istio.stats", None);
    optional.is_optional = true;
    let l = proxy_listener(
        "l",
        "http_proxy",
        vec![optional, http_filter(ROUTER_FILTER, None)],
    );
    assert!(listener(&l).is_ok(), "optional filters may be unknown");
    let l = proxy_listener("l", "", istio_filters());
    assert!(listener(&l).is_err(), "RDS without a name");
}

/// Istio's inbound chains carry their routes inline (`inbound|P||`): not the forward
/// proxy's, so skipped rather than refused.
#[test]
fn inline_route_configs_are_not_the_proxys() {
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            Default::default(),
        )),
        http_filters: vec![http_filter("istio.metadata_exchange", None)],
        ..Default::default()
    };
    let l = Listener {
        name: "virtualInbound".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(listener(&l).expect("skipped, not refused"), None);
}

/// Istio's default route (`BuildDefaultHTTPOutboundRoute`): `timeout: 0s` means none, and
/// the default retry policy (`connect-failure,refused-stream,unavailable,cancelled,
/// retriable-status-codes`, 2 retries, previous_hosts). An unset timeout is Envoy's 15 s.
#[test]
fn istios_default_route_decodes_with_no_timeout_and_default_retries() {
    let mut a = to_cluster("outbound|5000||h");
    a.retry_policy = Some(retry_policy(
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        2,
        None,
    ));
    let t = decoded(vec![route("/", a)]).expect("decodes");
    let f = forward_of(&t);
    assert_eq!(f.timeout, None);
    assert_eq!(f.clusters[0].name, "outbound|5000||h");
    let r = f.retry.as_ref().expect("retry");
    assert_eq!(r.num_retries, 2);
    assert!(r.other_hosts);
    assert!(r.on.connect_failure && r.on.grpc.unavailable && r.on.grpc.cancelled);
    assert!(!r.on.five_xx);
    let mut unset = to_cluster("c");
    unset.timeout = None;
    let t = decoded(vec![route("/", unset)]).expect("decodes");
    assert_eq!(forward_of(&t).timeout, Some(Duration::from_secs(15)));
    assert_eq!(forward_of(&t).retry, None, "no policy: no retries");
}

/// VirtualService `timeout` and `retries{attempts, perTryTimeout, retryOn: "5xx,503"}` as
/// Istio writes them: `retry_on "5xx,retriable-status-codes"` with the code listed.
#[test]
fn timeout_and_retry_policy_decode() {
    let mut a = to_cluster("c");
    a.timeout = Some(secs(0.5));
    let mut p = retry_policy("5xx,retriable-status-codes", 3, Some(0.2));
    p.retriable_status_codes = vec![503];
    a.retry_policy = Some(p);
    let t = decoded(vec![route("/", a)]).expect("decodes");
    let f = forward_of(&t);
    assert_eq!(f.timeout, Some(Duration::from_millis(500)));
    let r = f.retry.as_ref().expect("retry");
    assert_eq!(
        (
            r.num_retries,
            r.per_try_timeout,
            r.retriable_status_codes.as_slice()
        ),
        (3, Some(Duration::from_millis(200)), &[503][..])
    );
    assert!(r.on.five_xx && r.on.retriable_status_codes);
    let mut bad = to_cluster("c");
    bad.retry_policy = Some(retry_policy("5xx,sometimes", 1, None));
    assert!(decoded(vec![route("/", bad)]).is_err(), "unknown retry_on");
}

/// Weighted clusters (VirtualService `route[].weight`): a 0 weight is dropped, as Envoy
/// never picks it; all zero is refused.
#[test]
fn weighted_clusters_drop_zero_weights() {
    let t = decoded(vec![route(
        "/",
        weighted_to(&[("v1", 80), ("v2", 20), ("v3", 0)]),
    )])
    .expect("decodes");
    let got: Vec<(&str, u32)> = (forward_of(&t).clusters.iter())
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(got, [("v1", 80), ("v2", 20)]);
    assert!(decoded(vec![route("/", weighted_to(&[("v1", 0)]))]).is_err());
}

/// The fault filter's per-route config (Istio `TranslateFault`): a fixed delay with its
/// percentage, an abort with `http_status`; an unset percentage is 0 % (Envoy's reading).
#[test]
fn per_route_faults_decode_with_their_percentages() {
    let r = with_fault(route("/", to_cluster("c")), delay(1.0, 100));
    let t = decoded(vec![r]).expect("decodes");
    assert_eq!(
        t.vhosts[0].routes[0].fault,
        Some(Fault {
            delay: Some((Duration::from_secs(1), 1_000_000)),
            abort: None
        })
    );
    let r = with_fault(route("/", to_cluster("c")), abort(500, None));
    let t = decoded(vec![r]).expect("decodes");
    assert_eq!(
        t.vhosts[0].routes[0].fault.as_ref().and_then(|f| f.abort),
        Some((Abort::Http(500), 0))
    );
}

/// FractionalPercent: HUNDRED, TEN_THOUSAND and MILLION denominators (Istio writes
/// `percentage.value` as MILLION with value*10000), capped at 100 %.
#[test]
fn fractional_percents_in_millionths() {
    use fractional_percent::DenominatorType as D;
    let p = |n, d: D| FractionalPercent {
        numerator: n,
        denominator: d as i32,
    };
    assert_eq!(per_million(&p(50, D::Hundred)), 500_000);
    assert_eq!(per_million(&p(1, D::TenThousand)), 100);
    assert_eq!(per_million(&p(1000, D::Million)), 1000);
    assert_eq!(per_million(&p(200, D::Hundred)), 1_000_000);
}

/// Header matchers as Istio writes them (`string_match` exact/prefix/safe_regex,
/// `present_match` for `regex: "*"`, `invert_match` for `withoutHeaders`) and the path
/// matchers (`path`, `prefix`, `safe_regex`, `case_sensitive`); a bad regex is refused.
#[test]
fn matches_decode() {
    use string_matcher::MatchPattern as P;
    let mut r = route("/", to_cluster("c"));
    let m = r.r#match.as_mut().expect("match");
    m.path_specifier = Some(rt::route_match::PathSpecifier::SafeRegex(RegexMatcher {
        regex: "/hello.*".into(),
        engine_type: None,
    }));
    m.case_sensitive = Some(BoolValue { value: false });
    let mut inverted = header("end-user", P::Exact("jason".into()));
    inverted.invert_match = true;
    m.headers = vec![
        header("x-a", P::Prefix("ja".into())),
        inverted,
        rt::HeaderMatcher {
            name: "x-b".into(),
            header_match_specifier: Some(rt::header_matcher::HeaderMatchSpecifier::PresentMatch(
                true,
            )),
            ..Default::default()
        },
    ];
    let t = decoded(vec![r.clone()]).expect("decodes");
    let got = &t.vhosts[0].routes[0];
    assert!(!got.case_sensitive);
    assert!(matches!(&got.path, PathMatch::Regex(re) if re.0.is_match("/hello/x")));
    assert_eq!(got.headers.len(), 3);
    assert!(got.headers[1].invert);
    assert_eq!(got.headers[2].rule, HeaderRule::Present(true));
    let m = r.r#match.as_mut().expect("match");
    m.path_specifier = Some(rt::route_match::PathSpecifier::SafeRegex(RegexMatcher {
        regex: "(?<=a)b".into(),
        engine_type: None,
    }));
    assert!(decoded(vec![r]).is_err(), "look-behind is not RE2");
}

/// Header edits (VirtualService `headers.request/response.set/add/remove`): `set` is
/// OVERWRITE_IF_EXISTS_OR_ADD, `add` APPEND_IF_EXISTS_OR_ADD; pseudo-headers and Host cannot
/// be added (Envoy refuses them).
#[test]
fn header_edits_decode() {
    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction as A;
    let mut r = route("/", to_cluster("c"));
    r.request_headers_to_add = vec![add("x-set", "1", A::OverwriteIfExistsOrAdd as i32)];
    r.request_headers_to_remove = vec!["x-drop".into()];
    r.response_headers_to_add = vec![add("x-added", "2", A::AppendIfExistsOrAdd as i32)];
    let t = decoded(vec![r.clone()]).expect("decodes");
    let ops = &t.vhosts[0].routes[0].headers_ops;
    assert_eq!(ops.request.add[0].append, Append::OverwriteOrAdd);
    assert_eq!(ops.request.remove, ["x-drop"]);
    assert_eq!(ops.response.add[0].append, Append::AppendOrAdd);
    r.request_headers_to_add = vec![add(":authority", "x", 0)];
    assert!(decoded(vec![r]).is_err());
}

/// Mirrors (Istio `TranslateRequestMirrorPolicy`): the cluster and its
/// `runtime_fraction.default_value`; without one, every request.
#[test]
fn mirrors_decode() {
    let mut a = to_cluster("c");
    a.request_mirror_policies = vec![
        rt::route_action::RequestMirrorPolicy {
            cluster: "outbound|5000|v2|h".into(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(percent(25)),
                runtime_key: String::new(),
            }),
            ..Default::default()
        },
        rt::route_action::RequestMirrorPolicy {
            cluster: "m".into(),
            ..Default::default()
        },
    ];
    let t = decoded(vec![route("/", a)]).expect("decodes");
    assert_eq!(
        forward_of(&t).mirrors,
        [
            Mirror {
                cluster: "outbound|5000|v2|h".into(),
                per_million: 250_000
            },
            Mirror {
                cluster: "m".into(),
                per_million: 1_000_000
            }
        ]
    );
}

/// Istio's `block_all` catch-all vhost is a direct response (502); redirects, query
/// parameter matches and path rewrites are not supported and are NACKed.
#[test]
fn direct_responses_decode_and_unsupported_routes_are_refused() {
    let block = rt::Route {
        name: "block_all".into(),
        r#match: route("/", to_cluster("c")).r#match,
        action: Some(rt::route::Action::DirectResponse(
            rt::DirectResponseAction {
                status: 502,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let t = decoded(vec![block]).expect("decodes");
    assert_eq!(
        t.vhosts[0].routes[0].action,
        Action::Direct {
            status: 502,
            body: String::new()
        }
    );
    let redirect = rt::Route {
        action: Some(rt::route::Action::Redirect(Default::default())),
        ..route("/", to_cluster("c"))
    };
    assert!(decoded(vec![redirect]).is_err());
    let mut query = route("/", to_cluster("c"));
    if let Some(m) = query.r#match.as_mut() {
        m.query_parameters = vec![Default::default()];
    }
    assert!(decoded(vec![query]).is_err());
    let mut rewrite = to_cluster("c");
    rewrite.prefix_rewrite = "/v2".into();
    assert!(decoded(vec![route("/", rewrite)]).is_err());
}
