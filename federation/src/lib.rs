//! The federation controller: reads remote secrets, list-watches every cluster's API server
//! and merges what it sees into one registry with the network, cluster and locality of
//! every endpoint; serves that registry over xDS and its state on an admin port.

pub mod admin;
pub mod bounded;
pub mod ca;
pub mod config;
pub mod controllers;
pub mod kubeconfig;
pub mod metrics;
pub mod registry;
pub mod remote_secret;
pub mod secrets;
pub mod secure;
pub mod watch;
pub mod xds;

pub use config::*;
pub use controllers::Controllers;

use kube::Client;
use registry::Registry;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Kubeconfig(String),
    #[error("the CA: {0}")]
    Ca(#[from] ca::Error),
    #[error("xDS server: {0}")]
    Xds(#[from] tonic::transport::Error),
    #[error("{task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
    #[error("{task} stopped")]
    Stopped { task: &'static str },
}

/// The local cluster's client: from `kubeconfig`, else in-cluster or `$KUBECONFIG`. (Remote
/// clusters' clients come from their secrets, checked as hostile input: see [`secrets`].)
pub async fn local_client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let err = |what: String| {
        move |e: kube::config::KubeconfigError| Error::Kubeconfig(format!("{what}: {e}"))
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(err(format!("reading {}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(err(format!("using {}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            Error::Kubeconfig(format!(
                "no kubeconfig given and none found (in-cluster or $KUBECONFIG): {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| Error::Kubeconfig(format!("building the client: {e}")))
}

/// A federation whose sockets are bound; [`Federation::run`] starts the controllers and
/// serves xDS and the admin port until `shutdown` completes.
pub struct Federation {
    config: FederationConfig,
    local: Client,
    registry: Arc<Registry>,
    /// Plaintext ADS, when asked for.
    xds: Option<TcpListener>,
    admin: TcpListener,
    status: Option<TcpListener>,
    /// The secure port and its CA, when there is CA material.
    secure: Option<(TcpListener, ca::Ca)>,
}

impl Federation {
    pub async fn bind(config: FederationConfig, local: Client) -> Result<Federation, Error> {
        let xds = match config.xds_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin = bind(config.admin).await?;
        let status = match config.status {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let secure = match ca::Ca::load(&config.ca, &local, &config.system_namespace).await? {
            Some(ca) => Some((bind(config.secure_listen).await?, ca)),
            None => None,
        };
        let registry = Arc::new(Registry::new(config.registry()));
        Ok(Federation {
            config,
            local,
            registry,
            xds,
            admin,
            status,
            secure,
        })
    }

    /// The secure port's address; `None` when the CA is off (no material).
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where the CA's signing material came from; `None` when the CA is off.
    pub fn ca_origin(&self) -> Option<&ca::cacerts::Origin> {
        self.secure.as_ref().map(|(_, ca)| &ca.origin)
    }

    /// The plaintext ADS address; `None` unless `xds_listen` was given.
    pub fn xds_addr(&self) -> Option<SocketAddr> {
        self.xds.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The registry the controllers fill once running.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Runs until `shutdown`; a part that ends on its own (a panic, a failed xDS server) is
    /// an error naming it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        // Metrics recorded before the recorder exists are lost: install it first.
        metrics::describe();
        let mut controllers =
            Controllers::start_on(self.registry.clone(), self.local, &self.config);
        let admin = tokio::spawn(admin::serve(self.admin, self.registry.clone()));
        let status = self
            .status
            .map(|s| tokio::spawn(admin::serve_status(s, self.registry.clone())));
        let (debounce, limits) = (self.config.debounce, self.config.xds_limits);
        let gateways = self.config.gateways();
        let (mut pusher, pushes) = xds::start_pusher(self.registry, debounce);
        let mut xds = self
            .xds
            .map(|l| tokio::spawn(xds::serve_plain(l, pushes.clone(), limits)));
        let mut secure = match self.secure {
            Some((listener, ca)) => {
                let port = secure::serve(listener, ca, pushes, limits, gateways)?;
                Some(tokio::spawn(port))
            }
            None => None,
        };
        let result = tokio::select! {
            () = shutdown => Ok(()),
            (task, end) = controllers.stopped() => Err(ended(task, end.map(Ok))),
            end = &mut pusher => Err(ended("the xDS pusher", end.map(Ok))),
            end = until_ended(xds.as_mut()) => Err(ended("the xDS server", end)),
            end = until_ended(secure.as_mut()) => Err(ended("the secure port", end)),
        };
        for task in [&xds, &secure].into_iter().flatten() {
            task.abort();
        }
        pusher.abort();
        admin.abort();
        if let Some(s) = &status {
            s.abort();
        }
        result
    }
}

/// The end of an optional task; never, when there is none.
async fn until_ended<T>(
    task: Option<&mut tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Why a task that should run forever ended.
fn ended(
    task: &'static str,
    end: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Error {
    match end {
        Ok(Err(e)) => Error::Xds(e),
        Ok(Ok(())) => Error::Stopped { task },
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Error::Panicked { task, message }
        }
        Err(_) => Error::Stopped { task },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part that panics is reported as a panic with its message, one that returns as stopped.
    #[tokio::test]
    async fn an_ended_task_is_named_and_a_panic_is_a_panic() {
        let panicked = tokio::spawn(async { panic!("registry poisoned") }).await;
        let err = ended("the xDS server", panicked.map(|()| Ok(())));
        assert!(
            matches!(&err, Error::Panicked { task: "the xDS server", message } if message == "registry poisoned"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the xDS server panicked: registry poisoned"
        );
        let returned = tokio::spawn(async {}).await;
        let err = ended("the remote secret controller", returned.map(Ok));
        assert_eq!(err.to_string(), "the remote secret controller stopped");
    }
}
