//! Builds the merged view from each cluster's data: services, their endpoints as Istio's
//! endpoint slice controller keeps them, and the network gateways ([`super::gateways`]).
//!
//! The view is merged one service at a time ([`service`]): a change to one EndpointSlice
//! re-merges only its service, across every cluster, with the per-cluster [`Index`] to find
//! that service's slices.

use super::RegistryConfig;
use super::gateways;
use super::index::{Index, Key};
use super::intern::Interner;
use super::names::GatewayNames;
#[cfg(test)]
use super::types::Snapshot;
use super::types::{
    ClusterData, DroppedGateway, EndpointView, GatewayView, PortView, ServiceView, SliceEndpoint,
};
use meshfed_model::{Locality, labels as label};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One active cluster, as the merge reads it.
pub struct Part<'a> {
    pub id: Arc<str>,
    /// The cluster's network: its system namespace's label, else what it was configured with.
    pub network: Arc<str>,
    pub data: &'a ClusterData,
    pub index: &'a Index,
    /// Unreachable for too long: its endpoints are dropped (services and gateways kept).
    pub stale: bool,
}

impl<'a> Part<'a> {
    pub fn new(
        id: &str,
        default_network: Option<&str>,
        data: &'a ClusterData,
        index: &'a Index,
        stale: bool,
        config: &RegistryConfig,
    ) -> Self {
        Part {
            id: Arc::from(id),
            network: Arc::from(network_of(data, default_network, config)),
            data,
            index,
            stale,
        }
    }
}

/// A cluster's network: its system namespace's `topology.istio.io/network` label, else the
/// network it was configured with.
pub fn network_of<'a>(
    data: &'a ClusterData,
    default_network: Option<&'a str>,
    config: &RegistryConfig,
) -> &'a str {
    data.namespaces
        .get(&config.system_namespace)
        .and_then(|l| l.get(label::NETWORK))
        .map(String::as_str)
        .or(default_network)
        .unwrap_or("")
}

pub fn hostname(config: &RegistryConfig, (ns, name): &Key) -> String {
    format!("{name}.{ns}.svc.{}", config.domain)
}

/// Service `key` merged over `parts`; None when no cluster has it.
pub fn service(
    config: &RegistryConfig,
    key: &Key,
    parts: &[Part<'_>],
    interner: &mut Interner,
) -> Option<ServiceView> {
    let mut view: Option<ServiceView> = None;
    for part in parts {
        let Some(svc) = part.data.services.get(key) else {
            continue;
        };
        let view = view.get_or_insert_with(|| ServiceView {
            hostname: hostname(config, key),
            namespace: key.0.clone(),
            ..Default::default()
        });
        if let Some(ip) = svc.cluster_ip.as_ref().filter(|ip| ip.as_str() != "None") {
            view.cluster_ips.insert(part.id.to_string(), ip.clone());
        }
        if svc.cluster_ip.as_deref() == Some("None") {
            view.headless_in.push(part.id.to_string());
        }
        if svc.service_type == "ExternalName" {
            view.external_name = svc.external_name.clone();
        }
        for p in &svc.ports {
            let port = PortView {
                name: p.name.clone(),
                port: p.port,
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            };
            if !view.ports.contains(&port) {
                view.ports.push(port);
            }
        }
        if !part.stale {
            add_endpoints(view, key, part, interner);
        }
    }
    let mut view = view?;
    view.ports.sort();
    view.headless_in.sort();
    dedup_endpoints(&mut view.endpoints);
    Some(view)
}

/// The endpoints `part`'s slices give Service `key` (which `part` has).
fn add_endpoints(view: &mut ServiceView, key: &Key, part: &Part<'_>, interner: &mut Interner) {
    let Some(svc) = part.data.services.get(key) else {
        return;
    };
    let mut places = Places::default();
    for slice_name in part.index.slices_of(key) {
        let Some(slice) = part.data.slices.get(&(key.0.clone(), slice_name.clone())) else {
            continue;
        };
        for sp in &svc.ports {
            let Some((_, target)) = slice.ports.iter().find(|(n, _)| *n == sp.name) else {
                continue;
            };
            for ep in &slice.endpoints {
                let ports = (*target, sp.port);
                let views = endpoint_views(part, ep, ports, interner, &mut places);
                view.endpoints.extend(views);
            }
        }
    }
}

/// Gateways of every part, and the gateway Services dropped (sorted, without repeats).
pub fn gateways(
    parts: &[Part<'_>],
    names: &Arc<GatewayNames>,
    wanted: &mut HashSet<String>,
) -> (Vec<GatewayView>, Vec<DroppedGateway>) {
    let (mut found, mut dropped) = (Vec::new(), Vec::new());
    for part in parts {
        let f = gateways::of_cluster(&part.id, part.data, part.index.gateways(), names, wanted);
        found.extend(f.gateways);
        dropped.extend(f.dropped);
    }
    found.sort();
    found.dedup();
    dropped.sort();
    dropped.dedup();
    (found, dropped)
}

/// Everything merged at once (the registry merges incrementally, [`super::view`]; tests check
/// one service's merge with this).
#[cfg(test)]
pub struct Merged {
    pub snapshot: Snapshot,
}

/// Merges every service of every part.
#[cfg(test)]
pub fn all(
    config: &RegistryConfig,
    parts: &[Part<'_>],
    names: &Arc<GatewayNames>,
    interner: &mut Interner,
) -> Merged {
    let mut services = BTreeMap::new();
    for key in keys(parts) {
        if let Some(v) = service(config, &key, parts, interner) {
            services.insert(v.hostname.clone(), Arc::new(v));
        }
    }
    let (gateways, _) = gateways(parts, names, &mut HashSet::new());
    Merged {
        snapshot: Snapshot {
            services: services.into_values().collect(),
            gateways,
        },
    }
}

/// Every Service any part has.
pub fn keys(parts: &[Part<'_>]) -> HashSet<Key> {
    parts
        .iter()
        .flat_map(|p| p.data.services.keys().cloned())
        .collect()
}

/// Sorts endpoints and keeps one per (cluster, address, service port): Istio's
/// endpointSliceCache counts an endpoint listed in two slices (while it moves between them)
/// once. The ready copy is kept, as the newer one.
fn dedup_endpoints(endpoints: &mut Vec<EndpointView>) {
    endpoints.sort_by(|a, b| {
        (&a.cluster, &a.address, a.service_port, !a.ready, a.port).cmp(&(
            &b.cluster,
            &b.address,
            b.service_port,
            !b.ready,
            b.port,
        ))
    });
    endpoints.dedup_by(|b, a| {
        (&a.cluster, &a.address, a.service_port) == (&b.cluster, &b.address, b.service_port)
    });
}

/// Node localities as shared strings, looked up once per node within one merge.
#[derive(Default)]
struct Places {
    nodes: HashMap<String, Arc<str>>,
}

impl Places {
    fn node(&mut self, part: &Part<'_>, node: &str, interner: &mut Interner) -> Arc<str> {
        if let Some(l) = self.nodes.get(node) {
            return l.clone();
        }
        let locality = part
            .data
            .nodes
            .get(node)
            .map(|n| n.locality.to_string())
            // An unknown node's locality is the empty one, as `Locality::default()` writes it.
            .unwrap_or_else(|| Locality::default().to_string());
        let l = interner.str(&locality);
        self.nodes.insert(node.to_string(), l.clone());
        l
    }
}

/// One slice endpoint's views, as Istio's endpoint slice controller builds them: terminating
/// endpoints are left out (Istio's endpoint builder never sends them), and an endpoint whose
/// Pod has not been seen yet waits for it (Istio queues it until the pod arrives,
/// `pendingPods`) rather than going out without the pod's labels and identity.
fn endpoint_views(
    part: &Part<'_>,
    ep: &SliceEndpoint,
    (port, service_port): (u16, u16),
    interner: &mut Interner,
    places: &mut Places,
) -> Vec<EndpointView> {
    if ep.terminating && !ep.ready {
        return Vec::new();
    }
    let pod = match &ep.pod {
        Some(key) => match part.data.pods.get(key) {
            Some(pod) => Some(pod),
            None => return Vec::new(),
        },
        None => None,
    };
    let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
    // Network: the pod's label, else the cluster's.
    let network = match labels.get(label::NETWORK) {
        Some(n) => interner.str(n),
        None => part.network.clone(),
    };
    let node = ep
        .node
        .as_ref()
        .or_else(|| pod.and_then(|p| p.node.as_ref()));
    let locality = match pod_locality(&labels) {
        Some(l) => interner.str(&l.to_string()),
        None => match node {
            Some(n) => places.node(part, n, interner),
            None => interner.str(&Locality::default().to_string()),
        },
    };
    let service_account = pod
        .map(|p| p.service_account.clone())
        .unwrap_or_else(|| interner.str(""));
    ep.addresses
        .iter()
        .map(|address| EndpointView {
            cluster: part.id.clone(),
            network: network.clone(),
            address: address.clone(),
            port,
            service_port,
            locality: locality.clone(),
            labels: labels.clone(),
            ready: ep.ready,
            service_account: service_account.clone(),
            hostname: ep.hostname.clone(),
        })
        .collect()
}

/// Istio's GetLocalityLabel and SanitizeLocalityLabel: `topology.istio.io/locality`, else the
/// legacy `istio-locality`, overrides the node's; Kubernetes label values cannot hold `/`, so
/// `region.zone.subzone` is read with dots (unless the value already has slashes).
fn pod_locality(labels: &BTreeMap<String, String>) -> Option<Locality> {
    let raw = labels
        .get(label::LOCALITY)
        .or_else(|| labels.get(label::LEGACY_LOCALITY))
        .filter(|v| !v.is_empty())?;
    let path = if raw.contains('/') {
        raw.clone()
    } else {
        raw.replace('.', "/")
    };
    path.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::names::Servers;
    use crate::registry::types::{NodeInfo, PodInfo, ServiceInfo, ServicePort, SliceInfo};
    use std::time::Duration;

    fn config() -> RegistryConfig {
        RegistryConfig {
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout: Duration::from_secs(30),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cluster(version: &str, ip: &str, zone: &str) -> ClusterData {
        let mut d = ClusterData::default();
        let key = ("sample".to_string(), "helloworld".to_string());
        d.services.insert(
            key.clone(),
            ServiceInfo {
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 5000,
                    ..Default::default()
                }],
                labels: labels(&[]),
                cluster_ip: Some("10.96.0.9".into()),
                external_addresses: vec![],
                ..Default::default()
            },
        );
        let ep = SliceEndpoint {
            addresses: vec![ip.into()],
            ready: true,
            pod: Some(("sample".into(), format!("hw-{version}"))),
            node: Some("node1".into()),
            ..Default::default()
        };
        d.slices.insert(
            ("sample".into(), "hw-abc".into()),
            SliceInfo {
                service: "helloworld".into(),
                ports: vec![("http".into(), 5000)],
                endpoints: vec![ep],
            },
        );
        d.pods.insert(
            ("sample".into(), format!("hw-{version}")),
            PodInfo {
                labels: Arc::new(labels(&[("app", "helloworld"), ("version", version)])),
                service_account: "helloworld".into(),
                node: Some("node1".into()),
            },
        );
        let node = NodeInfo {
            locality: zone.parse().unwrap(),
            ..Default::default()
        };
        d.nodes.insert("node1".into(), node);
        d
    }

    fn names() -> Arc<GatewayNames> {
        let servers = Servers::Udp(Vec::new());
        GatewayNames::new(
            tokio::sync::watch::channel(0).0,
            servers,
            Duration::from_secs(30),
        )
    }

    /// Merges `clusters` (id, default network, data, stale) as the registry does.
    fn merge_parts(clusters: &[(&str, Option<&str>, &ClusterData, bool)]) -> Merged {
        let c = config();
        let indexes: Vec<Index> = clusters.iter().map(|c| Index::build(c.2)).collect();
        let parts: Vec<Part<'_>> = clusters
            .iter()
            .zip(&indexes)
            .map(|((id, network, data, stale), index)| {
                Part::new(id, *network, data, index, *stale, &c)
            })
            .collect();
        all(&c, &parts, &names(), &mut Interner::default())
    }

    /// Merges `clusters` (id, default network, data), none stale.
    fn merge(clusters: &[(&str, Option<&str>, &ClusterData)]) -> Merged {
        let fresh: Vec<_> = clusters
            .iter()
            .map(|(i, n, d)| (*i, *n, *d, false))
            .collect();
        merge_parts(&fresh)
    }

    #[test]
    fn endpoints_of_both_clusters_carry_network_and_locality() {
        let mut c1 = cluster("v1", "10.10.0.5", "region1/zone1");
        c1.namespaces.insert(
            "istio-system".into(),
            labels(&[(label::NETWORK, "network1")]),
        );
        let mut c2 = cluster("v2", "10.20.0.5", "region2/zone2");
        let gw = ServiceInfo {
            ports: vec![ServicePort {
                name: "tls".into(),
                port: 15443,
                ..Default::default()
            }],
            labels: labels(&[(label::NETWORK, "network2")]),
            cluster_ip: None,
            external_addresses: vec!["172.31.0.12".into()],
            ..Default::default()
        };
        c2.services
            .insert(("istio-system".into(), "istio-eastwestgateway".into()), gw);
        let both = [
            ("cluster1", Some("ignored"), &c1),
            ("cluster2", Some("network2"), &c2),
        ];
        let snap = merge(&both).snapshot;
        let hw = snap
            .services
            .iter()
            .find(|s| s.hostname == "helloworld.sample.svc.cluster.local")
            .unwrap();
        assert_eq!(
            hw.ports,
            vec![PortView {
                name: "http".into(),
                port: 5000,
                ..Default::default()
            }]
        );
        let eps: Vec<(&str, &str, &str, &str)> = hw
            .endpoints
            .iter()
            .map(|e| {
                (
                    &*e.cluster,
                    &*e.network,
                    &*e.locality,
                    e.labels["version"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            eps,
            [
                ("cluster1", "network1", "region1/zone1", "v1"),
                ("cluster2", "network2", "region2/zone2", "v2")
            ]
        );
        assert_eq!(&*hw.endpoints[0].service_account, "helloworld");
        assert_eq!(
            snap.gateways,
            [GatewayView {
                network: "network2".into(),
                cluster: "cluster2".into(),
                address: "172.31.0.12".into(),
                port: 15443
            }]
        );
    }

    #[test]
    fn pod_network_label_wins_and_stale_clusters_lose_endpoints() {
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        d.pods.values_mut().for_each(|p| {
            Arc::make_mut(&mut p.labels).insert(label::NETWORK.into(), "podnet".into());
        });
        let gone = cluster("v2", "10.20.0.5", "r/z");
        let snap = merge_parts(&[
            ("c", Some("clusternet"), &d, false),
            ("gone", None, &gone, true),
        ])
        .snapshot;
        assert_eq!(snap.services[0].endpoints.len(), 1);
        assert_eq!(&*snap.services[0].endpoints[0].network, "podnet");
    }

    /// The addresses of helloworld's endpoints after merging `data` as cluster "c".
    fn addresses(data: &ClusterData) -> Vec<String> {
        let merged = merge(&[("c", Some("n"), data)]);
        merged.snapshot.services[0]
            .endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect()
    }

    fn slice_endpoints(d: &mut ClusterData) -> &mut Vec<SliceEndpoint> {
        &mut d.slices.values_mut().next().unwrap().endpoints
    }

    /// Istio (endpointHealthStatus, endpoint builder): a terminating endpoint is never sent,
    /// while a not-ready one that is not terminating is kept (as unhealthy).
    #[test]
    fn terminating_endpoints_are_left_out() {
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        let ep = &mut slice_endpoints(&mut d)[0];
        ep.ready = false;
        assert_eq!(addresses(&d), ["10.10.0.5"]);
        slice_endpoints(&mut d)[0].terminating = true;
        assert!(addresses(&d).is_empty());
    }

    /// Istio (endpointSliceCache.get): an endpoint listed in two slices of one Service (while
    /// it moves between them) counts once; the ready copy is kept.
    #[test]
    fn an_endpoint_in_two_slices_counts_once() {
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        let mut second = d.slices.values().next().unwrap().clone();
        second.endpoints[0].ready = false;
        d.slices.insert(("sample".into(), "hw-def".into()), second);
        let merged = merge(&[("c", Some("n"), &d)]);
        let eps = &merged.snapshot.services[0].endpoints;
        assert_eq!(eps.len(), 1);
        assert!(eps[0].ready);
    }

    /// Istio (getPod, pendingPods): an endpoint whose Pod is not known yet waits for it
    /// instead of going out without the pod's labels (tlsMode) and service account; it is
    /// published once the pod arrives. An endpoint with no Pod target needs none.
    #[test]
    fn an_endpoint_waits_for_its_pod() {
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        let pod = d.pods.drain().next().unwrap();
        assert!(addresses(&d).is_empty());
        d.pods.insert(pod.0, pod.1);
        assert_eq!(addresses(&d), ["10.10.0.5"]);
        slice_endpoints(&mut d)[0].pod = None;
        d.pods.clear();
        assert_eq!(addresses(&d), ["10.10.0.5"]);
    }

    /// Istio (getPodLocality, GetLocalityLabel, SanitizeLocalityLabel): a pod's
    /// `topology.istio.io/locality`, else its legacy `istio-locality` label
    /// (`region.zone.subzone`, dots because label values cannot hold `/`), overrides its
    /// node's locality.
    #[test]
    fn pod_locality_labels_override_the_node() {
        let locality = |pairs: &[(&str, &str)]| {
            let mut d = cluster("v1", "10.10.0.5", "noderegion/nodezone");
            let pod = d.pods.values_mut().next().unwrap();
            Arc::make_mut(&mut pod.labels).extend(labels(pairs));
            merge(&[("c", Some("n"), &d)]).snapshot.services[0].endpoints[0]
                .locality
                .to_string()
        };
        assert_eq!(locality(&[]), "noderegion/nodezone");
        assert_eq!(locality(&[("istio-locality", "r1.z1.s1")]), "r1/z1/s1");
        assert_eq!(locality(&[("istio-locality", "r1.z1")]), "r1/z1");
        let both = [
            ("istio-locality", "old.old"),
            ("topology.istio.io/locality", "r2/z2"),
        ];
        assert_eq!(locality(&both), "r2/z2");
    }
}
