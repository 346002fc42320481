//! `meshfed create-remote-secret`: what `istioctl create-remote-secret` does, so that
//! `meshfed create-remote-secret --name cluster2 | kubectl apply -f - --context cluster1`
//! lets cluster1's control plane (istiod or ours) read cluster2's API server.
//!
//! In the exported cluster this ensures a reader ServiceAccount with a read-only ClusterRole,
//! obtains a token for it, and renders a Secret holding a kubeconfig for that token. The
//! Secret has the label, annotation and `stringData` key Istio's secret controller looks for.
//! As istioctl, the CA written is the token Secret's `ca.crt` (the cluster's own root, what
//! in-cluster clients trust), the server the local kubeconfig's unless `--server` says
//! otherwise, and a server on a loopback address is warned about.

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{Cluster, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use meshfed_model::labels;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Remote secrets are named this plus the cluster id.
pub const SECRET_PREFIX: &str = "istio-remote-secret-";
/// How long the token controller may take to fill a long-lived token Secret.
pub const TOKEN_WAIT: Duration = Duration::from_secs(30);

const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshfed");
const READ: &[&str] = &["get", "list", "watch"];
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSecretOptions {
    /// Cluster id of the cluster being exported (Istio's `clusterName` there).
    pub name: String,
    /// API server URL for the kubeconfig; None: the one the local kubeconfig uses. Set it
    /// when the other cluster reaches this API server by another address.
    pub server: Option<String>,
    /// Written as the cluster's `tls-server-name`: the name the API server's certificate is
    /// checked against when `server` is an address it does not cover.
    pub tls_server_name: Option<String>,
    /// Namespace of the reader ServiceAccount and of the output Secret.
    pub namespace: String,
    pub service_account: String,
    /// None: a long-lived token Secret, as istioctl does. Some: a bound token that expires.
    pub token_duration: Option<Duration>,
}

impl RemoteSecretOptions {
    /// Istio's defaults for everything but the cluster id.
    pub fn new(name: impl Into<String>) -> Self {
        RemoteSecretOptions {
            name: name.into(),
            server: None,
            tls_server_name: None,
            namespace: "istio-system".into(),
            service_account: "istio-reader-service-account".into(),
            token_duration: None,
        }
    }

    /// `istio-remote-secret-<name>`.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.name)
    }

    /// `istio-reader-clusterrole-<namespace>`, the name Istio's Helm chart uses too.
    pub fn cluster_role_name(&self) -> String {
        format!("istio-reader-clusterrole-{}", self.namespace)
    }

    /// `<service_account>-istio-remote-secret-token`.
    pub fn token_secret_name(&self) -> String {
        format!("{}-istio-remote-secret-token", self.service_account)
    }

    /// Refuses names the API server would reject, before anything is created.
    pub fn validate(&self) -> Result<(), Error> {
        check_dns_name("name", &self.name, 253 - SECRET_PREFIX.len())?;
        check_dns_name("namespace", &self.namespace, 63)?;
        check_dns_name("service account", &self.service_account, 200)?;
        if let Some(server) = &self.server {
            check_server(server)?;
        }
        if let Some(name) = &self.tls_server_name {
            check_tls_server_name(name)?;
        }
        if self.token_duration.is_some_and(|d| d.is_zero()) {
            return Err(Error::Options("token duration must be positive".into()));
        }
        Ok(())
    }
}

/// The rendered Secret and what the user should be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSecret {
    /// The Secret as YAML, for `kubectl apply -f -`.
    pub yaml: String,
    /// One line each (for stderr): the Secret was made but may not work as is.
    pub warnings: Vec<String>,
}

/// Every message is one line: the CLI prints it after "error: ".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("CA certificate: {0}")]
    Ca(String),
    #[error("{action}: {reason}")]
    Api { action: String, reason: String },
    #[error(
        "secret {namespace}/{name} got no token within {}s: is the token controller (kube-controller-manager) running?",
        waited.as_secs()
    )]
    TokenTimeout {
        namespace: String,
        name: String,
        waited: Duration,
    },
    #[error("rendering the remote secret: {0}")]
    Render(String),
}

/// Ensures the reader ServiceAccount, a read-only ClusterRole and its ClusterRoleBinding
/// exist (create if missing, leave if present), obtains a token, and returns the remote
/// Secret. `server` is used unless `opts.server` overrides it. The CA is the token Secret's
/// `ca.crt`; `kubeconfig_ca` (PEM or DER) stands in where there is none: a bound token
/// (`token_duration`) comes without a Secret, and a token controller may leave it out.
pub async fn create_remote_secret(
    client: kube::Client,
    server: &str,
    kubeconfig_ca: Option<&[u8]>,
    opts: &RemoteSecretOptions,
) -> Result<RemoteSecret, Error> {
    opts.validate()?;
    let server = opts.server.as_deref().unwrap_or(server);
    check_server(server)?;
    // Check what can be checked before changing anything in the cluster.
    let kubeconfig_ca = kubeconfig_ca.map(normalize_ca).transpose()?;
    if opts.token_duration.is_some() && kubeconfig_ca.is_none() {
        return Err(no_ca_for_bound_token());
    }
    ensure_reader(&client, opts).await?;
    let (token, ca_pem) = match opts.token_duration {
        None => {
            let (token, ca) = long_lived_token(client, opts).await?;
            (token, secret_ca(ca.as_deref(), kubeconfig_ca)?)
        }
        Some(ttl) => (
            bound_token(client, opts, ttl).await?,
            kubeconfig_ca.ok_or_else(no_ca_for_bound_token)?,
        ),
    };
    Ok(RemoteSecret {
        yaml: render_secret(opts, server, &ca_pem, &token)?,
        warnings: loopback_warning(server).into_iter().collect(),
    })
}

fn no_ca_for_bound_token() -> Error {
    Error::Ca("a bound token (token duration) has no Secret to take ca.crt from, and the kubeconfig has no CA".into())
}

/// The token Secret's `ca.crt`, as istioctl takes it; else the kubeconfig's CA.
fn secret_ca(ca_crt: Option<&[u8]>, kubeconfig_ca: Option<String>) -> Result<String, Error> {
    match (ca_crt, kubeconfig_ca) {
        (Some(ca), _) => normalize_ca(ca).map_err(|e| match e {
            Error::Ca(why) => Error::Ca(format!("the token Secret's ca.crt: {why}")),
            other => other,
        }),
        (None, Some(ca)) => Ok(ca),
        (None, None) => Err(Error::Ca(
            "the token Secret has no ca.crt and the kubeconfig no CA".into(),
        )),
    }
}

/// Loads a kubeconfig (its current context, or `context`), builds a client from it, and
/// exports the cluster of that context with its server URL (and its CA where the token
/// Secret has none).
pub async fn from_kubeconfig(
    path: &Path,
    context: Option<&str>,
    opts: &RemoteSecretOptions,
) -> Result<RemoteSecret, Error> {
    opts.validate()?;
    let bad = |reason: String| Error::Kubeconfig {
        path: path.display().to_string(),
        reason: one_line(&reason),
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(read_error(e)))?;
    let cluster = selected_cluster(&kubeconfig, context).map_err(bad)?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| bad("the cluster has no server".into()))?;
    let ca = cluster_ca(&cluster).await.map_err(bad)?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| bad(describe(&e)))?;
    create_remote_secret(client, &server, ca.as_deref(), opts).await
}

fn read_error(e: kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as E;
    match e {
        // kube names the path again in its message; the caller already does.
        E::ReadConfig(io, _) => format!("cannot read: {io}"),
        // The parser's first line says what and where; the rest quotes the file.
        E::Parse(_) => e.to_string().lines().next().unwrap_or_default().to_string(),
        other => other.to_string(),
    }
}

/// The cluster entry of `context` (default: the current context), resolved as kubectl does.
fn selected_cluster(kc: &Kubeconfig, context: Option<&str>) -> Result<Cluster, String> {
    let name = context
        .or(kc.current_context.as_deref())
        .filter(|n| !n.is_empty())
        .ok_or("no context given and no current-context set")?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
            format!(
                "context {name:?} not found (contexts: {})",
                known.join(", ")
            )
        })?;
    kc.clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("cluster {:?} of context {name:?} not found", ctx.cluster))
}

/// The CA inline (`certificate-authority-data`) or from a file (`certificate-authority`,
/// already made absolute by `Kubeconfig::read_from`); None when there is neither (the
/// token Secret's `ca.crt` is what gets written anyway).
async fn cluster_ca(cluster: &Cluster) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = &cluster.certificate_authority_data {
        // Wrapped base64 is still valid base64 to kubectl.
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| format!("certificate-authority-data is not base64: {e}"));
    }
    if let Some(file) = &cluster.certificate_authority {
        return tokio::fs::read(file)
            .await
            .map(Some)
            .map_err(|e| format!("reading certificate-authority {file}: {e}"));
    }
    Ok(None)
}

/// A PEM bundle as given, or one DER certificate wrapped as PEM: the kubeconfig wants PEM.
fn normalize_ca(ca: &[u8]) -> Result<String, Error> {
    let text = ca.trim_ascii();
    if text.is_empty() {
        return Err(Error::Ca("empty".into()));
    }
    if text.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(text).map_err(|_| Error::Ca("PEM is not UTF-8".into()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Ca("PEM holds no CERTIFICATE block".into()));
        }
        return Ok(format!("{pem}\n"));
    }
    // A DER certificate is an ASN.1 SEQUENCE: anything else is neither form.
    if ca.first() != Some(&0x30) {
        return Err(Error::Ca("neither PEM nor a DER certificate".into()));
    }
    Ok(der_to_pem(ca))
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII, so 64-byte chunks are whole characters.
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The namespace, ServiceAccount, ClusterRole and ClusterRoleBinding, in dependency order.
async fn ensure_reader(client: &kube::Client, opts: &RemoteSecretOptions) -> Result<(), Error> {
    let ns = &opts.namespace;
    ensure(&Api::all(client.clone()), &named::<Namespace>(ns, None)).await?;
    let sa = named::<ServiceAccount>(&opts.service_account, Some(ns));
    ensure(&Api::namespaced(client.clone(), ns), &sa).await?;
    ensure(&Api::all(client.clone()), &reader_role(opts)).await?;
    ensure(&Api::all(client.clone()), &reader_binding(opts)).await
}

/// Creates `obj` unless an object of that name exists; an existing one is left as it is
/// (it may be Istio's own, installed by its Helm chart).
async fn ensure<K>(api: &Api<K>, obj: &K) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("{} {name}", K::kind(&()));
    // Get first: whoever runs this may read but not create objects that already exist.
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(format!("reading {what}"), &e))?;
    if existing.is_some() {
        tracing::debug!(%what, "exists, left as is");
        return Ok(());
    }
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => tracing::info!(%what, "created"),
        // Someone created it between our get and create: it exists, which is all we need.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_error(format!("creating {what}"), &e)),
    }
    Ok(())
}

fn named<K: kube::Resource + Default>(name: &str, namespace: Option<&str>) -> K {
    let mut obj = K::default();
    *obj.meta_mut() = ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
        ..Default::default()
    };
    obj
}

/// Read-only access to exactly what the federation watches in a remote cluster. Istio's
/// reader role also reads every Secret, ConfigMap and ServiceAccount cluster-wide; meshfed's
/// federation reads none of them remotely, so a leaked remote secret cannot either.
fn reader_role(opts: &RemoteSecretOptions) -> ClusterRole {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (group, resource) in crate::watch::REMOTE_RESOURCES {
        groups.entry(group).or_default().push(resource.to_string());
    }
    let rules = groups
        .into_iter()
        .map(|(group, resources)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(resources),
            verbs: READ.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect();
    ClusterRole {
        rules: Some(rules),
        ..named(&opts.cluster_role_name(), None)
    }
}

fn reader_binding(opts: &RemoteSecretOptions) -> ClusterRoleBinding {
    ClusterRoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: opts.cluster_role_name(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: opts.service_account.clone(),
            namespace: Some(opts.namespace.clone()),
            ..Default::default()
        }]),
        ..named(&opts.cluster_role_name(), None)
    }
}

/// The token and `ca.crt` of a `kubernetes.io/service-account-token` Secret, created if
/// missing and filled by the cluster's token controller, as istioctl does since Kubernetes
/// 1.24 stopped creating them.
async fn long_lived_token(
    client: kube::Client,
    opts: &RemoteSecretOptions,
) -> Result<(String, Option<Vec<u8>>), Error> {
    let name = opts.token_secret_name();
    let secrets: Api<Secret> = Api::namespaced(client, &opts.namespace);
    ensure(&secrets, &token_secret(opts)).await?;
    let filled = await_condition(secrets, &name, |s: Option<&Secret>| token_of(s).is_some());
    let timeout = || Error::TokenTimeout {
        namespace: opts.namespace.clone(),
        name: name.clone(),
        waited: TOKEN_WAIT,
    };
    let secret = tokio::time::timeout(TOKEN_WAIT, filled)
        .await
        .map_err(|_| timeout())?
        .map_err(|e| Error::Api {
            action: format!("watching secret {}/{name}", opts.namespace),
            reason: one_line(&e.to_string()),
        })?;
    // await_condition only returns once the condition holds; the fallback is for form.
    let token = token_of(secret.as_ref()).ok_or_else(timeout)?;
    Ok((token, data_of(secret.as_ref(), "ca.crt")))
}

fn token_secret(opts: &RemoteSecretOptions) -> Secret {
    let mut secret: Secret = named(&opts.token_secret_name(), Some(&opts.namespace));
    secret.metadata.annotations = Some(BTreeMap::from([(
        SA_NAME_ANNOTATION.to_string(),
        opts.service_account.clone(),
    )]));
    secret.type_ = Some(SA_TOKEN_TYPE.into());
    secret
}

fn token_of(secret: Option<&Secret>) -> Option<String> {
    String::from_utf8(data_of(secret, "token")?).ok()
}

/// A key of the Secret's `data`, if there and not empty.
fn data_of(secret: Option<&Secret>, key: &str) -> Option<Vec<u8>> {
    let ByteString(bytes) = secret?.data.as_ref()?.get(key)?;
    Some(bytes.clone()).filter(|b| !b.is_empty())
}

/// A bound token from the TokenRequest API: nothing stored, and it expires.
async fn bound_token(
    client: kube::Client,
    opts: &RemoteSecretOptions,
    ttl: Duration,
) -> Result<String, Error> {
    // Round up: a sub-second remainder must not shorten the lifetime asked for.
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let seconds = i64::try_from(seconds)
        .map_err(|_| Error::Options(format!("token duration {ttl:?} is too long")))?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // Empty: the API server's own audience, the one it accepts.
            audiences: Vec::new(),
            expiration_seconds: Some(seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let sa = &opts.service_account;
    let api: Api<ServiceAccount> = Api::namespaced(client, &opts.namespace);
    let response = api
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            api_error(
                format!("requesting a token for {}/{sa}", opts.namespace),
                &e,
            )
        })?;
    response
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Api {
            action: format!("requesting a token for {}/{sa}", opts.namespace),
            reason: "the response holds no token".into(),
        })
}

/// The Secret Istio's secret controller reads: one kubeconfig under the cluster id.
fn render_secret(
    opts: &RemoteSecretOptions,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<String, Error> {
    let kubeconfig = render_kubeconfig(opts, server, ca_pem, token)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(opts.secret_name()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(BTreeMap::from([(
                labels::MULTICLUSTER.into(),
                "true".into(),
            )])),
            annotations: Some(BTreeMap::from([(
                labels::CLUSTER_ANNOTATION.into(),
                opts.name.clone(),
            )])),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(opts.name.clone(), kubeconfig)])),
        ..Default::default()
    };
    let yaml = serde_yaml::to_string(&secret).map_err(|e| Error::Render(e.to_string()))?;
    Ok(format!(
        "# This file is autogenerated, do not edit.\n{yaml}"
    ))
}

/// One cluster, context and user, all named after the cluster id, as istioctl writes it.
fn render_kubeconfig(
    opts: &RemoteSecretOptions,
    server: &str,
    ca_pem: &str,
    token: &str,
) -> Result<String, Error> {
    let name = &opts.name;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut cluster = serde_json::json!({"server": server, "certificate-authority-data": ca});
    if let Some(tls_name) = &opts.tls_server_name {
        cluster["tls-server-name"] = tls_name.as_str().into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"token": token}}],
        "current-context": name,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).map_err(|e| Error::Render(e.to_string()))
}

/// A DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', alphanumeric at both ends):
/// the value ends up in object names.
fn check_dns_name(what: &str, value: &str, max: usize) -> Result<(), Error> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !value.is_empty()
        && value.len() <= max
        && value.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && value.starts_with(alnum)
        && value.ends_with(alnum);
    if ok {
        return Ok(());
    }
    Err(Error::Options(format!(
        "{what} {value:?} must be 1-{max} lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
    )))
}

fn check_server(server: &str) -> Result<(), Error> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(()),
        _ => Err(Error::Options(format!(
            "server {server:?} is not an http(s) URL"
        ))),
    }
}

/// A host name or address to check a certificate against: what a SAN can hold.
fn check_tls_server_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '*'));
    if ok {
        return Ok(());
    }
    Err(Error::Options(format!(
        "tls server name {name:?} is not a host name or address"
    )))
}

/// istioctl warns when the kubeconfig's server is on this machine: the other cluster's
/// control plane runs elsewhere and cannot reach it there. Said for any loopback server.
pub fn loopback_warning(server: &str) -> Option<String> {
    let host = url_host(server).trim_end_matches('.').to_ascii_lowercase();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    loopback.then(|| {
        format!(
            "server {server} is a loopback address: other clusters cannot reach this API server there; pass --server with an address they can reach"
        )
    })
}

/// The host of a URL: no scheme, user, port, path or IPv6 brackets.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    }
}

fn api_error(action: String, e: &kube::Error) -> Error {
    Error::Api {
        action,
        reason: describe(e),
    }
}

/// kube's own message for API errors repeats the Status as Debug output; this keeps the
/// server's message, reason and code.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => one_line(&format!("{} ({} {})", s.message, s.code, s.reason)),
        other => one_line(&other.to_string()),
    }
}

/// Parser messages (YAML errors quote the offending lines) folded into one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_becomes_pem_and_pem_is_kept() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x05];
        let pem = normalize_ca(&der).unwrap();
        assert_eq!(
            pem,
            "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(normalize_ca(pem.as_bytes()).unwrap(), pem);
        assert!(normalize_ca(b"").is_err());
        assert!(normalize_ca(b"hello").is_err());
        assert!(normalize_ca(b"-----BEGIN PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(RemoteSecretOptions::new("cluster2").validate().is_ok());
        for bad in ["", "Cluster2", "-a", "a_b", "a b"] {
            let err = RemoteSecretOptions::new(bad).validate().unwrap_err();
            assert!(matches!(err, Error::Options(_)), "{bad}: {err}");
        }
        let mut opts = RemoteSecretOptions::new("c");
        opts.server = Some("cluster2:6443".into());
        assert!(opts.validate().is_err());
        opts.server = None;
        opts.token_duration = Some(Duration::ZERO);
        assert!(opts.validate().is_err());
    }

    /// istioctl's warning for a kubeconfig server on 127.0.0.1 or localhost, here for every
    /// loopback form (127.0.0.0/8, ::1 and its IPv4-mapped form, localhost); none for
    /// addresses other clusters can reach.
    #[test]
    fn loopback_servers_are_warned_about() {
        for server in [
            "https://127.0.0.1:6443",
            "https://127.1.2.3",
            "https://[::1]:6443/",
            "https://[::ffff:127.0.0.1]:443",
            "https://LocalHost:6443",
            "https://localhost.:6443/api",
            "https://api.localhost",
            "https://user@127.0.0.1:6443",
        ] {
            let w = loopback_warning(server).unwrap_or_else(|| panic!("{server}"));
            assert!(w.contains(server) && w.contains("--server"), "{w}");
        }
        for server in [
            "https://172.18.0.3:6443",
            "https://[2001:db8::1]:6443",
            "https://kubernetes.example.com",
            "https://localhost-api.example.com",
            "https://128.0.0.1",
        ] {
            assert_eq!(loopback_warning(server), None, "{server}");
        }
    }

    /// istioctl writes `--tls-server-name` as the cluster's `tls-server-name`, and the
    /// server and CA it was given; without the flag there is no such key.
    #[test]
    fn the_kubeconfig_carries_server_ca_and_tls_server_name() {
        let mut opts = RemoteSecretOptions::new("cluster2");
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
        let plain = render_kubeconfig(&opts, "https://10.0.0.1:6443", pem, "tok").unwrap();
        assert!(!plain.contains("tls-server-name"), "{plain}");
        opts.tls_server_name = Some("kubernetes.default.svc".into());
        let yaml = render_kubeconfig(&opts, "https://10.0.0.1:6443", pem, "tok").unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cluster = kc.clusters[0].cluster.clone().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(
            cluster.tls_server_name.as_deref(),
            Some("kubernetes.default.svc")
        );
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.unwrap())
            .unwrap();
        assert_eq!(ca, pem.as_bytes());
    }

    /// istioctl takes the CA from the token Secret's `ca.crt`; meshfed falls back to the
    /// kubeconfig's only where the Secret has none.
    #[test]
    fn the_token_secrets_ca_wins_over_the_kubeconfigs() {
        let secret = "-----BEGIN CERTIFICATE-----\nU0VDUkVU\n-----END CERTIFICATE-----";
        let kubeconfig = "-----BEGIN CERTIFICATE-----\nS0M=\n-----END CERTIFICATE-----\n";
        let ca = secret_ca(Some(secret.as_bytes()), Some(kubeconfig.into())).unwrap();
        assert_eq!(ca, format!("{secret}\n"));
        let fallback = secret_ca(None, Some(kubeconfig.into())).unwrap();
        assert_eq!(fallback, kubeconfig);
        assert!(matches!(secret_ca(None, None), Err(Error::Ca(_))));
        assert!(matches!(secret_ca(Some(b"junk"), None), Err(Error::Ca(_))));
    }

    #[test]
    fn tls_server_names_are_validated() {
        let mut opts = RemoteSecretOptions::new("c");
        for good in [
            "kubernetes.default.svc",
            "10.0.0.1",
            "2001:db8::1",
            "API.Example.com",
        ] {
            opts.tls_server_name = Some(good.into());
            assert!(opts.validate().is_ok(), "{good}");
        }
        for bad in ["", "a b", "https://x", "x/y"] {
            opts.tls_server_name = Some(bad.into());
            assert!(opts.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_line_folds_newlines() {
        assert_eq!(one_line("a:\n  b\n c "), "a: b c");
    }
}
