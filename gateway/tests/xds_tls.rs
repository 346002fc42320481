//! The gateway reaching its control plane as Istio's gateways reach istiod's secure port
//! (15012): TLS checked against the mesh root (`--xds-ca-root`) and the name in the
//! federation's certificate (`--xds-server-name istiod.istio-system.svc`), with the gateway's
//! projected ServiceAccount token as `authorization: Bearer` (`--xds-token-file`). The flags
//! are taken as the CLI takes them ([`XdsFlags`]); a token over plaintext is refused.

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
use meshfed_certs::{CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::xds::{XdsFlags, XdsServer};
use meshfed_proto::ads::{CLUSTER_TYPE, ENDPOINT_TYPE, Identity};
use prost::Message;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";
const ISTIOD: &str = "istiod.istio-system.svc";

fn mesh_endpoint(addr: SocketAddr) -> LbEndpoint {
    let socket = SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
        ..Default::default()
    };
    let tls_mode = Value {
        kind: Some(value::Kind::StringValue("istio".into())),
    };
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(socket)),
            }),
            ..Default::default()
        })),
        metadata: Some(Metadata {
            filter_metadata: [(
                "envoy.transport_socket_match".to_string(),
                Struct {
                    fields: [("tlsMode".to_string(), tls_mode)].into_iter().collect(),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
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

/// Reports each delta stream's `authorization` header and sends one SNI cluster with one
/// mesh endpoint; like istiod's secure port it answers nothing to a stream without a token.
struct Stub {
    endpoint: SocketAddr,
    seen: mpsc::UnboundedSender<Option<String>>,
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
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let _ = self.seen.send(authorization.clone());
        if authorization.is_none() {
            return Err(Status::unauthenticated("no token"));
        }
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|5000||helloworld.sample.svc.cluster.local".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![mesh_endpoint(self.endpoint)],
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

fn mesh_ca() -> CertificateAuthority {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed test".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    root.issue_intermediate(&IntermediateOptions {
        cluster: "cluster2".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}

/// The federation's serving certificate: `istiod.istio-system.svc`, from the intermediate.
fn server_tls(ca: &CertificateAuthority) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = ca
        .issue_server(&[ISTIOD.into()], Duration::from_secs(3600))
        .expect("serving certificate");
    let chain = CertificateDer::pem_slice_iter(cert.chain_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Serves the stub over TLS on 127.0.0.1; tokens arrive on the receiver.
async fn tls_stub(
    ca: &CertificateAuthority,
    endpoint: SocketAddr,
) -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(ca));
    let (conn_tx, conns) = mpsc::channel::<std::io::Result<TlsIo>>(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, conn_tx) = (acceptor.clone(), conn_tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = conn_tx.send(Ok(TlsIo(tls))).await;
                }
            });
        }
    });
    let (seen, tokens) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Stub {
                endpoint,
                seen,
            }))
            .serve_with_incoming(ReceiverStream::new(conns)),
    );
    (addr, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_gets_routes_over_tls_with_its_serviceaccount_token() {
    let ca = mesh_ca();
    let workload: SocketAddr = "10.1.0.5:5000".parse().expect("addr");
    let (server, mut tokens) = tls_stub(&ca, workload).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, ca.root_pem()).expect("write root");
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "gateway-token\n").expect("write token");

    // As `--xds 127.0.0.1:P --xds-ca-root R --xds-server-name istiod... --xds-token-file T`.
    let xds = XdsFlags {
        address: server.to_string(),
        ca_root: Some(root),
        server_name: Some(ISTIOD.into()),
        token_file: Some(token),
    }
    .resolve()
    .expect("flags");
    let routes = RouteHandle::default();
    let id = Identity {
        kind: "router".into(),
        network: "network2".into(),
        ..Default::default()
    };
    let metrics = meshfed_gateway::metrics::global();
    let client = tokio::spawn(meshfed_gateway::xds::run(xds, id, routes.clone(), metrics));

    let seen = tokio::time::timeout(Duration::from_secs(30), tokens.recv())
        .await
        .expect("a stream within 30 s");
    assert_eq!(seen, Some(Some("Bearer gateway-token".into())));
    let mut changes = routes.subscribe();
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while routes
            .get()
            .lookup(SNI)
            .is_none_or(|c| c.endpoints.is_empty())
        {
            changes.changed().await.expect("routes");
        }
    });
    assert!(
        arrived.await.is_ok(),
        "no table: {}",
        routes.get().debug_json()
    );
    let table = routes.get().debug_json().to_string();
    assert!(table.contains(&workload.to_string()), "{table}");
    client.abort();
}

/// What the gateway's `--xds host:15010 --xds-token-file T` comes to: refused before any
/// connection, so the token never leaves in plaintext.
#[test]
fn a_token_over_plaintext_is_refused() {
    let err = XdsFlags {
        address: "meshfed-federation.istio-system.svc:15010".into(),
        token_file: Some("/var/run/secrets/tokens/istio-token".into()),
        ..Default::default()
    }
    .resolve()
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("--xds-token-file: a token is only ever sent over TLS"),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

/// Existing callers hand the gateway a URL string: that is plaintext, as before.
#[test]
fn a_url_string_is_a_plaintext_server() {
    let server: XdsServer = "http://127.0.0.1:15010".to_string().into();
    assert!(server.tls.is_none() && server.token_file.is_none());
}

/// A server-side TLS connection as tonic's `serve_with_incoming` takes it.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
