//! Remote secrets are data, not code (issue 17): a Secret labelled `istio/multiCluster=true`
//! whose kubeconfig runs a command, reads the federation's files or leaks its contents into
//! errors is refused as Istio's secret controller refuses it, and only that cluster suffers.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::PostParams;
use meshfed_federation::registry::{ClusterStatus, Registry, Status};
use meshfed_federation::{Controllers, FederationConfig};
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn server(name: &str) -> ApiServer {
    ApiServer::start(ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), name))
        .await
        .unwrap()
}

/// A client of the local cluster, whose system namespace exists.
async fn local(server: &ApiServer) -> kube::Client {
    let c = meshfed_federation::kubeconfig::client(&server.kubeconfig(), false)
        .await
        .unwrap();
    let ns = json!({"metadata": {"name": "istio-system"}});
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    c
}

async fn secret(local: &kube::Client, cluster: &str, kubeconfig: &str) {
    let api: Api<Secret> = Api::namespaced(local.clone(), "istio-system");
    let s = json!({
        "metadata": {"name": format!("istio-remote-secret-{cluster}"), "labels": {"istio/multiCluster": "true"}},
        "stringData": {cluster: kubeconfig},
    });
    api.create(&PostParams::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
}

/// The remote server's own kubeconfig with its user's credentials replaced by `user`.
fn with_user(server: &ApiServer, user: serde_json::Value) -> String {
    let mut kc: serde_json::Value = serde_yaml::from_str(&server.kubeconfig()).unwrap();
    kc["users"][0]["user"] = user;
    serde_yaml::to_string(&kc).unwrap()
}

async fn status(
    registry: &Registry,
    id: &str,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let mut changes = registry.subscribe();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(c) = registry
                .clusters()
                .into_iter()
                .find(|c| c.id == id && ok(c))
            {
                return c;
            }
            let _ = changes.changed().await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{id}: {:?}", registry.clusters()))
}

fn exec_user(mark: &Path, token: &str) -> serde_json::Value {
    let credential = json!({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": token}});
    let script = format!("touch {} && echo '{credential}'", mark.display());
    json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh", "args": ["-c", script]}})
}

/// The attack seen on an earlier main: `id > /tmp/x` ran as the federation's user. Refused by
/// default (the command never runs, the cluster shows the reason); with
/// `--allow-insecure-kubeconfig-options` the same secret does run it, so the test is real.
#[tokio::test]
async fn an_exec_kubeconfig_runs_nothing_unless_allowed() {
    let (s1, s2) = (server("cluster1").await, server("cluster2").await);
    let local = local(&s1).await;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran");
    secret(
        &local,
        "cluster2",
        &with_user(&s2, exec_user(&mark, s2.admin_token())),
    )
    .await;

    let fed = Controllers::start(
        local.clone(),
        &FederationConfig::new("cluster1", "network1"),
    );
    let c = status(&fed.registry, "cluster2", |c| c.status == Status::Error).await;
    let error = c.error.unwrap_or_default();
    assert!(
        error.contains("exec") && error.contains("--allow-insecure-kubeconfig-options"),
        "{error}"
    );
    assert!(!error.contains(s2.admin_token()), "{error}");
    assert!(!mark.exists(), "the secret's command ran");
    drop(fed);

    let mut cfg = FederationConfig::new("cluster1", "network1");
    cfg.allow_insecure_kubeconfig_options = true;
    let fed = Controllers::start(local, &cfg);
    status(&fed.registry, "cluster2", |c| c.status == Status::Synced).await;
    assert!(
        mark.exists(),
        "allowed, the command runs (the refusal above was the check's doing)"
    );
}

/// A kubeconfig pointing at one of the federation's own files (its ServiceAccount token) is
/// refused: it would send that token to a server of the secret author's choice.
#[tokio::test]
async fn a_token_file_kubeconfig_is_refused_and_other_clusters_keep_working() {
    let (s1, s2, s3) = (
        server("cluster1").await,
        server("cluster2").await,
        server("cluster3").await,
    );
    let local = local(&s1).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, s2.admin_token()).unwrap();
    let user = json!({"tokenFile": token_file});
    secret(&local, "cluster2", &with_user(&s2, user)).await;
    secret(&local, "cluster3", &s3.kubeconfig()).await;
    let fed = Controllers::start(local, &FederationConfig::new("cluster1", "network1"));
    let c = status(&fed.registry, "cluster2", |c| c.status == Status::Error).await;
    assert!(
        c.error.as_deref().unwrap_or("").contains("tokenFile"),
        "{c:?}"
    );
    status(&fed.registry, "cluster3", |c| c.status == Status::Synced).await;
}

/// YAML errors quote what they choke on; the status shows only where it is.
#[tokio::test]
async fn a_broken_kubeconfig_shows_no_part_of_the_secret() {
    let (s1, s2) = (server("cluster1").await, server("cluster2").await);
    let local = local(&s1).await;
    let token = s2.admin_token().to_string();
    let broken = s2
        .kubeconfig()
        .replace(&format!("token: {token}"), &format!("token: [{token}"));
    assert_ne!(broken, s2.kubeconfig(), "the token line was found");
    secret(&local, "cluster2", &broken).await;
    let fed = Controllers::start(local, &FederationConfig::new("cluster1", "network1"));
    let c = status(&fed.registry, "cluster2", |c| c.status == Status::Error).await;
    let shown = serde_json::to_string(&fed.registry.clusters()).unwrap();
    assert!(!shown.contains(&token[..16]), "{shown}");
    assert!(
        c.error.unwrap_or_default().contains("does not parse"),
        "{shown}"
    );
}
