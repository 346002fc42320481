//! The gateway against an ADS server that misbehaves: it sends, beside a mesh workload, an
//! endpoint not marked `tlsMode: istio` (the API server behind a selector-less Service). The
//! gateway must route only to the mesh workload, so no control plane can make it a relay.

use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{Gateway, GatewayConfig, clienthello};
use meshfed_model::admin::AdminClient;
use meshfed_proto::ads::{CLUSTER_TYPE, ENDPOINT_TYPE, Identity};
use prost::Message;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";

fn lb(addr: SocketAddr, mesh: bool) -> LbEndpoint {
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

fn response(type_url: &str, value: Vec<u8>, nonce: &str) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        system_version_info: "1".into(),
        resources: vec![Resource {
            name: SNI.into(),
            version: "1".into(),
            resource: Some(Any {
                type_url: type_url.into(),
                value,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Sends one SNI cluster and its load assignment (`mesh` marked, `other` not) on every
/// delta stream, whatever the client asks; ignores ACKs.
struct Stub {
    mesh: SocketAddr,
    other: SocketAddr,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Stub {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|5000||helloworld.sample.svc.cluster.local".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb(self.mesh, true), lb(self.other, false)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(4);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            let _ = tx.send(Ok(response(CLUSTER_TYPE, vec![], "c1"))).await;
            let _ = tx
                .send(Ok(response(ENDPOINT_TYPE, cla.encode_to_vec(), "e1")))
                .await;
            while let Ok(Some(_)) = inbound.message().await {}
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn ads_stub(mesh: SocketAddr, other: SocketAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Stub { mesh, other }))
            .serve_with_incoming(incoming),
    );
    url
}

/// The first five bytes (a TLS record header) of every connection `listener` accepts.
fn counting(listener: TcpListener) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut first = vec![0; 5];
                let _ = s.read_exact(&mut first).await;
                let _ = tx.send(first);
            });
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sending_an_unmarked_endpoint_does_not_make_the_gateway_route_to_it() {
    let (mesh, other) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let other_addr = other.local_addr().unwrap();
    let url = ads_stub(mesh.local_addr().unwrap(), other_addr).await;
    let (mut to_mesh, mut to_other) = (counting(mesh), counting(other));

    let routes = RouteHandle::default();
    let id = Identity {
        kind: "router".into(),
        network: "network1".into(),
        ..Default::default()
    };
    let metrics = meshfed_gateway::metrics::global();
    tokio::spawn(meshfed_gateway::xds::run(url, id, routes.clone(), metrics));
    let any = "127.0.0.1:0".parse().unwrap();
    let gw = Gateway::bind(GatewayConfig::new(any, any, any), routes.clone())
        .await
        .unwrap();
    let (addr, admin) = (gw.local_addr().unwrap(), gw.admin_addr().unwrap());
    tokio::spawn(gw.run(std::future::pending()));
    let mut changes = routes.subscribe();
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while routes
            .get()
            .lookup(SNI)
            .is_none_or(|c| c.endpoints.is_empty())
        {
            changes.changed().await.unwrap();
        }
    });
    assert!(
        arrived.await.is_ok(),
        "no table: {}",
        routes.get().debug_json()
    );

    // Round robin over two endpoints would send every other connection to the unmarked one.
    let hello =
        clienthello::build::records(&clienthello::build::client_hello(Some(SNI), &[]), 16_384);
    for _ in 0..6 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&hello).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), to_mesh.recv())
            .await
            .expect("a connection went elsewhere than the mesh workload");
        assert_eq!(got.unwrap(), hello[..5], "the mesh workload got the hello");
    }
    assert!(
        to_other.try_recv().is_err(),
        "the unmarked endpoint was dialled"
    );
    let table = routes.get().debug_json().to_string();
    assert!(!table.contains(&other_addr.to_string()), "{table}");

    let page = AdminClient::new(admin).metrics().await.unwrap();
    let dropped = page
        .lines()
        .find_map(|l| l.strip_prefix("meshfed_gateway_xds_endpoints_not_mesh_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(dropped.is_some_and(|n| n >= 1.0), "{page}");
}
