//! `meshfed agent` as a process, on credentials made by `meshfed certs`: it names what it
//! serves, refuses credentials a peer would refuse, and cleans up on SIGTERM.

use std::path::Path;
use std::process::Command;

mod common;

use common::{MESHFED, meshfed_ok, start};

fn certs(args: &[&str]) {
    meshfed_ok(&[&["certs"], args].concat());
}

/// root, cluster1's intermediate, and sleep's workload credentials under `dir`.
fn pki(dir: &Path) -> String {
    let p = |n: &str| dir.join(n).display().to_string();
    certs(&["root-ca", "--out", &p("root")]);
    certs(&[
        "intermediate",
        "--root",
        &p("root"),
        "--cluster",
        "cluster1",
        "--out",
        &p("cluster1"),
    ]);
    let id = "spiffe://cluster.local/ns/sample/sa/sleep";
    certs(&[
        "workload",
        "--ca",
        &p("cluster1"),
        "--spiffe",
        id,
        "--out",
        &p("sleep"),
    ]);
    p("sleep")
}

#[test]
fn serves_the_workload_identity_and_removes_its_socket_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sleep = pki(dir.path());
    let socket = dir.path().join("sds/socket");
    let socket_arg = socket.display().to_string();
    let (mut agent, banner) = start(&["agent", "--cert-dir", &sleep, "--socket", &socket_arg]);
    assert!(
        banner.contains("spiffe://cluster.local/ns/sample/sa/sleep")
            && banner.contains(&socket_arg),
        "{banner}"
    );
    assert!(socket.exists());
    let pid = i32::try_from(agent.0.id()).unwrap();
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn credentials_a_peer_would_refuse_are_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let sleep = pki(dir.path());
    // The root of another mesh: the chain no longer leads to it.
    certs(&[
        "root-ca",
        "--out",
        &dir.path().join("other").display().to_string(),
    ]);
    std::fs::copy(
        dir.path().join("other/root-cert.pem"),
        Path::new(&sleep).join("root-cert.pem"),
    )
    .unwrap();
    let socket = dir.path().join("socket").display().to_string();
    let out = Command::new(MESHFED)
        .args(["agent", "--cert-dir", &sleep, "--socket", &socket])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("cert-chain.pem") && errors[0].contains(&sleep),
        "{stderr}"
    );
    assert!(!Path::new(&socket).exists());
}
