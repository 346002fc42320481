//! Test support shared by meshfed's tests (proto's, the agent's, the gateway's), so that each
//! suite does not write its own TLS server for tonic: the federation's secure port as a test
//! stands it up (a rustls server configuration with ring and ALPN `h2`, optionally checking
//! client certificates, and an [`incoming::TlsIncoming`] stream for tonic's
//! `serve_with_incoming`), a stub delta ADS server, a mesh CA and the `authorization` header
//! as a server reads it.
//!
//! Only the `testing` feature builds this module; production crates never turn it on.

pub mod incoming;
pub mod stub_ads;
pub mod tls;

pub use incoming::{Handshake, TlsConnectInfo, TlsIncoming, TlsIo};
pub use stub_ads::{DeltaStream, StubAds};
pub use tls::{Error, server_config, serving_config};

use meshfed_certs::{CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions};
use tonic::metadata::MetadataMap;

/// A root (organisation "meshfed test") and the intermediate for `cluster` it issues, as a
/// cluster's `cacerts` has them; both valid for a day, ECDSA P-256.
pub fn mesh_ca(cluster: &str) -> Result<CertificateAuthority, meshfed_certs::Error> {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "meshfed test".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })?;
    root.issue_intermediate(&IntermediateOptions {
        cluster: cluster.into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
}

/// The `authorization` header as the client sent it (`Bearer <token>`), if it is text.
pub fn authorization(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("authorization")?;
    value.to_str().ok().map(str::to_string)
}

/// The token of a `Bearer` `authorization` header, as Istio's CA reads the caller's
/// ServiceAccount token.
pub fn bearer_token(metadata: &MetadataMap) -> Option<String> {
    let header = authorization(metadata)?;
    header.strip_prefix("Bearer ").map(str::to_string)
}

#[cfg(test)]
mod tests;
