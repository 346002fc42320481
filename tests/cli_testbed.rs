//! `meshfed testbed apiserver` as a user runs it: start, use with kubectl, stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn apiserver_serves_kubectl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let mut server = Command::new(env!("CARGO_BIN_EXE_meshfed"))
        .args([
            "testbed",
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--cluster-name",
            "cluster2",
        ])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first line is printed once the kubeconfig is written and the port is open.
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("serving https://127.0.0.1:"), "{first}");

    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kubeconfig).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "kubeconfig holds a token");
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap()
    };
    let out = kubectl(&["config", "current-context"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cluster2");
    let out = kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"),
        "{out:?}"
    );

    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}
