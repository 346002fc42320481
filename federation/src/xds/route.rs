//! VirtualService HTTP routes as Envoy `Route`s for gRPC's proxyless clients, as Istio's
//! `route.go` (`BuildHTTPRoutesForVirtualService`, `TranslateRoute`,
//! `BuildDefaultHTTPOutboundRoute`) writes them for `GENERATOR=grpc`, limited to what gRPC
//! reads: matches (A28), weighted clusters (A28), timeouts (A31), retries (A44) and faults
//! (A33). Header rewrites and mirrors are not read by gRPC and are not sent.

pub mod fault;
pub mod matching;
pub mod retry;

use super::duration::to_envoy;
use super::virtual_service::{Destination, HttpMatch, HttpRoute, RouteDestination, VirtualService};
use crate::registry::Snapshot;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, MaxStreamDuration,
};
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, WeightedCluster, route};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use matching::Client;
use meshfed_model::ClusterName;
use std::time::Duration;

/// What destinations resolve against, and the client asking (with the service port).
pub struct Target<'a> {
    pub snapshot: &'a Snapshot,
    pub client: Client<'a>,
}

/// Istio's route for a service no VirtualService routes: everything to
/// `outbound|port||fqdn`, no timeout (0s, not Envoy's 15 s) and the default retry policy.
pub fn default_route(cluster: &ClusterName) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(matching::catch_all()),
        action: Some(route::Action::Route(action(
            ClusterSpecifier::Cluster(cluster.cluster()),
            None,
            retry::policy(None),
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
            out.push(translate(http, m, t));
            if matching::is_catch_all(m) {
                return out;
            }
        }
    }
    out
}

/// One `http` route with one of its matches.
fn translate(http: &HttpRoute, m: Option<&HttpMatch>, t: &Target) -> Route {
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
        ))),
        ..Default::default()
    };
    if let Some(f) = &http.fault {
        r.typed_per_filter_config
            .insert(fault::FAULT_FILTER.into(), pack_any(fault::http_fault(f)));
    }
    r
}

/// Istio `setTimeout` for proxyless: `timeout` and `max_stream_duration` both carry the
/// rule's timeout, 0s (none) when unset; gRPC reads only `max_stream_duration` (A31).
fn action(
    clusters: ClusterSpecifier,
    timeout: Option<Duration>,
    retry_policy: Option<envoy_types::pb::envoy::config::route::v3::RetryPolicy>,
) -> RouteAction {
    let d: PbDuration = to_envoy(timeout.unwrap_or_default());
    RouteAction {
        cluster_specifier: Some(clusters),
        timeout: Some(d),
        max_stream_duration: Some(MaxStreamDuration {
            max_stream_duration: Some(d),
            ..Default::default()
        }),
        retry_policy,
        ..Default::default()
    }
}

/// One destination: its cluster (its weight ignored). Several: `weighted_clusters` without
/// the 0 weights, each weight in its wrapper (gRPC NACKs a missing one).
fn clusters(dests: &[RouteDestination], t: &Target) -> ClusterSpecifier {
    if let [one] = dests {
        return ClusterSpecifier::Cluster(cluster(&one.destination, t));
    }
    ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: dests
            .iter()
            .filter(|d| d.weight > 0)
            .map(|d| ClusterWeight {
                name: cluster(&d.destination, t),
                weight: Some(UInt32Value { value: d.weight }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Istio `GetDestinationCluster`: `outbound|port|subset|host`, the port being the
/// destination's, else the service's only port, else the port being routed.
fn cluster(d: &Destination, t: &Target) -> String {
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
