//! Envoy sidecars' inbound clusters, `inbound|P||`: STATIC at `127.0.0.1:P`, the app's own
//! port (Istio's older localhost form of `buildInboundClusters`), one per app port of the
//! proxy's own endpoints (those at its IP in its cluster, looked up in a per-push index,
//! [`OwnEndpoints`]). The virtual inbound listener
//! ([`crate::xds::lds::sidecar`]) sends accepted connections to them. They depend only on
//! the set of app ports, which is part of an Envoy sidecar's CDS cache key: sidecars with
//! the same ports (the pods of one Deployment) share one build and its precomputed changes.
//!
//! The kind bed's no-capture convention: a Service whose `targetPort` is the sidecar's
//! inbound port 15006 sends its traffic to the sidecar itself, and the app listens on the
//! service port, so such an endpoint's app port is its service port ([`app_port`]).

mod own_endpoints;

pub use own_endpoints::OwnEndpoints;

use crate::registry::{EndpointView, Snapshot};
use crate::xds::node::{Generator, Proxy, ProxyKind};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::Duration;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

/// The sidecar's inbound listener port (Istio's `virtualInbound`).
pub const INBOUND_PORT: u16 = 15006;

/// Where the app behind endpoint `e` listens: its target port, or, when the Service targets
/// the sidecar's inbound port (kind convention), its service port.
pub fn app_port(e: &EndpointView) -> u16 {
    if e.port == INBOUND_PORT {
        e.service_port
    } else {
        e.port
    }
}

/// `inbound|P||`, Istio's inbound cluster name with no service or subset.
pub fn name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// An Envoy sidecar's inbound clusters, one per app port of its own endpoints; nothing for
/// proxyless clients and gateways. Indexes `snapshot` for this one proxy: a push looks the
/// ports up in its own index ([`OwnEndpoints::app_ports`]).
pub fn for_proxy(proxy: &Proxy, snapshot: &Snapshot) -> Vec<Cluster> {
    if !has_inbound(proxy) {
        return Vec::new();
    }
    OwnEndpoints::new(snapshot, None)
        .app_ports(snapshot, proxy)
        .into_iter()
        .map(cluster)
        .collect()
}

/// Whether `proxy` is one that gets inbound clusters (an Envoy sidecar).
pub fn has_inbound(proxy: &Proxy) -> bool {
    proxy.generator == Generator::Envoy && proxy.kind == ProxyKind::Sidecar
}

impl<S: BuildHasher> OwnEndpoints<S> {
    /// The app ports of `proxy`'s own endpoints, sorted, as [`for_proxy`] builds clusters for
    /// them (none for a proxy that gets no inbound clusters); `snapshot` is the one indexed.
    pub fn app_ports(&self, snapshot: &Snapshot, proxy: &Proxy) -> Vec<u16> {
        if !has_inbound(proxy) {
            return Vec::new();
        }
        let ports: BTreeSet<u16> = self
            .of(snapshot, proxy)
            .map(app_port)
            .filter(|p| *p != 0)
            .collect();
        ports.into_iter().collect()
    }
}

/// `inbound|P||`: STATIC, one endpoint `127.0.0.1:P`.
pub fn cluster(port: u16) -> Cluster {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(crate::xds::lds::sidecar::socket("127.0.0.1", port)),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: name(port),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name(port),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ServiceView, Snapshot};
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};

    fn ep(port: u16, service_port: u16) -> EndpointView {
        EndpointView {
            cluster: "c1".into(),
            address: "10.0.0.1".into(),
            port,
            service_port,
            ..Default::default()
        }
    }

    /// Istio's inbound cluster `inbound|P||` is STATIC 127.0.0.1:P, one per app port of the
    /// proxy's own endpoints (another pod's are not its business); with the kind bed's
    /// Services targeting the sidecar (15006), the app port is the service port (5000).
    /// Proxyless clients and gateways get none.
    #[test]
    fn inbound_clusters_reach_the_app_on_localhost() {
        let mut other = ep(9999, 99);
        other.address = "10.0.0.2".into();
        let s = Snapshot {
            services: vec![std::sync::Arc::new(ServiceView {
                hostname: "h.sample.svc.cluster.local".into(),
                endpoints: vec![ep(15006, 5000), ep(8080, 80), ep(8080, 80), other],
                ..Default::default()
            })],
            gateways: vec![],
        };
        let mut p = crate::xds::node::test_sidecar();
        let cs = for_proxy(&p, &s);
        let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["inbound|5000||", "inbound|8080||"]);
        let c = &cs[0];
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32
            ))
        );
        let la = c.load_assignment.as_ref().unwrap();
        assert_eq!(la.cluster_name, "inbound|5000||");
        let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
            &la.endpoints[0].lb_endpoints[0].host_identifier
        else {
            panic!("no endpoint")
        };
        let Some(address::Address::SocketAddress(sa)) = &e.address.as_ref().unwrap().address else {
            panic!("no socket address")
        };
        assert_eq!(sa.address, "127.0.0.1");
        assert_eq!(
            sa.port_specifier,
            Some(socket_address::PortSpecifier::PortValue(5000))
        );
        p.generator = Generator::Grpc;
        assert!(for_proxy(&p, &s).is_empty());
        p.generator = Generator::Envoy;
        p.kind = ProxyKind::Router;
        assert!(for_proxy(&p, &s).is_empty());
    }
}
