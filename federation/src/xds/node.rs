//! Who is asking: an xDS client's node (id, locality, metadata) as Istio's agents send it,
//! and what is assumed where it says nothing ([`Defaults`]).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Value, value};
use meshfed_model::Locality;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Sidecar,
    /// A gateway (Istio's `router`): the east-west gateway subscribes as one.
    Router,
}

/// Whose dialect the resources are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generator {
    Envoy,
    /// gRPC's proxyless clients (`GENERATOR=grpc`): ApiListeners, no transport socket matches.
    Grpc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: String,
    pub namespace: String,
    pub cluster_id: String,
    pub network: String,
    pub locality: Locality,
    pub generator: Generator,
    pub labels: BTreeMap<String, String>,
    /// Node metadata `HTTP_PROXY_PORT`: the port of the sidecar's explicit HTTP proxy listener
    /// (Istio `buildHTTPProxy`: `127.0.0.1_<port>` with routes `http_proxy`); None: no such
    /// listener.
    pub http_proxy_port: Option<u16>,
    /// Node metadata `INTERCEPTION_MODE`: how traffic reaches the sidecar.
    pub interception: Interception,
}

/// Istio's `INTERCEPTION_MODE`: `REDIRECT` (the default, iptables), `TPROXY`, or `NONE` (no
/// capture: outbound listeners bind their ports for real).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interception {
    #[default]
    Redirect,
    Tproxy,
    None,
}

impl Interception {
    /// The metadata value as Istio reads it; anything unknown is `REDIRECT` (Istio's default).
    pub fn parse(v: Option<&str>) -> Interception {
        match v {
            Some("NONE") => Interception::None,
            Some("TPROXY") => Interception::Tproxy,
            _ => Interception::Redirect,
        }
    }
}

impl Proxy {
    /// Reads the node of a client's first request. The id must be Istio's
    /// `TYPE~IP~POD.NS~NS.svc.DOMAIN`; metadata `NAMESPACE` wins over the id's namespace.
    pub fn from_node(node: &Node) -> Result<Proxy, String> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, _pod, domain] = parts[..] else {
            return Err(format!(
                "node id {:?} is not TYPE~IP~POD.NS~NS.svc.DOMAIN",
                node.id
            ));
        };
        let kind = match kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => {
                return Err(format!(
                    "node id {:?}: unknown proxy type {other:?}",
                    node.id
                ));
            }
        };
        let meta = |k: &str| metadata_string(node, k);
        let namespace = meta("NAMESPACE")
            .or_else(|| domain.split('.').next().map(str::to_string))
            .unwrap_or_default();
        let generator = match meta("GENERATOR").as_deref() {
            Some("grpc") => Generator::Grpc,
            _ => Generator::Envoy,
        };
        let locality = node
            .locality
            .as_ref()
            .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        Ok(Proxy {
            id: node.id.clone(),
            kind,
            ip: ip.to_string(),
            namespace,
            cluster_id: meta("CLUSTER_ID").unwrap_or_default(),
            network: meta("NETWORK").unwrap_or_default(),
            locality,
            generator,
            labels: metadata_labels(node),
            http_proxy_port: meta("HTTP_PROXY_PORT").and_then(|p| p.parse().ok()),
            interception: Interception::parse(meta("INTERCEPTION_MODE").as_deref()),
        })
    }
}

/// Where a client that does not say is taken to be, as Istio's agents and istiod agree: both
/// default `CLUSTER_ID` to `Kubernetes`, so a client without one is in istiod's own cluster;
/// and a sidecar's `NETWORK` is its cluster's network (the injector writes the system
/// namespace's `topology.istio.io/network` label into it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    /// The federation's own cluster (`--cluster-id`); empty: none known.
    pub cluster_id: String,
    /// Each cluster's network as the registry knows it.
    pub networks: BTreeMap<String, String>,
}

impl Proxy {
    /// Fills in what the node left out: no `CLUSTER_ID` is the federation's own cluster, no
    /// `NETWORK` that cluster's network. Without these a client of the local cluster would be
    /// treated as foreign everywhere: VIPs instead of ClusterIPs in NDS, its own network's
    /// endpoints through a gateway in EDS.
    pub fn apply_defaults(&mut self, defaults: &Defaults) {
        if self.cluster_id.is_empty() {
            self.cluster_id = defaults.cluster_id.clone();
        }
        if self.network.is_empty()
            && let Some(network) = defaults.networks.get(&self.cluster_id)
        {
            self.network = network.clone();
        }
    }
}

/// A sidecar of namespace `ns` in cluster c1 on network n1, for the xDS modules' tests.
#[cfg(test)]
pub(crate) fn test_sidecar() -> Proxy {
    Proxy {
        id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: "10.0.0.1".into(),
        namespace: "ns".into(),
        cluster_id: "c1".into(),
        network: "n1".into(),
        locality: Default::default(),
        generator: Generator::Envoy,
        labels: Default::default(),
        http_proxy_port: None,
        interception: Interception::Redirect,
    }
}

fn metadata_string(node: &Node, key: &str) -> Option<String> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        value::Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// `LABELS` as Istio's agent sends them (a struct of strings); used by failoverPriority.
fn metadata_labels(node: &Node) -> BTreeMap<String, String> {
    let Some(Value {
        kind: Some(value::Kind::StructValue(s)),
    }) = node.metadata.as_ref().and_then(|m| m.fields.get("LABELS"))
    else {
        return BTreeMap::new();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
    use envoy_types::pb::google::protobuf::Struct;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(value::Kind::StringValue(v.into())),
        }
    }

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            locality: Some(EnvoyLocality {
                region: "region1".into(),
                zone: "zone1".into(),
                sub_zone: String::new(),
            }),
            metadata: Some(Struct {
                fields: meta.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reads_istio_sidecar_nodes() {
        let n = node(
            "sidecar~10.10.0.7~sleep-1.sample~sample.svc.cluster.local",
            &[
                ("CLUSTER_ID", "cluster1"),
                ("NETWORK", "network1"),
                ("GENERATOR", "grpc"),
            ],
        );
        let p = Proxy::from_node(&n).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip, "10.10.0.7");
        assert_eq!(p.namespace, "sample");
        assert_eq!(p.cluster_id, "cluster1");
        assert_eq!(p.network, "network1");
        assert_eq!(p.generator, Generator::Grpc);
        assert_eq!(p.locality, Locality::new("region1", "zone1", ""));
    }

    #[test]
    fn metadata_namespace_wins_and_routers_are_known() {
        let n = node(
            "router~172.31.0.11~gw-1.istio-system~istio-system.svc.cluster.local",
            &[("NAMESPACE", "other")],
        );
        let p = Proxy::from_node(&n).unwrap();
        assert_eq!(p.kind, ProxyKind::Router);
        assert_eq!(p.namespace, "other");
        assert_eq!(p.generator, Generator::Envoy);
    }

    fn defaults() -> Defaults {
        Defaults {
            cluster_id: "cluster1".into(),
            networks: [("cluster1", "network1"), ("cluster2", "network2")]
                .map(|(c, n)| (c.to_string(), n.to_string()))
                .into(),
        }
    }

    /// Istio: `CLUSTER_ID` defaults to `Kubernetes` in both the agent and istiod, so a node
    /// that sends none is in the control plane's own cluster; its network is that cluster's.
    #[test]
    fn a_node_without_cluster_or_network_is_in_the_federations_cluster_and_network() {
        let id = "sidecar~10.10.0.7~sleep-1.sample~sample.svc.cluster.local";
        let mut p = Proxy::from_node(&node(id, &[])).unwrap();
        assert_eq!((p.cluster_id.as_str(), p.network.as_str()), ("", ""));
        p.apply_defaults(&defaults());
        assert_eq!(p.cluster_id, "cluster1");
        assert_eq!(p.network, "network1");
    }

    /// A node naming its cluster but not its network is on that cluster's network; what a
    /// node says is never overridden; an unknown cluster gets no network.
    #[test]
    fn what_a_node_says_wins_and_a_named_cluster_brings_its_network() {
        let id = "sidecar~10.10.0.7~sleep-1.sample~sample.svc.cluster.local";
        let mut p = Proxy::from_node(&node(id, &[("CLUSTER_ID", "cluster2")])).unwrap();
        p.apply_defaults(&defaults());
        assert_eq!(
            (p.cluster_id.as_str(), p.network.as_str()),
            ("cluster2", "network2")
        );
        let meta = [("CLUSTER_ID", "cluster2"), ("NETWORK", "elsewhere")];
        let mut p = Proxy::from_node(&node(id, &meta)).unwrap();
        p.apply_defaults(&defaults());
        assert_eq!(
            (p.cluster_id.as_str(), p.network.as_str()),
            ("cluster2", "elsewhere")
        );
        let mut p = Proxy::from_node(&node(id, &[("CLUSTER_ID", "cluster9")])).unwrap();
        p.apply_defaults(&defaults());
        assert_eq!(
            (p.cluster_id.as_str(), p.network.as_str()),
            ("cluster9", "")
        );
    }

    /// Istio's agent sends `HTTP_PROXY_PORT` (the explicit HTTP proxy listener) and
    /// `INTERCEPTION_MODE` (`REDIRECT` unless said otherwise) as string metadata.
    #[test]
    fn reads_http_proxy_port_and_interception_mode() {
        let id = "sidecar~10.10.0.7~sleep-1.sample~sample.svc.cluster.local";
        let meta = [("HTTP_PROXY_PORT", "15001"), ("INTERCEPTION_MODE", "NONE")];
        let p = Proxy::from_node(&node(id, &meta)).unwrap();
        assert_eq!(p.http_proxy_port, Some(15001));
        assert_eq!(p.interception, Interception::None);
        let p = Proxy::from_node(&node(id, &[("HTTP_PROXY_PORT", "x")])).unwrap();
        assert_eq!(p.http_proxy_port, None, "not a port: no proxy listener");
        assert_eq!(p.interception, Interception::Redirect);
        let p = Proxy::from_node(&node(id, &[("INTERCEPTION_MODE", "TPROXY")])).unwrap();
        assert_eq!(p.interception, Interception::Tproxy);
    }

    #[test]
    fn refuses_ids_not_in_istio_form() {
        for id in ["", "sleep", "a~b~c", "ingress~1~p.n~n.svc.cluster.local"] {
            assert!(Proxy::from_node(&node(id, &[])).is_err(), "{id}");
        }
    }
}
