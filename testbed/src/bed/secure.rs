//! How a cluster's workloads and components reach the federation's secure port, as pods
//! reach istiod's 15012: TLS checked against the mesh root under the federation's Service
//! name, and a projected ServiceAccount token for an account of the namespace their xDS node
//! claims (the secure port admits no other).

use super::agents::FEDERATION_NAME;
use super::tokens::{Owner, TokenFile};
use anyhow::Context;
use meshfed_proto::ads::XdsServer;
use meshfed_proto::channel::ClientTls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The ServiceAccounts of the components that reach the federation's secure port: the
/// gateway's is the one `--gateway-identities` admits as a router by default; the DNS proxy
/// plays a node-local resolver for `sample`, its node's namespace, so its account is there.
pub const GATEWAY_ACCOUNT: (&str, &str) = ("istio-system", "meshfed-gateway");
pub const DNS_ACCOUNT: (&str, &str) = ("sample", "meshfed-dns");

/// How a cluster's workloads and components reach the federation's secure port: the mesh
/// root they check it against, and where kubelet (the bed) puts each one's projected token.
pub struct Secure {
    pub root: PathBuf,
    pub sleep_token: PathBuf,
    pub hello_token: PathBuf,
    pub gateway_token: PathBuf,
    pub dns_token: PathBuf,
}

impl Secure {
    pub fn new(dir: &Path, root: PathBuf) -> anyhow::Result<Secure> {
        let tokens = dir.join("tokens");
        crate::state::private_dir(&tokens)?;
        Ok(Secure {
            root,
            sleep_token: tokens.join("sleep"),
            hello_token: tokens.join("helloworld"),
            gateway_token: tokens.join("meshfed-gateway"),
            dns_token: tokens.join("meshfed-dns"),
        })
    }

    /// sleep's and helloworld's tokens are their pods' (bound to them, as a projected volume's
    /// are); the components have no Pod object here, so theirs are their accounts'.
    pub fn token_files(&self, hello_pod: &str) -> Vec<TokenFile> {
        let file = |path: &Path, namespace: &str, owner| TokenFile {
            path: path.to_path_buf(),
            namespace: namespace.into(),
            owner,
        };
        vec![
            file(&self.sleep_token, "sample", Owner::Pod("sleep".into())),
            file(&self.hello_token, "sample", Owner::Pod(hello_pod.into())),
            file(
                &self.gateway_token,
                GATEWAY_ACCOUNT.0,
                Owner::Account(GATEWAY_ACCOUNT.1.into()),
            ),
            file(
                &self.dns_token,
                DNS_ACCOUNT.0,
                Owner::Account(DNS_ACCOUNT.1.into()),
            ),
        ]
    }

    /// The federation's secure port as an xDS client with `token` reaches it.
    pub fn xds_server(&self, secure: SocketAddr, token: &Path) -> anyhow::Result<XdsServer> {
        let roots_pem = std::fs::read(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?;
        Ok(XdsServer {
            address: format!("https://{secure}"),
            tls: Some(ClientTls {
                roots_pem,
                server_name: Some(FEDERATION_NAME.into()),
            }),
            token_file: Some(token.to_path_buf()),
        })
    }

    /// The gateway's and DNS proxy's flags for the same.
    pub fn xds_args(&self, secure: SocketAddr, token: &Path) -> Vec<String> {
        [
            "--xds",
            &format!("https://{secure}"),
            "--xds-ca-root",
            &self.root.display().to_string(),
            "--xds-server-name",
            FEDERATION_NAME,
            "--xds-token-file",
            &token.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}
