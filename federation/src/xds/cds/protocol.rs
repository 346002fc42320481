//! A Service port's protocol as Istio reads it (pkg/config/kube `ConvertProtocol`: `UDP`, else
//! `appProtocol` when set, else the port name's prefix before `-`), and the HTTP/2 upstream
//! options Envoy needs for the HTTP/2 ones (Istio's `setUpstreamProtocol` / `setH2Options`),
//! in the same message as the connection pool's HTTP options.

use crate::registry::PortView;
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use serde_json::Value as Json;
use std::collections::HashMap;

/// The key Envoy looks its upstream HTTP options up by.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A UDP port: Istio builds no cluster for it.
pub fn is_udp(port: &PortView) -> bool {
    port.protocol.eq_ignore_ascii_case("UDP")
}

/// Whether Istio reads `port` as HTTP/2 (`GRPC`, `GRPC-Web`, `HTTP2`): `appProtocol` wins over
/// the name when set (`kubernetes.io/h2c` is HTTP2); names match case-insensitively on the
/// prefix before the first `-` (`grpc-web...` as a whole): `grpc`, `grpc-api`, `http2-x`.
pub fn is_http2(port: &PortView) -> bool {
    if is_udp(port) {
        return false;
    }
    let name = port.app_protocol.as_deref().unwrap_or(&port.name);
    if name == "kubernetes.io/h2c" {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-web") {
        return true;
    }
    matches!(lower.split('-').next(), Some("grpc" | "http2"))
}

/// Whether Istio reads `port` as HTTP of some kind (`HTTP`, `HTTP2`, `GRPC`, `GRPC-Web`,
/// `kubernetes.io/h2c`, `kubernetes.io/ws(s)`): Envoy sidecars get an HTTP connection manager
/// for it. Unnamed and other ports are TCP here (Istio would sniff them; meshfed does not).
pub fn is_http(port: &PortView) -> bool {
    if is_udp(port) {
        return false;
    }
    if is_http2(port) {
        return true;
    }
    let name = port.app_protocol.as_deref().unwrap_or(&port.name);
    if matches!(name, "kubernetes.io/ws" | "kubernetes.io/wss") {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    matches!(lower.split('-').next(), Some("http"))
}

/// Istio's `shouldH2Upgrade` for a DestinationRule's `connectionPool.http`: `h2UpgradePolicy:
/// UPGRADE` upgrades unless `useClientProtocol` is set (the mesh default is not to upgrade).
fn upgrade_asked(policy: &Json) -> bool {
    let http = &policy["connectionPool"]["http"];
    http["useClientProtocol"].as_bool() != Some(true)
        && http["h2UpgradePolicy"].as_str() == Some("UPGRADE")
}

/// Envoy's `typed_extension_protocol_options` for a cluster of `port`: one
/// `HttpProtocolOptions` with explicit HTTP/2 for HTTP/2 ports and upgraded ones, and the
/// connection pool's common HTTP options ([`super::pool::common_http_options`]); nothing
/// (Envoy's HTTP/1.1 or TCP) when neither applies. Envoy requires an upstream protocol, so
/// pool options alone get explicit HTTP/1.1, as Istio's `clusterWrapper.build` sets.
pub fn options(port: &PortView, policy: &Json) -> HashMap<String, Any> {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let common = super::pool::common_http_options(policy);
    let h2 = is_http2(port) || upgrade_asked(policy);
    if !h2 && common.is_none() {
        return HashMap::new();
    }
    let protocol = if h2 {
        let mut h2 = Http2ProtocolOptions::default();
        super::pool::tune_http2(&mut h2, policy);
        ProtocolConfig::Http2ProtocolOptions(h2)
    } else {
        ProtocolConfig::HttpProtocolOptions(Default::default())
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            ),
        ),
        ..Default::default()
    };
    HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(options))])
}

#[cfg(test)]
mod tests {
    use super::is_http;
    use crate::registry::PortView;

    fn port(name: &str, app: Option<&str>, protocol: &str) -> PortView {
        PortView {
            name: name.into(),
            port: 80,
            protocol: protocol.into(),
            app_protocol: app.map(String::from),
        }
    }

    /// Istio `ConvertProtocol`: `appProtocol` wins over the name; names by their prefix
    /// before `-` (`http`, `http2`, `grpc`, `grpc-web`), case-insensitive, are HTTP and get
    /// an HTTP listener; `tcp`, `mongo`, unnamed and UDP ports are not.
    #[test]
    fn http_ports_as_istio_reads_them() {
        for (name, app) in [
            ("http", None),
            ("HTTP-web", None),
            ("http2", None),
            ("grpc", None),
            ("grpc-web", None),
            ("tcp", Some("http")),
            ("x", Some("kubernetes.io/h2c")),
            ("x", Some("kubernetes.io/ws")),
        ] {
            assert!(is_http(&port(name, app, "TCP")), "{name} {app:?}");
        }
        for (name, app, proto) in [
            ("tcp", None, "TCP"),
            ("mongo", None, "TCP"),
            ("", None, "TCP"),
            ("httpx", None, "TCP"),
            ("http", Some("tcp"), "TCP"),
            ("http", None, "UDP"),
        ] {
            assert!(!is_http(&port(name, app, proto)), "{name} {app:?} {proto}");
        }
    }
}
