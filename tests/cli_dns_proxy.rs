//! `meshfed dns-proxy` fed by `meshfed federation`, judged by dig: a service that exists only
//! in the other cluster resolves to its VIP (the same after both processes restart), a local
//! one to its ClusterIP, short names and search expansions work, other names are forwarded to
//! a real resolver (dnsmasq) over UDP and TCP with truncation handled, and garbage is survived.

mod common;

use common::{
    Killed, MESHFED, admin_get, apiserver, create_remote_secret, free_port, kubectl, start,
};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REMOTE: &str = "helloworld.sample.svc.cluster.local";
const LOCAL: &str = "local.sample.svc.cluster.local";
const HELLOWORLD_SLICE: &str = r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "helloworld-1", "namespace": "sample",
    "labels": {"kubernetes.io/service-name": "helloworld"}},
  "addressType": "IPv4", "ports": [{"name": "5000-5000", "port": 5000, "protocol": "TCP"}],
  "endpoints": [{"addresses": ["10.20.0.5"], "conditions": {"ready": true}}]}"#;

/// A TXT answer of about 1 KB: too big for 512-byte UDP, so it needs TCP.
fn big_txt() -> String {
    (0..4)
        .map(|i| format!("\"{}\"", char::from(b'a' + i).to_string().repeat(240)))
        .collect::<Vec<_>>()
        .join(",")
}

/// dnsmasq as the upstream resolver: `www.example.test` and a big TXT record.
fn dnsmasq(port: u16) -> Killed {
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
            "--address=/www.example.test/192.0.2.1",
            &format!("--txt-record=big.example.test,{}", big_txt()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq is required (Debian package dnsmasq-base)");
    let dnsmasq = Killed(child);
    wait_until("dnsmasq answers", || {
        dig(port, &["www.example.test"]).contains("192.0.2.1")
    });
    dnsmasq
}

/// dig against 127.0.0.1:`port`; the whole output.
fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is required (Debian package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(port: u16, name: &str, qtype: &str) -> Vec<String> {
    dig(port, &["+short", name, qtype])
        .lines()
        .map(str::to_string)
        .collect()
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

/// Two test bed clusters: helloworld only in cluster2, `local` in cluster1, and cluster1's
/// federation reading cluster2 through a remote secret.
fn clusters(dir: &Path) -> (Killed, Killed) {
    let servers = (apiserver(dir, "cluster1"), apiserver(dir, "cluster2"));
    let (kc1, kc2) = (dir.join("cluster1"), dir.join("cluster2"));
    for (kc, svc) in [(&kc2, "helloworld"), (&kc1, "local")] {
        kubectl(kc, &["create", "namespace", "sample"], "");
        kubectl(
            kc,
            &[
                "create",
                "service",
                "clusterip",
                svc,
                "-n",
                "sample",
                "--tcp=5000:5000",
            ],
            "",
        );
    }
    // A ready endpoint: a remote-only Service with nothing to route to gets no VIP.
    kubectl(
        &kc2,
        &["apply", "--validate=false", "-f", "-"],
        HELLOWORLD_SLICE,
    );
    let secret = create_remote_secret(&kc2, "cluster2");
    kubectl(&kc1, &["create", "namespace", "istio-system"], "");
    kubectl(&kc1, &["apply", "--validate=false", "-f", "-"], &secret);
    servers
}

fn federation(dir: &Path, xds_port: u16) -> Killed {
    let kc1 = dir.join("cluster1");
    let xds = format!("127.0.0.1:{xds_port}");
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
        &xds,
    ]);
    assert!(line.starts_with("federation for cluster1"), "{line}");
    fed
}

/// The proxy on a fixed port (restarts keep it), ready once it holds a NameTable.
fn dns_proxy(port: u16, admin: u16, xds_port: u16, upstream: u16) -> Killed {
    let (proxy, line) = start(&[
        "dns-proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--xds",
        &format!("127.0.0.1:{xds_port}"),
        "--upstream",
        &format!("127.0.0.1:{upstream}"),
        "--namespace",
        "sample",
        "--cluster-id",
        "cluster1",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--threads",
        "1",
    ]);
    assert!(
        line.starts_with(&format!("dns-proxy listening on 127.0.0.1:{port} udp+tcp")),
        "{line}"
    );
    proxy
}

fn metric(admin: u16, series: &str) -> f64 {
    let (_, body) = admin_get(&format!("127.0.0.1:{admin}"), "/metrics");
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn dig_resolves_remote_local_short_and_forwarded_names() {
    let dir = tempfile::tempdir().unwrap();
    let _apiservers = clusters(dir.path());
    let (upstream, xds, port, admin) = (free_port(), free_port(), free_port(), free_port());
    let _dnsmasq = dnsmasq(upstream);
    let mut fed = federation(dir.path(), xds);
    let mut proxy = dns_proxy(port, admin, xds, upstream);
    // Both services show up once cluster2 is synced.
    wait_until("both services resolve", || {
        !short(port, REMOTE, "A").is_empty() && !short(port, LOCAL, "A").is_empty()
    });

    // The remote-only service: the VIP every cluster derives from its name.
    let (v4, v6) = meshfed_federation::xds::nds::vips([REMOTE, LOCAL])[REMOTE];
    assert_eq!(short(port, REMOTE, "A"), [v4.to_string()]);
    assert_eq!(short(port, REMOTE, "AAAA"), [v6.to_string()]);
    assert!(v4.to_string().starts_with("240.240."), "{v4}");
    // Asked again in mixed case (a 0x20 client): the kept answer, with the question echoed
    // as asked and the new ID (dig rejects an answer whose ID or question do not match).
    let mixed: String = REMOTE
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i.is_multiple_of(2) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    for _ in 0..3 {
        let out = dig(port, &[&mixed, "A"]);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(
            out.contains(&format!(";{mixed}.")),
            "question as asked: {out}"
        );
        assert!(out.contains(&v4.to_string()), "{out}");
    }

    // The local one: its ClusterIP in cluster1, and an empty NOERROR for AAAA.
    let local = short(port, LOCAL, "A");
    let cluster_ip = kubectl(
        &dir.path().join("cluster1"),
        &[
            "get",
            "service",
            "local",
            "-n",
            "sample",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        "",
    );
    assert_eq!(local, [cluster_ip]);
    let aaaa = dig(port, &[LOCAL, "AAAA"]);
    assert_eq!(status(&aaaa), "NOERROR", "{aaaa}");
    assert!(aaaa.contains("ANSWER: 0,"), "{aaaa}");

    // Short names as Istio's agent answers them, and search expansions as CNAMEs.
    for name in [
        "helloworld.sample",
        "helloworld.sample.svc",
        "helloworld.sample.svc.clusterset.local",
    ] {
        assert_eq!(short(port, name, "A"), [v4.to_string()], "{name}");
    }
    assert_eq!(
        short(port, "local", "A"),
        local,
        "bare names in --namespace"
    );
    assert_eq!(
        short(port, "helloworld.sample.sample.svc.cluster.local", "A"),
        [format!("{REMOTE}."), v4.to_string()]
    );

    // Everything else goes upstream, over UDP and TCP.
    assert_eq!(short(port, "www.example.test", "A"), ["192.0.2.1"]);
    assert_eq!(
        dig(port, &["+tcp", "+short", "www.example.test"]).trim(),
        "192.0.2.1"
    );
    assert_eq!(
        dig(port, &["+tcp", "+short", REMOTE]).trim(),
        v4.to_string()
    );
    let nx = dig(port, &["nothing.example.test"]);
    assert_ne!(status(&nx), "none", "{nx}");

    // An answer too big for UDP: relayed truncated, and dig's retry over TCP is relayed too.
    let tcp_before = metric(
        admin,
        "meshfed_dns_upstream_requests_total{protocol=\"tcp\"}",
    );
    let big = dig(port, &["+noedns", "big.example.test", "TXT"]);
    assert!(big.contains("Truncated, retrying in TCP mode"), "{big}");
    assert!(big.contains(&"d".repeat(240)), "{big}");
    assert!(
        metric(
            admin,
            "meshfed_dns_upstream_requests_total{protocol=\"tcp\"}"
        ) > tcp_before
    );

    // Garbage is dropped or answered FORMERR, counted, and the proxy answers on.
    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{port}");
    for packet in [
        &b""[..],
        b"\x01",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07exa",
        &[0xff; 700],
    ] {
        garbage.send_to(packet, &target).unwrap();
    }
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = garbage.recv_from(&mut buf).unwrap();
    assert!(
        n >= 12 && buf[0..2] == [0x12, 0x34] && buf[3] & 0x0f == 1,
        "FORMERR for the cut-off query"
    );
    assert_eq!(short(port, REMOTE, "A"), [v4.to_string()]);
    let dropped = metric(
        admin,
        "meshfed_dns_requests_total{protocol=\"udp\",outcome=\"dropped\"}",
    );
    let formerr = metric(
        admin,
        "meshfed_dns_requests_total{protocol=\"udp\",outcome=\"formerr\"}",
    );
    assert!(
        dropped >= 2.0 && formerr >= 1.0,
        "dropped {dropped}, formerr {formerr}"
    );
    assert!(
        metric(
            admin,
            "meshfed_dns_requests_total{protocol=\"udp\",outcome=\"local\"}"
        ) >= 5.0
    );
    assert!(
        metric(
            admin,
            "meshfed_dns_requests_total{protocol=\"udp\",outcome=\"forwarded\"}"
        ) >= 2.0
    );

    // Restart both components: the same VIP.
    drop(proxy);
    drop(fed);
    fed = federation(dir.path(), xds);
    proxy = dns_proxy(port, admin, xds, upstream);
    wait_until("the restarted proxy answers from a table", || {
        admin_get(&format!("127.0.0.1:{admin}"), "/healthz/ready").0 == 200
            && !short(port, REMOTE, "A").is_empty()
    });
    assert_eq!(short(port, REMOTE, "A"), [v4.to_string()]);
    assert_eq!(short(port, LOCAL, "A"), local);
    drop((proxy, fed));
}

#[test]
fn a_silent_upstream_gives_servfail_and_a_bad_flag_a_clear_error() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = silent.local_addr().unwrap().to_string();
    let (port, unused, admin, status_port) = (free_port(), free_port(), free_port(), free_port());
    let (_proxy, line) = start(&[
        "dns-proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--xds",
        &format!("127.0.0.1:{unused}"),
        "--upstream",
        &upstream,
        "--upstream-timeout",
        "200ms",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--status",
        &format!("127.0.0.1:{status_port}"),
    ]);
    assert!(line.starts_with("dns-proxy listening"), "{line}");
    // The status port: readiness (no NameTable without a federation), nothing else.
    let public = format!("127.0.0.1:{status_port}");
    assert_eq!(admin_get(&public, "/healthz/ready").0, 503);
    assert_eq!(admin_get(&public, "/metrics").0, 404);
    assert_eq!(admin_get(&public, "/debug/names").0, 404);
    assert_eq!(admin_get(&format!("127.0.0.1:{admin}"), "/metrics").0, 200);
    let out = dig(port, &["www.example.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    let out = dig(port, &["+tcp", "www.example.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");

    let out = Command::new(MESHFED)
        .args([
            "dns-proxy",
            "--xds",
            "127.0.0.1:1",
            "--upstream",
            "not-an-ip",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upstream \"not-an-ip\""), "{err}");
    let out = Command::new(MESHFED)
        .args([
            "dns-proxy",
            "--xds",
            "127.0.0.1:1",
            "--allow-from",
            "10.0.0.0/33",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The admin port is on unless moved, on loopback; the status port only when asked for.
    let help = common::meshfed_ok(&["dns-proxy", "--help"]);
    let flag = |name: &str| help.lines().find(|l| l.contains(name)).unwrap_or_default();
    assert!(
        flag("--admin <ADDR>").contains("[default: 127.0.0.1:15054]"),
        "{help}"
    );
    assert!(!flag("--status <ADDR>").contains("[default"), "{help}");
    drop(silent);
}

/// The observed attack: a wildcard listener whose upstream is its own port on loopback. The
/// proxy drops that upstream at start, so one query makes one forward, to the real resolver.
#[test]
fn a_proxy_named_as_its_own_upstream_forwards_a_query_once() {
    let (port, upstream, admin, unused) = (free_port(), free_port(), free_port(), free_port());
    let _dnsmasq = dnsmasq(upstream);
    let (_proxy, line) = start(&[
        "dns-proxy",
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        &format!("127.0.0.1:{upstream}"),
        "--xds",
        &format!("127.0.0.1:{unused}"),
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--threads",
        "1",
    ]);
    assert!(
        line.contains(&format!("dns-proxy listening on 0.0.0.0:{port}")),
        "{line}"
    );
    let out = dig(port, &["www.example.test"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains("192.0.2.1"), "{out}");
    let forwarded = metric(
        admin,
        "meshfed_dns_upstream_requests_total{protocol=\"udp\"}",
    );
    assert_eq!(forwarded, 1.0, "upstream forwards for one query");
    assert_eq!(metric(admin, "meshfed_dns_forwarding_loops_total"), 0.0);
}

/// With no upstream but itself, the proxy does not start, and says why on one line: given
/// with --upstream, or as resolv.conf's loopback nameserver for a proxy on 0.0.0.0:53.
#[test]
fn a_proxy_whose_only_upstream_is_itself_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\nsearch cluster.local\n").unwrap();
    let port = free_port();
    let own = format!("127.0.0.1:{port}");
    let listen = format!("0.0.0.0:{port}");
    let cases: [(&[&str], String, String); 2] = [
        (
            &["--listen", &listen, "--upstream", &own],
            own.clone(),
            listen.clone(),
        ),
        (
            &[
                "--listen",
                "0.0.0.0:53",
                "--resolv-conf",
                resolv.to_str().unwrap(),
            ],
            "127.0.0.1:53".into(),
            "0.0.0.0:53".into(),
        ),
    ];
    for (args, upstream, listen) in cases {
        let err = fails_to_start(&[&["dns-proxy", "--xds", "127.0.0.1:1"], args].concat());
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: no upstream resolver but this proxy itself")
                && last.contains(&upstream)
                && last.contains(&format!("listens on {listen}")),
            "{err}"
        );
    }
}

/// Runs `meshfed ARGS`, which must fail before it serves: its stderr. One that serves instead
/// (its first line on stdout) is killed, and the test fails.
fn fails_to_start(args: &[&str]) -> String {
    let mut child = Command::new(MESHFED)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.is_empty() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        line.is_empty() && !out.status.success(),
        "{args:?} started: {line}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
