//! RDS for gRPC's proxyless clients, as Istio's `grpcgen/rds.go` builds it through
//! `BuildSidecarOutboundVirtualHosts`: the RouteConfiguration is named for the service port's
//! cluster (`outbound|port||fqdn`) and has one virtual host, `fqdn:port`, whose routes are the
//! VirtualService's that applies to the client (in order, see [`route::routes`]), or Istio's
//! default route when none applies. No catch-all virtual host is sent to proxyless clients.
//! Envoy sidecars' route configurations (by port and `http_proxy`) are in [`envoy`]; both
//! build a service port's routes with [`service_routes`].

pub mod domains;
pub mod envoy;

use super::node::{Generator, Proxy};
use super::route::{self, Target, matching::Client};
use super::virtual_service::VirtualService;
use super::vs_index;
use crate::registry::Snapshot;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use meshfed_model::ClusterName;

/// What a route configuration is built from.
pub struct Sources<'a> {
    pub snapshot: &'a Snapshot,
    pub virtual_services: &'a [VirtualService],
    pub domain: &'a str,
}

/// The cluster a proxyless RDS name stands for: `outbound|port||fqdn` of a mesh service
/// port (no subset: subsets are route destinations, not route configurations).
pub fn target(name: &str, snapshot: &Snapshot) -> Option<ClusterName> {
    let c = ClusterName::parse_cluster(name).ok()?;
    if c.subset.is_some() {
        return None;
    }
    let svc = snapshot.services.iter().find(|s| s.hostname == c.host)?;
    svc.ports.iter().any(|p| p.port == c.port).then_some(c)
}

/// The RouteConfiguration of `cluster` for `proxy`.
pub fn grpc(cluster: &ClusterName, proxy: &Proxy, src: &Sources) -> RouteConfiguration {
    let fqdn = cluster.host.as_str();
    let vip = vip(src, fqdn, proxy);
    RouteConfiguration {
        name: cluster.cluster(),
        virtual_hosts: vec![VirtualHost {
            name: format!("{fqdn}:{}", cluster.port),
            domains: domains::domains(fqdn, cluster.port, &proxy.namespace, src.domain, vip),
            routes: service_routes(cluster, proxy, src, Generator::Grpc),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The routes of one service port for `proxy`, in `generator`'s dialect: the VirtualService
/// that applies to the client (Istio's sidecar scope), or the default route.
pub fn service_routes(
    cluster: &ClusterName,
    proxy: &Proxy,
    src: &Sources,
    generator: Generator,
) -> Vec<Route> {
    let t = Target {
        snapshot: src.snapshot,
        client: Client {
            namespace: &proxy.namespace,
            labels: &proxy.labels,
            port: cluster.port,
        },
        generator,
    };
    let mut routes = vs_index::find(src.virtual_services, &proxy.namespace, &cluster.host)
        .map(|vs| route::routes(vs, &t))
        .unwrap_or_default();
    // Istio skips a rule none of whose routes applies to this client and port; the
    // service then keeps its default route.
    if routes.is_empty() {
        routes.push(route::default_route(cluster, generator));
    }
    routes
}

/// The service's ClusterIP in the proxy's cluster.
fn vip<'a>(src: &Sources<'a>, fqdn: &str, proxy: &Proxy) -> Option<&'a str> {
    src.snapshot
        .services
        .iter()
        .find(|s| s.hostname == fqdn)
        .and_then(|s| s.cluster_ips.get(&proxy.cluster_id))
        .map(String::as_str)
}

#[cfg(test)]
mod tests;
