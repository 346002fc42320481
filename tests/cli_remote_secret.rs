//! `meshfed create-remote-secret` as a user runs it against the test bed API server: the
//! kubeconfig it prints carries the token Secret's CA, `--server` and `--tls-server-name`,
//! and a loopback server is warned about on stderr.

mod common;

use common::{MESHFED, apiserver};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_yaml::Value;
use std::path::Path;
use std::process::{Command, Output};

fn create_remote_secret(kubeconfig: &Path, extra: &[&str]) -> Output {
    let out = Command::new(MESHFED)
        .args(["create-remote-secret", "--name", "cluster2", "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `cluster` entry of the kubeconfig inside the printed Secret.
fn printed_cluster(out: &Output) -> Value {
    let secret: Secret = serde_yaml::from_slice(&out.stdout).expect("a Secret");
    let data = secret.string_data.unwrap_or_default();
    let kubeconfig: Value = serde_yaml::from_str(&data["cluster2"]).expect("a kubeconfig");
    kubeconfig["clusters"][0]["cluster"].clone()
}

/// `certificate-authority-data` decoded.
fn ca(cluster: &Value) -> Vec<u8> {
    let b64 = cluster["certificate-authority-data"].clone();
    let ByteString(bytes) = serde_yaml::from_value(b64).expect("base64");
    bytes
}

/// Istio (istioctl create-remote-secret): the CA written is the reader token Secret's
/// `ca.crt`, so a kubeconfig that trusts the API server some other way (here
/// `insecure-skip-tls-verify`, no CA at all) still yields a remote secret that verifies it;
/// `--tls-server-name` is written as the cluster's `tls-server-name`; istioctl warns when
/// the server is 127.0.0.1 or localhost, which other clusters cannot reach.
#[test]
fn the_printed_kubeconfig_has_the_token_secrets_ca_and_the_names_given() {
    let dir = tempfile::tempdir().unwrap();
    let _server = apiserver(dir.path(), "cluster2");
    let admin = std::fs::read_to_string(dir.path().join("cluster2")).unwrap();
    let mut admin_kc: Value = serde_yaml::from_str(&admin).unwrap();
    let admin_cluster = admin_kc["clusters"][0]["cluster"].clone();
    let server_ca = ca(&admin_cluster);
    let Value::Mapping(entry) = &mut admin_kc["clusters"][0]["cluster"] else {
        panic!("a cluster entry: {admin}");
    };
    entry.remove("certificate-authority-data");
    entry.insert("insecure-skip-tls-verify".into(), true.into());
    let no_ca = dir.path().join("no-ca");
    std::fs::write(&no_ca, serde_yaml::to_string(&admin_kc).unwrap()).unwrap();

    let out = create_remote_secret(&no_ca, &["--tls-server-name", "kubernetes.default.svc"]);
    let cluster = printed_cluster(&out);
    assert_eq!(ca(&cluster), server_ca, "the token Secret's ca.crt");
    assert_eq!(cluster["server"], admin_cluster["server"]);
    assert_eq!(cluster["tls-server-name"], "kubernetes.default.svc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: server https://127.0.0.1:") && stderr.contains("loopback"),
        "{stderr}"
    );

    let reachable = "https://203.0.113.7:6443";
    let out = create_remote_secret(&no_ca, &["--server", reachable]);
    let cluster = printed_cluster(&out);
    assert_eq!(cluster["server"], reachable);
    assert_eq!(cluster.get("tls-server-name"), None);
    assert_eq!(ca(&cluster), server_ca);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}
