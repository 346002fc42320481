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
use meshfed_proto::testing::{TlsIncoming, bearer_token, serving_config};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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
        let token = bearer_token(request.metadata());
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
        let config = serving_config(ca, &SERVER_NAMES).expect("server config");
        let incoming = TlsIncoming::bind(addr, config)
            .await
            .expect("bind the stub CA");
        let addr = incoming.local_addr().expect("addr");
        let mut tasks = tokio::task::JoinSet::new();
        // The listener lives in `incoming`, so in this task: stopping it closes the listener.
        tasks.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(IstioCertificateServiceServer::new(Service(stub)))
                .serve_with_incoming(incoming)
                .await;
        });
        Server { addr, tasks }
    }

    /// Stops accepting: the listener is closed when this returns.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}
