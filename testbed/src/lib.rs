//! meshfed's local test bed: a small Kubernetes API server that real clients accept,
//! isolated networks (one network namespace per cluster) for multi-network scenarios, the
//! test bed sidecar, and the seed scenario (`meshfed testbed up/demo/fault`).

pub mod apiserver;
pub mod bed;
pub mod kubeconfig;
pub mod mesh_tls;
pub mod netns;
pub mod seed;
pub mod sidecar;

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
