//! Certificate authority material for a multi-cluster mesh.
//!
//! One shared root; one intermediate CA per cluster in Istio's `cacerts` layout; SPIFFE
//! workload certificates issued by an intermediate. rcgen makes certificates,
//! x509-parser checks them. Everything that leaves this crate is PEM text, so callers
//! (CLI, test bed, CA service) never handle DER or key types themselves.

mod authority;
mod csr;
mod duration;
mod error;
mod key;
mod output;
mod pem;
mod secret;
mod spiffe;
mod verify;

pub use authority::{
    CertificateAuthority, Csr, IntermediateOptions, RootOptions, WorkloadCert, WorkloadOptions,
};
pub use csr::{WorkloadCsr, workload_csr};
pub use duration::{format_duration, parse_duration};
pub use error::{Error, Result};
pub use key::KeyAlgorithm;
pub use output::{OutputFile, write_outputs};
pub use secret::cacerts_secret_yaml;
pub use spiffe::SpiffeId;
pub use verify::{Check, Outcome, Report, verify_path};

/// File names of Istio's `cacerts` layout and of a workload's credentials.
pub mod files {
    pub const ROOT_CERT: &str = "root-cert.pem";
    pub const ROOT_KEY: &str = "root-key.pem";
    pub const CA_CERT: &str = "ca-cert.pem";
    pub const CA_KEY: &str = "ca-key.pem";
    pub const CERT_CHAIN: &str = "cert-chain.pem";
    pub const KEY: &str = "key.pem";
}
