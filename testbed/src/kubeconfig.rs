//! Kubeconfig files in the shape kubectl and kube-rs read: one cluster, context and user,
//! with the CA and token inline (no file paths that would not resolve elsewhere).

use crate::Error;
use base64::Engine;
use serde_json::json;
use std::io::Write;
use std::path::Path;

pub fn render(cluster: &str, server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// A client for the cluster a kubeconfig (as [`render`] makes it) names.
pub async fn client(yaml: &str) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let kc = kube::config::Kubeconfig::from_yaml(yaml).context("invalid kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("unusable kubeconfig")?;
    kube::Client::try_from(config).context("building a Kubernetes client")
}

/// Writes with mode 0600: the file holds a bearer token.
pub fn write(path: &Path, contents: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("tmp");
    let result = crate::state::fresh_file(&tmp, 0o600)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
