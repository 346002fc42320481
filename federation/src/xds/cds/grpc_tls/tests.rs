//! The proxyless gRPC cluster's transport socket, decoded as gRPC's xDS client reads it.

use super::super::{cluster, specs};
use crate::registry::{ServiceView, Snapshot};
use crate::xds::node::Proxy;
use crate::xds::rules::Rule;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Node, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use serde_json::json;

const HOST: &str = "helloworld.sample.svc.cluster.local";
const TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// helloworld's endpoints in network2 (the client is in network1): (version, service
/// account, tlsMode label or not).
fn snapshot(endpoints: &[(&str, &str, bool)]) -> Snapshot {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|&(version, sa, mesh)| ("network2", version, sa, mesh))
        .collect();
    snapshot_in(&endpoints)
}

/// helloworld's endpoints: (network, version, service account, tlsMode label or not). Built
/// from JSON so fields the registry adds later (with serde defaults) need no change here.
fn snapshot_in(endpoints: &[(&str, &str, &str, bool)]) -> Snapshot {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (network, version, sa, mesh))| {
            let mut labels = json!({"app": "helloworld", "version": version});
            if *mesh {
                labels["security.istio.io/tlsMode"] = json!("istio");
            }
            json!({"cluster": "cluster2", "network": network, "address": format!("10.12.0.{}", i + 4),
                "port": 5000, "service_port": 5000, "locality": "region2/zone2", "labels": labels,
                "ready": true, "service_account": sa})
        })
        .collect();
    let service: ServiceView =
        serde_json::from_value(json!({"hostname": HOST, "namespace": "sample",
        "ports": [{"name": "grpc", "port": 5000}], "endpoints": endpoints, "cluster_ips": {}}))
        .unwrap();
    Snapshot {
        services: vec![service].into_iter().map(std::sync::Arc::new).collect(),
        gateways: vec![],
    }
}

fn proxy(generator: Option<&str>) -> Proxy {
    let s = |v: &str| Value {
        kind: Some(value::Kind::StringValue(v.into())),
    };
    let mut fields: std::collections::BTreeMap<String, Value> =
        [("NETWORK", "network1"), ("CLUSTER_ID", "cluster1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect();
    if let Some(g) = generator {
        fields.insert("GENERATOR".into(), s(g));
    }
    let node = Node {
        id: "sidecar~10.11.0.5~sleep-1.sample~sample.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        ..Default::default()
    };
    Proxy::from_node(&node).unwrap()
}

/// A DestinationRule for helloworld with subsets v1 and v2 and `traffic_policy`.
fn rule(traffic_policy: serde_json::Value) -> Rule {
    let dr = json!({"spec": {"host": HOST, "trafficPolicy": traffic_policy,
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}});
    Rule::from_object("sample", "helloworld", &dr, "cluster.local").unwrap()
}

/// Every cluster the proxy gets, by name.
fn clusters(snap: &Snapshot, rules: &[Rule], proxy: &Proxy) -> Vec<Cluster> {
    specs(snap, rules, proxy)
        .iter()
        .map(|s| cluster(proxy, s, "cluster.local"))
        .collect()
}

fn named<'a>(clusters: &'a [Cluster], subset: &str) -> &'a Cluster {
    let name = format!("outbound|5000|{subset}|{HOST}");
    clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// The UpstreamTlsContext in the cluster's transport socket, if it has one.
fn tls(c: &Cluster) -> Option<UpstreamTlsContext> {
    let socket = c.transport_socket.as_ref()?;
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("no typed_config: {socket:?}");
    };
    assert_eq!(any.type_url, TLS_TYPE);
    Some(prost::Message::decode(any.value.as_slice()).unwrap())
}

fn instance(certificate_name: &str) -> Option<CertificateProviderPluginInstance> {
    Some(CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: certificate_name.into(),
    })
}

/// Istio (grpcgen buildCommonTLSContext; bootstrap certificate_providers "default"), for a
/// client in network1 whose endpoints are mesh workloads in network2: the
/// workload certificate from `tls_certificate_provider_instance`, the root from
/// `ca_certificate_provider_instance` in the combined context's default validation context,
/// `match_subject_alt_names` listing the service's SPIFFE identities exactly, once each; and
/// the `outbound_` SNI of the cluster (subset included) that a remote network's gateway
/// routes by. No SDS and no ALPN, which gRPC would refuse or ignore.
#[test]
fn mesh_workload_clusters_get_istio_mtls_from_the_bootstrap_certificate_provider() {
    let snap = snapshot(&[
        ("v1", "helloworld", true),
        ("v2", "helloworld", true),
        ("v2", "helloworld-v2", true),
    ]);
    let all = clusters(&snap, &[rule(json!({}))], &proxy(Some("grpc")));
    for (subset, sni) in [
        ("", format!("outbound_.5000_._.{HOST}")),
        ("v1", format!("outbound_.5000_.v1_.{HOST}")),
        ("v2", format!("outbound_.5000_.v2_.{HOST}")),
    ] {
        let c = named(&all, subset);
        let ctx = tls(c).unwrap_or_else(|| panic!("{} has no TLS", c.name));
        assert_eq!(ctx.sni, sni);
        assert!(!ctx.auto_host_sni && !ctx.auto_sni_san_validation);
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(
            common.tls_certificate_provider_instance,
            instance("default")
        );
        assert!(common.tls_certificate_sds_secret_configs.is_empty());
        assert!(common.alpn_protocols.is_empty());
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
            common.validation_context_type
        else {
            panic!("no combined validation context");
        };
        assert!(combined.validation_context_sds_secret_config.is_none());
        let validation = combined.default_validation_context.unwrap();
        assert_eq!(
            validation.ca_certificate_provider_instance,
            instance("ROOTCA")
        );
        #[allow(deprecated)] // the field gRPC reads (gRFC A29)
        let sans: Vec<_> = validation
            .match_subject_alt_names
            .iter()
            .map(|m| (m.match_pattern.clone(), m.ignore_case))
            .collect();
        let exact = |sa: &str| {
            let id = format!("spiffe://cluster.local/ns/sample/sa/{sa}");
            (Some(MatchPattern::Exact(id)), false)
        };
        assert_eq!(sans, [exact("helloworld"), exact("helloworld-v2")]);
        assert!(c.transport_socket_matches.is_empty());
    }
}

/// Istio: Envoy sidecars get mTLS through `transport_socket_matches` on the endpoint's
/// `tlsMode` (SDS certificates); the certificate-provider socket is for proxyless gRPC only.
#[test]
fn envoy_sidecars_keep_their_transport_socket_matches() {
    let snap = snapshot(&[("v1", "helloworld", true)]);
    let all = clusters(&snap, &[], &proxy(None));
    let c = named(&all, "");
    assert!(c.transport_socket.is_none());
    assert_eq!(c.transport_socket_matches.len(), 2);
}

/// Endpoints without a sidecar (no `tlsMode: istio`) speak plaintext: a cluster with any of
/// them, or with no endpoints at all, gets no TLS (gRPC has one socket per cluster, not
/// Envoy's per-endpoint matches). A subset whose endpoints are all mesh workloads gets it
/// while the service-wide cluster, which mixes both, does not.
#[test]
fn plaintext_endpoints_keep_their_clusters_plaintext() {
    let grpc = proxy(Some("grpc"));
    let plain = snapshot(&[("v1", "helloworld", false)]);
    assert!(tls(named(&clusters(&plain, &[], &grpc), "")).is_none());
    let empty = snapshot(&[]);
    assert!(tls(named(&clusters(&empty, &[], &grpc), "")).is_none());

    let mixed = snapshot(&[("v1", "helloworld", true), ("v2", "helloworld", false)]);
    let all = clusters(&mixed, &[rule(json!({}))], &grpc);
    assert!(tls(named(&all, "")).is_none());
    assert!(tls(named(&all, "v2")).is_none());
    let v1 = tls(named(&all, "v1")).expect("v1's endpoints are all mesh workloads");
    assert_eq!(v1.sni, format!("outbound_.5000_.v1_.{HOST}"));
}

/// Istio's grpcgen applyTLS: a DestinationRule's `tls.mode` decides when set. ISTIO_MUTUAL
/// turns mTLS on even for endpoints without the label; DISABLE turns it off for mesh
/// workloads; SIMPLE and MUTUAL (files on the client) are not supported for proxyless gRPC
/// and give no TLS, as in Istio.
#[test]
fn the_destination_rule_tls_mode_decides_when_set() {
    let grpc = proxy(Some("grpc"));
    let plain = snapshot(&[("v1", "helloworld", false)]);
    let mutual = rule(json!({"tls": {"mode": "ISTIO_MUTUAL"}}));
    let ctx = tls(named(&clusters(&plain, &[mutual], &grpc), "")).expect("ISTIO_MUTUAL");
    assert_eq!(ctx.sni, format!("outbound_.5000_._.{HOST}"));

    let mesh = snapshot(&[("v1", "helloworld", true)]);
    for mode in ["DISABLE", "SIMPLE", "MUTUAL"] {
        let r = rule(json!({"tls": {"mode": mode}}));
        let all = clusters(&mesh, &[r], &grpc);
        assert!(tls(named(&all, "")).is_none(), "{mode}");
        assert!(tls(named(&all, "v1")).is_none(), "{mode}");
    }
}

/// Istio sends proxyless clients no TLS without an ISTIO_MUTUAL rule. meshfed keeps that
/// within one network (a bootstrap without certificate providers would NACK the cluster,
/// and sidecar servers in PERMISSIVE mode take plaintext); one endpoint across networks, all
/// of them mesh workloads, turns it on, since only TLS with the SNI crosses a gateway.
#[test]
fn within_one_network_mesh_workloads_stay_plaintext_as_in_istio() {
    let grpc = proxy(Some("grpc"));
    let local = snapshot_in(&[("network1", "v1", "helloworld", true)]);
    assert!(tls(named(&clusters(&local, &[], &grpc), "")).is_none());
    // Istio's IsSameOrEmpty: an endpoint of no known network is not across one.
    let unknown = snapshot_in(&[("", "v1", "helloworld", true)]);
    assert!(tls(named(&clusters(&unknown, &[], &grpc), "")).is_none());

    let both = snapshot_in(&[
        ("network1", "v1", "helloworld", true),
        ("network2", "v2", "helloworld", true),
    ]);
    let all = clusters(&both, &[rule(json!({}))], &grpc);
    assert!(tls(named(&all, "")).is_some(), "v2 is across networks");
    assert!(tls(named(&all, "v1")).is_none(), "v1 is local");
    assert!(tls(named(&all, "v2")).is_some());
}
