//! What the CA benchmark runs against: a test bed API server on a runtime of its own (one
//! thread, named so its CPU can be read apart from the load generator's), ServiceAccounts
//! with `istio-ca` tokens, a root and intermediate in Istio's `cacerts` layout, and a
//! `meshfed federation` process pinned to the server core serving the CA on its secure port.

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId,
};
use meshfed_testbed::ApiServer;
use serde_json::json;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The namespace every benchmark account lives in.
pub const NAMESPACE: &str = "bench";
/// What Istio's agents put in `CA_ADDR` and check the CA's certificate against.
pub const SERVER_NAME: &str = "istiod.istio-system.svc";
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The API server's threads: their CPU is the API server's.
pub const API_THREAD: &str = "apiserver";
/// How long the benchmark's tokens live (longer than a round).
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The API server and the runtime that runs it (dropped after the server).
pub struct Api {
    pub server: ApiServer,
    _runtime: tokio::runtime::Runtime,
}

/// Starts the API server on a one-thread runtime named [`API_THREAD`], with the system
/// namespace and the benchmark's namespace.
pub fn api_server() -> Result<Api, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(API_THREAD)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // block_on polls start() here, but every task it spawns goes to the runtime's thread.
    let server = runtime.block_on(crate::federation::server("cluster1"))?;
    for ns in [
        json!({"metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": "network1"}}}),
        json!({"metadata": {"name": NAMESPACE}}),
    ] {
        server.insert("Namespace", "", ns).map_err(|e| e.message)?;
    }
    Ok(Api {
        server,
        _runtime: runtime,
    })
}

/// One caller: a ServiceAccount, its `istio-ca` token, the identity it may ask for.
#[derive(Clone)]
pub struct Account {
    pub token: String,
    pub identity: SpiffeId,
}

/// Creates ServiceAccount `name` and issues its token as TokenRequest would.
pub fn account(api: &ApiServer, name: &str) -> Result<Account, String> {
    api.insert(
        "ServiceAccount",
        NAMESPACE,
        json!({"metadata": {"name": name}}),
    )
    .map_err(|e| e.message)?;
    let token = api
        .token(NAMESPACE, name, &["istio-ca"], TOKEN_TTL)
        .map_err(|e| e.message)?;
    let identity = SpiffeId::new(TRUST_DOMAIN, NAMESPACE, name).map_err(|e| e.to_string())?;
    Ok(Account { token, identity })
}

/// A root and the cluster's intermediate, written in Istio's `cacerts` layout to `dir`.
pub struct Material {
    pub dir: PathBuf,
    pub intermediate: CertificateAuthority,
}

impl Material {
    pub fn root_pem(&self) -> &str {
        self.intermediate.root_pem()
    }
}

pub fn material(dir: &Path) -> Result<Material, String> {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed bench".into(),
        days: 3650,
        key: KeyAlgorithm::EcdsaP256,
    })
    .map_err(|e| e.to_string())?;
    let intermediate = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "cluster1".into(),
            days: 730,
            key: KeyAlgorithm::EcdsaP256,
        })
        .map_err(|e| e.to_string())?;
    let dir = dir.join("cacerts");
    meshfed_certs::write_outputs(&dir, &intermediate.cacerts_files(), false)
        .map_err(|e| e.to_string())?;
    Ok(Material { dir, intermediate })
}

/// The `meshfed federation` process; killed when dropped.
pub struct Federation {
    child: Child,
    pub secure: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Federation {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// Starts `meshfed federation` on `core` with the CA material of `cacerts`, its secure and
/// admin ports on free loopback ports; returns once it has said where they are.
pub fn federation(
    meshfed: &Path,
    core: usize,
    api: &ApiServer,
    cacerts: &Path,
    dir: &Path,
) -> Result<Federation, String> {
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)
        .map_err(|e| e.to_string())?;
    let log = dir.join("federation.log");
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(meshfed)
        .args([
            "federation",
            "--cluster-id",
            "cluster1",
            "--network",
            "network1",
        ])
        .args(["--admin", "127.0.0.1:0", "--secure-listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cacerts")
        .arg(cacerts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", meshfed.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let read = reader.read_line(&mut line);
    // Whatever it prints later must not fill a pipe nobody reads.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let mut fed = Federation {
        child,
        secure: "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?,
        admin: "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?,
        log,
    };
    read.map_err(|e| e.to_string())?;
    let (secure, admin) = addresses(&line)
        .ok_or_else(|| format!("no addresses in {line:?}; log:\n{}", fed.log_tail()))?;
    (fed.secure, fed.admin) = (secure, admin);
    Ok(fed)
}

/// The secure and admin addresses of the federation's start-up line ("… admin ADDR; secure
/// port ADDR: CA signing …").
fn addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let secure = line.split("secure port ").nth(1)?.split(": ").next()?;
    let admin = line
        .split("admin ")
        .nth(1)?
        .split([',', ';'])
        .next()?
        .trim();
    Some((secure.parse().ok()?, admin.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start-up line as `meshfed federation` prints it with the CA on.
    #[test]
    fn reads_both_addresses_from_the_start_up_line() {
        let line = "federation for cluster1 on network1 (plaintext xds off, admin 127.0.0.1:4000; secure port 127.0.0.1:4001: CA signing with cacerts directory x, authenticated xDS)";
        let (secure, admin) = addresses(line).expect("addresses");
        assert_eq!(secure.port(), 4001);
        assert_eq!(admin.port(), 4000);
        assert!(addresses("federation for c1 on n1 (plaintext xds off, admin 127.0.0.1:4000; CA and secure port off)").is_none());
    }
}
