//! The test bed plays kubelet for projected ServiceAccount tokens: each workload that talks to
//! the federation's secure port (the agents, the gateway, the DNS proxy, the sidecar's xDS)
//! reads a token for audience `istio-ca` from a file, which the bed writes from its cluster's
//! API server and replaces at 80% of the token's life, as kubelet does. The federation checks
//! each token with a TokenReview against that same API server.

use crate::ApiServer;
use anyhow::anyhow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The audience the federation's CA and secure port accept (Istio's `istio-ca`).
pub const CA_AUDIENCE: &str = "istio-ca";
/// kubelet's default for a projected token (`expirationSeconds: 3607`, rounded down).
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// kubelet replaces a projected token once 80% of its life has passed.
const REFRESH_AFTER: Duration = Duration::from_secs(TOKEN_TTL.as_secs() * 4 / 5);
/// After a failed refresh (the API server stopped by a fault), kubelet tries again soon.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Whose token a file holds.
#[derive(Debug, Clone)]
pub enum Owner {
    /// A pod's: bound to the pod, for the account it runs as (a projected volume's token).
    Pod(String),
    /// A ServiceAccount's, bound to nothing (for the bed's components, which have no Pod
    /// object in the test bed's API server).
    Account(String),
}

/// One projected token file.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    pub namespace: String,
    pub owner: Owner,
}

impl TokenFile {
    /// A fresh token in the file, swapped in whole.
    fn write(&self, api: &ApiServer) -> anyhow::Result<()> {
        let audiences = [CA_AUDIENCE];
        let token = match &self.owner {
            Owner::Pod(pod) => api.pod_token(&self.namespace, pod, &audiences, TOKEN_TTL),
            Owner::Account(sa) => api.token(&self.namespace, sa, &audiences, TOKEN_TTL),
        }
        .map_err(|e| anyhow!("a token for {}: {}", self.path.display(), e.message))?;
        crate::state::replace_file(&self.path, token.as_bytes(), 0o600)
    }
}

/// Keeps a cluster's token files fresh until dropped.
pub struct Kubelet {
    refresh: JoinHandle<()>,
}

impl Kubelet {
    /// Writes every file now (an error if one cannot be), then keeps replacing them.
    pub async fn start(
        api: Arc<Mutex<ApiServer>>,
        files: Vec<TokenFile>,
    ) -> anyhow::Result<Kubelet> {
        {
            let server = api.lock().await;
            for f in &files {
                f.write(&server)?;
            }
        }
        let refresh = tokio::spawn(async move {
            let mut wait = REFRESH_AFTER;
            loop {
                tokio::time::sleep(wait).await;
                wait = REFRESH_AFTER;
                let server = api.lock().await;
                for f in &files {
                    if let Err(e) = f.write(&server) {
                        tracing::warn!(error = format!("{e:#}"), "refreshing a projected token");
                        wait = RETRY_AFTER;
                    }
                }
            }
        });
        Ok(Kubelet { refresh })
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.refresh.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
    use kube::api::{Api, PostParams};
    use serde_json::json;

    async fn review(client: &kube::Client, token: &str, audience: &str) -> serde_json::Value {
        let review: TokenReview =
            serde_json::from_value(json!({"spec": {"token": token, "audiences": [audience]}}))
                .unwrap();
        let done = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        serde_json::to_value(done.status.unwrap()).unwrap()
    }

    /// What kubelet puts in a projected `serviceAccountToken` volume with `audience:
    /// istio-ca`: a token that TokenReview (as the federation's CA asks it) authenticates as
    /// the pod's ServiceAccount, naming the pod, for `istio-ca` only; an account's token
    /// names no pod. Files are owner-only.
    #[tokio::test]
    async fn projected_tokens_review_as_the_pods_account_for_istio_ca_only() {
        let (server, client) = crate::seed::cluster("cluster1").await.unwrap();
        crate::seed::create(
            Api::<Namespace>::all(client.clone()),
            json!({"metadata": {"name": "sample"}}),
        )
        .await
        .expect("creating the namespace");
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), "sample");
        crate::seed::create(sas, json!({"metadata": {"name": "sleep"}}))
            .await
            .expect("creating the account");
        let pods = Api::<Pod>::namespaced(client.clone(), "sample");
        let pod = json!({"metadata": {"name": "sleep-1"},
            "spec": {"serviceAccountName": "sleep", "containers": [{"name": "sleep", "image": "sleep"}]}});
        crate::seed::create(pods, pod)
            .await
            .expect("creating the pod");

        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, owner: Owner| TokenFile {
            path: dir.path().join(name),
            namespace: "sample".into(),
            owner,
        };
        let files = vec![
            file("sleep", Owner::Pod("sleep-1".into())),
            file("dns", Owner::Account("default".into())),
        ];
        let _kubelet = Kubelet::start(Arc::new(Mutex::new(server)), files)
            .await
            .unwrap();

        let token = std::fs::read_to_string(dir.path().join("sleep")).unwrap();
        let status = review(&client, &token, CA_AUDIENCE).await;
        assert_eq!(status["authenticated"], true, "{status}");
        assert_eq!(
            status["user"]["username"],
            "system:serviceaccount:sample:sleep"
        );
        assert_eq!(
            status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
            "sleep-1"
        );
        assert_eq!(status["audiences"][0], CA_AUDIENCE);
        let other = review(&client, &token, "other").await;
        assert_ne!(other["authenticated"], true, "{other}");

        let token = std::fs::read_to_string(dir.path().join("dns")).unwrap();
        let status = review(&client, &token, CA_AUDIENCE).await;
        assert_eq!(
            status["user"]["username"],
            "system:serviceaccount:sample:default"
        );
        let extra = &status["user"]["extra"];
        assert!(
            extra.get("authentication.kubernetes.io/pod-name").is_none(),
            "{status}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dns"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
