//! meshfed's local test bed: a small Kubernetes API server that real clients accept, and
//! isolated networks (one network namespace per cluster) for multi-network scenarios.

pub mod apiserver;
pub mod bench;
pub mod judges;
pub mod kubeconfig;
pub mod mesh_tls;
pub mod netns;
pub mod seed;
pub mod sidecar;
pub mod testbed;

pub use apiserver::{ApiServer, ApiServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Certs(#[from] meshfed_certs::Error),
    #[error("{0}")]
    Network(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
