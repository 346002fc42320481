//! A stub of the federation's CA for the agent's tests: Istio's `IstioCertificateService`
//! over TLS (rustls, ring), signing with a `meshfed_certs::CertificateAuthority` made by the
//! test. Like Istio's CA it takes the caller's identity from the bearer token (here a table
//! of accepted tokens), refuses a CSR that asks for anything else, and returns the leaf, the
//! intermediate and the root. It records every request, can hold an answer back, and can be
//! told to answer wrongly.

use meshfed_certs::{CertificateAuthority, SpiffeId, workload_csr};
use meshfed_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use meshfed_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

/// Names in the stub's serving certificate: the federation's CA Service names, and loopback.
pub const SERVER_NAMES: [&str; 3] = [
    "meshfed-federation.istio-system.svc",
    "istiod.istio-system.svc",
    "127.0.0.1",
];

/// How the stub answers a request it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Good,
    /// Signs the CSR's key, for another identity.
    WrongSan,
    /// Signs the identity, for a key the agent does not hold.
    WrongKey,
}

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `authorization` header's bearer token.
    pub token: Option<String>,
    pub request: IstioCertificateRequest,
}

pub struct Stub {
    ca: CertificateAuthority,
    identity: SpiffeId,
    tokens: Mutex<HashSet<String>>,
    mode: Mutex<Mode>,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Stub {
    /// A stub signing with `ca` for `identity`; requests arrive on the receiver.
    pub fn new(
        ca: CertificateAuthority,
        identity: SpiffeId,
    ) -> (Arc<Stub>, mpsc::UnboundedReceiver<Seen>) {
        let (seen, rx) = mpsc::unbounded_channel();
        let stub = Stub {
            ca,
            identity,
            tokens: Mutex::default(),
            mode: Mutex::new(Mode::Good),
            gate: Mutex::default(),
            seen,
        };
        (Arc::new(stub), rx)
    }

    pub fn accept_token(&self, token: &str) {
        self.tokens.lock().expect("lock").insert(token.to_string());
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    /// Holds the next answer until the returned sender is used (or dropped).
    pub fn hold_next(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        *self.gate.lock().expect("lock") = Some(rx);
        tx
    }

    fn answer(&self, csr: &str, ttl: Duration) -> Result<Vec<String>, Status> {
        let names = CertificateAuthority::csr_names(csr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if names != [format!("URI:{}", self.identity)] {
            return Err(Status::permission_denied(format!("{names:?}")));
        }
        let mode = *self.mode.lock().expect("lock");
        let signed = match mode {
            Mode::Good => self.ca.sign_csr(csr, &self.identity, ttl),
            Mode::WrongSan => {
                let other = SpiffeId::new("cluster.local", "sample", "admin").expect("id");
                self.ca.sign_csr(csr, &other, ttl)
            }
            Mode::WrongKey => {
                let other = workload_csr(&self.identity).expect("csr");
                self.ca.sign_csr(&other.csr_pem, &self.identity, ttl)
            }
        };
        signed.map_err(|e| Status::internal(e.to_string()))
    }
}

struct Service(Arc<Stub>);

#[tonic::async_trait]
impl IstioCertificateService for Service {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let request = request.into_inner();
        let _ = self.0.seen.send(Seen {
            token: token.clone(),
            request: request.clone(),
        });
        let gate = self.0.gate.lock().expect("lock").take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        let known = token.is_some_and(|t| self.0.tokens.lock().expect("lock").contains(&t));
        if !known {
            return Err(Status::unauthenticated("unknown token"));
        }
        let ttl = Duration::from_secs(u64::try_from(request.validity_duration).unwrap_or(0));
        let cert_chain = self.0.answer(&request.csr, ttl)?;
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}

/// The stub serving on an address until stopped.
pub struct Server {
    pub addr: SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl Server {
    /// Serves `stub` on `addr` (port 0 for any) with a serving certificate from `ca`.
    pub async fn start(stub: Arc<Stub>, ca: &CertificateAuthority, addr: SocketAddr) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind the stub CA");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls(ca));
        let (tx, rx) = mpsc::channel::<std::io::Result<TlsIo>>(16);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok(TlsIo(tls))).await;
                    }
                });
            }
        });
        tasks.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(IstioCertificateServiceServer::new(Service(stub)))
                .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
        });
        Server { addr, tasks }
    }

    /// Stops accepting: the listener is closed when this returns.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

fn tls(ca: &CertificateAuthority) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
    let cert = ca
        .issue_server(&names, Duration::from_secs(86_400))
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
