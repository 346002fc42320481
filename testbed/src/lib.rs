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
pub mod state;

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

/// For errors that already print their causes in their own message (kube's, tonic's,
/// hickory's, the certs crate's and [`Error`]): one anyhow error with that message, since
/// anyhow's `{:#}` would print each cause again after it.
pub(crate) trait OneLine<T> {
    fn one_line(self) -> anyhow::Result<T>;
}

impl<T, E: std::fmt::Display> OneLine<T> for Result<T, E> {
    fn one_line(self) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::msg(e.to_string()))
    }
}
