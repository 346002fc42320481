//! The federation's CA (istiod's `IstioCertificateService` on the secure port) judged by
//! clients we did not write: grpcio with stubs generated from proto/ca.proto by grpcio-tools
//! and CSRs made by Python's `cryptography` (`judges/ca_client.py`), ServiceAccount tokens
//! from real `kubectl create token` against the test bed API server (whose TokenReview the
//! CA asks), and `openssl verify` of every issued chain against the shared root.

mod common;

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, write_outputs,
};
use meshfed_e2e::judges::{self, Judge};
use meshfed_federation::{Federation, FederationConfig};
use meshfed_model::admin::AdminClient;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::{RwLock, oneshot};
use tokio::task::JoinHandle;

const SLEEP: &str = "spiffe://cluster.local/ns/sample/sa/sleep";
const ANSWER: Duration = Duration::from_secs(30);
const BACKDATE_S: i64 = 5 * 60;
const HOUR_S: i64 = 3600;

/// Metrics are process-wide and every test's federation records into them: the metrics test
/// holds this exclusively, the others share it, so its counts are its own.
static METRICS: RwLock<()> = RwLock::const_new(());

/// A test bed API server with `sample/sleep`, and a federation whose CA signs with a fresh
/// intermediate of a fresh shared root.
struct Bed {
    api: meshfed_testbed::ApiServer,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    ca: CaFiles,
    secure: SocketAddr,
    admin: AdminClient,
    stop: oneshot::Sender<()>,
    run: JoinHandle<Result<(), meshfed_federation::Error>>,
}

/// The CA material a test made, as files and PEM.
struct CaFiles {
    /// Istio's `cacerts` directory of the cluster's intermediate.
    cacerts: PathBuf,
    /// The shared root's certificate, the only thing the clients trust.
    root_file: PathBuf,
    root_pem: String,
    intermediate_pem: String,
}

impl Bed {
    async fn start(max_ttl: Duration) -> Bed {
        let api = common::server().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let ca = ca_files(dir.path());

        let mut config = FederationConfig::new("cluster1", "network1");
        // Plaintext xDS stays off, the other ports take free loopback ones: tests run side by side.
        let any = "127.0.0.1:0".parse().unwrap();
        (config.admin, config.secure_listen) = (any, any);
        config.ca.cacerts = Some(ca.cacerts.clone());
        config.ca.max_workload_cert_ttl = max_ttl;
        let federation = Federation::bind(config, common::client(&api).await)
            .await
            .unwrap();
        // Bound: connections wait in the backlog until `run` serves them.
        let secure = federation.secure_addr().expect("the CA is on");
        let admin = AdminClient::new(federation.admin_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let run = tokio::spawn(federation.run(async {
            let _ = stopped.await;
        }));
        let bed = Bed {
            api,
            dir,
            kubeconfig,
            ca,
            secure,
            admin,
            stop,
            run,
        };
        bed.kubectl(&["create", "namespace", "sample"]).await;
        bed.kubectl(&["create", "serviceaccount", "sleep", "-n", "sample"])
            .await;
        bed
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.kubeconfig, args).await
    }

    async fn token(&self, sa: &str, audience: &str) -> String {
        token(&self.kubeconfig, sa, audience).await
    }

    async fn judge(&self) -> Judge {
        judges::ca_client(self.secure, &self.ca.root_file)
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.admin.metrics().await.unwrap()
    }

    /// Stops the federation, which must have been running all along.
    async fn finish(self) {
        let _ = self.stop.send(());
        let ended = self.run.await.expect("the federation panicked");
        assert!(ended.is_ok(), "the federation stopped: {ended:?}");
    }
}

/// `kubectl ARGS` with `kubeconfig`; its stdout, failing the test if kubectl fails.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .expect("kubectl is required; scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A 10-minute token of `sample/{sa}` for `audience`, as an Istio agent's projected one.
async fn token(kubeconfig: &Path, sa: &str, audience: &str) -> String {
    kubectl(
        kubeconfig,
        &[
            "create",
            "token",
            sa,
            "-n",
            "sample",
            "--audience",
            audience,
            "--duration",
            "10m",
        ],
    )
    .await
}

/// A fresh shared root and cluster1's intermediate, written under `dir`.
fn ca_files(dir: &Path) -> CaFiles {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed".into(),
        days: 3650,
        key: KeyAlgorithm::EcdsaP256,
    })
    .unwrap();
    let intermediate = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "cluster1".into(),
            days: 730,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
    let cacerts = dir.join("cacerts");
    write_outputs(&cacerts, &intermediate.cacerts_files(), false).unwrap();
    let root_file = dir.join("shared-root.pem");
    std::fs::write(&root_file, root.cert_pem()).unwrap();
    CaFiles {
        cacerts,
        root_file,
        root_pem: root.cert_pem().to_string(),
        intermediate_pem: intermediate.cert_pem().to_string(),
    }
}

/// One CreateCertificate call through the judge.
async fn ask(judge: &mut Judge, command: Value) -> Value {
    judge.ask(&command.to_string(), ANSWER).await.unwrap()
}

fn code(answer: &Value) -> &str {
    answer["code"]
        .as_str()
        .unwrap_or("(no code: the call succeeded)")
}

/// `openssl ARGS` in `dir`: its exit status and stdout+stderr.
async fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("openssl is required; scripts/test.sh installs it");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Writes an issued chain as leaf.pem, intermediate.pem and root.pem into a new directory
/// of `bed`, beside the shared root the test made itself.
fn write_chain(bed: &Bed, name: &str, chain: &[Value]) -> PathBuf {
    let dir = bed.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, pem) in ["leaf.pem", "intermediate.pem", "root.pem"]
        .iter()
        .zip(chain)
    {
        std::fs::write(dir.join(file), pem.as_str().unwrap()).unwrap();
    }
    std::fs::copy(&bed.ca.root_file, dir.join("shared-root.pem")).unwrap();
    dir
}

/// `openssl verify` of the chain written by [`write_chain`] in `dir` against the shared root,
/// with strict RFC 5280 checks, for use by TLS clients and servers alike.
async fn assert_verifies(dir: &Path) {
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = openssl(
            dir,
            &[
                "verify",
                "-x509_strict",
                "-purpose",
                purpose,
                "-CAfile",
                "shared-root.pem",
                "-untrusted",
                "intermediate.pem",
                "leaf.pem",
            ],
        )
        .await;
        assert!(ok && out.trim() == "leaf.pem: OK", "{purpose}: {out}");
    }
}

/// Istio's agent asks with its pod's `istio-ca` token for its own SPIFFE id and gets back
/// [leaf, intermediate, root]: openssl verifies the leaf up to the shared root (strict
/// RFC 5280 checks, for TLS clients and servers alike), the leaf's only SAN is the identity
/// and it certifies the key the client made.
#[tokio::test]
async fn istio_agent_csr_with_its_token_gets_a_chain_to_the_shared_root() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": token})).await;
    assert_eq!(got["ok"], true, "{got}");
    let chain = got["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root: {got}");
    assert_eq!(
        chain[1].as_str().unwrap().trim(),
        bed.ca.intermediate_pem.trim()
    );
    assert_eq!(chain[2].as_str().unwrap().trim(), bed.ca.root_pem.trim());
    assert_eq!(got["key_matches"], true, "the leaf certifies another key");
    assert_eq!(got["uris"], json!([SLEEP]));
    assert_eq!(got["dns"], json!([]));

    let dir = write_chain(&bed, "sleep", chain);
    assert_verifies(&dir).await;
    let (ok, out) = openssl(
        &dir,
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            "leaf.pem",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let sans: Vec<&str> = out.lines().skip(1).map(str::trim).collect();
    assert_eq!(sans, [format!("URI:{SLEEP}")], "{out}");
    // X509-SVID §4.1: a leaf says CA:FALSE in a basicConstraints extension.
    let (ok, out) = openssl(
        &dir,
        &[
            "x509",
            "-noout",
            "-ext",
            "basicConstraints",
            "-in",
            "leaf.pem",
        ],
    )
    .await;
    assert!(ok && out.contains("CA:FALSE"), "{out}");
    bed.finish().await;
}

/// Istio's agent makes an RSA-2048 key unless told to use ECDSA: its CSR is signed just the
/// same, and the chain verifies.
#[tokio::test]
async fn istio_agents_default_rsa_2048_csr_is_signed() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let got = ask(
        &mut judge,
        json!({"uris": [SLEEP], "token": token, "key": "rsa2048"}),
    )
    .await;
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["key_matches"], true, "the leaf certifies another key");
    assert_eq!(got["uris"], json!([SLEEP]));
    let dir = write_chain(&bed, "rsa", got["chain"].as_array().unwrap());
    assert_verifies(&dir).await;
    bed.finish().await;
}

/// Istio's agent renews over mTLS, presenting its current certificate and no token
/// (istiod's ClientCertAuthenticator): it gets a new certificate for the same identity, and a
/// CSR for another identity is still PERMISSION_DENIED.
#[tokio::test]
async fn renewal_over_mtls_with_the_current_certificate_needs_no_token() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let first = ask(&mut judge, json!({"uris": [SLEEP], "token": token})).await;
    assert_eq!(first["ok"], true, "{first}");
    let renewed = ask(&mut judge, json!({"uris": [SLEEP], "mtls": true})).await;
    assert_eq!(renewed["ok"], true, "{renewed}");
    assert_eq!(renewed["uris"], json!([SLEEP]));
    assert_eq!(renewed["key_matches"], true);
    assert_ne!(
        renewed["chain"][0], first["chain"][0],
        "not a new certificate"
    );
    assert_verifies(&write_chain(
        &bed,
        "renewed",
        renewed["chain"].as_array().unwrap(),
    ))
    .await;

    let other = "spiffe://cluster.local/ns/sample/sa/httpbin";
    let got = ask(&mut judge, json!({"uris": [other], "mtls": true})).await;
    assert_eq!(code(&got), "PERMISSION_DENIED", "{got}");
    bed.finish().await;
}

/// istiod signs only the caller's own identity: a CSR for another ServiceAccount, another
/// namespace or trust domain, with an extra DNS or URI SAN, or with no SAN is
/// PERMISSION_DENIED, and the same caller's own request still succeeds afterwards.
#[tokio::test]
async fn csr_for_anything_but_the_callers_identity_is_permission_denied() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let other = "spiffe://cluster.local/ns/sample/sa/httpbin";
    let refused = [
        json!({"uris": [other]}),
        json!({"uris": ["spiffe://cluster.local/ns/default/sa/sleep"]}),
        json!({"uris": ["spiffe://example.org/ns/sample/sa/sleep"]}),
        json!({"uris": [SLEEP], "dns": ["sleep.sample.svc.cluster.local"]}),
        json!({"uris": [SLEEP, other]}),
        json!({"uris": []}),
    ];
    for mut csr in refused {
        csr["token"] = json!(token);
        let got = ask(&mut judge, csr.clone()).await;
        assert_eq!(code(&got), "PERMISSION_DENIED", "{csr}: {got}");
    }
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": token})).await;
    assert_eq!(got["ok"], true, "{got}");
    bed.finish().await;
}

/// istiod's KubeJWTAuthenticator: no token, a token that is not a JWT, a token for another
/// audience, one signed by another cluster's API server, one of a deleted ServiceAccount and
/// an expired one are all UNAUTHENTICATED.
#[tokio::test]
async fn callers_without_a_valid_istio_ca_token_are_unauthenticated() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    // sample/sleep of another cluster, whose API server signs with a key of its own.
    let elsewhere = common::server().await;
    let elsewhere_config = bed.dir.path().join("elsewhere-kubeconfig");
    elsewhere.write_kubeconfig(&elsewhere_config).unwrap();
    kubectl(&elsewhere_config, &["create", "namespace", "sample"]).await;
    kubectl(
        &elsewhere_config,
        &["create", "serviceaccount", "sleep", "-n", "sample"],
    )
    .await;
    let foreign = token(&elsewhere_config, "sleep", "istio-ca").await;
    bed.kubectl(&["create", "serviceaccount", "gone", "-n", "sample"])
        .await;
    let gone = bed.token("gone", "istio-ca").await;
    bed.kubectl(&["delete", "serviceaccount", "gone", "-n", "sample"])
        .await;
    let mut judge = bed.judge().await;

    let callers = [
        ("no token", None),
        ("garbage", Some("not-a-jwt".to_string())),
        ("audience other", Some(bed.token("sleep", "other").await)),
        ("another cluster's", Some(foreign)),
        ("deleted account", Some(gone)),
    ];
    for (what, token) in callers {
        let got = ask(&mut judge, json!({"uris": [SLEEP], "token": token})).await;
        assert_eq!(code(&got), "UNAUTHENTICATED", "{what}: {got}");
    }
    // Expired: issued for 10 minutes, presented after 11 (on the API server's clock).
    let expired = bed.token("sleep", "istio-ca").await;
    bed.api.advance_clock(Duration::from_secs(11 * 60));
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": expired})).await;
    assert_eq!(code(&got), "UNAUTHENTICATED", "expired: {got}");
    bed.finish().await;
}

/// While the API server is down a token the CA has not reviewed is UNAVAILABLE (the agent
/// retries), never UNAUTHENTICATED; one reviewed within the last minute is still honoured from
/// the cache; failures are not cached, so once the API server is back the new token works.
#[tokio::test]
async fn api_server_outage_is_unavailable_for_new_tokens_and_spares_cached_ones() {
    let _shared = METRICS.read().await;
    let mut bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let seen = bed.token("sleep", "istio-ca").await;
    let unseen = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": seen})).await;
    assert_eq!(got["ok"], true, "{got}");

    bed.api.stop().await;
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": unseen})).await;
    assert_eq!(code(&got), "UNAVAILABLE", "{got}");
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": seen})).await;
    assert_eq!(got["ok"], true, "a cached review: {got}");

    bed.api.resume().await.unwrap();
    let got = ask(&mut judge, json!({"uris": [SLEEP], "token": unseen})).await;
    assert_eq!(got["ok"], true, "after the outage: {got}");
    bed.finish().await;
}

/// A request that is not a well-formed, self-signed PKCS#10 CSR (garbage, empty, a PEM
/// block of junk, a valid CSR whose signature does not verify: no proof of possession) is
/// INVALID_ARGUMENT, from an authenticated caller.
#[tokio::test]
async fn malformed_csr_is_invalid_argument() {
    let _shared = METRICS.read().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let junk_pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let bad = [
        json!({"csr": "garbage"}),
        json!({"csr": ""}),
        json!({"csr": junk_pem}),
        json!({"uris": [SLEEP], "tamper": true}),
    ];
    for mut csr in bad {
        csr["token"] = json!(token);
        let got = ask(&mut judge, csr.clone()).await;
        assert_eq!(code(&got), "INVALID_ARGUMENT", "{csr}: {got}");
    }
    bed.finish().await;
}

/// The requested `validity_duration` is honoured (plus Istio's 5 minutes of backdating) up to
/// the configured maximum workload certificate TTL; a longer or missing one gets the maximum.
#[tokio::test]
async fn requested_validity_is_capped_at_max_workload_cert_ttl() {
    let _shared = METRICS.read().await;
    let max_h = 12;
    let bed = Bed::start(Duration::from_secs(max_h * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;

    let max_s = max_h as i64 * HOUR_S;
    for (asked, lifetime) in [
        (HOUR_S, HOUR_S),
        (48 * HOUR_S, max_s),
        (max_s, max_s),
        (0, max_s),
    ] {
        let got = ask(
            &mut judge,
            json!({"uris": [SLEEP], "token": token, "validity": asked}),
        )
        .await;
        assert_eq!(got["ok"], true, "{got}");
        assert_eq!(
            got["lifetime_s"].as_i64(),
            Some(lifetime + BACKDATE_S),
            "asked for {asked} s"
        );
    }
    bed.finish().await;
}

/// The value of the series `name{labels}` in Prometheus text (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The CA's metrics on the admin port count each outcome of CreateCertificate (issued,
/// permission_denied, unauthenticated, invalid_argument), why callers were not authenticated,
/// and how they were (a TokenReview first, then the cached answer for the same token).
#[tokio::test]
async fn metrics_count_issued_certificates_and_each_refusal() {
    let _alone = METRICS.write().await;
    let bed = Bed::start(Duration::from_secs(24 * 3600)).await;
    let token = bed.token("sleep", "istio-ca").await;
    let mut judge = bed.judge().await;
    let before = bed.metrics().await;

    let calls = [
        json!({"uris": [SLEEP], "token": token}),
        json!({"uris": [SLEEP], "token": token}),
        json!({"uris": ["spiffe://cluster.local/ns/sample/sa/httpbin"], "token": token}),
        json!({"csr": "garbage", "token": token}),
        json!({"uris": [SLEEP]}),
        json!({"uris": [SLEEP], "token": "not-a-jwt"}),
    ];
    for call in calls {
        ask(&mut judge, call).await;
    }
    let after = bed.metrics().await;
    let delta = |s: &str| series(&after, s) - series(&before, s);
    let want = [
        ("requests_total", "outcome", "issued", 2.0),
        ("requests_total", "outcome", "permission_denied", 1.0),
        ("requests_total", "outcome", "invalid_argument", 1.0),
        ("requests_total", "outcome", "unauthenticated", 2.0),
        ("auth_failures_total", "reason", "missing", 1.0),
        ("auth_failures_total", "reason", "token_refused", 1.0),
        ("authentications_total", "method", "token", 1.0),
        ("authentications_total", "method", "cached_token", 3.0),
    ];
    for (name, label, value, n) in want {
        let s = format!("meshfed_ca_{name}{{{label}=\"{value}\"}}");
        assert_eq!(delta(&s), n, "{s}\n{after}");
    }
    let expiry = series(&after, "meshfed_ca_serving_cert_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 12.0 * 3600.0, "serving cert expiry {expiry}");
    bed.finish().await;
}
