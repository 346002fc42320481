//! VirtualService HTTP routes as Envoy `Route`s, as Istio's `route.go`
//! (`BuildHTTPRoutesForVirtualService`, `TranslateRoute`, `BuildDefaultHTTPOutboundRoute`)
//! writes them, in each generator's dialect:
//! - gRPC's proxyless clients (`GENERATOR=grpc`) get what gRPC reads: matches (A28),
//!   weighted clusters (A28), timeouts in `max_stream_duration` (A31), retries (A44) and
//!   faults with their percentages always set (A33). Header rewrites and mirrors are not
//!   read by gRPC and are not sent.
//! - Envoy sidecars also get `max_grpc_timeout`, header set/add/remove (route and per
//!   destination, `host_rewrite_literal` for an authority), request mirror policies, a
//!   decorator, and faults whose percentages are left unset when the rule sets none.

pub mod fault;
mod headers;
pub mod matching;
mod mirror;
pub mod retry;

use super::duration::to_envoy;
use super::node::Generator;
use super::virtual_service::{
    Destination, HttpMatch, HttpRoute, Percentage, RouteDestination, VirtualService,
};
use crate::registry::Snapshot;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration,
};
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, Route, RouteAction, WeightedCluster, route, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use matching::Client;
use meshfed_model::ClusterName;
use std::time::Duration;

/// What destinations resolve against, the client asking (with the service port), and the
/// dialect to write.
pub struct Target<'a> {
    pub snapshot: &'a Snapshot,
    pub client: Client<'a>,
    pub generator: Generator,
}

/// Istio's route for a service no VirtualService routes (`BuildDefaultHTTPOutboundRoute`):
/// everything to `outbound|port||fqdn`, no timeout (0s, not Envoy's 15 s) and the default
/// retry policy; Envoy also gets the decorator `fqdn:port/*` (`buildDefaultHTTPRoute`).
pub fn default_route(cluster: &ClusterName, generator: Generator) -> Route {
    let decorator = (generator == Generator::Envoy).then(|| Decorator {
        operation: format!("{}:{}/*", cluster.host, cluster.port),
        ..Default::default()
    });
    Route {
        name: "default".into(),
        r#match: Some(matching::catch_all()),
        decorator,
        action: Some(route::Action::Route(action(
            ClusterSpecifier::Cluster(cluster.cluster()),
            None,
            retry::policy(None),
            generator,
        ))),
        ..Default::default()
    }
}

/// The routes of `vs` for this target: one per `http[i].match[j]` that applies to the
/// client, in order, stopping after the first catch-all (nothing after it is reachable).
pub fn routes(vs: &VirtualService, t: &Target) -> Vec<Route> {
    let mut out = Vec::new();
    for http in &vs.http {
        let matches: Vec<Option<&HttpMatch>> = if http.matches.is_empty() {
            vec![None]
        } else {
            http.matches.iter().map(Some).collect()
        };
        for m in matches {
            if m.is_some_and(|m| !matching::applies(m, &t.client)) {
                continue;
            }
            out.push(translate(http, m, vs, t));
            if matching::is_catch_all(m) {
                return out;
            }
        }
    }
    out
}

/// One `http` route with one of its matches.
fn translate(http: &HttpRoute, m: Option<&HttpMatch>, vs: &VirtualService, t: &Target) -> Route {
    let name = match m.map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
        Some(mn) if !http.name.is_empty() => format!("{}.{mn}", http.name),
        Some(mn) => mn.to_string(),
        None => http.name.clone(),
    };
    let mut r = Route {
        name,
        r#match: Some(matching::route_match(m)),
        action: Some(route::Action::Route(action(
            clusters(&http.route, t),
            http.timeout,
            retry::policy(http.retries.as_ref()),
            t.generator,
        ))),
        ..Default::default()
    };
    if let Some(f) = &http.fault {
        r.typed_per_filter_config.insert(
            fault::FAULT_FILTER.into(),
            pack_any(fault_for(f, t.generator)),
        );
    }
    if t.generator == Generator::Envoy {
        envoy_extras(&mut r, http, vs, t);
    }
    r
}

/// What only Envoy reads (Istio `TranslateRoute`, `applyHTTPRouteDestination`,
/// `processDestination`): the route's header operations, then a single destination's;
/// an authority header as `host_rewrite_literal` (the route's wins); mirrors; the decorator.
fn envoy_extras(r: &mut Route, http: &HttpRoute, vs: &VirtualService, t: &Target) {
    let mut ops = headers::operations(&http.headers);
    if let [one] = http.route.as_slice() {
        let d = headers::operations(&one.headers);
        ops.authority = ops.authority.or(d.authority.clone());
        ops.append(d);
    }
    ops.apply_to_route(r);
    let op = operation(r, &vs.name, t.client.port);
    if let Some(route::Action::Route(a)) = &mut r.action {
        if let Some(host) = ops.authority {
            a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(host));
        }
        a.request_mirror_policies = http
            .mirrors
            .iter()
            .filter_map(|m| mirror::policy(cluster(&m.destination, t), m.percentage))
            .collect();
    }
    r.decorator = Some(Decorator {
        operation: op,
        ..Default::default()
    });
}

/// Istio `GetRouteOperation`: `host:port` plus the path for one destination cluster, else
/// `vs-name:port` plus the path.
fn operation(r: &Route, vs_name: &str, port: u16) -> String {
    let path = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
        Some(route_match::PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(route_match::PathSpecifier::Path(p)) => p.clone(),
        Some(route_match::PathSpecifier::SafeRegex(re)) => re.regex.clone(),
        _ => "/*".into(),
    };
    let one = match &r.action {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
            ..
        })) => ClusterName::parse_cluster(c).ok(),
        _ => None,
    };
    match one {
        Some(c) => format!("{}:{}{path}", c.host, c.port),
        None => format!("{vs_name}:{port}{path}"),
    }
}

/// Istio `TranslateFault`. Proxyless: percentages always set (grpc-js refuses a fault
/// without one). Envoy: as Istio writes it, an abort without a percentage has none (Envoy
/// reads 0 %) and a delay without one gets the integer `percent` 0 (out of a hundred).
fn fault_for(f: &super::virtual_service::Fault, g: Generator) -> HttpFault {
    let mut out = fault::http_fault(f);
    if g == Generator::Envoy {
        if let (Some(d), Some(fd)) = (&mut out.delay, &f.delay)
            && fd.percentage == Percentage::Unset
        {
            d.percentage = Some(fault::percent(Percentage::Percent(0)));
        }
        if let (Some(a), Some(fa)) = (&mut out.abort, &f.abort)
            && fa.percentage == Percentage::Unset
        {
            a.percentage = None;
        }
    }
    out
}

/// Istio `setTimeout`: `timeout` carries the rule's timeout, 0s (none) when unset.
/// Proxyless: also `max_stream_duration` (gRPC reads only that, A31). Envoy:
/// `max_grpc_timeout` the same, so a gRPC call's own deadline is capped by the rule.
fn action(
    clusters: ClusterSpecifier,
    timeout: Option<Duration>,
    retry_policy: Option<envoy_types::pb::envoy::config::route::v3::RetryPolicy>,
    generator: Generator,
) -> RouteAction {
    let d: PbDuration = to_envoy(timeout.unwrap_or_default());
    let mut a = RouteAction {
        cluster_specifier: Some(clusters),
        timeout: Some(d),
        retry_policy,
        ..Default::default()
    };
    match generator {
        Generator::Grpc => {
            a.max_stream_duration = Some(MaxStreamDuration {
                max_stream_duration: Some(d),
                ..Default::default()
            })
        }
        // Deprecated in Envoy's API, but what Istio still sends (its replacement,
        // `max_stream_duration.grpc_timeout_header_max`, had regressions there).
        #[allow(deprecated)]
        Generator::Envoy => a.max_grpc_timeout = Some(d),
    }
    a
}

/// One destination: its cluster (its weight ignored). Several: `weighted_clusters` without
/// the 0 weights, each weight in its wrapper (gRPC NACKs a missing one); for Envoy each
/// carries its destination's header operations (Istio `processWeightedDestination`).
fn clusters(dests: &[RouteDestination], t: &Target) -> ClusterSpecifier {
    if let [one] = dests {
        return ClusterSpecifier::Cluster(cluster(&one.destination, t));
    }
    ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: dests
            .iter()
            .filter(|d| d.weight > 0)
            .map(|d| {
                let mut w = ClusterWeight {
                    name: cluster(&d.destination, t),
                    weight: Some(UInt32Value { value: d.weight }),
                    ..Default::default()
                };
                if t.generator == Generator::Envoy {
                    let ops = headers::operations(&d.headers);
                    w.host_rewrite_specifier = ops.authority.clone().map(
                        weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral,
                    );
                    ops.apply_to_weight(&mut w);
                }
                w
            })
            .collect(),
        ..Default::default()
    })
}

/// Istio `GetDestinationCluster`: `outbound|port|subset|host`, the port being the
/// destination's, else the service's only port, else the port being routed.
pub fn cluster(d: &Destination, t: &Target) -> String {
    let port = d.port.unwrap_or_else(|| {
        let svc = t.snapshot.services.iter().find(|s| s.hostname == d.host);
        match svc.map(|s| s.ports.as_slice()) {
            Some([only]) => only.port,
            _ => t.client.port,
        }
    });
    ClusterName::new(port, d.subset.as_deref(), &d.host).cluster()
}

#[cfg(test)]
mod tests;
