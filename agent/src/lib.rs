//! meshfed's per-pod agent: the part of Istio's agent that plain Envoy sidecars need.
//!
//! Its credentials come from one of two places. Mounted files (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), checked as a peer would check them and followed as they rotate; files
//! that fail the checks are refused and the last good credentials stay served. Or, in CA
//! mode ([`ca`]), the federation's CA: the key is made in the pod, a CSR goes to
//! `IstioCertificateService` with the pod's ServiceAccount token, and the certificate is
//! renewed at half-life. Either way they are served to Envoy over SDS on the Unix socket
//! Istio's bootstrap names (`sds-grpc`), and the CA key never enters the pod.

pub mod admin;
pub mod ca;
pub mod material;
pub mod metrics;
pub mod output;
pub mod sds;
pub mod status;
pub mod watch;

pub use ca::CaConfig;
pub use status::{FailureReason, Status};

use material::Material;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::UnixListenerStream;

/// Istio's SDS socket: where its sidecar bootstrap's `sds-grpc` cluster points.
pub const DEFAULT_SOCKET: &str = "/var/run/secrets/workload-spiffe-uds/socket";

/// Where the pod's credentials are mounted (Istio's `/etc/certs`).
pub const DEFAULT_CERT_DIR: &str = "/etc/certs";
/// How often the mounted files are checked for rotation.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Where the agent's credentials come from and where it serves them.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Mounted-files mode: the directory followed (unused in CA mode).
    pub cert_dir: PathBuf,
    pub socket: PathBuf,
    pub poll: Duration,
    /// CA mode: certificates requested from the CA instead of read from `cert_dir`.
    pub ca: Option<CaConfig>,
    /// `/healthz/ready` and `/metrics`; None serves neither.
    pub admin: Option<SocketAddr>,
}

impl AgentConfig {
    /// Mounted-files mode.
    pub fn new(cert_dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        AgentConfig {
            cert_dir: cert_dir.into(),
            socket: socket.into(),
            poll: DEFAULT_POLL,
            ca: None,
            admin: None,
        }
    }

    /// CA mode.
    pub fn with_ca(ca: CaConfig, socket: impl Into<PathBuf>) -> Self {
        AgentConfig {
            ca: Some(ca),
            ..AgentConfig::new(DEFAULT_CERT_DIR, socket)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Material(#[from] material::Error),
    #[error(transparent)]
    Ca(#[from] ca::Error),
    #[error("{}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("admin address {addr}: {error}")]
    Admin {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("SDS server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Where the served credentials come from.
enum Source {
    Files(watch::Watcher),
    Ca(Box<ca::Renewer>),
}

pub struct Agent {
    socket: PathBuf,
    listener: std::os::unix::net::UnixListener,
    admin: Option<std::net::TcpListener>,
    source: Source,
}

impl Agent {
    /// Mounted files: loads and checks the credentials in `cert_dir` first. CA mode: checks
    /// the configuration and settles the identity; the first certificate is asked for by
    /// [`Agent::run`], and SDS holds its answers until it arrives. Then binds `socket` (owner
    /// only: the proxy runs as the same user, and nobody else may read the key through it).
    pub fn bind(config: AgentConfig) -> Result<Agent, Error> {
        let source = match &config.ca {
            Some(ca) => Source::Ca(Box::new(ca::Renewer::new(ca)?)),
            None => {
                let first = Material::load(&config.cert_dir, 1)?;
                metrics::global().served(&first, false);
                Source::Files(watch::Watcher::new(config.cert_dir, config.poll, first))
            }
        };
        let admin = config.admin.map(bind_admin).transpose()?;
        let listener = bind_socket(&config.socket)?;
        Ok(Agent {
            socket: config.socket,
            listener,
            admin,
            source,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// CA mode: the CA's address.
    pub fn ca_address(&self) -> Option<&str> {
        match &self.source {
            Source::Ca(r) => Some(r.address()),
            Source::Files(_) => None,
        }
    }

    /// The SPIFFE id served: the one asked for in CA mode, the files' leaf's otherwise
    /// (empty if it has none).
    pub fn identity(&self) -> String {
        match &self.source {
            Source::Ca(r) => r.identity().to_string(),
            Source::Files(w) => w.material().borrow().identity.clone(),
        }
    }

    /// What is served now ([`Material::is_pending`] before a CA-mode agent's first
    /// certificate).
    pub fn material(&self) -> Arc<Material> {
        self.material_watch().borrow().clone()
    }

    /// What is served, as it changes.
    pub fn material_watch(&self) -> tokio::sync::watch::Receiver<Arc<Material>> {
        match &self.source {
            Source::Files(w) => w.material(),
            Source::Ca(r) => r.material(),
        }
    }

    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        match &self.source {
            Source::Files(w) => w.status(),
            Source::Ca(r) => r.status(),
        }
    }

    /// Serves SDS (and the admin port) until `shutdown` completes; removes the socket on the
    /// way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let material = self.material_watch();
        let Agent {
            socket,
            listener,
            admin,
            source,
        } = self;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| Error::Socket {
                path: socket.clone(),
                source,
            })?;
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(admin) = admin {
            let addr = admin
                .local_addr()
                .map_err(|source| admin_error(None, source))?;
            let admin = tokio::net::TcpListener::from_std(admin)
                .map_err(|source| admin_error(Some(addr), source))?;
            tasks.spawn(meshfed_model::admin::serve(
                admin,
                admin::route(material.clone()),
            ));
        }
        match source {
            Source::Files(w) => tasks.spawn(w.run()),
            Source::Ca(r) => tasks.spawn(r.run()),
        };
        let served = tonic::transport::Server::builder()
            .add_service(sds::Sds::server(material))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        tasks.abort_all();
        let _ = std::fs::remove_file(&socket);
        Ok(served?)
    }
}

fn admin_error(addr: Option<SocketAddr>, source: std::io::Error) -> Error {
    let addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Error::Admin {
        addr,
        error: source,
    }
}

fn bind_admin(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let err = |error| Error::Admin { addr, error };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
    let err = |source| Error::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        // A socket left by an earlier run of this container; nothing else is removed.
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(Error::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}
