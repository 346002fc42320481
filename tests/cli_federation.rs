//! The multi-cluster flow as a user runs it, with istioctl's default credentials (a
//! long-lived token Secret): create-remote-secret, kubectl apply, federation, remote-clusters.

mod common;

use common::{MESHFED, apiserver, create_remote_secret, kubectl, start};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn create_remote_secret_then_federation_sees_the_remote_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_s1, _s2) = (
        apiserver(dir.path(), "cluster1"),
        apiserver(dir.path(), "cluster2"),
    );
    let (kc1, kc2) = (dir.path().join("cluster1"), dir.path().join("cluster2"));
    kubectl(&kc2, &["create", "namespace", "sample"], "");
    kubectl(
        &kc2,
        &[
            "create",
            "service",
            "clusterip",
            "helloworld",
            "-n",
            "sample",
            "--tcp=5000:5000",
        ],
        "",
    );

    let secret = create_remote_secret(&kc2, "cluster2");
    assert!(
        secret.contains("istio/multiCluster")
            && secret.contains("networking.istio.io/cluster: cluster2"),
        "{secret}"
    );
    kubectl(&kc1, &["create", "namespace", "istio-system"], "");
    kubectl(&kc1, &["apply", "--validate=false", "-f", "-"], &secret);

    let (_fed, line) = start(&[
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
        "127.0.0.1:0",
    ]);
    assert!(line.starts_with("federation for cluster1"), "{line}");
    // The bound admin address from the banner: a port picked here and released could be
    // taken by a parallel test's federation before ours binds it.
    let admin = line
        .split("admin ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        admin.starts_with("127.0.0.1:") && !admin.ends_with(":0"),
        "{line}"
    );
    // The printed xDS address is the bound one and takes connections.
    let xds = line
        .split("xds ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_default();
    assert!(
        xds.starts_with("127.0.0.1:") && !xds.ends_with(":0"),
        "{line}"
    );
    std::net::TcpStream::connect(xds).unwrap();

    // The controller syncs in the background; remote-clusters exits 0 once every cluster is synced.
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = Command::new(MESHFED)
            .args(["remote-clusters", "--admin", &admin])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "never synced: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = table
        .lines()
        .find(|l| l.starts_with("cluster2"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("istio-remote-secret-cluster2") && row.contains("synced"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cluster1") && l.contains("(local)")),
        "{table}"
    );
}

#[test]
fn remote_clusters_fails_without_a_controller() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Command::new(MESHFED)
        .args(["remote-clusters", "--admin", &unused])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error:"));
}
