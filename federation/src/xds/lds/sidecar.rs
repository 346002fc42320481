//! LDS for Envoy sidecars (`GENERATOR` not `grpc`), as Istio's `listener.go` builds them:
//! - the HTTP proxy listener `127.0.0.1_<HTTP_PROXY_PORT>` when the node asks for one
//!   (`buildHTTPProxy`): bound for real, an HTTP connection manager that accepts absolute
//!   URLs and takes its routes over RDS `http_proxy`, running `[fault, router]`;
//! - the outbound listeners by port ([`super::outbound`]): HTTP ones with RDS `"<port>"`,
//!   TCP ones with a TCP proxy (weighted by the VirtualService's `tcp` routes);
//! - the inbound listener `virtualInbound` on 15006 ([`super::inbound`]).
//!
//! They depend on the proxy itself (its IP, namespace, labels, cluster, `HTTP_PROXY_PORT`,
//! `INTERCEPTION_MODE` and its own endpoints), so they are built per proxy; its own endpoints
//! are looked up in the push's index by address, not found by scanning every endpoint.

use super::super::node::{Proxy, ProxyKind};
use super::super::rds::{Sources, envoy::HTTP_PROXY};
use super::{http_filters, rds};
use crate::registry::EndpointView;
use crate::xds::cds::inbound::OwnEndpoints;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Http1ProtocolOptions, SocketAddress, TrafficDirection, address, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;

/// The network filter an HTTP connection manager is installed under.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

/// Every listener of `proxy` (see [`listeners_with`]), its own endpoints found by indexing
/// `src.snapshot` for this one proxy: a push looks them up in the index it keeps
/// ([`OwnEndpoints`]) and calls [`listeners_with`].
pub fn listeners(proxy: &Proxy, src: &Sources, trust_domain: &str) -> Vec<Listener> {
    if proxy.kind != ProxyKind::Sidecar {
        return Vec::new();
    }
    let index = OwnEndpoints::new(src.snapshot, None);
    let own: Vec<&EndpointView> = index.of(src.snapshot, proxy).collect();
    listeners_with(proxy, src, &own, trust_domain)
}

/// Every listener of `proxy`, whose own endpoints (at its IP, in its cluster, in registry
/// order) are `own`: the outbound ones by port, the HTTP proxy, the inbound one;
/// `trust_domain` is whose SPIFFE ids inbound mTLS accepts. Gateways (routers) get none.
pub fn listeners_with(
    proxy: &Proxy,
    src: &Sources,
    own: &[&EndpointView],
    trust_domain: &str,
) -> Vec<Listener> {
    if proxy.kind != ProxyKind::Sidecar {
        return Vec::new();
    }
    let mut out = super::outbound::listeners(proxy, src, own);
    out.extend(proxy.http_proxy_port.map(http_proxy));
    out.extend(super::inbound::listener(proxy, own, trust_domain));
    out
}

/// Istio `buildHTTPProxy`: `127.0.0.1_<port>` bound on loopback, HTTP/1.1 with absolute
/// URLs allowed (a client's `GET http://host/` as to any forward proxy), routes `http_proxy`.
pub fn http_proxy(port: u16) -> Listener {
    let name = format!("127.0.0.1_{port}");
    let hcm = HttpConnectionManager {
        stat_prefix: format!("outbound_{name}"),
        route_specifier: Some(rds(HTTP_PROXY)),
        http_filters: http_filters(),
        http_protocol_options: Some(Http1ProtocolOptions {
            allow_absolute_url: Some(BoolValue { value: true }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Listener {
        name,
        address: Some(socket("127.0.0.1", port)),
        bind_to_port: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            filters: vec![network_filter(HCM_FILTER, pack_any(hcm))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A network filter with its typed config.
pub fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

#[cfg(test)]
mod own_tests;
#[cfg(test)]
mod tests;
