//! The xDS server judged by gRPC's own proxyless clients (grpcio; @grpc/grpc-js-xds): two
//! test bed clusters in region1 and region2 (one network, so the judges reach both directly),
//! gRPC backends v1 and v2, and the seed's DestinationRules applied unchanged with kubectl.
//! grpcio also reaches the federation's secure port (istiod's 15012) over mTLS with gRFC A65's
//! `tls` channel creds, where its certificate decides which namespace its node may claim.

use meshfed_e2e::federation;
use meshfed_e2e::judges::{self, ChannelCreds, Judge};
use meshfed_e2e::kubectl;
use meshfed_e2e::metrics::{self, nacks};
use meshfed_e2e::proxyless::{self, Client, calls};
use meshfed_e2e::workloads;
use meshfed_federation::{Controllers, xds};
use meshfed_testbed::ApiServer;
use meshfed_testbed::seed::{self, Workload};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const HOST: &str = "helloworld.sample.svc.cluster.local";

/// The NACK count is process-wide: the judges take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Bed {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _servers: (ApiServer, ApiServer),
    c1: kube::Client,
    fed: Controllers,
    xds: std::net::SocketAddr,
    kubeconfig: tempfile::NamedTempFile,
    backends: Vec<(Judge, u16)>,
    w1: Workload,
}

async fn bed() -> Bed {
    let serial = SERIAL.lock().await;
    meshfed_model::telemetry::prometheus();
    let (s1, c1) = seed::cluster("cluster1").await.unwrap();
    let (s2, c2) = seed::cluster("cluster2").await.unwrap();
    let v1 = judges::backend("127.0.0.11", "v1").await.unwrap();
    let v2 = judges::backend("127.0.0.12", "v2").await.unwrap();
    let w1 = workloads::helloworld(1, "127.0.0.11", v1.1);
    seed::helloworld(&c1, &w1).await.unwrap();
    seed::helloworld(&c2, &workloads::helloworld(2, "127.0.0.12", v2.1))
        .await
        .unwrap();
    let fed = federation::start(&c1, &s2).await.unwrap();
    let mut changes = fed.registry.subscribe();
    tokio::time::timeout(T, async {
        while federation::endpoints(&fed, HOST) < 2 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("both clusters' endpoints in the registry");
    let xds = federation::serve_xds(&fed).await.unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    s1.write_kubeconfig(kubeconfig.path()).unwrap();
    Bed {
        _serial: serial,
        _servers: (s1, s2),
        c1,
        fed,
        xds,
        kubeconfig,
        backends: vec![v1, v2],
        w1,
    }
}

fn client_bootstrap(b: &Bed) -> tempfile::NamedTempFile {
    bootstrap_file(&b.xds.to_string(), &ChannelCreds::Insecure, "sample")
}

/// The bootstrap of a sleep pod whose node claims namespace `ns` (Istio's node id
/// `sidecar~IP~POD.NS~NS.svc.cluster.local` and NAMESPACE metadata).
fn bootstrap_file(xds: &str, creds: &ChannelCreds, ns: &str) -> tempfile::NamedTempFile {
    let boot = proxyless::sleep_bootstrap(xds, creds, "127.0.0.1", ns);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), boot.to_string()).unwrap();
    f
}

/// The text of the seed's `samples/NAME`, applied unchanged with kubectl.
fn sample(name: &str) -> String {
    let path = judges::root().join("samples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The judge scenario, for either client.
async fn scenario(mut b: Bed, mut client: Judge) {
    let ready = client.json(T).await.unwrap();
    assert!(ready["ready"] == "v1" || ready["ready"] == "v2", "{ready}");

    // No DestinationRule: both localities serve.
    let r = client.ask("count 200", T).await.unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        calls(&r, "v1") >= 40 && calls(&r, "v2") >= 40,
        "both localities serve: {r}"
    );

    // The seed's distribute rule: 80/20 within 10 points (retried while the push lands).
    kubectl::apply(b.kubeconfig.path(), &sample("locality-lb-weight.yaml")).unwrap();
    let mut last = Value::Null;
    let mut settled = false;
    for _ in 0..20 {
        last = client.ask("count 400", T).await.unwrap();
        let share = calls(&last, "v1") as f64 / 400.0;
        if (0.70..=0.90).contains(&share) && last["errors"] == 0 {
            settled = true;
            break;
        }
    }
    assert!(settled, "80/20 split not observed: {last}");
    eprintln!("distribute 80/20: {last}");

    // The seed's failover rule: everything stays in region1.
    kubectl::apply(b.kubeconfig.path(), &sample("locality-lb-failover.yaml")).unwrap();
    let r = client.ask("until v1 100 30", T).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r = client.ask("count 100", T).await.unwrap();
    assert_eq!(
        (calls(&r, "v1"), r["errors"].as_u64()),
        (100, Some(0)),
        "{r}"
    );

    // Readiness-driven failover: v1 turns not-ready; traffic moves with no failed call.
    seed::set_ready(&b.c1, &b.w1, false).await.unwrap();
    let r = client.ask("until v2 20 30", T).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        r["counts"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("error")),
        "{r}"
    );
    seed::set_ready(&b.c1, &b.w1, true).await.unwrap();
    let r = client.ask("until v1 20 30", T).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");

    // A resource the client rejects (gRPC has no RANDOM balancer): NACKed, counted, and the
    // client keeps serving from its last good version.
    let before = nacks();
    let bad = sample("locality-lb-failover.yaml").replace("simple: ROUND_ROBIN", "simple: RANDOM");
    kubectl::apply(b.kubeconfig.path(), &bad).unwrap();
    let mut wait = b.fed.registry.subscribe();
    tokio::time::timeout(T, async {
        while nacks() == before {
            let _ = tokio::time::timeout(Duration::from_millis(50), wait.changed()).await;
        }
    })
    .await
    .expect("the client NACKs the RANDOM cluster");
    let r = client.ask("count 50", T).await.unwrap();
    assert_eq!(
        (calls(&r, "v1"), r["errors"].as_u64()),
        (50, Some(0)),
        "{r}"
    );

    // Back to the valid rule, then v1 dies: everything fails over to region2.
    kubectl::apply(b.kubeconfig.path(), &sample("locality-lb-failover.yaml")).unwrap();
    b.backends[0].0.kill().await;
    let r = client.ask("until v2 50 30", T).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    eprintln!(
        "failover to region2 after v1 died: {:.2}s, {}",
        r["seconds"].as_f64().unwrap_or(0.0),
        r["counts"]
    );
    let r = client.ask("count 50", T).await.unwrap();
    assert_eq!(calls(&r, "v2"), 50, "{r}");
    client.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_proxyless_client_follows_locality_rules() {
    let b = bed().await;
    let boot = client_bootstrap(&b);
    let client = grpcio_client(boot.path(), false);
    scenario(b, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_client_follows_locality_rules() {
    let b = bed().await;
    let boot = client_bootstrap(&b);
    let client = proxyless::spawn(Client::GrpcJs, &format!("{HOST}:5000"), boot.path()).unwrap();
    scenario(b, client).await;
}

/// The federation's secure port (istiod's 15012) over the bed's registry, and the sleep
/// workload's files (cert-chain.pem, key.pem, root-cert.pem: what the agent's --output-dir
/// hands proxyless gRPC) from the port's own intermediate.
struct Secure {
    addr: std::net::SocketAddr,
    files: tempfile::TempDir,
}

impl Secure {
    /// A65 `tls` creds checking the port against the root; with the workload's chain and
    /// key when `client_certificate`.
    fn creds(&self, client_certificate: bool) -> (PathBuf, Option<(PathBuf, PathBuf)>) {
        let f = |name: &str| self.files.path().join(name);
        let pair = client_certificate.then(|| (f("cert-chain.pem"), f("key.pem")));
        (f("root-cert.pem"), pair)
    }

    fn bootstrap(&self, client_certificate: bool, ns: &str) -> tempfile::NamedTempFile {
        let (ca, pair) = self.creds(client_certificate);
        let creds = ChannelCreds::Tls {
            ca: &ca,
            cert_and_key: pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        };
        bootstrap_file(&self.addr.to_string(), &creds, ns)
    }
}

/// A CA from a fresh root whose serving certificate also names 127.0.0.1
/// (`CaConfig.extra_hosts`, istiod's ISTIOD_CUSTOM_HOST) so gRPC can verify the port by the
/// bootstrap's server_uri; tokens would be reviewed by cluster1's API server.
async fn secure_port(b: &Bed) -> Secure {
    use meshfed_certs::{
        CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, WorkloadOptions,
    };
    use meshfed_federation::ca::{self, authn::Authenticator, review};
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed-e2e".into(),
        days: 30,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap();
    let authority = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "cluster1".into(),
            days: 10,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let sleep = "spiffe://cluster.local/ns/sample/sa/sleep".parse().unwrap();
    let workload = authority
        .issue_workload(&WorkloadOptions::new(sleep))
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    meshfed_certs::write_outputs(files.path(), &workload.files(), true).unwrap();
    let reviewer = review::CachedReviewer::new(Box::new(review::KubeReviewer(b.c1.clone())));
    let authn = Authenticator::new(reviewer, ca::DEFAULT_TOKEN_AUDIENCE, "cluster.local");
    let config = ca::CaConfig {
        extra_hosts: vec!["127.0.0.1".into()],
        ..Default::default()
    };
    let origin = ca::cacerts::Origin::Dir("e2e".into());
    let ca = ca::Ca::new(authority, origin, authn, &config, "istio-system").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_pusher, pushes) = xds::start_pusher(b.fed.registry.clone(), xds::Debounce::default());
    let limits = xds::Limits::default();
    let port = meshfed_federation::secure::serve(listener, ca, pushes, limits, vec![]).unwrap();
    tokio::spawn(port);
    Secure { addr, files }
}

/// grpcio resolving the helloworld target through `boot`; `fail_fast`: its first call does
/// not wait for xDS, so a refused channel fails at once.
fn grpcio_client(boot: &Path, fail_fast: bool) -> Judge {
    let mut cmd = tokio::process::Command::new(judges::python().unwrap());
    cmd.arg(judges::script("grpc_client.py"))
        .arg(format!("xds:///{HOST}:5000"))
        .env("GRPC_XDS_BOOTSTRAP", boot);
    if fail_fast {
        cmd.arg("--fail-fast");
    }
    Judge::spawn(cmd, "grpcio client").unwrap()
}

/// gRFC A65 mTLS to the xDS server, as Istio's proxyless gRPC talks to istiod's 15012 with
/// the agent's certificate files: grpcio's bootstrap has `tls` channel creds with the root,
/// the workload chain and its key; the secure port authenticates it by that certificate
/// alone (no token), its node claims its own namespace, and it gets xDS: calls reach both
/// localities, and a DestinationRule applied later is pushed over the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_over_mtls_gets_xds_from_the_secure_port_for_its_own_namespace() {
    let b = bed().await;
    let secure = secure_port(&b).await;
    let by_certificate = r#"meshfed_ca_authentications_total{method="certificate"}"#;
    let before = metrics::sum(by_certificate);
    let boot = secure.bootstrap(true, "sample");
    let mut client = grpcio_client(boot.path(), false);
    let ready = client.json(T).await.unwrap();
    assert!(ready["ready"] == "v1" || ready["ready"] == "v2", "{ready}");
    assert!(
        metrics::sum(by_certificate) > before,
        "not authenticated by its certificate"
    );

    let r = client.ask("count 100", T).await.unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        calls(&r, "v1") >= 20 && calls(&r, "v2") >= 20,
        "both localities serve: {r}"
    );
    kubectl::apply(b.kubeconfig.path(), &sample("locality-lb-failover.yaml")).unwrap();
    let r = client.ask("until v1 50 30", T).await.unwrap();
    assert_eq!(r["ok"], true, "the failover rule was not pushed: {r}");
    client.kill().await;
}

/// Istio's xDS authorization on 15012: a proxy's namespace must be its identity's. The
/// sample/sleep certificate with a node claiming namespace `other` is refused
/// (PERMISSION_DENIED, counted as a rejected stream), so grpcio's channel never works:
/// its call fails with the xDS server's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_over_mtls_claiming_another_namespace_gets_no_channel() {
    let b = bed().await;
    let secure = secure_port(&b).await;
    let before = metrics::sum("meshfed_xds_rejected_streams_total");
    let boot = secure.bootstrap(true, "other");
    let mut client = grpcio_client(boot.path(), true);
    let r = client.json(T).await.unwrap();
    assert_eq!(r["error"], "UNAVAILABLE", "{r}");
    let details = r["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("PERMISSION_DENIED")
            && details.contains("may not act as a proxy of namespace \"other\""),
        "{r}"
    );
    assert!(metrics::sum("meshfed_xds_rejected_streams_total") > before);
}

/// Istio's 15012 authenticates every xDS caller: TLS that only checks the server (A65 `tls`
/// creds with just `ca_certificate_file`) and no token is UNAUTHENTICATED, so grpcio's
/// channel never works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_over_tls_without_a_client_certificate_is_unauthenticated() {
    let b = bed().await;
    let secure = secure_port(&b).await;
    let missing = r#"meshfed_ca_auth_failures_total{reason="missing"}"#;
    let before = metrics::sum(missing);
    let boot = secure.bootstrap(false, "sample");
    let mut client = grpcio_client(boot.path(), true);
    let r = client.json(T).await.unwrap();
    assert_eq!(r["error"], "UNAVAILABLE", "{r}");
    let details = r["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("UNAUTHENTICATED")
            && details.contains("no client certificate and no bearer token"),
        "{r}"
    );
    assert!(metrics::sum(missing) > before);
}
