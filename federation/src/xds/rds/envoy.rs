//! RDS for Envoy sidecars, as Istio's `httproute.go` builds it
//! (`buildSidecarOutboundHTTPRouteConfig`, `BuildSidecarOutboundVirtualHosts`,
//! `mergeAllVirtualHosts`, `buildCatchAllVirtualHost`):
//! - `"<port>"` (named by the outbound listener `0.0.0.0_<port>`): one virtual host
//!   `fqdn:port` per service with an HTTP port `<port>`, domains without ports
//!   (`ignore_port_in_host_matching`), then the catch-all `block_all` (502; meshfed has no
//!   passthrough cluster);
//! - `"http_proxy"` (named by the HTTP proxy listener `127.0.0.1_<HTTP_PROXY_PORT>`): every
//!   HTTP service port, each domain also with `:port`; on ports other than 80 only the
//!   `:port` forms are kept (a bare name would be ambiguous between ports), then `block_all`.
//!
//! Each virtual host's routes are the client's VirtualService's or Istio's default route
//! ([`super::service_routes`] with [`Generator::Envoy`]). Virtual hosts are sorted by name and
//! a domain already taken by an earlier one is dropped (Istio `dedupeDomains`).
//!
//! Deviations from Istio, both so that `Host: helloworld.sample.svc.cluster.local:5000`
//! reaches its service through the HTTP proxy (the kind bed and the test bed have no
//! capture): `http_proxy` leaves `ignore_port_in_host_matching` off (Istio sets it, and
//! Envoy would then never match the `:port` domains it keeps); and `http_proxy`'s routes are
//! built per service port (Istio builds them with listener port 0, which drops every match
//! with a `port`).

use super::super::cds::protocol;
use super::super::node::{Generator, Proxy};
use super::{Sources, domains, service_routes, vip};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use meshfed_model::ClusterName;
use std::collections::{BTreeSet, HashSet};

/// The route configuration the HTTP proxy listener names (Istio `model.RDSHttpProxy`).
pub const HTTP_PROXY: &str = "http_proxy";
/// The catch-all virtual host and route when outbound traffic to unknown hosts is refused
/// (Istio `util.BlackHole`).
pub const BLOCK_ALL: &str = "block_all";
/// Istio `DefaultMaxDirectResponseBodySizeBytes`.
const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;

/// The route configuration an Envoy sidecar asked for by `name` (`"5000"` or
/// `"http_proxy"`); None for a name that is neither, or a port no HTTP service has.
pub fn by_name(name: &str, proxy: &Proxy, src: &Sources) -> Option<RouteConfiguration> {
    if name == HTTP_PROXY {
        return Some(http_proxy(proxy, src));
    }
    let port: u16 = name.parse().ok()?;
    http_ports(src)
        .contains(&port)
        .then(|| for_port(port, proxy, src))
}

/// Every port some service serves HTTP on (Istio: an HTTP outbound listener per such port).
pub fn http_ports(src: &Sources) -> BTreeSet<u16> {
    src.snapshot
        .services
        .iter()
        .flat_map(|s| s.ports.iter().filter(|p| protocol::is_http(p)))
        .map(|p| p.port)
        .collect()
}

/// RDS `"<port>"`: the services on that HTTP port, domains without ports.
pub fn for_port(port: u16, proxy: &Proxy, src: &Sources) -> RouteConfiguration {
    let vhosts = service_ports(src)
        .into_iter()
        .filter(|c| c.port == port)
        .map(|c| {
            let d = domains::names(
                &c.host,
                &proxy.namespace,
                src.domain,
                vip(src, &c.host, proxy),
            );
            vhost(&c, d, proxy, src)
        })
        .collect();
    RouteConfiguration {
        name: port.to_string(),
        ignore_port_in_host_matching: true,
        ..configuration(vhosts)
    }
}

/// RDS `"http_proxy"`: every HTTP service port, with `:port` domains (Istio
/// `mergeAllVirtualHosts`: only those on ports other than 80).
pub fn http_proxy(proxy: &Proxy, src: &Sources) -> RouteConfiguration {
    let vhosts = service_ports(src)
        .into_iter()
        .map(|c| {
            let vip = vip(src, &c.host, proxy);
            let mut d = domains::domains(&c.host, c.port, &proxy.namespace, src.domain, vip);
            if c.port != 80 {
                d.retain(|x| x.contains(':'));
            }
            vhost(&c, d, proxy, src)
        })
        .collect();
    RouteConfiguration {
        name: HTTP_PROXY.into(),
        ..configuration(vhosts)
    }
}

/// Every (service, HTTP port) as its cluster name, in snapshot order.
fn service_ports(src: &Sources) -> Vec<ClusterName> {
    src.snapshot
        .services
        .iter()
        .flat_map(|s| {
            s.ports
                .iter()
                .filter(|p| protocol::is_http(p))
                .map(|p| ClusterName::new(p.port, None, &s.hostname))
        })
        .collect()
}

fn vhost(c: &ClusterName, domains: Vec<String>, proxy: &Proxy, src: &Sources) -> VirtualHost {
    VirtualHost {
        name: format!("{}:{}", c.host, c.port),
        domains,
        routes: service_routes(c, proxy, src, Generator::Envoy),
        // Istio's sidecar proxy headers default: `x-envoy-attempt-count` upstream.
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// The virtual hosts sorted by name with duplicate domains dropped (the first keeps them),
/// then `block_all`, in Istio's RouteConfiguration for sidecars.
fn configuration(mut vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut taken = HashSet::new();
    for v in &mut vhosts {
        v.domains.retain(|d| taken.insert(d.clone()));
    }
    vhosts.retain(|v| !v.domains.is_empty());
    vhosts.push(block_all());
    RouteConfiguration {
        virtual_hosts: vhosts,
        validate_clusters: Some(BoolValue { value: false }),
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY,
        }),
        ..Default::default()
    }
}

/// Istio `buildCatchAllVirtualHost` with outbound traffic to unknown hosts refused: `*`
/// answered 502 by Envoy itself. Never sent to proxyless clients (gRPC NACKs it).
pub fn block_all() -> VirtualHost {
    VirtualHost {
        name: BLOCK_ALL.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: BLOCK_ALL.into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            })),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod seed_tests;
#[cfg(test)]
mod tests;
