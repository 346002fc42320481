//! CDS: one EDS cluster per service port (UDP ports excepted) and per DestinationRule subset,
//! with the rule's load balancer, outlier detection, connection pool (circuit breakers) and
//! locality settings for that port and subset, HTTP/2 upstream options for HTTP/2 ports
//! (Envoy), and (for Envoy) the mTLS transport socket that endpoints marked `tlsMode: istio`
//! (remote networks' gateways) are reached with.

use super::locality::LocalityPolicy;
use super::node::{Generator, Proxy, ProxyKind};
use super::rules::{self, Rule};
use crate::registry::{PortView, ServiceView, Snapshot};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    TransportSocket, api_config_source, config_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Duration, Struct, Value, value};
use envoy_types::util::pack_any;
use meshfed_model::ClusterName;
use meshfed_proto::ads::{SDS_CLUSTER, SDS_ROOT_SECRET, SDS_WORKLOAD_SECRET};
use serde_json::Value as Json;

/// One cluster the proxy should have, before it is written as Envoy's `Cluster`.
pub struct ClusterSpec<'a> {
    pub name: ClusterName,
    pub service: &'a ServiceView,
    pub port: &'a PortView,
    pub subset_labels: std::collections::BTreeMap<String, String>,
    /// The DestinationRule's policy for this port and subset ([`Rule::policy`]).
    pub policy: Json,
}

/// Every cluster `proxy` gets: sidecars `outbound|port|subset|fqdn`, routers the same
/// clusters keyed by their SNI name (Istio's sni-dnat clusters). UDP ports get none, as
/// Istio builds no cluster for them (Envoy does not proxy UDP).
pub fn specs<'a>(snapshot: &'a Snapshot, rules: &[Rule], proxy: &Proxy) -> Vec<ClusterSpec<'a>> {
    let mut out = Vec::new();
    for svc in &snapshot.services {
        let rule = rules::find(rules, &svc.hostname, &svc.namespace, &proxy.namespace);
        for port in svc.ports.iter().filter(|p| !protocol::is_udp(p)) {
            let spec = |subset: Option<&rules::SubsetRule>| ClusterSpec {
                name: ClusterName::new(port.port, subset.map(|s| s.name.as_str()), &svc.hostname),
                service: svc,
                port,
                subset_labels: subset.map(|s| s.labels.clone()).unwrap_or_default(),
                policy: rule.map_or(Json::Null, |r| {
                    r.policy(subset.map(|s| s.name.as_str()), port.port)
                }),
            };
            out.push(spec(None));
            out.extend(
                rule.iter()
                    .flat_map(|r| r.subsets.iter())
                    .map(|s| spec(Some(s))),
            );
        }
    }
    out
}

/// The resource name a proxy knows a cluster by.
pub fn resource_name(proxy: &Proxy, name: &ClusterName) -> String {
    match proxy.kind {
        ProxyKind::Router => name.sni(),
        ProxyKind::Sidecar => name.cluster(),
    }
}

/// The cluster `proxy` gets for `spec`; peers' SPIFFE ids are in `trust_domain`.
pub fn cluster(proxy: &Proxy, spec: &ClusterSpec<'_>, trust_domain: &str) -> Cluster {
    let name = resource_name(proxy, &spec.name);
    let tp = &spec.policy;
    let mut c = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name,
        }),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: lb_policy(&tp["loadBalancer"]["simple"]) as i32,
        outlier_detection: outlier::detection(&tp["outlierDetection"]),
        common_lb_config: common_lb_config(tp),
        ..Default::default()
    };
    pool::apply(&mut c, proxy.generator, tp);
    if proxy.generator == Generator::Envoy {
        // Proxyless gRPC speaks HTTP/2 anyway; Istio's grpcgen sends no such options.
        c.typed_extension_protocol_options = protocol::options(spec.port, tp);
    }
    if proxy.generator == Generator::Envoy && proxy.kind == ProxyKind::Sidecar {
        c.transport_socket_matches = transport_socket_matches(spec, trust_domain);
    }
    if proxy.generator == Generator::Grpc {
        c.transport_socket = grpc_tls::transport_socket(proxy, spec, trust_domain);
    }
    c
}

/// Locality weights and the panic threshold. Envoy reads EDS locality weights only with
/// `locality_weighted_lb_config`, which Istio sets for `distribute`, and for `failover` or
/// `failoverPriority` once outlier detection makes them act (`LocalityLBSettings.ApplyToCluster`).
fn common_lb_config(tp: &Json) -> Option<cluster::CommonLbConfig> {
    let weighted = LocalityPolicy::from_traffic_policy(tp).weighted();
    let panic = outlier::panic_threshold(&tp["outlierDetection"]);
    if !weighted && panic.is_none() {
        return None;
    }
    Some(cluster::CommonLbConfig {
        locality_config_specifier: weighted.then_some(
            cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        ),
        healthy_panic_threshold: panic,
        ..Default::default()
    })
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn lb_policy(simple: &Json) -> cluster::LbPolicy {
    match simple.as_str() {
        Some("LEAST_CONN" | "LEAST_REQUEST") => cluster::LbPolicy::LeastRequest,
        Some("RANDOM") => cluster::LbPolicy::Random,
        _ => cluster::LbPolicy::RoundRobin,
    }
}

/// Endpoints behind a remote gateway carry `tlsMode: istio`: those get Istio mTLS with the
/// `outbound_` SNI the gateway routes by; the rest plain TCP (Istio's two matches).
fn transport_socket_matches(
    spec: &ClusterSpec<'_>,
    trust_domain: &str,
) -> Vec<cluster::TransportSocketMatch> {
    let tls = UpstreamTlsContext {
        common_tls_context: Some(istio_tls_context(spec, trust_domain)),
        sni: spec.name.sni(),
        ..Default::default()
    };
    let socket = |name: &str, any| TransportSocket {
        name: name.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
    };
    let tls_match = Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(value::Kind::StringValue("istio".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    vec![
        cluster::TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(tls_match),
            transport_socket: Some(socket("envoy.transport_sockets.tls", pack_any(tls))),
        },
        cluster::TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(socket(
                "envoy.transport_sockets.raw_buffer",
                pack_any(
                    envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer {},
                ),
            )),
        },
    ]
}

/// Certificates from the Istio agent's SDS (`default`, `ROOTCA` on the bootstrap's
/// `sds-grpc` cluster), peers checked against the service's SPIFFE identities.
fn istio_tls_context(spec: &ClusterSpec<'_>, trust_domain: &str) -> CommonTlsContext {
    let sds = |name: &str| SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(sds_grpc()),
    };
    let sans = identities(spec, trust_domain)
        .into_iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id)),
                ignore_case: false,
            }),
            oid: String::new(),
        })
        .collect();
    CommonTlsContext {
        alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
        tls_certificate_sds_secret_configs: vec![sds(SDS_WORKLOAD_SECRET)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(SDS_ROOT_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// `spiffe://<trust domain>/ns/<ns>/sa/<sa>` of every endpoint of the service, sorted and
/// once each (Istio's ServiceAccounts(hostname, namespace)).
fn identities(spec: &ClusterSpec<'_>, trust_domain: &str) -> Vec<String> {
    // Thousands of endpoints share a handful of accounts: one id per account, not endpoint.
    let accounts: std::collections::BTreeSet<&str> = spec
        .service
        .endpoints
        .iter()
        .map(|e| &*e.service_account)
        .filter(|sa| !sa.is_empty())
        .collect();
    accounts
        .into_iter()
        .map(|sa| {
            format!(
                "spiffe://{trust_domain}/ns/{}/sa/{sa}",
                spec.service.namespace
            )
        })
        .collect()
}

pub(crate) fn sds_grpc() -> ConfigSource {
    let service = GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
            grpc_service::EnvoyGrpc {
                cluster_name: SDS_CLUSTER.into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![service],
                ..Default::default()
            },
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

mod grpc_tls;
pub mod inbound;
mod outlier;
mod pool;
pub mod protocol;

#[cfg(test)]
mod tests;
