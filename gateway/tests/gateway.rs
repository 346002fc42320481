//! The gateway judged by openssl: s_client through it sees each backend's own certificate
//! (TLS is never terminated), and what is not a mesh route is refused.

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId,
    WorkloadOptions, write_outputs,
};
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{Gateway, GatewayConfig, source};
use meshfed_model::admin::AdminClient;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOST: &str = "helloworld.sample.svc.cluster.local";

fn sni(subset: &str) -> String {
    format!("outbound_.5000_.{subset}_.{HOST}")
}

/// An openssl TLS server with a workload certificate for `sa`.
struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn backend(dir: &Path, ca: &CertificateAuthority, sa: &str) -> Backend {
    let id = SpiffeId::new("cluster.local", "sample", sa).unwrap();
    let cert = ca.issue_workload(&WorkloadOptions::new(id)).unwrap();
    let d = dir.join(sa);
    write_outputs(&d, &cert.files(), false).unwrap();
    std::fs::write(d.join("leaf.pem"), &cert.chain[0]).unwrap();
    std::fs::write(d.join("int.pem"), &cert.chain[1]).unwrap();
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", "127.0.0.1:0", "-www"])
        .arg("-cert")
        .arg(d.join("leaf.pem"))
        .arg("-cert_chain")
        .arg(d.join("int.pem"))
        .arg("-key")
        .arg(d.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is required; the README's test command installs it");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("s_server exited").unwrap();
        if let Some(a) = line.strip_prefix("ACCEPT ") {
            break a.parse().unwrap();
        }
    };
    // Keep draining s_server's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Backend { child, addr }
}

struct Bed {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    root: PathBuf,
    gateway: SocketAddr,
    status: SocketAddr,
    admin: SocketAddr,
    routes: RouteHandle,
    file: PathBuf,
    _backends: Vec<Backend>,
}

fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn routes_yaml(v1: &[SocketAddr], v2: SocketAddr, extra_subset: &str) -> String {
    let mut eps: Vec<String> = v1
        .iter()
        .map(|a| {
            format!("  - {{address: \"{a}\", labels: {{version: v1}}, locality: region1/zone1}}")
        })
        .collect();
    eps.push(format!(
        "  - {{address: \"{v2}\", labels: {{version: v2}}, locality: region2/zone2}}"
    ));
    format!(
        "services:\n- host: {HOST}\n  port: 5000\n  endpoints:\n{}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n{extra_subset}",
        eps.join("\n")
    )
}

impl Bed {
    fn start(with_dead_v1: bool, tune: impl FnOnce(&mut GatewayConfig)) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let root = CertificateAuthority::new_root(&RootOptions {
            org: "mesh".into(),
            days: 30,
            key: KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
        let ca = root
            .issue_intermediate(&IntermediateOptions {
                cluster: "cluster1".into(),
                days: 30,
                key: KeyAlgorithm::EcdsaP256,
            })
            .unwrap();
        let root_file = dir.path().join("root.pem");
        std::fs::write(&root_file, root.cert_pem()).unwrap();
        let (b1, b2) = (
            backend(dir.path(), &ca, "helloworld-v1"),
            backend(dir.path(), &ca, "helloworld-v2"),
        );
        let mut v1 = vec![b1.addr];
        if with_dead_v1 {
            v1.insert(0, dead_address());
        }
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, routes_yaml(&v1, b2.addr, "")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let routes = RouteHandle::default();
        let any = "127.0.0.1:0".parse().unwrap();
        let mut cfg = GatewayConfig::new(any, any, any);
        tune(&mut cfg);
        let (gateway, status, admin) = rt.block_on(async {
            let metrics = meshfed_gateway::metrics::global();
            source::start(
                file.clone(),
                routes.clone(),
                metrics,
                Duration::from_millis(20),
            )
            .unwrap();
            let gw = Gateway::bind(cfg, routes.clone()).await.unwrap();
            let addrs = (
                gw.local_addr().unwrap(),
                gw.status_addr().unwrap(),
                gw.admin_addr().unwrap(),
            );
            tokio::spawn(gw.run(std::future::pending()));
            addrs
        });
        Bed {
            rt,
            _dir: dir,
            root: root_file,
            gateway,
            status,
            admin,
            routes,
            file,
            _backends: vec![b1, b2],
        }
    }

    /// openssl s_client through the gateway; returns (success, peer certificate SANs and output).
    fn s_client(&self, servername: Option<&str>) -> (bool, String) {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &self.gateway.to_string(),
            "-verify_return_error",
            "-showcerts",
        ]);
        cmd.arg("-CAfile").arg(&self.root);
        match servername {
            Some(name) => cmd.args(["-servername", name]),
            None => cmd.arg("-noservername"),
        };
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (
            out.status.success() && text.contains("Verify return code: 0 (ok)"),
            text,
        )
    }

    fn peer_identity(&self, servername: &str) -> String {
        let (ok, text) = self.s_client(Some(servername));
        assert!(ok, "{servername}: {text}");
        let mut x509 = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        x509.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).into_owned()
    }

    fn admin_get(&self, path: &str) -> (u16, String) {
        get(self.admin, path)
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let a = AdminClient::new(addr)
        .get_blocking(path)
        .expect("an HTTP answer");
    (a.status, a.body)
}

#[test]
fn each_subset_reaches_its_own_backend_certificate() {
    let bed = Bed::start(false, |_| {});
    assert!(
        bed.peer_identity(&sni("v1"))
            .contains("spiffe://cluster.local/ns/sample/sa/helloworld-v1")
    );
    assert!(
        bed.peer_identity(&sni("v2"))
            .contains("spiffe://cluster.local/ns/sample/sa/helloworld-v2")
    );
    let any = bed.peer_identity(&sni(""));
    assert!(any.contains("sa/helloworld-v"), "{any}");
}

#[test]
fn unknown_non_mesh_missing_sni_and_plain_text_are_refused() {
    let bed = Bed::start(false, |_| {});
    let no_route = bed.metric("meshfed_gateway_connections_total{outcome=\"no_route\"}");
    let no_sni = bed.metric("meshfed_gateway_connections_total{outcome=\"no_sni\"}");
    let bad = bed.metric("meshfed_gateway_connections_total{outcome=\"bad_hello\"}");
    for name in [
        sni("v9"),
        "outbound_.5001_._.helloworld.sample.svc.cluster.local".into(),
        "example.com".into(),
        "kubernetes.default.svc".into(),
    ] {
        let (ok, text) = bed.s_client(Some(&name));
        assert!(
            !ok && !text.contains("BEGIN CERTIFICATE"),
            "{name} was routed:\n{text}"
        );
    }
    let (ok, _) = bed.s_client(None);
    assert!(!ok, "a ClientHello without SNI was routed");

    let mut plain = TcpStream::connect(bed.gateway).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: helloworld\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        plain.read_to_end(&mut got).unwrap(),
        0,
        "plain text got an answer"
    );

    assert!(
        bed.metric("meshfed_gateway_connections_total{outcome=\"no_route\"}") >= no_route + 4.0
    );
    assert!(bed.metric("meshfed_gateway_connections_total{outcome=\"no_sni\"}") >= no_sni + 1.0);
    assert!(bed.metric("meshfed_gateway_connections_total{outcome=\"bad_hello\"}") >= bad + 1.0);
    assert!(
        bed.metric("meshfed_gateway_clienthello_parse_failures_total{reason=\"not_tls\"}") >= 1.0
    );
}

#[test]
fn a_dead_endpoint_is_skipped_and_set_aside() {
    let bed = Bed::start(true, |_| {});
    for _ in 0..4 {
        assert!(bed.peer_identity(&sni("v1")).contains("sa/helloworld-v1"));
    }
    let (_, body) = bed.admin_get("/debug/routes");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let v1 = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sni"] == sni("v1"))
        .unwrap();
    let ejected: Vec<bool> = v1["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ejected"].as_bool().unwrap())
        .collect();
    assert_eq!(ejected, [true, false], "{v1}");
    assert!(bed.metric("meshfed_gateway_upstream_connect_failures_total") >= 1.0);
}

#[test]
fn admin_endpoints_answer() {
    let bed = Bed::start(false, |_| {});
    assert_eq!(
        bed.admin_get("/healthz/ready"),
        (200, "ready\n".to_string())
    );
    bed.peer_identity(&sni("v2"));
    let (code, metrics) = bed.admin_get("/metrics");
    assert_eq!(code, 200);
    for series in [
        "meshfed_gateway_connections_total{outcome=\"routed\"}",
        "meshfed_gateway_active_connections",
        "meshfed_gateway_bytes_total{direction=\"to_upstream\"}",
        "meshfed_gateway_upstream_connect_seconds_bucket",
        "meshfed_gateway_routes",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    let (code, body) = bed.admin_get("/debug/routes");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let snis: Vec<&str> = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sni"].as_str().unwrap())
        .collect();
    assert_eq!(snis, [sni(""), sni("v1"), sni("v2")]);
    assert_eq!(bed.admin_get("/nope").0, 404);
}

/// The public status port (what the LoadBalancer exposes) serves health and no debug data:
/// no endpoint addresses, no metrics. The admin address serves them.
#[test]
fn the_status_port_serves_health_only_and_the_admin_address_the_rest() {
    let bed = Bed::start(false, |_| {});
    assert_ne!(bed.status, bed.admin);
    assert_eq!(get(bed.status, "/healthz/ready"), (200, "ready\n".into()));
    for path in ["/debug/routes", "/metrics", "/", "/debug/routes?x=1"] {
        let (code, body) = get(bed.status, path);
        assert_eq!(code, 404, "{path} on the status port: {body}");
        assert!(!body.contains("127.0.0.1"), "{path} leaked: {body}");
    }
    assert_eq!(bed.admin_get("/debug/routes").0, 200);
    assert_eq!(bed.admin_get("/metrics").0, 200);
    assert_eq!(bed.admin_get("/healthz/ready").0, 200);
}

/// Swaps the file's contents in one step (write aside, then rename), as editors and kubelet's
/// ConfigMap updates do: a plain write truncates first, and the poller could read it empty.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[test]
fn route_file_changes_are_picked_up_and_bad_edits_ignored() {
    let bed = Bed::start(false, |_| {});
    let mut changed = bed.routes.subscribe();
    let before = bed.routes.generation();
    let text = std::fs::read_to_string(&bed.file).unwrap();
    replace(
        &bed.file,
        &format!("{text}  - {{name: all-v2, labels: {{version: v2}}}}\n"),
    );
    bed.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), changed.changed())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(bed.routes.generation(), before + 1);
    assert!(
        bed.peer_identity(&sni("all-v2"))
            .contains("sa/helloworld-v2")
    );

    let failed = bed.metric("meshfed_gateway_route_reloads_total{result=\"error\"}");
    replace(&bed.file, "services: [{host: x, port: 0, typo: 1}]\n");
    // Polled from this thread: the admin client's blocking GET may not run inside the runtime.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bed.metric("meshfed_gateway_route_reloads_total{result=\"error\"}") <= failed {
        assert!(
            std::time::Instant::now() < deadline,
            "the bad edit was never counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        bed.peer_identity(&sni("all-v2"))
            .contains("sa/helloworld-v2"),
        "bad edit dropped routes"
    );
}

#[test]
fn a_silent_client_is_cut_off_after_the_hello_deadline() {
    let bed = Bed::start(false, |c| c.hello_timeout = Duration::from_millis(200));
    let mut slow = TcpStream::connect(bed.gateway).unwrap();
    slow.write_all(&[22, 3, 1]).unwrap(); // a record header that never completes
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        slow.read(&mut buf).unwrap(),
        0,
        "slowloris connection kept open"
    );
}
