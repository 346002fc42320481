//! An Envoy sidecar's inbound listener `virtualInbound` on 0.0.0.0:15006, as Istio's
//! `listener_inbound.go` builds it: per app port of the proxy's own endpoints two filter
//! chains, one for Istio mTLS (`transport_protocol: tls`; the workload certificate `default`
//! and root `ROOTCA` over SDS, a client certificate required, peers under
//! `spiffe://<trust domain>/`) and one for plain TCP (`raw_buffer`), each a TCP proxy to
//! `inbound|P||` (the cluster comes over CDS, [`crate::xds::cds::inbound`]). The mTLS chain
//! logs each connection's peer identity once connected (`inbound_mtls peer=...`, what the
//! kind bed's `mtls_identity` step reads).
//!
//! Ports: an endpoint whose target port is the sidecar's own 15006 (the kind bed's no-capture
//! convention: the Service targets the sidecar) gets chains that match any destination port
//! and lead to `inbound|<service port>||`; any other gets chains on `destination_port: P` to
//! `inbound|P||`. HTTP ports are proxied as TCP too (Istio would run an HTTP connection
//! manager there; meshfed applies no inbound HTTP policy). A proxy with no endpoints of its
//! own gets no inbound listener (Envoy refuses a listener without filter chains).

use super::super::cds::{inbound, sds_grpc};
use super::super::node::{Interception, Proxy};
use super::sidecar::{network_filter, socket};
use super::tcp::TCP_PROXY_FILTER;
use crate::registry::EndpointView;
use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, TrafficDirection, TransportSocket, data_source,
    substitution_format_string, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use meshfed_proto::ads::{SDS_ROOT_SECRET, SDS_WORKLOAD_SECRET};
use std::collections::BTreeMap;

/// Istio's name for the inbound listener.
pub const VIRTUAL_INBOUND: &str = "virtualInbound";

/// The log line each mTLS connection writes once it is through.
pub const MTLS_LOG_FORMAT: &str = "inbound_mtls peer=%DOWNSTREAM_PEER_URI_SAN% serial=%DOWNSTREAM_PEER_SERIAL% issuer=\"%DOWNSTREAM_PEER_ISSUER%\"\n";

/// The proxy's own app ports: destination port to match (None: any, the kind convention)
/// and the app port behind it, from its own endpoints `own` in registry order.
pub fn own_ports(own: &[&EndpointView]) -> BTreeMap<Option<u16>, u16> {
    let mut out = BTreeMap::new();
    for &e in own {
        let matched = (e.port != inbound::INBOUND_PORT).then_some(e.port);
        // The first in registry order wins when one destination port would lead to several
        // app ports (two Services targeting 15006 with different ports).
        out.entry(matched).or_insert_with(|| inbound::app_port(e));
    }
    out
}

/// `virtualInbound` for `proxy`, whose own endpoints are `own`; None when it serves nothing.
pub fn listener(proxy: &Proxy, own: &[&EndpointView], trust_domain: &str) -> Option<Listener> {
    let ports = own_ports(own);
    if ports.is_empty() {
        return None;
    }
    let mut chains = Vec::new();
    for (matched, app) in ports {
        let cluster = inbound::name(app);
        chains.push(chain("tls", matched, &cluster, Some(trust_domain)));
        chains.push(chain("raw_buffer", matched, &cluster, None));
    }
    let mut filters = vec![listener_filter_of(
        "envoy.filters.listener.tls_inspector",
        pack_any(TlsInspector::default()),
    )];
    // Without capture there is no original destination to read.
    if proxy.interception != Interception::None {
        filters.insert(
            0,
            listener_filter_of(
                "envoy.filters.listener.original_dst",
                pack_any(OriginalDst::default()),
            ),
        );
    }
    Some(Listener {
        name: VIRTUAL_INBOUND.into(),
        address: Some(socket("0.0.0.0", inbound::INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: filters,
        filter_chains: chains,
        ..Default::default()
    })
}

fn listener_filter_of(
    name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// One chain: `transport` (`tls` with `trust_domain`'s mTLS, or `raw_buffer`), optionally on
/// one destination port, proxied to `cluster`.
fn chain(transport: &str, port: Option<u16>, cluster: &str, tls: Option<&str>) -> FilterChain {
    let kind = if tls.is_some() { "mtls" } else { "plaintext" };
    let name = match port {
        Some(p) => format!("inbound_{kind}_{p}"),
        None => format!("inbound_{kind}"),
    };
    let mut proxy = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    if tls.is_some() {
        // Logged once through: a client's pool keeps a connection open for long.
        proxy.access_log_options = Some(tcp_proxy::TcpAccessLogOptions {
            flush_access_log_on_connected: true,
            ..Default::default()
        });
        proxy.access_log = vec![peer_log()];
    }
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            destination_port: port.map(|p| UInt32Value {
                value: u32::from(p),
            }),
            transport_protocol: transport.into(),
            ..Default::default()
        }),
        transport_socket: tls.map(downstream_tls),
        filters: vec![network_filter(TCP_PROXY_FILTER, pack_any(proxy))],
        ..Default::default()
    }
}

fn peer_log() -> AccessLog {
    let format = SubstitutionFormatString {
        format: Some(substitution_format_string::Format::TextFormatSource(
            DataSource {
                specifier: Some(data_source::Specifier::InlineString(MTLS_LOG_FORMAT.into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    AccessLog {
        name: "envoy.access_loggers.stdout".into(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack_any(
            StdoutAccessLog {
                access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(format)),
            },
        ))),
        ..Default::default()
    }
}

/// Istio mTLS as a server: the workload certificate and the root from the agent's SDS, a
/// client certificate required and checked to be a SPIFFE id of the trust domain.
fn downstream_tls(trust_domain: &str) -> TransportSocket {
    let sds = |name: &str| SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(sds_grpc()),
    };
    let peers = SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix(format!(
                "spiffe://{trust_domain}/"
            ))),
            ignore_case: false,
        }),
        oid: String::new(),
    };
    let ctx = DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(SDS_WORKLOAD_SECRET)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: vec![peers],
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(SDS_ROOT_SECRET)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}
