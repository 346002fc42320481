use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every message is one line: the CLI prints it as the whole reason for failing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("refusing to overwrite {} (use --force)", list(.0))]
    WouldOverwrite(Vec<PathBuf>),
    #[error("invalid SPIFFE ID {id:?}: {reason}")]
    Spiffe { id: String, reason: &'static str },
    #[error("invalid duration {0:?}: use a number with ms, s, m, h or d, e.g. 24h, 90m or 5ms")]
    Duration(String),
    #[error("unknown key type {0:?}: use ecdsa-p256, rsa-2048 or rsa-4096")]
    KeyAlgorithm(String),
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
