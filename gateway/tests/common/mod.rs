//! What the gateway's xDS tests send and wait for: helloworld's SNI cluster and its load
//! assignment as the federation sends them to a router (Istio's `tlsMode: istio` marks a mesh
//! endpoint in `envoy.transport_socket_match`), served by the shared stub ADS server.

use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::xds::XdsServer;
use meshfed_proto::ads::{CLUSTER_TYPE, ENDPOINT_TYPE, Identity};
use meshfed_proto::testing::stub_ads::response;
use prost::Message;
use std::net::SocketAddr;
use std::time::Duration;

pub const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";

/// An endpoint at `addr`, marked `tlsMode: istio` when `mesh`.
pub fn lb(addr: SocketAddr, mesh: bool) -> LbEndpoint {
    let socket = SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
        ..Default::default()
    };
    let tls_mode = Value {
        kind: Some(value::Kind::StringValue("istio".into())),
    };
    let metadata = mesh.then(|| Metadata {
        filter_metadata: [(
            "envoy.transport_socket_match".to_string(),
            Struct {
                fields: [("tlsMode".to_string(), tls_mode)].into_iter().collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(socket)),
            }),
            ..Default::default()
        })),
        metadata,
        ..Default::default()
    }
}

/// The SNI cluster, then its load assignment with `endpoints`, as the stub sends them on
/// every delta stream.
pub fn sni_cluster(endpoints: Vec<LbEndpoint>) -> Vec<DeltaDiscoveryResponse> {
    let cla = ClusterLoadAssignment {
        cluster_name: "outbound|5000||helloworld.sample.svc.cluster.local".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![
        response(CLUSTER_TYPE, SNI, vec![], "c1"),
        response(ENDPOINT_TYPE, SNI, cla.encode_to_vec(), "e1"),
    ]
}

/// Waits up to 30 s for the SNI to be routed to at least one endpoint.
pub async fn sni_routed(routes: &RouteHandle) -> Result<(), tokio::time::error::Elapsed> {
    let mut changes = routes.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        while routes
            .get()
            .lookup(SNI)
            .is_none_or(|c| c.endpoints.is_empty())
        {
            changes.changed().await.expect("routes");
        }
    })
    .await
}

/// Runs the gateway's xDS client against `xds` as a router of `network` (Istio's gateways
/// announce themselves so), updating `routes`.
pub fn run_router(
    xds: impl Into<XdsServer>,
    network: &str,
    routes: &RouteHandle,
) -> tokio::task::JoinHandle<()> {
    let id = Identity {
        kind: "router".into(),
        network: network.into(),
        ..Default::default()
    };
    let xds: XdsServer = xds.into();
    let metrics = meshfed_gateway::metrics::global();
    tokio::spawn(meshfed_gateway::xds::run(xds, id, routes.clone(), metrics))
}
