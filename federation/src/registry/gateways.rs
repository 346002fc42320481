//! Which Services are network gateways and where they are reached, as Istio's kube registry
//! finds them (pilot/pkg/serviceregistry/kube/controller/network.go `extractGatewaysInner`,
//! `getGatewayDetails`, `updateServiceNodePortAddresses`; kube/conversion.go): a Service
//! labelled `topology.istio.io/network` that exposes 15443 (or its
//! `networking.istio.io/gatewayPort`), reached on its LoadBalancer addresses and externalIPs
//! (hostnames resolved, see [`super::names`]), or, for a NodePort Service annotated
//! `traffic.istio.io/nodeSelector`, on the ExternalIPs of the selected nodes at the node port.
//! A Service that gives no usable address is dropped with a reason instead.

use super::names::{GatewayNames, Resolution};
use super::types::{ClusterData, DropKind, DroppedGateway, GatewayView, ServiceInfo};
use meshfed_model::labels as label;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

/// The gateways of one cluster, and the gateway Services it had to drop.
#[derive(Debug, Default)]
pub struct Found {
    pub gateways: Vec<GatewayView>,
    pub dropped: Vec<DroppedGateway>,
}

/// Finds one cluster's gateways among the Services `candidates` (those labelled with a
/// network, from the cluster's index); hostnames it looks up are added to `wanted`.
pub fn of_cluster<'a>(
    cluster: &str,
    data: &ClusterData,
    candidates: impl Iterator<Item = &'a (String, String)>,
    names: &Arc<GatewayNames>,
    wanted: &mut HashSet<String>,
) -> Found {
    let mut found = Found::default();
    for key @ (ns, name) in candidates {
        let Some(svc) = data.services.get(key) else {
            continue;
        };
        let Some(network) = svc.labels.get(label::NETWORK).filter(|n| !n.is_empty()) else {
            continue;
        };
        let drop = |kind, reason: String| DroppedGateway {
            cluster: cluster.to_string(),
            service: format!("{ns}/{name}"),
            network: network.clone(),
            kind,
            reason,
        };
        let (addresses, port) = match reach(svc, data) {
            Ok(r) => r,
            Err((kind, reason)) => {
                found.dropped.push(drop(kind, reason));
                continue;
            }
        };
        for address in addresses {
            let gateway = |address: String| GatewayView {
                network: network.clone(),
                cluster: cluster.to_string(),
                address,
                port,
            };
            if address.parse::<IpAddr>().is_ok() {
                found.gateways.push(gateway(address));
                continue;
            }
            wanted.insert(address.clone());
            match names.lookup(&address) {
                Resolution::Addresses(ips) => found.gateways.extend(ips.into_iter().map(gateway)),
                Resolution::Pending => found.dropped.push(drop(
                    DropKind::Unresolved,
                    format!("hostname {address} is being resolved"),
                )),
                Resolution::Failed(why) => found.dropped.push(drop(
                    DropKind::Unresolved,
                    format!("hostname {address} does not resolve: {why}"),
                )),
            }
        }
    }
    found
}

/// The addresses (IPs or hostnames) and port a gateway Service is reached on, or why none.
fn reach(svc: &ServiceInfo, data: &ClusterData) -> Result<(Vec<String>, u16), (DropKind, String)> {
    let port = gateway_port(svc);
    let Some(service_port) = svc.ports.iter().find(|p| p.port == port) else {
        return Err((
            DropKind::NoGatewayPort,
            format!(
                "it does not expose port {port} (15443, or its {} label)",
                label::GATEWAY_PORT
            ),
        ));
    };
    // Istio (conversion.go): only a NodePort Service with the nodeSelector annotation maps its
    // ports to node ports, and only then are nodes its addresses.
    let node_port = svc.service_type == "NodePort" && svc.node_selector.is_some();
    let port = match (node_port, service_port.node_port) {
        (true, Some(np)) => np,
        _ => port,
    };
    if !svc.external_addresses.is_empty() {
        return Ok((svc.external_addresses.clone(), port));
    }
    if !node_port {
        return Err((
            DropKind::NoAddress,
            "it has no LoadBalancer address or externalIP yet".into(),
        ));
    }
    let selector = svc.node_selector.clone().unwrap_or_default();
    let mut nodes: Vec<String> = data
        .nodes
        .values()
        .filter(|n| selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
        .flat_map(|n| n.external_ips.iter().cloned())
        .collect();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return Err((
            DropKind::NoAddress,
            format!(
                "no node matching its {} has an ExternalIP",
                label::NODE_SELECTOR
            ),
        ));
    }
    Ok((nodes, port))
}

/// `networking.istio.io/gatewayPort`, or 15443 when missing or not a port (Istio warns and
/// uses the default).
fn gateway_port(svc: &ServiceInfo) -> u16 {
    svc.labels
        .get(label::GATEWAY_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(label::DEFAULT_GATEWAY_PORT)
}

#[cfg(test)]
mod tests;
