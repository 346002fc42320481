//! LDS for gRPC's proxyless clients, as Istio writes it for `GENERATOR=grpc`
//! (`grpcgen/lds.go`): the target `xds:///host:port` asks for a listener named `host:port`,
//! an ApiListener whose HttpConnectionManager takes its routes over RDS under the service
//! port's cluster name (`outbound|port||fqdn`, see [`super::rds`]) and runs the fault filter
//! then the router. Only filters gRPC knows are sent, and the router last: gRPC NACKs an
//! unknown filter that is not optional, or a router before the end of the list.
//! Envoy sidecars' listeners are in [`sidecar`]; both share [`http_filters`] and [`rds`].

mod inbound;
mod outbound;
pub mod sidecar;
mod tcp;

use super::route::fault::FAULT_FILTER;
use super::rules::qualify;
use crate::registry::Snapshot;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::util::pack_any;
use meshfed_model::ClusterName;

/// The cluster a proxyless target `host:port` stands for, with Istio's short names
/// (`svc`, `svc.ns`, `svc.ns.svc`) resolved in the client's namespace; None when the
/// name is not a mesh service port.
pub fn target(
    name: &str,
    snapshot: &Snapshot,
    namespace: &str,
    domain: &str,
) -> Option<ClusterName> {
    let (host, port) = name.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let fqdn = qualify(host, namespace, domain);
    let svc = snapshot.services.iter().find(|s| s.hostname == fqdn)?;
    svc.ports
        .iter()
        .any(|p| p.port == port)
        .then(|| ClusterName::new(port, None, &fqdn))
}

/// The listener `name` (as the client asked) for the service port `cluster`.
pub fn listener(name: &str, cluster: &ClusterName) -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(rds(&cluster.cluster())),
        http_filters: http_filters(),
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// `[fault, router]`: an empty HTTPFault (the per-route configs carry the faults, gRFC A33
/// and Envoy alike), then the router, which must be last.
pub fn http_filters() -> Vec<HttpFilter> {
    let fault = HttpFilter {
        name: FAULT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            HttpFault::default(),
        ))),
        ..Default::default()
    };
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    };
    vec![fault, router]
}

/// Routes `route_config_name` over ADS (xDS v3).
pub fn rds(route_config_name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
        route_config_name: route_config_name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PortView, ServiceView};

    fn snapshot() -> Snapshot {
        Snapshot {
            services: vec![std::sync::Arc::new(ServiceView {
                hostname: "helloworld.sample.svc.cluster.local".into(),
                namespace: "sample".into(),
                ports: vec![PortView {
                    name: "grpc".into(),
                    port: 5000,
                    ..Default::default()
                }],
                endpoints: vec![],
                cluster_ips: Default::default(),
                ..Default::default()
            })],
            gateways: vec![],
        }
    }

    #[test]
    fn targets_resolve_short_names_in_the_client_namespace() {
        let s = snapshot();
        let want = Some(ClusterName::new(
            5000,
            None,
            "helloworld.sample.svc.cluster.local",
        ));
        for name in [
            "helloworld.sample.svc.cluster.local:5000",
            "helloworld.sample.svc:5000",
            "helloworld.sample:5000",
        ] {
            assert_eq!(target(name, &s, "other", "cluster.local"), want, "{name}");
        }
        assert_eq!(
            target("helloworld:5000", &s, "sample", "cluster.local"),
            want
        );
        assert_eq!(
            target("helloworld:5000", &s, "other", "cluster.local"),
            None
        );
        assert_eq!(
            target("helloworld.sample:5001", &s, "x", "cluster.local"),
            None
        );
        assert_eq!(target("example.com:443", &s, "x", "cluster.local"), None);
        assert_eq!(target("no-port", &s, "x", "cluster.local"), None);
    }

    /// Istio grpcgen `buildOutboundListeners`: an ApiListener named as asked, whose HCM
    /// takes RDS `outbound|port||fqdn` and runs `[fault, router]` (`supportedFilters`).
    #[test]
    fn listener_is_an_api_listener_with_rds_and_the_router() {
        let c = ClusterName::new(5000, None, "helloworld.sample.svc.cluster.local");
        let l = listener("helloworld.sample:5000", &c);
        assert_eq!(
            l.name, "helloworld.sample:5000",
            "the name the client asked for"
        );
        let any = l.api_listener.unwrap().api_listener.unwrap();
        assert!(any.type_url.ends_with("HttpConnectionManager"));
        let hcm: HttpConnectionManager = prost::Message::decode(any.value.as_slice()).unwrap();
        let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("no RDS")
        };
        assert_eq!(
            rds.route_config_name,
            "outbound|5000||helloworld.sample.svc.cluster.local"
        );
        let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["envoy.filters.http.fault", "envoy.filters.http.router"],
            "only filters gRPC knows, the router last"
        );
        for f in &hcm.http_filters {
            assert!(f.config_type.is_some(), "{} has its typed_config", f.name);
            assert!(!f.is_optional);
        }
        let Some(http_filter::ConfigType::TypedConfig(fault)) = &hcm.http_filters[0].config_type
        else {
            panic!("no fault config")
        };
        assert_eq!(
            fault.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        );
    }
}
