use super::*;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LocalityLbEndpoints, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::{Any, Struct, Value};
use std::net::SocketAddr;

const SNI: &str = "outbound_.5000_._.helloworld.sample.svc.cluster.local";

/// An EDS endpoint at `addr`, with `tlsMode` set to `mode` in the metadata key `key`.
fn lb(addr: SocketAddr, key: &str, mode: Option<&str>) -> LbEndpoint {
    let socket = SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
        ..Default::default()
    };
    let metadata = mode.map(|m| {
        let field = Value {
            kind: Some(value::Kind::StringValue(m.into())),
        };
        let fields = [(TLS_MODE_FIELD.to_string(), field)].into_iter().collect();
        Metadata {
            filter_metadata: [(key.to_string(), Struct { fields })].into_iter().collect(),
            ..Default::default()
        }
    });
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(socket)),
            }),
            ..Default::default()
        })),
        metadata,
        ..Default::default()
    }
}

fn response(type_url: &str, name: &str, value: Vec<u8>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        resources: vec![Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(Any {
                type_url: type_url.into(),
                value,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn state() -> State {
    State {
        clusters: BTreeMap::new(),
        endpoints: HashMap::new(),
        routes: RouteHandle::default(),
        metrics: crate::metrics::global(),
    }
}

/// A load assignment with one endpoint the federation marked as a mesh workload and one it
/// did not (the API server behind a selector-less Service, say): only the first is routable.
#[test]
fn only_endpoints_marked_as_mesh_workloads_are_routable() {
    let mesh: SocketAddr = "10.2.0.5:5000".parse().unwrap();
    let api_server: SocketAddr = "10.2.0.1:6443".parse().unwrap();
    let cla = ClusterLoadAssignment {
        cluster_name: "outbound|5000||helloworld.sample.svc.cluster.local".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![
                lb(mesh, TLS_MODE_METADATA, Some("istio")),
                lb(api_server, TLS_MODE_METADATA, None),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut s = state();
    let dropped = not_mesh_total();
    s.apply(&response(CLUSTER_TYPE, SNI, vec![]));
    let applied = s.apply(&response(ENDPOINT_TYPE, SNI, cla.encode_to_vec()));
    assert!(applied.error.is_none(), "{:?}", applied.error);
    let cluster = s.routes.get().lookup(SNI).expect("the SNI is routed");
    let routable: Vec<SocketAddr> = cluster
        .endpoints
        .iter()
        .map(|e| e.endpoint.address)
        .collect();
    assert_eq!(routable, [mesh]);
    assert!(
        not_mesh_total() >= dropped + 1.0,
        "the dropped endpoint is counted"
    );
}

/// `meshfed_gateway_xds_endpoints_not_mesh_total` as /metrics shows it.
fn not_mesh_total() -> f64 {
    crate::metrics::global();
    let page = meshfed_model::telemetry::prometheus().render();
    page.lines()
        .find_map(|l| l.strip_prefix("meshfed_gateway_xds_endpoints_not_mesh_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The marker must be exactly Istio's: another value, another metadata key or a non-string
/// value does not make an endpoint a mesh workload.
#[test]
fn near_misses_of_the_marker_are_not_mesh_workloads() {
    let a: SocketAddr = "10.2.0.5:5000".parse().unwrap();
    assert!(is_mesh_workload(&lb(a, TLS_MODE_METADATA, Some("istio"))));
    assert!(!is_mesh_workload(&lb(
        a,
        TLS_MODE_METADATA,
        Some("disabled")
    )));
    assert!(!is_mesh_workload(&lb(a, TLS_MODE_METADATA, Some("ISTIO"))));
    assert!(!is_mesh_workload(&lb(a, "istio", Some("istio"))));
    assert!(!is_mesh_workload(&lb(a, TLS_MODE_METADATA, None)));
    let mut number = lb(a, TLS_MODE_METADATA, Some("istio"));
    let field = number
        .metadata
        .as_mut()
        .and_then(|m| m.filter_metadata.get_mut(TLS_MODE_METADATA))
        .and_then(|s| s.fields.get_mut(TLS_MODE_FIELD))
        .unwrap();
    field.kind = Some(value::Kind::NumberValue(1.0));
    assert!(!is_mesh_workload(&number));
}

/// Unmarked endpoints are counted, and a marked one that is not ready is still left out.
#[test]
fn dropped_endpoints_are_counted_and_unhealthy_mesh_endpoints_still_left_out() {
    let cla = ClusterLoadAssignment {
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![
                lb("10.2.0.1:1".parse().unwrap(), TLS_MODE_METADATA, None),
                lb("10.2.0.2:1".parse().unwrap(), TLS_MODE_METADATA, Some("x")),
                LbEndpoint {
                    health_status: HealthStatus::Unhealthy as i32,
                    ..lb(
                        "10.2.0.3:1".parse().unwrap(),
                        TLS_MODE_METADATA,
                        Some("istio"),
                    )
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let (eps, not_mesh) = endpoints(&cla);
    assert!(eps.is_empty(), "{eps:?}");
    assert_eq!(not_mesh, 2);
}
