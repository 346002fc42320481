//! meshfed's per-pod agent: the part of Istio's agent that plain Envoy sidecars need.
//!
//! It reads the workload's credentials mounted in the pod (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), checks them as a peer would, and serves them to Envoy over SDS on the
//! Unix socket Istio's bootstrap names (`sds-grpc`). Rotated files are checked and pushed;
//! files that fail the checks are refused and the last good credentials stay served. The CA
//! key never enters the pod.

pub mod material;
pub mod sds;
pub mod watch;

use material::Material;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
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
    pub cert_dir: PathBuf,
    pub socket: PathBuf,
    pub poll: Duration,
}

impl AgentConfig {
    pub fn new(cert_dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        AgentConfig {
            cert_dir: cert_dir.into(),
            socket: socket.into(),
            poll: DEFAULT_POLL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Material(#[from] material::Error),
    #[error("{}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("SDS server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub struct Agent {
    socket: PathBuf,
    listener: std::os::unix::net::UnixListener,
    watcher: watch::Watcher,
}

impl Agent {
    /// Loads and checks the credentials in `cert_dir`, then binds `socket` (owner only: the
    /// proxy runs as the same user, and nobody else may read the key through it).
    pub fn bind(config: AgentConfig) -> Result<Agent, Error> {
        let first = Material::load(&config.cert_dir, 1)?;
        let listener = bind_socket(&config.socket)?;
        let watcher = watch::Watcher::new(config.cert_dir, config.poll, first);
        Ok(Agent {
            socket: config.socket,
            listener,
            watcher,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn material(&self) -> std::sync::Arc<Material> {
        self.watcher.material().borrow().clone()
    }

    pub fn status(&self) -> tokio::sync::watch::Receiver<watch::Status> {
        self.watcher.status()
    }

    /// Serves SDS until `shutdown` completes; removes the socket on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Agent {
            socket,
            listener,
            watcher,
        } = self;
        let material = watcher.material();
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| Error::Socket {
                path: socket.clone(),
                source,
            })?;
        let watching = tokio::spawn(watcher.run());
        let served = tonic::transport::Server::builder()
            .add_service(sds::Sds::server(material))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        watching.abort();
        let _ = std::fs::remove_file(&socket);
        Ok(served?)
    }
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
