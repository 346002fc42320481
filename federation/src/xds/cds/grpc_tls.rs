//! Transport security for proxyless gRPC clusters (Istio's xDS security for `GENERATOR=grpc`,
//! gRFC A29): certificate provider instances from the client's bootstrap instead of SDS.
//!
//! Istio's grpcgen builds this `UpstreamTlsContext` only for an explicit `ISTIO_MUTUAL`
//! DestinationRule. meshfed also builds it, with no rule saying otherwise, for a cluster
//! whose endpoints are all mesh workloads (`security.istio.io/tlsMode: istio`) and some of
//! them on another network than the client's: the east-west gateway only relays TLS it can
//! route by SNI, so a plaintext proxyless call could never get there. Within one network the
//! cluster stays plaintext as in Istio, so clients whose bootstrap declares no certificate
//! provider (gRPC rejects a cluster naming an instance its bootstrap lacks) keep working.

use super::ClusterSpec;
use crate::registry::EndpointView;
use crate::xds::node::Proxy;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::util::pack_any;
use meshfed_model::labels::{TLS_MODE, TLS_MODE_ISTIO};

/// The certificate provider instance Istio's grpc bootstrap declares (`file_watcher` over the
/// agent's cert-chain.pem, key.pem and root-cert.pem).
pub const PROVIDER_INSTANCE: &str = "default";
/// Certificate names within that instance, as Istio names them (the file watcher ignores them).
const WORKLOAD_CERT: &str = "default";
const ROOT_CERT: &str = "ROOTCA";
/// The transport socket name gRPC requires (it rejects any other).
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// The cluster's transport socket for `proxy`, a proxyless gRPC client: Istio mTLS when the
/// DestinationRule asks for `ISTIO_MUTUAL`, or when it sets no TLS mode and the cluster's
/// endpoints are all mesh workloads, some across networks. `DISABLE` and the modes gRPC's
/// xDS security cannot express (`SIMPLE`, `MUTUAL` with files) get none.
pub fn transport_socket(
    proxy: &Proxy,
    spec: &ClusterSpec<'_>,
    trust_domain: &str,
) -> Option<TransportSocket> {
    let wanted = match spec.policy["tls"]["mode"].as_str() {
        Some("ISTIO_MUTUAL") => true,
        Some(_) => false,
        None => mesh_across_networks(proxy, spec),
    };
    wanted.then(|| TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            upstream_tls_context(spec, trust_domain),
        ))),
    })
}

/// The cluster's endpoints (its port, its subset's labels) all carry `tlsMode: istio` and
/// some are on a known network other than `proxy`'s (reached through its gateway). A
/// mix with plaintext endpoints cannot be served by one gRPC transport socket (gRPC has no
/// `transport_socket_matches`), so it stays plaintext as before.
fn mesh_across_networks(proxy: &Proxy, spec: &ClusterSpec<'_>) -> bool {
    let endpoints: Vec<_> = spec
        .service
        .endpoints
        .iter()
        .filter(|e| e.service_port == spec.name.port)
        .filter(|e| {
            spec.subset_labels
                .iter()
                .all(|(k, v)| e.labels.get(k) == Some(v))
        })
        .collect();
    let mesh =
        |e: &&EndpointView| e.labels.get(TLS_MODE).map(String::as_str) == Some(TLS_MODE_ISTIO);
    endpoints.iter().all(mesh) && endpoints.iter().any(|e| across(&e.network, &proxy.network))
}

/// Istio's `IsSameOrEmpty`: an unknown network (empty on either side) counts as the same.
fn across(network: &str, client: &str) -> bool {
    !network.is_empty() && !client.is_empty() && network != client
}

/// Istio's proxyless context: the workload certificate and the root from the bootstrap's
/// provider instance, the peer checked against the service's SPIFFE identities, and the
/// `outbound_` SNI the remote network's gateway routes by (gRFC A101; clients without it
/// send their target's host name instead).
// `match_subject_alt_names` is deprecated in Envoy's API for the typed matchers, but it is the
// field gRPC's xDS clients read (gRFC A29) and the one Istio's grpcgen sets.
#[allow(deprecated)]
fn upstream_tls_context(spec: &ClusterSpec<'_>, trust_domain: &str) -> UpstreamTlsContext {
    let instance = |certificate_name: &str| CertificateProviderPluginInstance {
        instance_name: PROVIDER_INSTANCE.into(),
        certificate_name: certificate_name.into(),
    };
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(instance(ROOT_CERT)),
        match_subject_alt_names: super::identities(spec, trust_domain)
            .into_iter()
            .map(|id| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id)),
                ignore_case: false,
            })
            .collect(),
        ..Default::default()
    };
    let common = CommonTlsContext {
        tls_certificate_provider_instance: Some(instance(WORKLOAD_CERT)),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(validation),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: spec.name.sni(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
