//! What each kind of resource depends on of a proxy. Proxies with equal keys share one build
//! per push, so the builds (and the memory they take) follow the number of distinct places
//! in the mesh, not the number of clients: 2,000 clients with 2,000 label sets share one EDS
//! build unless a `failoverPriority` rule names one of those labels.
//!
//! LDS and RDS are built per resource name: their key here is what the build reads of the
//! proxy, and the name is the second half of the key (see `generate::named`).

use super::generate::Kind;
use super::locality::{LocalityPolicy, TOPOLOGY_KEYS};
use super::node::{Generator, Proxy, ProxyKind};
use super::rules::Rule;
use super::virtual_service::VirtualService;
use meshfed_model::Locality;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    kind: Kind,
    proxy_kind: Option<ProxyKind>,
    generator: Option<Generator>,
    namespace: Option<String>,
    cluster_id: Option<String>,
    network: Option<String>,
    locality: Option<Locality>,
    /// Only the labels some rule reads: `failoverPriority` (EDS), `sourceLabels` (RDS).
    labels: Vec<(String, String)>,
    /// An Envoy sidecar's own app ports: its CDS carries their `inbound|P||` clusters.
    inbound_ports: Vec<u16>,
}

impl CacheKey {
    /// The key with the proxy's own app ports (CDS of an Envoy sidecar).
    pub fn with_inbound_ports(mut self, ports: Vec<u16>) -> CacheKey {
        self.inbound_ports = ports;
        self
    }
}

/// The key of `proxy`'s resources of `kind`; `label_keys` are the proxy labels the kind's
/// builds read: [`failover_labels`] for EDS, [`source_labels`] for RDS.
pub fn key(proxy: &Proxy, kind: Kind, label_keys: &BTreeSet<String>) -> CacheKey {
    let mut k = CacheKey {
        kind,
        proxy_kind: None,
        generator: None,
        namespace: None,
        cluster_id: None,
        network: None,
        locality: None,
        labels: Vec::new(),
        inbound_ports: Vec::new(),
    };
    match kind {
        // Which rule applies (by namespace), the dialect, and the proxy kind's cluster names.
        Kind::Cluster => {
            k.proxy_kind = Some(proxy.kind);
            k.generator = Some(proxy.generator);
            k.namespace = Some(proxy.namespace.clone());
        }
        // The rules, plus where the proxy is: locality priorities, its network's gateways.
        Kind::Endpoint => {
            k.proxy_kind = Some(proxy.kind);
            k.namespace = Some(proxy.namespace.clone());
            k.cluster_id = Some(proxy.cluster_id.clone());
            k.network = Some(proxy.network.clone());
            k.locality = Some(proxy.locality.clone());
            k.labels = labels(proxy, label_keys);
        }
        // Local services answer their ClusterIP: only the proxy's cluster matters.
        Kind::NameTable => k.cluster_id = Some(proxy.cluster_id.clone()),
        // Per name: the dialect, the namespace the VirtualService choice (exportTo,
        // sourceNamespace) and the vhost domains depend on, the cluster whose ClusterIPs are
        // among the domains, and the labels `sourceLabels` matches read.
        Kind::Route => {
            k.proxy_kind = Some(proxy.kind);
            k.generator = Some(proxy.generator);
            k.namespace = Some(proxy.namespace.clone());
            k.cluster_id = Some(proxy.cluster_id.clone());
            k.labels = labels(proxy, label_keys);
        }
        // Per name: proxyless listener names resolve short hosts in the client's namespace.
        Kind::Listener => {
            k.proxy_kind = Some(proxy.kind);
            k.generator = Some(proxy.generator);
            k.namespace = Some(proxy.namespace.clone());
        }
    }
    k
}

/// The proxy's values of `keys` (a label it lacks is left out: no selector on it matches).
fn labels(proxy: &Proxy, keys: &BTreeSet<String>) -> Vec<(String, String)> {
    keys.iter()
        .filter_map(|l| Some((l.clone(), proxy.labels.get(l)?.clone())))
        .collect()
}

/// The proxy labels any VirtualService match's `sourceLabels` reads (HTTP and TCP): which
/// routes apply to a client depends on these and on no other label.
pub fn source_labels(rules: &[VirtualService]) -> BTreeSet<String> {
    let http = rules
        .iter()
        .flat_map(|vs| &vs.http)
        .flat_map(|h| &h.matches)
        .flat_map(|m| m.source_labels.keys());
    let tcp = rules
        .iter()
        .flat_map(|vs| &vs.tcp)
        .flat_map(|t| &t.matches)
        .flat_map(|m| m.source_labels.keys());
    http.chain(tcp).cloned().collect()
}

/// The proxy labels any rule's `failoverPriority` reads (topology keys come from the
/// proxy's locality, network and cluster, which the key holds anyway).
pub fn failover_labels(rules: &[Rule]) -> BTreeSet<String> {
    rules
        .iter()
        .flat_map(Rule::every_policy)
        .flat_map(|tp| LocalityPolicy::from_traffic_policy(tp).failover_priority)
        .map(|entry| entry.split('=').next().unwrap_or_default().to_string())
        .filter(|k| !TOPOLOGY_KEYS.contains(&k.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(labels: &[(&str, &str)]) -> Proxy {
        let mut p = crate::xds::node::test_sidecar();
        p.cluster_id = "cluster1".into();
        p.network = "network1".into();
        p.locality = Locality::new("r", "z", "");
        p.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p
    }

    #[test]
    fn labels_split_eds_builds_only_when_failover_priority_names_them() {
        let (a, b) = (
            proxy(&[("app", "a"), ("team", "x")]),
            proxy(&[("app", "b"), ("team", "x")]),
        );
        let none = BTreeSet::new();
        for kind in [Kind::Cluster, Kind::Endpoint, Kind::NameTable] {
            assert_eq!(key(&a, kind, &none), key(&b, kind, &none), "{kind:?}");
        }
        let rule = Rule::from_object(
            "ns",
            "r",
            &json!({"spec": {"host": "h", "trafficPolicy": {"loadBalancer": {"localityLbSetting":
                {"failoverPriority": ["topology.istio.io/network", "app=a"]}}}}}),
            "cluster.local",
        )
        .unwrap();
        let keys = failover_labels(&[rule]);
        assert_eq!(keys.iter().collect::<Vec<_>>(), ["app"]);
        assert_ne!(
            key(&a, Kind::Endpoint, &keys),
            key(&b, Kind::Endpoint, &keys)
        );
        assert_eq!(key(&a, Kind::Cluster, &keys), key(&b, Kind::Cluster, &keys));
    }

    #[test]
    fn what_each_kind_depends_on_splits_its_builds() {
        let a = proxy(&[]);
        let mut b = proxy(&[]);
        b.locality = Locality::new("r2", "z", "");
        let none = BTreeSet::new();
        assert_eq!(key(&a, Kind::Cluster, &none), key(&b, Kind::Cluster, &none));
        assert_ne!(
            key(&a, Kind::Endpoint, &none),
            key(&b, Kind::Endpoint, &none)
        );
        b.cluster_id = "cluster2".into();
        assert_ne!(
            key(&a, Kind::NameTable, &none),
            key(&b, Kind::NameTable, &none)
        );
        b.namespace = "other".into();
        assert_ne!(key(&a, Kind::Cluster, &none), key(&b, Kind::Cluster, &none));
    }

    /// Istio's route cache keys a route configuration by the proxy's cluster and namespace
    /// (domains, ClusterIPs, the VirtualService its namespace sees); the labels a
    /// `sourceLabels` match reads split it too, and nothing else does (address, locality).
    #[test]
    fn route_keys_follow_namespace_cluster_and_source_labels() {
        let a = proxy(&[("version", "v1"), ("app", "x")]);
        let mut b = proxy(&[("version", "v1"), ("app", "y")]);
        b.ip = "10.9.9.9".into();
        b.locality = Locality::new("r2", "z", "");
        let version: BTreeSet<String> = ["version".to_string()].into();
        assert_eq!(
            key(&a, Kind::Route, &version),
            key(&b, Kind::Route, &version)
        );
        b.labels.insert("version".into(), "v2".into());
        assert_ne!(
            key(&a, Kind::Route, &version),
            key(&b, Kind::Route, &version)
        );
        assert_eq!(
            key(&a, Kind::Route, &BTreeSet::new()),
            key(&b, Kind::Route, &BTreeSet::new())
        );
        let mut c = proxy(&[]);
        c.cluster_id = "cluster2".into();
        assert_ne!(
            key(&a, Kind::Route, &version),
            key(&c, Kind::Route, &version)
        );
        c = proxy(&[]);
        c.namespace = "other".into();
        assert_ne!(
            key(&a, Kind::Route, &version),
            key(&c, Kind::Route, &version)
        );
        assert_ne!(
            key(&a, Kind::Listener, &version),
            key(&c, Kind::Listener, &version)
        );
    }
}
