//! Transport security for proxyless gRPC clusters (Istio's xDS security for `GENERATOR=grpc`,
//! gRFC A29): certificate provider instances from the client's bootstrap instead of SDS.

use super::ClusterSpec;
use envoy_types::pb::envoy::config::core::v3::TransportSocket;

/// The cluster's transport socket for a proxyless gRPC client, if its endpoints need mTLS.
/// Not built yet: issue 19 point 1 fills this in.
pub fn transport_socket(_spec: &ClusterSpec<'_>, _trust_domain: &str) -> Option<TransportSocket> {
    None
}
