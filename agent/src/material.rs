//! The workload's credentials in the layout Istio's agent reads and writes (`cert-chain.pem`,
//! `key.pem`, `root-cert.pem`): mounted in the pod and checked before they are served, or
//! built from bytes the CA client has checked itself.

use meshfed_certs::files::{CERT_CHAIN, KEY, ROOT_CERT};
use meshfed_certs::{Outcome, verify_path};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reasons}", dir.display())]
    Invalid { dir: PathBuf, reasons: String },
    #[error("{}: the files changed while they were read; trying again", dir.display())]
    Changing { dir: PathBuf },
    #[error("{CERT_CHAIN}: the first certificate does not parse")]
    Leaf,
}

/// The three files' bytes, exactly as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
    pub root: Vec<u8>,
}

impl Files {
    pub fn read(dir: &Path) -> Result<Files, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Read { path, source })
        };
        Ok(Files {
            cert_chain: read(CERT_CHAIN)?,
            key: read(KEY)?,
            root: read(ROOT_CERT)?,
        })
    }
}

/// Credentials that passed the checks a peer would make: the key matches the leaf, the chain
/// leads to the root, and nothing has expired. Generation 0 is [`Material::pending`]: nothing
/// to serve yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub files: Files,
    /// The leaf's SPIFFE id (its URI SAN), empty if it has none.
    pub identity: String,
    pub not_after: OffsetDateTime,
    /// Bumped on every change the agent serves; the SDS version.
    pub generation: u64,
}

impl Material {
    /// Reads and checks `dir`. The files are read again after the check and must be unchanged,
    /// so what is served is what was checked even while Kubernetes swaps a Secret volume.
    pub fn load(dir: &Path, generation: u64) -> Result<Material, Error> {
        Material::check(dir, Files::read(dir)?, generation)
    }

    /// As [`Material::load`], for `files` just read from `dir`.
    pub fn check(dir: &Path, files: Files, generation: u64) -> Result<Material, Error> {
        verify(dir)?;
        if Files::read(dir)? != files {
            return Err(Error::Changing {
                dir: dir.to_path_buf(),
            });
        }
        Material::new(files, generation).map_err(|e| Error::Invalid {
            dir: dir.to_path_buf(),
            reasons: e.to_string(),
        })
    }

    /// Material from bytes the caller has checked (the CA client checks an answer against
    /// its own key, identity and roots); this only reads the leaf's identity and expiry.
    pub fn new(files: Files, generation: u64) -> Result<Material, Error> {
        let (identity, not_after) = leaf_facts(&files.cert_chain).ok_or(Error::Leaf)?;
        Ok(Material {
            files,
            identity,
            not_after,
            generation,
        })
    }

    /// Nothing yet: what a CA-mode agent holds until its first certificate arrives. SDS
    /// answers nobody from it.
    pub fn pending() -> Material {
        Material {
            files: Files {
                cert_chain: Vec::new(),
                key: Vec::new(),
                root: Vec::new(),
            },
            identity: String::new(),
            not_after: OffsetDateTime::UNIX_EPOCH,
            generation: 0,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.generation == 0
    }
}

fn verify(dir: &Path) -> Result<(), Error> {
    let report = verify_path(dir, OffsetDateTime::now_utc());
    if !report.failed() {
        return Ok(());
    }
    let reasons = report
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| format!("{}: {}", c.what, c.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Invalid {
        dir: dir.to_path_buf(),
        reasons,
    })
}

fn leaf_facts(chain_pem: &[u8]) -> Option<(String, OffsetDateTime)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let identity = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
                _ => None,
            })
        })
        .unwrap_or_default();
    Some((identity, cert.validity().not_after.to_datetime()))
}

#[cfg(test)]
pub(crate) mod tests;
