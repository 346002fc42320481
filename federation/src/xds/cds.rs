//! CDS: one EDS cluster per service port and per DestinationRule subset, with the rule's load
//! balancer, outlier detection and locality settings, and (for Envoy) the mTLS transport
//! socket that endpoints marked `tlsMode: istio` (remote networks' gateways) are reached with.

use super::locality::LocalityPolicy;
use super::node::{Generator, Proxy, ProxyKind};
use super::rules::{self, Rule};
use crate::registry::{ServiceView, Snapshot};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    TransportSocket, api_config_source, config_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration, Struct, UInt32Value, Value, value};
use envoy_types::util::pack_any;
use meshfed_model::ClusterName;
use meshfed_proto::ads::{SDS_CLUSTER, SDS_ROOT_SECRET, SDS_WORKLOAD_SECRET};
use serde_json::Value as Json;

/// One cluster the proxy should have, before it is written as Envoy's `Cluster`.
pub struct ClusterSpec<'a> {
    pub name: ClusterName,
    pub service: &'a ServiceView,
    pub subset_labels: std::collections::BTreeMap<String, String>,
    pub policy: Json,
}

/// Every cluster `proxy` gets: sidecars `outbound|port|subset|fqdn`, routers the same
/// clusters keyed by their SNI name (Istio's sni-dnat clusters).
pub fn specs<'a>(snapshot: &'a Snapshot, rules: &[Rule], proxy: &Proxy) -> Vec<ClusterSpec<'a>> {
    let mut out = Vec::new();
    for svc in &snapshot.services {
        let rule = rules::find(rules, &svc.hostname, &svc.namespace, &proxy.namespace);
        for port in &svc.ports {
            out.push(ClusterSpec {
                name: ClusterName::new(port.port, None, &svc.hostname),
                service: svc,
                subset_labels: Default::default(),
                policy: rule.map(|r| r.policy(None).clone()).unwrap_or(Json::Null),
            });
            for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
                out.push(ClusterSpec {
                    name: ClusterName::new(port.port, Some(&subset.name), &svc.hostname),
                    service: svc,
                    subset_labels: subset.labels.clone(),
                    policy: rule
                        .map(|r| r.policy(Some(&subset.name)).clone())
                        .unwrap_or(Json::Null),
                });
            }
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
        outlier_detection: outlier_detection(&tp["outlierDetection"]),
        ..Default::default()
    };
    let locality = LocalityPolicy::from_traffic_policy(tp);
    let min_health = tp["outlierDetection"]["minHealthPercent"].as_f64();
    if !locality.distribute.is_empty() || min_health.is_some() {
        let mut common = cluster::CommonLbConfig::default();
        if !locality.distribute.is_empty() {
            common.locality_config_specifier = Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            );
        }
        common.healthy_panic_threshold = min_health.map(|value| Percent { value });
        c.common_lb_config = Some(common);
    }
    if proxy.generator == Generator::Envoy && proxy.kind == ProxyKind::Sidecar {
        c.transport_socket_matches = transport_socket_matches(spec, trust_domain);
    }
    if proxy.generator == Generator::Grpc {
        c.transport_socket = grpc_tls::transport_socket(spec, trust_domain);
    }
    c
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

/// Istio's `outlierDetection` in Envoy's terms (the deprecated `consecutiveErrors` counts as
/// gateway errors, as Istio reads it).
fn outlier_detection(od: &Json) -> Option<OutlierDetection> {
    if !od.is_object() {
        return None;
    }
    let count = |k: &str| od[k].as_u64().map(|v| v.min(u64::from(u32::MAX)) as u32);
    let enforce = |v: Option<u32>| {
        v.map(|v| UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    let u32v = |v: Option<u32>| v.map(|value| UInt32Value { value });
    let gateway = count("consecutiveGatewayErrors").or(count("consecutiveErrors"));
    let five = count("consecutive5xxErrors");
    Some(OutlierDetection {
        consecutive_5xx: u32v(five),
        enforcing_consecutive_5xx: enforce(five),
        consecutive_gateway_failure: u32v(gateway),
        enforcing_consecutive_gateway_failure: enforce(gateway),
        consecutive_local_origin_failure: u32v(count("consecutiveLocalOriginFailures")),
        split_external_local_origin_errors: od["splitExternalLocalOriginErrors"]
            .as_bool()
            .unwrap_or(false),
        interval: duration(&od["interval"]),
        base_ejection_time: duration(&od["baseEjectionTime"]),
        max_ejection_percent: u32v(count("maxEjectionPercent")),
        ..Default::default()
    })
}

/// Istio's durations: a number with `h`, `m`, `s` or `ms` (fractions allowed).
pub fn duration(v: &Json) -> Option<Duration> {
    let s = v.as_str()?.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration {
        seconds: secs.trunc() as i64,
        nanos: (secs.fract() * 1e9).round() as i32,
    })
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
    let mut accounts: Vec<String> = spec
        .service
        .endpoints
        .iter()
        .filter(|e| !e.service_account.is_empty())
        .map(|e| {
            format!(
                "spiffe://{trust_domain}/ns/{}/sa/{}",
                spec.service.namespace, e.service_account
            )
        })
        .collect();
    accounts.sort();
    accounts.dedup();
    let sans = accounts
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

fn sds_grpc() -> ConfigSource {
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

#[cfg(test)]
mod tests;
