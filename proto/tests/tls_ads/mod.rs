//! A TLS ADS server for the client's tests, as the federation's secure port is: tonic over
//! our own rustls acceptor (ring, ALPN `h2`) with a serving certificate from a
//! `meshfed_certs` intermediate. It reports every handshake and every delta stream (with the
//! `authorization` header it carried), sends each stream one response, and ends a stream
//! when the test calls [`Stream::end`] (or drops it).

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use meshfed_certs::{CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

/// The type URL of the one resource the server sends.
pub const TYPE_URL: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// A root and the intermediate that issues the serving certificate, as a cluster's
/// `cacerts` has them.
pub fn mesh_ca() -> CertificateAuthority {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed test".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    root.issue_intermediate(&IntermediateOptions {
        cluster: "cluster1".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}

/// One handshake: the ALPN protocol agreed, or why it failed.
pub type Handshake = Result<Option<Vec<u8>>, String>;

/// One delta stream.
pub struct Stream {
    /// The `authorization` header as sent.
    pub authorization: Option<String>,
    ender: oneshot::Sender<()>,
}

impl Stream {
    /// Ends the stream cleanly (the client then reconnects), as dropping it does.
    pub fn end(self) {
        let _ = self.ender.send(());
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub handshakes: mpsc::UnboundedReceiver<Handshake>,
    pub streams: mpsc::UnboundedReceiver<Stream>,
}

impl Server {
    /// Serves on 127.0.0.1 with a certificate from `ca` for `names`.
    pub async fn start(ca: &CertificateAuthority, names: &[&str]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shake_tx, handshakes) = mpsc::unbounded_channel();
        let (stream_tx, streams) = mpsc::unbounded_channel();
        let incoming = accept(listener, tls(ca, names), shake_tx);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(Ads(stream_tx)))
                .serve_with_incoming(ReceiverStream::new(incoming)),
        );
        Server {
            addr,
            handshakes,
            streams,
        }
    }
}

/// Accepts and handshakes each connection on a task of its own, reporting each handshake.
fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    report: mpsc::UnboundedSender<Handshake>,
) -> mpsc::Receiver<std::io::Result<TlsIo>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx, report) = (acceptor.clone(), tx.clone(), report.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ =
                            report.send(Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)));
                        let _ = tx.send(Ok(TlsIo(tls))).await;
                    }
                    Err(e) => {
                        let _ = report.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    rx
}

fn tls(ca: &CertificateAuthority, names: &[&str]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = ca
        .issue_server(&names, Duration::from_secs(3600))
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

struct Ads(mpsc::UnboundedSender<Stream>);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
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
        let (ender, ended) = oneshot::channel();
        let _ = self.0.send(Stream {
            authorization,
            ender,
        });
        let (tx, rx) = mpsc::channel(4);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            let _ = tx.send(Ok(response())).await;
            tokio::select! {
                _ = ended => {}
                _ = async { while let Ok(Some(_)) = inbound.message().await {} } => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn response() -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: TYPE_URL.into(),
        nonce: "n1".into(),
        system_version_info: "1".into(),
        resources: vec![Resource {
            name: "helloworld.sample.svc.cluster.local".into(),
            version: "1".into(),
            resource: Some(Any {
                type_url: TYPE_URL.into(),
                value: vec![],
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A server-side TLS connection as tonic's `serve_with_incoming` takes it.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsIo {
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
