//! An Envoy sidecar's outbound listeners by port, as Istio's `listener.go` builds them
//! (`buildSidecarOutboundListeners`, `buildListenerFromEntry`, `getListenerName`):
//! - a port some service serves HTTP on: `0.0.0.0_<port>`, an HTTP connection manager whose
//!   routes come over RDS `"<port>"` ([`crate::xds::rds::envoy`]), running `[fault, router]`;
//! - a TCP port with one service: `0.0.0.0_<port>`, a TCP proxy ([`super::tcp`]);
//! - a TCP service sharing its port with other services: `<ClusterIP>_<port>` on its
//!   ClusterIP in the proxy's cluster (Istio's name for a TCP service with a VIP).
//!
//! With capture (`REDIRECT`, `TPROXY`) the listeners are not bound (`bind_to_port: false`):
//! iptables hands them the connections. With `INTERCEPTION_MODE: NONE` Istio binds each for
//! real on `127.0.0.1`. Deviation from Istio: meshfed then leaves out the ports the proxy's own
//! app listens on (its endpoints' target and service ports), the HTTP proxy port, the ports
//! Istio reserves for the sidecar and its agent (15000-15090: Envoy's admin 15000, inbound
//! 15006, the agent's 15020, status 15021) and the privileged ports below 1024: an
//! app on `[::]:5000` would make Envoy fail to bind `127.0.0.1:5000`, and Envoy running
//! unprivileged cannot bind `127.0.0.1:53`; either way Envoy refuses the listener. Shared TCP
//! ports cannot be told apart without capture and get no listener then.

use super::super::cds::protocol;
use super::super::node::{Interception, Proxy};
use super::super::rds::Sources;
use super::sidecar::{HCM_FILTER, network_filter, socket};
use super::tcp::{TCP_PROXY_FILTER, proxy_for};
use super::{http_filters, rds};
use crate::registry::EndpointView;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use meshfed_model::ClusterName;
use std::collections::{BTreeMap, BTreeSet};

/// The ports Istio reserves for the sidecar and its agent.
const RESERVED: std::ops::RangeInclusive<u16> = 15000..=15090;

/// What is on one port: HTTP services, and the TCP ones.
#[derive(Default)]
struct OnPort<'a> {
    http: bool,
    tcp: Vec<(&'a str, Option<&'a String>)>,
}

/// The outbound listeners of `proxy`, whose own endpoints are `own`, by port.
pub fn listeners(proxy: &Proxy, src: &Sources, own: &[&EndpointView]) -> Vec<Listener> {
    let capture = proxy.interception != Interception::None;
    let skip = if capture {
        BTreeSet::new()
    } else {
        own_ports(proxy, own)
    };
    let bind = if capture { "0.0.0.0" } else { "127.0.0.1" };
    let mut out = Vec::new();
    for (port, on) in by_port(proxy, src) {
        if skip.contains(&port) || (!capture && (port < 1024 || RESERVED.contains(&port))) {
            continue;
        }
        if on.http {
            out.push(http(bind, port, capture));
        }
        match on.tcp.as_slice() {
            [] => {}
            [(host, _)] if !on.http => {
                let svc = ClusterName::new(port, None, host);
                out.push(tcp(bind, port, capture, &svc, proxy, src));
            }
            shared if capture => {
                for (host, vip) in shared {
                    let Some(vip) = vip else { continue };
                    let svc = ClusterName::new(port, None, host);
                    out.push(tcp(vip, port, capture, &svc, proxy, src));
                }
            }
            _ => {}
        }
    }
    out
}

/// Services' ports, HTTP or TCP (UDP has no listener), with their ClusterIP in the proxy's
/// cluster.
fn by_port<'a>(proxy: &Proxy, src: &Sources<'a>) -> BTreeMap<u16, OnPort<'a>> {
    let mut out: BTreeMap<u16, OnPort> = BTreeMap::new();
    for s in &src.snapshot.services {
        for p in s.ports.iter().filter(|p| !protocol::is_udp(p)) {
            let on = out.entry(p.port).or_default();
            if protocol::is_http(p) {
                on.http = true;
            } else {
                on.tcp
                    .push((s.hostname.as_str(), s.cluster_ips.get(&proxy.cluster_id)));
            }
        }
    }
    out
}

/// Ports a listener bound on loopback would take from the app or the sidecar itself.
fn own_ports(proxy: &Proxy, own: &[&EndpointView]) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    out.extend(proxy.http_proxy_port);
    for e in own {
        out.extend([e.port, e.service_port]);
    }
    out
}

/// Istio's listener shell: `<bind>_<port>`, outbound, bound only without capture.
fn shell(bind: &str, port: u16, capture: bool, chain: FilterChain) -> Listener {
    Listener {
        name: format!("{bind}_{port}"),
        address: Some(socket(bind, port)),
        bind_to_port: Some(BoolValue { value: !capture }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![chain],
        ..Default::default()
    }
}

/// The HTTP listener of `port`: routes `"<port>"` over RDS.
fn http(bind: &str, port: u16, capture: bool) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: format!("outbound_{bind}_{port}"),
        route_specifier: Some(rds(&port.to_string())),
        http_filters: http_filters(),
        ..Default::default()
    };
    let chain = FilterChain {
        filters: vec![network_filter(HCM_FILTER, pack_any(hcm))],
        ..Default::default()
    };
    shell(bind, port, capture, chain)
}

/// The TCP listener of the service port `svc`.
fn tcp(
    bind: &str,
    port: u16,
    capture: bool,
    svc: &ClusterName,
    proxy: &Proxy,
    src: &Sources,
) -> Listener {
    let chain = FilterChain {
        filters: vec![network_filter(
            TCP_PROXY_FILTER,
            pack_any(proxy_for(svc, proxy, src)),
        )],
        ..Default::default()
    };
    shell(bind, port, capture, chain)
}
