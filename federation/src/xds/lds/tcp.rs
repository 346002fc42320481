//! The TCP proxy of an Envoy sidecar's outbound TCP listener, as Istio builds it
//! (`networkfilter.go` `buildOutboundNetworkFiltersWithSingleDestination` /
//! `...WithWeightedClusters`, `tls.go` `buildSidecarOutboundTCPFilterChainOpts`): the first
//! VirtualService `tcp` route whose match applies to the client (no match, or one with the
//! service port, the client's `sourceLabels` and `sourceNamespace`, and `mesh` among its
//! `gateways`); one destination is `cluster`, several are `weighted_clusters` without the 0
//! weights. Without a rule, `outbound|port||fqdn`.

use super::super::node::{Generator, Proxy};
use super::super::rds::Sources;
use super::super::route::{self, Target, matching::Client};
use super::super::virtual_service::{L4Match, TcpRoute};
use super::super::vs_index;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy,
    tcp_proxy::{WeightedCluster, weighted_cluster::ClusterWeight},
};
use meshfed_model::ClusterName;

/// The network filter's name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// The TCP proxy for the service port `svc` as `proxy` sees it.
pub fn proxy_for(svc: &ClusterName, proxy: &Proxy, src: &Sources) -> TcpProxy {
    let t = Target {
        snapshot: src.snapshot,
        client: Client {
            namespace: &proxy.namespace,
            labels: &proxy.labels,
            port: svc.port,
        },
        generator: Generator::Envoy,
    };
    let chosen = vs_index::find(src.virtual_services, &proxy.namespace, &svc.host)
        .and_then(|vs| vs.tcp.iter().find(|r| applies(r, &t.client)));
    let specifier = match chosen.map(|r| r.route.as_slice()) {
        Some([one]) => tcp_proxy::ClusterSpecifier::Cluster(route::cluster(&one.destination, &t)),
        Some(many) if !many.is_empty() => {
            tcp_proxy::ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: many
                    .iter()
                    .filter(|d| d.weight > 0)
                    .map(|d| ClusterWeight {
                        name: route::cluster(&d.destination, &t),
                        weight: d.weight,
                        ..Default::default()
                    })
                    .collect(),
            })
        }
        _ => tcp_proxy::ClusterSpecifier::Cluster(svc.cluster()),
    };
    let stat_prefix = match &specifier {
        tcp_proxy::ClusterSpecifier::Cluster(c) => c.clone(),
        tcp_proxy::ClusterSpecifier::WeightedClusters(_) => svc.cluster(),
    };
    TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        ..Default::default()
    }
}

/// A `tcp` route applies with no match, or with one match that does.
fn applies(r: &TcpRoute, c: &Client) -> bool {
    r.matches.is_empty() || r.matches.iter().any(|m| matches(m, c))
}

/// Istio `sourceMatchTCP` plus the port: every condition given holds for this client.
fn matches(m: &L4Match, c: &Client) -> bool {
    m.port.is_none_or(|p| p == c.port)
        && m.source_labels
            .iter()
            .all(|(k, v)| c.labels.get(k) == Some(v))
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns == c.namespace)
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
}
