//! EDS: the endpoints of one Istio cluster (`outbound|port|subset|fqdn`) as one proxy must see
//! them: endpoints on the proxy's network (or on a network without a gateway) directly, mesh
//! workloads on other networks replaced by that network's gateways (sharing the weight of the
//! ready endpoints behind them, `tlsMode: istio`), grouped by locality with Istio's
//! priorities and weights.

mod network;

use super::locality::{self, LocalityPolicy, Place};
use crate::registry::{EndpointView, GatewayView, ServiceView, Snapshot};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, Locality as EnvoyLocality, Metadata, SocketAddress, address,
    socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, Value, value};
use meshfed_model::{ClusterName, Locality, labels_match};
use std::collections::BTreeMap;

/// One backend as EDS will list it, before locality grouping.
struct Backend {
    address: String,
    port: u16,
    weight: u32,
    healthy: bool,
    /// The pod carries `security.istio.io/tlsMode: istio` (it has a sidecar): reached with mTLS.
    tls_istio: bool,
    place: Place,
}

/// The ClusterLoadAssignment of `cluster` for `proxy`. `subset` is the DestinationRule
/// subset's label selector (empty for no subset).
pub fn load_assignment(
    cluster: &ClusterName,
    snapshot: &Snapshot,
    proxy: &Place,
    subset: &BTreeMap<String, String>,
    policy: &LocalityPolicy,
) -> ClusterLoadAssignment {
    let service = snapshot
        .services
        .iter()
        .find(|s| s.hostname == cluster.host);
    of_service(
        cluster,
        service.map(|s| &**s),
        snapshot,
        proxy,
        subset,
        policy,
    )
}

/// [`load_assignment`] for the cluster's Service, already found (a push builds thousands of
/// assignments: looking each Service up by name would cost a scan of the snapshot each).
pub fn of_service(
    cluster: &ClusterName,
    service: Option<&ServiceView>,
    snapshot: &Snapshot,
    proxy: &Place,
    subset: &BTreeMap<String, String>,
    policy: &LocalityPolicy,
) -> ClusterLoadAssignment {
    let endpoints: Vec<&EndpointView> = service
        .into_iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.service_port == cluster.port && labels_match(subset, &e.labels))
        .collect();
    let backends = backends(&endpoints, snapshot, &proxy.network);
    let places: Vec<Place> = backends.iter().map(|b| b.place.clone()).collect();
    let groups = locality::assign(proxy, &places, policy);
    let localities = groups
        .into_iter()
        .map(|g| LocalityLbEndpoints {
            locality: Some(envoy_locality(&g.locality)),
            lb_endpoints: g
                .endpoints
                .iter()
                .map(|&i| lb_endpoint(&backends[i]))
                .collect(),
            load_balancing_weight: Some(UInt32Value {
                value: g.weight.max(1),
            }),
            priority: g.priority,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.cluster(),
        endpoints: localities,
        ..Default::default()
    }
}

/// Istio's EndpointsByNetworkFilter. Endpoints on the proxy's network, or on a network
/// without a gateway, are listed as they are (not-ready ones marked unhealthy); those on
/// another network are replaced by the gateways [`network::Gateways::select`] picks, each
/// gateway per locality weighing the ready endpoints behind it, so a remote locality whose
/// endpoints all turn not-ready disappears at once. Cross-network traffic needs mTLS for the
/// gateway's SNI routing, so remote endpoints that are not mesh workloads (`tlsMode: istio`)
/// are left out, as Istio leaves them out for sidecars.
fn backends(endpoints: &[&EndpointView], snapshot: &Snapshot, proxy_network: &str) -> Vec<Backend> {
    let gateways = network::Gateways::new(&snapshot.gateways);
    let scale = gateways.scale();
    let mut out = Vec::new();
    let mut via: BTreeMap<(&str, &GatewayView), u32> = BTreeMap::new();
    for e in endpoints {
        let chosen = gateways.select(&e.network, &e.cluster);
        if e.network.is_empty() || *e.network == *proxy_network || chosen.is_empty() {
            out.push(direct(e, scale));
            continue;
        }
        if !e.ready || !is_mesh_workload(e) {
            continue;
        }
        let share = scale / chosen.len().max(1) as u32;
        for gw in chosen {
            let w = via.entry((&*e.locality, *gw)).or_default();
            *w = w.saturating_add(share);
        }
    }
    for ((locality, gw), weight) in via {
        let place = Place {
            locality: locality.parse().unwrap_or_default(),
            network: gw.network.as_str().into(),
            cluster: gw.cluster.as_str().into(),
            labels: Default::default(),
            weight,
        };
        out.push(Backend {
            address: gw.address.clone(),
            port: gw.port,
            weight,
            healthy: true,
            tls_istio: true,
            place,
        });
    }
    out
}

fn is_mesh_workload(e: &EndpointView) -> bool {
    e.labels
        .get(meshfed_model::labels::TLS_MODE)
        .is_some_and(|m| m == meshfed_model::labels::TLS_MODE_ISTIO)
}

/// An endpoint reached at its own address.
fn direct(e: &EndpointView, weight: u32) -> Backend {
    let place = Place {
        locality: e.locality.parse().unwrap_or_default(),
        network: e.network.clone(),
        cluster: e.cluster.clone(),
        labels: e.labels.clone(),
        weight,
    };
    Backend {
        address: e.address.clone(),
        port: e.port,
        weight,
        healthy: e.ready,
        tls_istio: is_mesh_workload(e),
        place,
    }
}

fn envoy_locality(l: &Locality) -> EnvoyLocality {
    EnvoyLocality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.subzone.clone(),
    }
}

fn lb_endpoint(b: &Backend) -> LbEndpoint {
    let socket = SocketAddress {
        address: b.address.clone(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(b.port))),
        ..Default::default()
    };
    let endpoint = Endpoint {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(socket)),
        }),
        ..Default::default()
    };
    let health = if b.healthy {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value {
            value: b.weight.max(1),
        }),
        metadata: b.tls_istio.then(tls_mode_istio),
    }
}

/// What Istio puts on endpoints reached through a network gateway and on pods with a sidecar:
/// sidecars pick the mTLS transport socket (with the `outbound_.port_.subset_.fqdn` SNI).
fn tls_mode_istio() -> Metadata {
    let s = |v: &str| Value {
        kind: Some(value::Kind::StringValue(v.to_string())),
    };
    let fields = [("tlsMode".to_string(), s("istio"))].into_iter().collect();
    Metadata {
        filter_metadata: [(
            "envoy.transport_socket_match".to_string(),
            Struct { fields },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
