//! The test support's own behaviour where no suite exercises it: client certificates
//! required and passed to handlers (mutual TLS, as between Istio's sidecars), and the stub
//! ADS server's token check, responses and ending (the TLS handshakes and the stub's use by
//! the ADS client are in `tests/ads_tls.rs`).

use super::stub_ads::response;
use super::*;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshfed_certs::{SpiffeId, WorkloadCert, WorkloadOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::server::Connected;

async fn within<T>(f: impl Future<Output = Option<T>>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("in time")
        .expect("channel open")
}

fn der(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM")
}

fn workload(ca: &CertificateAuthority, account: &str) -> WorkloadCert {
    let id = SpiffeId::new("cluster.local", "sample", account).expect("id");
    ca.issue_workload(&WorkloadOptions::new(id))
        .expect("workload")
}

/// Accepts with `config` on 127.0.0.1: every handshake is reported on the first receiver,
/// the connect info of every connection that reaches the stream on the second.
async fn serve(
    config: Arc<rustls::ServerConfig>,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Handshake>,
    mpsc::UnboundedReceiver<TlsConnectInfo>,
) {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let incoming = TlsIncoming::bind(any, config).await.expect("bind");
    let addr = incoming.local_addr().expect("addr");
    let (mut incoming, handshakes) = incoming.reporting();
    let (tx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Held so that the clients' connections stay open.
        let mut held = Vec::new();
        while let Some(io) = incoming.next().await {
            if let Ok(io) = io {
                let _ = tx.send(io.connect_info());
                held.push(io);
            }
        }
    });
    (addr, handshakes, conns)
}

/// A TLS client trusting `root_pem`, presenting `cert` if given.
async fn connect(
    addr: SocketAddr,
    root_pem: &str,
    cert: Option<&WorkloadCert>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for root in der(root_pem) {
        roots.add(root).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(der(&cert.chain_pem()), key)
                .expect("client cert")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Mutual TLS as Istio's sidecars do it: with client roots, a client must present a
/// certificate chaining to them; its chain (leaf first) and address reach the handler, and a
/// client with none, or one from another root, never reaches tonic.
#[tokio::test]
async fn a_required_client_certificate_is_checked_and_its_chain_reaches_the_handler() {
    let ca = mesh_ca("cluster1").expect("ca");
    let serving = ca
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
        .expect("serving");
    let root = ca.root_pem().as_bytes();
    let config = server_config(
        serving.chain_pem().as_bytes(),
        serving.key_pem.as_bytes(),
        Some(root),
    )
    .expect("config");
    let (addr, mut handshakes, mut conns) = serve(config).await;

    let sleep = workload(&ca, "sleep");
    let client = connect(addr, ca.root_pem(), Some(&sleep))
        .await
        .expect("mTLS");
    assert_eq!(within(handshakes.recv()).await, Ok(Some(b"h2".to_vec())));
    let info = within(conns.recv()).await;
    assert_eq!(info.peer_certificates, der(&sleep.chain_pem()));
    let local = client.get_ref().0.local_addr().expect("client addr");
    assert_eq!(info.remote_addr, Some(local));

    let impostor = workload(&mesh_ca("cluster1").expect("other ca"), "sleep");
    for (what, cert) in [("no certificate", None), ("another root", Some(&impostor))] {
        // Under TLS 1.3 the client may finish before the server refuses it.
        let _client = connect(addr, ca.root_pem(), cert).await;
        let shake = within(handshakes.recv()).await;
        assert!(shake.is_err(), "{what}: {shake:?}");
    }
    assert!(conns.try_recv().is_err(), "a refused client reached tonic");
}

/// Without client roots no certificate is asked for (the federation's secure port, where
/// callers bring a token); a missing or malformed chain, key or root is an error.
#[tokio::test]
async fn without_client_roots_a_client_needs_no_certificate_and_bad_pem_is_refused() {
    let ca = mesh_ca("cluster1").expect("ca");
    let config = serving_config(&ca, &["127.0.0.1"]).expect("config");
    let (addr, mut handshakes, mut conns) = serve(config).await;
    let _client = connect(addr, ca.root_pem(), None).await.expect("TLS");
    assert_eq!(within(handshakes.recv()).await, Ok(Some(b"h2".to_vec())));
    assert!(within(conns.recv()).await.peer_certificates.is_empty());

    let serving = ca
        .issue_server(&["x".into()], Duration::from_secs(60))
        .expect("serving");
    let (chain, key) = (serving.chain_pem(), serving.key_pem.as_bytes());
    assert!(matches!(
        server_config(b"", key, None),
        Err(Error::NoCertificate(_))
    ));
    assert!(server_config(chain.as_bytes(), b"junk", None).is_err());
    assert!(matches!(
        server_config(chain.as_bytes(), key, Some(b"")),
        Err(Error::NoCertificate(_))
    ));
}

fn delta_request(token: Option<&str>) -> tonic::Request<ReceiverStream<DeltaDiscoveryRequest>> {
    // The sender is dropped: the stub ignores what the client sends.
    let (_, rx) = mpsc::channel(1);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The stub as istiod's secure port: a stream without a token is reported and refused
/// UNAUTHENTICATED; one with a token gets the responses in order and ends cleanly when the
/// test ends it.
#[tokio::test]
async fn the_stub_ads_checks_the_token_sends_its_responses_and_ends_when_told() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let responses = vec![
        response("type/a", "one", vec![1], "n1"),
        response("type/b", "two", vec![], "n2"),
    ];
    let (stub, mut streams) = StubAds::new(responses.clone());
    let server = stub
        .token_required()
        .spawn(TcpListenerStream::new(listener));
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let refused = client.delta_aggregated_resources(delta_request(None)).await;
    let status = refused.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(within(streams.recv()).await.authorization, None);

    let answer = client.delta_aggregated_resources(delta_request(Some("t1")));
    let mut inbound = answer.await.expect("stream").into_inner();
    let stream = within(streams.recv()).await;
    assert_eq!(stream.authorization.as_deref(), Some("Bearer t1"));
    for sent in &responses {
        let got = within(async { inbound.message().await.expect("open") }).await;
        assert_eq!(&got, sent);
    }
    stream.end();
    let end = tokio::time::timeout(Duration::from_secs(20), inbound.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    server.abort();
}
