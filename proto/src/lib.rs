//! meshfed's own protobuf contracts, wire compatible with Istio's.
//!
//! Envoy's xDS types are not here: they come from the `envoy-types` crate.

/// Istio's name discovery service (NDS) table, pushed to DNS proxies over ADS.
pub mod nds {
    tonic::include_proto!("istio.networking.nds.v1");

    /// The ADS type URL under which a [`NameTable`] travels.
    pub const NAME_TABLE_TYPE_URL: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";
}

/// Istio's certificate signing service (`istio.v1.auth.IstioCertificateService`).
pub mod ca {
    tonic::include_proto!("istio.v1.auth");

    /// The full gRPC method path Istio's agent calls.
    pub const CREATE_CERTIFICATE_PATH: &str =
        "/istio.v1.auth.IstioCertificateService/CreateCertificate";
}

/// A delta ADS client for meshfed's own xDS consumers.
pub mod ads;

/// How meshfed's gRPC clients (those xDS clients, the agent's CA client) reach the
/// federation: plaintext, or TLS with a ServiceAccount token.
pub mod channel;

/// Test support for meshfed's own tests: the server side of [`channel`]'s TLS for tonic, a
/// stub delta ADS server, a mesh CA. Behind the `testing` feature, which only
/// dev-dependencies turn on.
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod tests;
