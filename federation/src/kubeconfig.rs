//! Remote secrets are data, not code. A kubeconfig taken from a secret is checked before use
//! and rebuilt from an allowlist, as Istio's `sanitizeKubeConfig` does (and stricter): no
//! command runs (`exec`, `auth-provider`), no file of the federation's disk is read (`tokenFile`,
//! client certificate or key paths, `certificate-authority` paths), and the connection is
//! verified TLS (`insecure-skip-tls-verify` and `http://` servers are refused). Otherwise a
//! Secret labelled `istio/multiCluster=true` could run code in the federation or send its own
//! token (which can read `cacerts`) wherever it likes. `--allow-insecure-kubeconfig-options`
//! turns the checks off. No error names a value of the secret: a secret's contents never
//! reach a log, `/debug/clusterz` or `remote-clusters`.

use kube::config::{AuthInfo, Cluster, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use secrecy::ExposeSecret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig does not parse (YAML error at line {line}, column {column})")]
    Parse { line: usize, column: usize },
    #[error("kubeconfig does not parse")]
    Unparsable,
    #[error("kubeconfig has no usable context: {0}")]
    NoContext(&'static str),
    #[error(
        "kubeconfig uses {0}, which remote secrets may not (it would run a command, read a local file or skip TLS verification); \
         start the federation with --allow-insecure-kubeconfig-options to accept it"
    )]
    Refused(&'static str),
    #[error("unusable kubeconfig: {0}")]
    Unusable(String),
}

/// The kubeconfig of a remote secret, checked, with only the current context's cluster and
/// user, and of those only the fields a client needs.
pub fn sanitize(yaml: &str, allow_insecure: bool) -> Result<Kubeconfig, KubeconfigError> {
    let kc: Kubeconfig = serde_yaml::from_str(yaml).map_err(|e| match e.location() {
        Some(l) => KubeconfigError::Parse {
            line: l.line(),
            column: l.column(),
        },
        None => KubeconfigError::Unparsable,
    })?;
    if allow_insecure {
        return Ok(kc);
    }
    // Every user and cluster of the document, not only the current ones: a later context
    // switch must not be a way in.
    for user in kc.auth_infos.iter().filter_map(|u| u.auth_info.as_ref()) {
        refused_user_option(user).map_or(Ok(()), |o| Err(KubeconfigError::Refused(o)))?;
    }
    for cluster in kc.clusters.iter().filter_map(|c| c.cluster.as_ref()) {
        refused_cluster_option(cluster).map_or(Ok(()), |o| Err(KubeconfigError::Refused(o)))?;
    }
    minimal(&kc)
}

fn refused_user_option(u: &AuthInfo) -> Option<&'static str> {
    [
        (u.exec.is_some(), "exec"),
        (u.auth_provider.is_some(), "auth-provider"),
        (u.token_file.is_some(), "tokenFile"),
        (
            u.client_certificate.is_some(),
            "client-certificate (a file path)",
        ),
        (u.client_key.is_some(), "client-key (a file path)"),
    ]
    .into_iter()
    .find_map(|(used, name)| used.then_some(name))
}

fn refused_cluster_option(c: &Cluster) -> Option<&'static str> {
    let plain_http = c
        .server
        .as_deref()
        .is_some_and(|s| !s.trim().to_ascii_lowercase().starts_with("https://"));
    [
        (
            c.certificate_authority.is_some(),
            "certificate-authority (a file path)",
        ),
        (
            c.insecure_skip_tls_verify == Some(true),
            "insecure-skip-tls-verify",
        ),
        (plain_http, "a server that is not https://"),
    ]
    .into_iter()
    .find_map(|(used, name)| used.then_some(name))
}

/// The current context (or the only one) with its cluster and user, rebuilt field by field.
fn minimal(kc: &Kubeconfig) -> Result<Kubeconfig, KubeconfigError> {
    let context = match &kc.current_context {
        Some(name) => kc.contexts.iter().find(|c| &c.name == name),
        None if kc.contexts.len() == 1 => kc.contexts.first(),
        None => None,
    }
    .ok_or(KubeconfigError::NoContext("no current context"))?;
    let ctx = context
        .context
        .as_ref()
        .ok_or(KubeconfigError::NoContext("the context is empty"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or(KubeconfigError::NoContext(
            "the context's cluster is missing",
        ))?;
    if cluster.server.is_none() {
        return Err(KubeconfigError::NoContext("the cluster has no server"));
    }
    let user = ctx
        .user
        .as_ref()
        .and_then(|name| kc.auth_infos.iter().find(|u| &u.name == name))
        .and_then(|u| u.auth_info.as_ref());
    Ok(Kubeconfig {
        clusters: vec![NamedCluster {
            name: ctx.cluster.clone(),
            cluster: Some(Cluster {
                server: cluster.server.clone(),
                certificate_authority_data: cluster.certificate_authority_data.clone(),
                tls_server_name: cluster.tls_server_name.clone(),
                proxy_url: cluster.proxy_url.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: user
            .map(|u| NamedAuthInfo {
                name: "remote".into(),
                auth_info: Some(AuthInfo {
                    username: u.username.clone(),
                    password: u.password.clone(),
                    token: u.token.clone(),
                    client_certificate_data: u.client_certificate_data.clone(),
                    client_key_data: u.client_key_data.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        contexts: vec![NamedContext {
            name: "remote".into(),
            context: Some(kube::config::Context {
                cluster: ctx.cluster.clone(),
                user: user.map(|_| "remote".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some("remote".into()),
        ..Default::default()
    })
}

/// A client for the cluster of a remote secret's kubeconfig, after [`sanitize`].
pub async fn client(yaml: &str, allow_insecure: bool) -> Result<kube::Client, KubeconfigError> {
    let kc = sanitize(yaml, allow_insecure)?;
    let secrets = secret_values(&kc);
    let unusable =
        |e: &dyn std::fmt::Display| KubeconfigError::Unusable(redact(&e.to_string(), &secrets));
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| unusable(&e))?;
    crate::bounded::client(config).map_err(|e| unusable(&e))
}

/// Every credential in `kc`, so that an error quoting one can be cleaned.
fn secret_values(kc: &Kubeconfig) -> Vec<String> {
    let mut out = Vec::new();
    for u in kc.auth_infos.iter().filter_map(|u| u.auth_info.as_ref()) {
        out.extend(u.token.as_ref().map(|t| t.expose_secret().to_string()));
        out.extend(u.password.as_ref().map(|p| p.expose_secret().to_string()));
        out.extend(
            u.client_key_data
                .as_ref()
                .map(|k| k.expose_secret().to_string()),
        );
        out.extend(u.client_certificate_data.clone());
    }
    out.retain(|s| s.len() >= 4);
    out
}

/// `text` with every occurrence of `secrets` (and of any 16 or more of their characters in a
/// row, since libraries quote fragments) replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "[redacted]");
        let chars: Vec<char> = s.chars().collect();
        for window in chars.windows(16) {
            let piece: String = window.iter().collect();
            if out.contains(&piece) {
                out = out.replace(&piece, "[redacted]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
