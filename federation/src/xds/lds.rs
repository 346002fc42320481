//! LDS and RDS for gRPC's proxyless clients, as Istio writes them for `GENERATOR=grpc`: the
//! target `xds:///host:port` asks for a listener named `host:port`, which is an ApiListener
//! whose HttpConnectionManager takes its routes over RDS (same name) and ends in the router
//! filter; the route sends everything to `outbound|port||fqdn`.

use super::rules::qualify;
use crate::registry::Snapshot;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
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

pub fn listener(name: &str) -> Listener {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
            route_config_name: name.to_string(),
        })),
        http_filters: vec![router],
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

pub fn route_configuration(name: &str, cluster: &ClusterName) -> RouteConfiguration {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.cluster())),
            ..Default::default()
        })),
        ..Default::default()
    };
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: vec![name.to_string(), cluster.host.clone(), "*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PortView, ServiceView};

    fn snapshot() -> Snapshot {
        Snapshot {
            services: vec![ServiceView {
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
            }],
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

    #[test]
    fn listener_is_an_api_listener_with_rds_and_the_router() {
        let l = listener("helloworld.sample:5000");
        let any = l.api_listener.unwrap().api_listener.unwrap();
        assert!(any.type_url.ends_with("HttpConnectionManager"));
        let hcm: HttpConnectionManager = prost::Message::decode(any.value.as_slice()).unwrap();
        let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("no RDS")
        };
        assert_eq!(rds.route_config_name, "helloworld.sample:5000");
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
    }
}
