//! `meshfed certs` judged by openssl and kubectl, through the real binary.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");

fn meshfed(args: &[&str]) -> Output {
    Command::new(MESHFED)
        .args(args)
        .output()
        .expect("run meshfed")
}

fn ok(args: &[&str]) -> String {
    let out = meshfed(args);
    assert!(
        out.status.success(),
        "meshfed {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must exist (the test command installs it) and returns its output.
fn tool(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} is required for this test ({e}); the README's test command installs it")
    })
}

/// A mesh root, intermediates for two clusters, a workload in each, and a foreign PKI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let p = |s: &str| pki.s(s);
        ok(&["certs", "root-ca", "--out", &p("root")]);
        ok(&[
            "certs",
            "root-ca",
            "--out",
            &p("foreign"),
            "--org",
            "Foreign",
        ]);
        for (c, root) in [
            ("cluster1", "root"),
            ("cluster2", "root"),
            ("rogue", "foreign"),
        ] {
            ok(&[
                "certs",
                "intermediate",
                "--root",
                &p(root),
                "--cluster",
                c,
                "--out",
                &p(c),
            ]);
        }
        for (w, ca, sa) in [
            ("sleep", "cluster1", "sleep"),
            ("hello", "cluster2", "helloworld"),
            ("intruder", "rogue", "sleep"),
        ] {
            let id = format!("spiffe://cluster.local/ns/sample/sa/{sa}");
            ok(&[
                "certs",
                "workload",
                "--ca",
                &p(ca),
                "--spiffe",
                &id,
                "--out",
                &p(w),
            ]);
            pki.split_chain(w);
        }
        pki
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// openssl wants the leaf and the intermediates in separate files.
    fn split_chain(&self, w: &str) {
        let chain = std::fs::read_to_string(self.path(&format!("{w}/cert-chain.pem"))).unwrap();
        let end = "-----END CERTIFICATE-----\n";
        let cut = chain.find(end).unwrap() + end.len();
        std::fs::write(self.path(&format!("{w}/leaf.pem")), &chain[..cut]).unwrap();
        std::fs::write(self.path(&format!("{w}/intermediate.pem")), &chain[cut..]).unwrap();
    }

    fn text(&self, rel: &str) -> String {
        let out = tool("openssl", &["x509", "-noout", "-text", "-in", &self.s(rel)]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn openssl_verifies_chains_and_sees_the_extensions() {
    let pki = Pki::new();
    let root = pki.s("root/root-cert.pem");
    for w in ["sleep", "hello"] {
        let out = tool(
            "openssl",
            &[
                "verify",
                "-CAfile",
                &root,
                "-untrusted",
                &pki.s(&format!("{w}/intermediate.pem")),
                &pki.s(&format!("{w}/leaf.pem")),
            ],
        );
        assert!(
            out.status.success(),
            "{w}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    }
    let out = tool(
        "openssl",
        &["verify", "-CAfile", &root, &pki.s("cluster1/ca-cert.pem")],
    );
    assert!(out.status.success());
    let out = tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &root,
            "-untrusted",
            &pki.s("rogue/ca-cert.pem"),
            &pki.s("intruder/leaf.pem"),
        ],
    );
    assert!(
        !out.status.success(),
        "foreign chain verified against the mesh root"
    );

    let int = pki.text("cluster1/ca-cert.pem");
    assert!(int.contains("CA:TRUE, pathlen:0"), "{int}");
    assert!(int.contains("Certificate Sign, CRL Sign"), "{int}");
    assert!(int.contains("cluster1"), "{int}");
    let leaf = pki.text("sleep/leaf.pem");
    assert!(
        leaf.contains("URI:spiffe://cluster.local/ns/sample/sa/sleep"),
        "{leaf}"
    );
    assert!(
        leaf.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{leaf}"
    );
    assert!(
        leaf.contains("CA:FALSE") || !leaf.contains("CA:TRUE"),
        "{leaf}"
    );
}

/// Starts `openssl s_server` as `server` trusting the mesh root; returns it and its port.
fn s_server(pki: &Pki, server: &str) -> (std::process::Child, u16) {
    let mut child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-naccept",
            "1",
            "-www",
            "-Verify",
            "3",
            "-verify_return_error",
        ])
        .args([
            "-cert",
            &pki.s(&format!("{server}/leaf.pem")),
            "-cert_chain",
            &pki.s(&format!("{server}/intermediate.pem")),
        ])
        .args([
            "-key",
            &pki.s(&format!("{server}/key.pem")),
            "-CAfile",
            &pki.s("root/root-cert.pem"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is required; the README's test command installs it");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("s_server exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("ACCEPT ") {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    (child, port)
}

/// One HTTP request through `openssl s_client` presenting `client`'s certificate.
fn s_client(pki: &Pki, client: &str, port: u16) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
            "-verify_return_error",
        ])
        .args([
            "-cert",
            &pki.s(&format!("{client}/leaf.pem")),
            "-cert_chain",
            &pki.s(&format!("{client}/intermediate.pem")),
        ])
        .args([
            "-key",
            &pki.s(&format!("{client}/key.pem")),
            "-CAfile",
            &pki.s("root/root-cert.pem"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn openssl_mtls_between_two_clusters_succeeds_and_foreign_root_is_refused() {
    let pki = Pki::new();
    let (mut server, port) = s_server(&pki, "hello");
    let (_, text) = s_client(&pki, "sleep", port);
    server.wait().unwrap();
    assert!(
        text.contains("HTTP/1.0 200 ok"),
        "mTLS across intermediates failed:\n{text}"
    );

    let (mut server, port) = s_server(&pki, "hello");
    let (_, text) = s_client(&pki, "intruder", port);
    server.wait().unwrap();
    assert!(
        !text.contains("HTTP/1.0 200 ok"),
        "foreign client was served:\n{text}"
    );
    assert!(
        text.contains("alert"),
        "no TLS alert for the foreign client:\n{text}"
    );

    // And the other way round: a client of the mesh refuses a foreign server.
    let (mut server, port) = s_server(&pki, "intruder");
    let (success, text) = s_client(&pki, "sleep", port);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !success && !text.contains("HTTP/1.0 200 ok"),
        "foreign server accepted:\n{text}"
    );
}

#[test]
fn existing_output_is_never_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("root").display().to_string();
    ok(&["certs", "root-ca", "--out", &out]);
    let read = |n: &str| std::fs::read(Path::new(&out).join(n)).unwrap();
    let (cert, key) = (read("root-cert.pem"), read("root-key.pem"));
    let mode = std::fs::metadata(Path::new(&out).join("root-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let refused = meshfed(&["certs", "root-ca", "--out", &out]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        (read("root-cert.pem"), read("root-key.pem")),
        (cert.clone(), key.clone())
    );

    ok(&[
        "certs", "root-ca", "--out", &out, "--force", "--key", "rsa-2048",
    ]);
    assert_ne!(read("root-key.pem"), key);
    let mode = std::fs::metadata(Path::new(&out).join("root-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn verify_exits_one_with_a_reason_on_broken_material() {
    let pki = Pki::new();
    let good = ok(&[
        "certs",
        "verify",
        &pki.s("root"),
        &pki.s("cluster1"),
        &pki.s("sleep"),
        &pki.s("sleep/cert-chain.pem"),
    ]);
    assert!(
        good.contains("pathlen:0") && good.contains("URI SAN spiffe://"),
        "{good}"
    );
    assert!(good.contains("private key matches"), "{good}");

    std::fs::copy(pki.path("hello/key.pem"), pki.path("sleep/key.pem")).unwrap();
    let out = meshfed(&["certs", "verify", &pki.s("cluster1"), &pki.s("sleep")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL key.pem: private key does not match"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bad_input_gets_one_line_and_no_panic() {
    let pki = Pki::new();
    std::fs::write(pki.path("junk.pem"), "hello").unwrap();
    std::fs::create_dir(pki.path("junkca")).unwrap();
    std::fs::write(pki.path("junkca/ca-cert.pem"), "hello").unwrap();
    let spiffe = "spiffe://cluster.local/ns/a/sa/b";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "intermediate".into(),
                "--root".into(),
                pki.s("nowhere"),
                "--cluster".into(),
                "c".into(),
                "--out".into(),
                pki.s("x"),
            ],
            "root-cert.pem",
        ),
        (
            vec![
                "workload".into(),
                "--ca".into(),
                pki.s("junkca"),
                "--spiffe".into(),
                spiffe.into(),
                "--out".into(),
                pki.s("y"),
            ],
            "not PEM",
        ),
        (
            vec![
                "workload".into(),
                "--ca".into(),
                pki.s("cluster1"),
                "--spiffe".into(),
                "spiffe://x/ns/a".into(),
                "--out".into(),
                pki.s("y"),
            ],
            "invalid SPIFFE ID",
        ),
        (
            vec![
                "workload".into(),
                "--ca".into(),
                pki.s("cluster1"),
                "--spiffe".into(),
                spiffe.into(),
                "--out".into(),
                pki.s("y"),
                "--ttl".into(),
                "soon".into(),
            ],
            "invalid duration",
        ),
        (
            vec![
                "root-ca".into(),
                "--out".into(),
                pki.s("z"),
                "--key".into(),
                "dsa".into(),
            ],
            "unknown key type",
        ),
        (
            vec!["cacerts-secret".into(), "--ca".into(), pki.s("junkca")],
            "not PEM",
        ),
        (vec!["verify".into(), pki.s("junk.pem")], "not PEM"),
    ];
    for (args, reason) in cases {
        let mut full = vec!["certs".to_string()];
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = meshfed(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{refs:?} succeeded");
        assert!(!stderr.contains("panicked"), "{refs:?} panicked: {stderr}");
        assert!(
            stderr.contains(reason) || stdout.contains(reason),
            "{refs:?}: no {reason:?} in {stderr}{stdout}"
        );
        let error_lines = stderr.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(error_lines, 1, "{refs:?}: {stderr}");
    }
    assert!(!pki.path("y").exists() && !pki.path("z").exists() && !pki.path("x").exists());
}

#[test]
fn cacerts_secret_matches_what_kubectl_would_create() {
    let pki = Pki::new();
    let ours: serde_yaml::Value = serde_yaml::from_str(&ok(&[
        "certs",
        "cacerts-secret",
        "--ca",
        &pki.s("cluster1"),
    ]))
    .unwrap();
    let files = [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ]
    .map(|f| format!("--from-file={}", pki.s(&format!("cluster1/{f}"))));
    let mut args = vec![
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        "--dry-run=client",
        "-o",
        "yaml",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = tool("kubectl", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    for key in ["apiVersion", "kind", "data"] {
        assert_eq!(ours[key], theirs[key], "{key} differs");
    }
    assert_eq!(ours["metadata"]["name"], "cacerts");
    assert_eq!(ours["metadata"]["namespace"], "istio-system");
    let ns: serde_yaml::Value = serde_yaml::from_str(&ok(&[
        "certs",
        "cacerts-secret",
        "--ca",
        &pki.s("cluster2"),
        "--namespace",
        "mesh",
    ]))
    .unwrap();
    assert_eq!(ns["metadata"]["namespace"], "mesh");
}
