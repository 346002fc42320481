//! Issue 19 point 3 judged by dig: `meshfed dns-proxy` in cluster1, fed by `meshfed federation`
//! from two test bed API servers, answers as Istio's agent does from Istio's `BuildNameTable`:
//! a headless Service with its ready pods of the client's cluster (several A records), each
//! StatefulSet pod under its own name, an ExternalName Service and a Service with no route
//! forwarded to the upstream resolver (dnsmasq playing kube-dns) rather than given a VIP.

mod common;

use common::{Killed, apiserver, create_remote_secret, free_port, kubectl, start};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MYSQL: &str = "mysql.db.svc.cluster.local";
const ROUTED: &str = "hw.sample.svc.cluster.local";
const EMPTY: &str = "empty.sample.svc.cluster.local";
const EXT: &str = "ext.sample.svc.cluster.local";

/// dnsmasq as the cluster's DNS: the ExternalName's CNAME, NXDOMAIN for other cluster names.
fn kube_dns(port: u16) -> Killed {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={port}"),
            &format!("--cname={EXT},www.example.test"),
            "--local=/cluster.local/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is required (Debian package dnsmasq-base)");
    let dnsmasq = Killed(child);
    wait_until("dnsmasq answers", || dig(port, &[EXT]).contains("CNAME"));
    dnsmasq
}

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is required (Debian package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` lines, sorted (headless answers turn).
fn short(port: u16, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(port, &["+short", name, "A"])
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("none")
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One EndpointSlice of `service`: (address, ready, hostname) on port 3306 or 5000.
fn slice(ns: &str, service: &str, port: u16, endpoints: &[(&str, bool, Option<&str>)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(ip, ready, host)| {
            let host = host.map_or(String::new(), |h| format!(", \"hostname\": \"{h}\""));
            format!("{{\"addresses\": [\"{ip}\"], \"conditions\": {{\"ready\": {ready}}}{host}}}")
        })
        .collect();
    format!(
        r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {{"name": "{service}-1", "namespace": "{ns}",
    "labels": {{"kubernetes.io/service-name": "{service}"}}}},
  "addressType": "IPv4", "ports": [{{"name": "p", "port": {port}, "protocol": "TCP"}}],
  "endpoints": [{}]}}"#,
        eps.join(", ")
    )
}

fn service(ns: &str, name: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service",
  "metadata": {{"name": "{name}", "namespace": "{ns}"}}, "spec": {spec}}}"#
    )
}

fn apply(kc: &Path, objects: &[String]) {
    for o in objects {
        kubectl(kc, &["apply", "--validate=false", "-f", "-"], o);
    }
}

/// cluster1 (the proxy's): mysql headless with mysql-0 and mysql-1 ready and one pod not
/// ready, ext an ExternalName. cluster2: mysql headless with its own mysql-0, hw with a ready
/// endpoint (a route), empty with none.
fn clusters(dir: &Path) -> (Killed, Killed) {
    let servers = (apiserver(dir, "cluster1"), apiserver(dir, "cluster2"));
    let (kc1, kc2) = (dir.join("cluster1"), dir.join("cluster2"));
    let headless = r#"{"clusterIP": "None", "ports": [{"name": "p", "port": 3306}]}"#;
    let tcp = r#"{"ports": [{"name": "p", "port": 5000}]}"#;
    for kc in [&kc1, &kc2] {
        for ns in ["db", "sample"] {
            kubectl(kc, &["create", "namespace", ns], "");
        }
    }
    apply(
        &kc1,
        &[
            service("db", "mysql", headless),
            slice(
                "db",
                "mysql",
                3306,
                &[
                    ("10.10.0.7", true, Some("mysql-0")),
                    ("10.10.0.8", true, Some("mysql-1")),
                    ("10.10.0.9", false, Some("mysql-2")),
                ],
            ),
            service(
                "sample",
                "ext",
                r#"{"type": "ExternalName", "externalName": "www.example.test"}"#,
            ),
        ],
    );
    apply(
        &kc2,
        &[
            service("db", "mysql", headless),
            slice("db", "mysql", 3306, &[("10.20.0.7", true, Some("mysql-0"))]),
            service("sample", "hw", tcp),
            slice("sample", "hw", 5000, &[("10.20.0.5", true, None)]),
            service("sample", "empty", tcp),
        ],
    );
    let secret = create_remote_secret(&kc2, "cluster2");
    kubectl(&kc1, &["create", "namespace", "istio-system"], "");
    kubectl(&kc1, &["apply", "--validate=false", "-f", "-"], &secret);
    servers
}

fn federation(dir: &Path, xds: u16) -> Killed {
    let kc1 = dir.join("cluster1");
    let (fed, line) = start(&[
        "federation",
        "--kubeconfig",
        kc1.to_str().unwrap(),
        "--cluster-id",
        "cluster1",
        "--network",
        "network1",
        "--admin",
        "127.0.0.1:0",
        "--xds-listen",
        &format!("127.0.0.1:{xds}"),
    ]);
    assert!(line.starts_with("federation for cluster1"), "{line}");
    fed
}

fn dns_proxy(port: u16, xds: u16, upstream: u16) -> Killed {
    let (proxy, line) = start(&[
        "dns-proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--xds",
        &format!("127.0.0.1:{xds}"),
        "--upstream",
        &format!("127.0.0.1:{upstream}"),
        "--namespace",
        "db",
        "--cluster-id",
        "cluster1",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "1",
    ]);
    assert!(line.starts_with("dns-proxy listening"), "{line}");
    proxy
}

/// Istio (pkg/dns/server/name_table.go, pkg/dns/client/dns.go): a headless Service resolves
/// to its ready pods (of the client's cluster, as Kubernetes DNS), each StatefulSet pod to
/// its own address under `<hostname>.<service>.<ns>.svc.<domain>`; an ExternalName Service is
/// not in the table, so the agent forwards it and the cluster's DNS answers its CNAME; no
/// address for a Service nothing routes to (the cluster's DNS says NXDOMAIN), while one with
/// a ready endpoint elsewhere gets its 240.240/16 VIP.
#[test]
fn dig_gets_headless_pods_and_upstream_answers_for_names_without_a_route() {
    let dir = tempfile::tempdir().unwrap();
    let _apiservers = clusters(dir.path());
    let (upstream, xds, port) = (free_port(), free_port(), free_port());
    let _dnsmasq = kube_dns(upstream);
    let _fed = federation(dir.path(), xds);
    let _proxy = dns_proxy(port, xds, upstream);
    // hw's VIP needs cluster2's endpoints: once it answers, both clusters are in the table.
    wait_until("both clusters are in the table", || {
        !short(port, ROUTED).is_empty() && !short(port, MYSQL).is_empty()
    });
    let vip = short(port, ROUTED);
    assert!(vip.len() == 1 && vip[0].starts_with("240.240."), "{vip:?}");

    let mysql = dig(port, &[MYSQL, "A"]);
    assert_eq!(status(&mysql), "NOERROR", "{mysql}");
    assert!(mysql.contains("ANSWER: 2,"), "two A records: {mysql}");
    assert_eq!(short(port, MYSQL), ["10.10.0.7", "10.10.0.8"]);
    assert_eq!(
        short(port, "mysql"),
        ["10.10.0.7", "10.10.0.8"],
        "bare, in db"
    );
    assert_eq!(
        short(port, "mysql-0.mysql.db.svc.cluster.local"),
        ["10.10.0.7"]
    );
    assert_eq!(short(port, "mysql-1.mysql.db"), ["10.10.0.8"]);
    let not_ready = dig(port, &["mysql-2.mysql.db.svc.cluster.local", "A"]);
    assert_eq!(status(&not_ready), "NXDOMAIN", "forwarded: {not_ready}");

    let ext = dig(port, &[EXT, "A"]);
    assert_eq!(status(&ext), "NOERROR", "{ext}");
    assert!(ext.contains("CNAME\twww.example.test."), "forwarded: {ext}");
    let empty = dig(port, &[EMPTY, "A"]);
    assert_eq!(
        status(&empty),
        "NXDOMAIN",
        "no VIP without a route: {empty}"
    );
}
