//! The agent in CA mode against a stub of the federation's CA (Istio's
//! `IstioCertificateService` over TLS): the key made in the pod, the CSR and bearer token sent,
//! the answer checked, served over SDS and into `--output-dir`, renewed at half-life, and kept
//! while the CA is away or answers wrongly.

mod sds_client;
mod stub_ca;

use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use meshfed_agent::material::Material;
use meshfed_agent::{Agent, AgentConfig, CaConfig, FailureReason, Status};
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId,
};
use meshfed_model::admin::AdminClient;
use sds_client::{SdsStream, only_secret, request};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stub_ca::{Mode, Seen, Server, Stub};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);
const IDENTITY: &str = "spiffe://cluster.local/ns/sample/sa/sleep";

/// A ServiceAccount token for sample/sleep (unsigned: the stub knows its tokens by value).
fn token(tag: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = format!(
        r#"{{"aud":["istio-ca"],"sub":"system:serviceaccount:sample:sleep","jti":"{tag}",
        "kubernetes.io":{{"namespace":"sample","serviceaccount":{{"name":"sleep"}}}}}}"#
    );
    format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(&claims))
}

/// The test's CA (root and intermediate), the stub serving it, and the files an agent reads.
struct Bed {
    dir: tempfile::TempDir,
    root: CertificateAuthority,
    stub: Arc<Stub>,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: Option<Server>,
}

impl Bed {
    async fn new() -> Bed {
        let key = KeyAlgorithm::EcdsaP256;
        let root = CertificateAuthority::new_root(&RootOptions {
            org: "meshfed test".into(),
            days: 30,
            key,
        })
        .expect("root");
        let ca = intermediate(&root);
        let serving = intermediate(&root);
        let id: SpiffeId = IDENTITY.parse().expect("id");
        let (stub, seen) = Stub::new(ca, id);
        let server = Server::start(stub.clone(), &serving, loopback(0)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("root.pem"), root.root_pem()).expect("root file");
        let bed = Bed {
            dir,
            root,
            stub,
            seen,
            server: Some(server),
        };
        bed.set_token(&token("1"));
        bed
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("serving").addr
    }

    /// Writes the token file (as kubelet does for a projected token) and lets the stub
    /// accept it.
    fn set_token(&self, token: &str) {
        self.stub.accept_token(token);
        std::fs::write(self.path("token"), token).expect("token");
    }

    fn config(&self, ttl: Duration) -> CaConfig {
        let mut c = CaConfig::new(self.addr().to_string(), self.path("token"));
        c.root_file = self.path("root.pem");
        c.cert_ttl = ttl;
        c.output_dir = Some(self.path("out"));
        c.backoff.initial = Duration::from_millis(200);
        c.backoff.max = Duration::from_secs(1);
        c
    }

    async fn next_request(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("a request in time")
            .expect("stub alive")
    }

    /// Takes the CA down: connections are refused until [`Bed::restart`].
    async fn stop(&mut self) -> SocketAddr {
        let server = self.server.take().expect("serving");
        let addr = server.addr;
        server.stop().await;
        addr
    }

    async fn restart(&mut self, addr: SocketAddr) {
        let serving = intermediate(&self.root);
        self.server = Some(Server::start(self.stub.clone(), &serving, addr).await);
    }
}

fn intermediate(root: &CertificateAuthority) -> CertificateAuthority {
    root.issue_intermediate(&IntermediateOptions {
        cluster: "cluster1".into(),
        days: 10,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("intermediate")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running agent and what a test watches of it.
struct Running {
    socket: PathBuf,
    admin: AdminClient,
    material: watch::Receiver<Arc<Material>>,
    status: watch::Receiver<Status>,
}

fn start(bed: &Bed, ca: CaConfig) -> Running {
    let socket = bed.path("sds.sock");
    let mut config = AgentConfig::with_ca(ca, &socket);
    config.admin = Some(loopback(0));
    let agent = Agent::bind(config).expect("bind");
    assert_eq!(agent.identity(), IDENTITY, "named from the token's claims");
    assert!(
        agent.material().is_pending(),
        "bind does not wait for the CA"
    );
    let running = Running {
        socket,
        admin: AdminClient::new(agent.admin_addr().expect("admin")),
        material: agent.material_watch(),
        status: agent.status(),
    };
    tokio::spawn(agent.run(std::future::pending()));
    running
}

impl Running {
    /// Waits until the agent serves `generation`.
    async fn generation(&mut self, generation: u64) -> Arc<Material> {
        let wait = self.material.wait_for(|m| m.generation >= generation);
        let m = tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("generation {generation} in time"))
            .expect("agent alive")
            .clone();
        assert_eq!(m.generation, generation);
        m
    }

    async fn status_until(&mut self, what: impl Fn(&Status) -> bool) -> Status {
        tokio::time::timeout(WAIT, self.status.wait_for(what))
            .await
            .expect("status in time")
            .expect("agent alive")
            .clone()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let a = self.admin.get(path).await.expect("admin answers");
        (a.status, a.body)
    }

    async fn sds(&self) -> SecretDiscoveryServiceClient<Channel> {
        sds_client::connect(self.socket.clone()).await
    }

    /// A StreamSecrets stream for `default`, driven as Envoy drives it.
    async fn stream(&self) -> SdsStream {
        SdsStream::open(&mut self.sds().await, &["default"]).await
    }

    async fn fetch(&self, name: &str) -> secret::Type {
        let resp = self
            .sds()
            .await
            .fetch_secrets(request(&[name], "", ""))
            .await
            .expect("fetch")
            .into_inner();
        only_secret(&resp)
    }
}

fn inline(ds: Option<envoy_types::pb::envoy::config::core::v3::DataSource>) -> Vec<u8> {
    match ds.and_then(|d| d.specifier) {
        Some(data_source::Specifier::InlineBytes(b)) => b,
        other => panic!("not inline: {other:?}"),
    }
}

/// `default` as served: (chain, key).
fn tls_of(s: secret::Type) -> (Vec<u8>, Vec<u8>) {
    let secret::Type::TlsCertificate(tls) = s else {
        panic!("default is not a TLS certificate");
    };
    (inline(tls.certificate_chain), inline(tls.private_key))
}

/// The subjectPublicKey of a CSR, of the first certificate of a chain, and of a key.
fn csr_key(csr_pem: &str) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).expect("pem");
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .expect("csr");
    csr.certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec()
}

fn leaf_key(chain_pem: &[u8]) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem).expect("pem");
    let cert = pem.parse_x509().expect("leaf");
    cert.public_key().subject_public_key.data.to_vec()
}

fn key_of(key_pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(key_pem).expect("PEM");
    rcgen::KeyPair::from_pem(text)
        .expect("key")
        .public_key_raw()
        .to_vec()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("output file")
}

/// Istio's agent: the key is made in the pod and only a CSR for the SPIFFE id leaves it,
/// with the ServiceAccount token as `authorization: Bearer`; its SDS waits for the first
/// certificate rather than answer `default` empty; the served chain verifies to the root
/// and names the identity; OUTPUT_CERTS gets the same three files.
#[tokio::test]
async fn the_key_stays_in_the_pod_and_sds_waits_for_and_serves_the_issued_chain() {
    let mut bed = Bed::new().await;
    let release = bed.stub.hold_next();
    let mut ca = bed.config(Duration::from_secs(3600));
    ca.server_name = Some(stub_ca::SERVER_NAMES[0].into());
    let mut agent = start(&bed, ca);

    let seen = bed.next_request().await;
    assert_eq!(
        agent.get("/healthz/ready").await.0,
        503,
        "no certificate yet"
    );
    let mut stream = agent.stream().await;
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "default answered before the CA did"
    );
    release.send(()).expect("release the answer");
    let first = stream.next(WAIT).await.expect("answered once issued");
    assert_eq!(first.version_info, "1");

    // What went to the CA: a CSR for the identity and the token; no key, no metadata.
    assert_eq!(seen.token.as_deref(), Some(token("1").as_str()));
    let req = &seen.request;
    assert_eq!(req.validity_duration, 3600);
    assert!(req.metadata.is_none());
    assert_eq!(
        CertificateAuthority::csr_names(&req.csr).expect("csr"),
        [format!("URI:{IDENTITY}")]
    );
    assert!(!format!("{req:?}").contains("PRIVATE"));

    // What SDS serves: the CSR's key's leaf with the key that goes with it.
    let (chain, key) = tls_of(only_secret(&first));
    assert_eq!(leaf_key(&chain), csr_key(&req.csr));
    assert_eq!(key_of(&key), csr_key(&req.csr));
    let secret::Type::ValidationContext(root) = agent.fetch("ROOTCA").await else {
        panic!("ROOTCA is not a validation context");
    };
    assert_eq!(inline(root.trusted_ca), bed.root.root_pem().as_bytes());
    let m = agent.generation(1).await;
    assert_eq!(m.identity, IDENTITY);

    // OUTPUT_CERTS: the same bytes, and `meshfed certs verify` passes them.
    let out = bed.path("out");
    assert_eq!(read(&out, "cert-chain.pem"), chain);
    assert_eq!(read(&out, "key.pem"), key);
    assert_eq!(read(&out, "root-cert.pem"), bed.root.root_pem().as_bytes());
    let report = meshfed_certs::verify_path(&out, time::OffsetDateTime::now_utc());
    assert!(!report.failed(), "{report}");
    assert!(report.to_string().contains(IDENTITY), "{report}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("key.pem"))
        .expect("key")
        .permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);

    assert_eq!(agent.get("/healthz/ready").await.0, 200);
    let (_, page) = agent.get("/metrics").await;
    assert!(
        page.contains("# HELP meshfed_agent_cert_expiry_timestamp_seconds"),
        "{page}"
    );
    assert!(page.contains("meshfed_agent_csr_failures_total"), "{page}");
    assert_eq!(agent.status.borrow().requests, 1);
}

/// Istio renews at half the lifetime (minus jitter) with a new key, re-reading the
/// projected token, which kubelet rotates: the second request carries the new token.
#[tokio::test]
async fn renews_at_half_life_with_a_new_key_and_the_token_as_it_is_now() {
    let mut bed = Bed::new().await;
    let mut agent = start(&bed, bed.config(Duration::from_secs(4)));
    let mut stream = agent.stream().await;
    let first = bed.next_request().await;
    let m1 = agent.generation(1).await;
    let issued = Instant::now();
    assert_eq!(stream.next(WAIT).await.expect("first").version_info, "1");
    bed.set_token(&token("2"));

    let second = bed.next_request().await;
    let m2 = agent.generation(2).await;
    let after = issued.elapsed();
    // A 4 s certificate (its notAfter in whole seconds: 3 to 4 s of it left) is renewed at
    // half, up to 5 % earlier.
    assert!(
        after >= Duration::from_millis(1000) && after <= Duration::from_millis(3600),
        "renewed after {after:?}"
    );
    assert_eq!(first.token.as_deref(), Some(token("1").as_str()));
    assert_eq!(second.token.as_deref(), Some(token("2").as_str()));
    assert_ne!(
        csr_key(&first.request.csr),
        csr_key(&second.request.csr),
        "a new key"
    );
    assert_ne!(m1.files.key, m2.files.key);
    assert_eq!(leaf_key(&m2.files.cert_chain), csr_key(&second.request.csr));

    let pushed = stream.next(WAIT).await.expect("pushed");
    assert_eq!(pushed.version_info, "2");
    assert_eq!(tls_of(only_secret(&pushed)).0, m2.files.cert_chain);
    // Files are written before SDS is told: they are already the new ones.
    assert_eq!(
        read(&bed.path("out"), "cert-chain.pem"),
        m2.files.cert_chain
    );
    assert_eq!(read(&bed.path("out"), "key.pem"), m2.files.key);
    assert_eq!(agent.status.borrow().reloads, 1);
    let (_, page) = agent.get("/metrics").await;
    let rotations = metric(&page, "meshfed_agent_cert_rotations_total");
    assert!(rotations >= 1.0, "{page}");
}

/// The value of the series `name` (with its labels) on a /metrics page, 0 if absent.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Istio's agent keeps serving the certificate it holds while the CA is unreachable and
/// retries with exponential backoff, past the certificate's expiry too; requests resume
/// when the CA is back.
#[tokio::test]
async fn while_the_ca_is_down_the_old_certificate_stays_and_requests_resume() {
    let mut bed = Bed::new().await;
    let mut agent = start(&bed, bed.config(Duration::from_secs(4)));
    let m1 = agent.generation(1).await;
    let addr = bed.stop().await;

    // Failures, each a little later than the last.
    let mut at = Vec::new();
    for n in 1..=4 {
        let s = agent.status_until(|s| s.failures >= n).await;
        assert_eq!(s.last_reason, Some(FailureReason::Unavailable), "{s:?}");
        at.push(Instant::now());
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");
    assert_eq!(agent.material.borrow().generation, 1, "the old one stays");
    let (chain, _) = tls_of(agent.fetch("default").await);
    assert_eq!(chain, m1.files.cert_chain);

    // Past its expiry: still retrying, still serving it, no longer ready.
    let expired = m1.not_after + time::Duration::seconds(1);
    let still = agent
        .status_until(|_| time::OffsetDateTime::now_utc() > expired)
        .await;
    let more = agent.status_until(|s| s.failures > still.failures).await;
    assert_eq!(more.last_reason, Some(FailureReason::Unavailable));
    assert_eq!(agent.get("/healthz/ready").await.0, 503);
    assert_eq!(tls_of(agent.fetch("default").await).0, m1.files.cert_chain);

    bed.restart(addr).await;
    let m2 = agent.generation(2).await;
    assert!(m2.not_after > time::OffsetDateTime::now_utc());
    assert_eq!(agent.get("/healthz/ready").await.0, 200);
}

/// An answer with another identity's SAN or another key is refused and counted as
/// invalid_response; the certificate held stays served and nothing wrong ever reaches SDS.
#[tokio::test]
async fn a_bad_answer_is_refused_counted_and_never_served() {
    let bed = Bed::new().await;
    let before = invalid_responses(None).await;
    bed.stub.set_mode(Mode::WrongSan);
    let mut agent = start(&bed, bed.config(Duration::from_secs(4)));
    let mut stream = agent.stream().await;
    let s = agent.status_until(|s| s.failures >= 1).await;
    assert_eq!(s.last_reason, Some(FailureReason::InvalidResponse), "{s:?}");
    assert!(s.last_error.unwrap_or_default().contains("sa/admin"));
    assert!(agent.material.borrow().is_pending(), "nothing served");

    bed.stub.set_mode(Mode::Good);
    let m1 = agent.generation(1).await;
    let failed = agent.status.borrow().failures;
    bed.stub.set_mode(Mode::WrongKey);
    let s = agent.status_until(|s| s.failures > failed).await;
    assert_eq!(s.last_reason, Some(FailureReason::InvalidResponse), "{s:?}");
    assert!(s.last_error.unwrap_or_default().contains("public key"));
    assert_eq!(*agent.material.borrow(), m1, "the good one stays");
    assert_eq!(read(&bed.path("out"), "key.pem"), m1.files.key);

    let after = invalid_responses(Some(&agent)).await;
    assert!(after >= before + 2.0, "{before} -> {after}");
    bed.stub.set_mode(Mode::Good);
    let m2 = agent.generation(2).await;
    assert_eq!(m2.identity, IDENTITY);
    // Envoy saw the two good certificates and nothing between them.
    for m in [m1, m2] {
        let resp = stream.next(WAIT).await.expect("pushed");
        assert_eq!(resp.version_info, m.generation.to_string());
        assert_eq!(
            tls_of(only_secret(&resp)),
            (m.files.cert_chain.clone(), m.files.key.clone())
        );
    }
}

async fn invalid_responses(agent: Option<&Running>) -> f64 {
    let page = match agent {
        Some(a) => a.get("/metrics").await.1,
        None => meshfed_model::telemetry::prometheus().render(),
    };
    metric(
        &page,
        r#"meshfed_agent_csr_failures_total{reason="invalid_response"}"#,
    )
}

/// The CA refusing the token (UNAUTHENTICATED) and a CA whose certificate does not name
/// the server name asked for (the TLS check fails: UNAVAILABLE, as gRPC reports it) are
/// failures with their reasons; nothing is served.
#[tokio::test]
async fn a_refused_token_and_a_wrong_server_name_are_failures() {
    let mut bed = Bed::new().await;
    std::fs::write(bed.path("token"), token("unknown")).expect("token");
    let mut agent = start(&bed, bed.config(Duration::from_secs(3600)));
    let s = agent.status_until(|s| s.failures >= 1).await;
    assert_eq!(s.last_reason, Some(FailureReason::Unauthenticated), "{s:?}");
    assert_eq!(
        bed.next_request().await.token.as_deref(),
        Some(token("unknown").as_str())
    );
    assert!(agent.material.borrow().is_pending());

    let mut ca = bed.config(Duration::from_secs(3600));
    ca.server_name = Some("meshfed-federation.other.svc".into());
    let mut config = AgentConfig::with_ca(ca, bed.path("other.sock"));
    config.admin = None;
    let other = Agent::bind(config).expect("bind");
    let mut status = other.status();
    tokio::spawn(other.run(std::future::pending()));
    let s = tokio::time::timeout(WAIT, status.wait_for(|s| s.failures >= 1))
        .await
        .expect("in time")
        .expect("alive")
        .clone();
    assert_eq!(s.last_reason, Some(FailureReason::Unavailable), "{s:?}");
    assert!(
        s.last_error.unwrap_or_default().contains("certificate"),
        "names the TLS failure"
    );
    assert_eq!(s.requests, 1);
}
