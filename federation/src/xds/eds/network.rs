//! Istio's network gateways as EDS uses them (pilot/pkg/model/network.go `NetworkGateways`,
//! pilot/pkg/xds/endpoints/ep_filters.go `selectNetworkGateways`): an endpoint on another
//! network goes through the gateways of its own network and cluster when there are some, else
//! through every gateway of its network; its weight is split evenly among them, after every
//! weight is scaled by the least common multiple of the gateway counts (per network and per
//! network and cluster), so the split stays whole.

use crate::registry::GatewayView;
use std::collections::BTreeMap;

pub struct Gateways<'a> {
    by_network: BTreeMap<&'a str, Vec<&'a GatewayView>>,
    /// Network, then cluster.
    by_cluster: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a GatewayView>>>,
    scale: u32,
}

impl<'a> Gateways<'a> {
    pub fn new(all: &'a [GatewayView]) -> Self {
        let mut by_network: BTreeMap<&str, Vec<&GatewayView>> = BTreeMap::new();
        let mut by_cluster: BTreeMap<&str, BTreeMap<&str, Vec<&GatewayView>>> = BTreeMap::new();
        for g in all {
            by_network.entry(&g.network).or_default().push(g);
            let clusters = by_cluster.entry(&g.network).or_default();
            clusters.entry(&g.cluster).or_default().push(g);
        }
        let per_cluster = by_cluster.values().flat_map(BTreeMap::values);
        let counts = by_network.values().chain(per_cluster).map(Vec::len);
        let scale = counts.fold(1u64, |acc, n| lcm(acc, n as u64));
        Gateways {
            by_network,
            by_cluster,
            scale: u32::try_from(scale).unwrap_or(u32::MAX),
        }
    }

    /// What every endpoint weighs before a split (Istio's `GetLBWeightScaleFactor`).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The gateways an endpoint of `network` in `cluster` is reached through (none: the
    /// network has no gateway, and its endpoints are reached directly).
    pub fn select(&self, network: &str, cluster: &str) -> &[&'a GatewayView] {
        self.by_cluster
            .get(network)
            .and_then(|clusters| clusters.get(cluster))
            .or_else(|| self.by_network.get(network))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        (a / gcd(a, b)).saturating_mul(b)
    }
}
