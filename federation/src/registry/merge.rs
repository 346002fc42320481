//! Builds the merged view from each cluster's data: services, their endpoints as Istio's
//! endpoint slice controller keeps them, and the network gateways ([`super::gateways`]).

use super::RegistryConfig;
use super::gateways;
use super::names::GatewayNames;
use super::types::{
    ClusterData, DroppedGateway, EndpointView, GatewayView, PortView, ServiceView, SliceEndpoint,
    Snapshot,
};
use meshfed_model::{Locality, labels as label};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub struct Merger<'a> {
    config: &'a RegistryConfig,
    names: &'a Arc<GatewayNames>,
    services: BTreeMap<String, ServiceView>,
    gateways: Vec<GatewayView>,
    dropped: Vec<DroppedGateway>,
    /// The gateway hostnames the view used (the rest need no more lookups).
    wanted: HashSet<String>,
}

/// The merged view and what it left out.
pub struct Merged {
    pub snapshot: Snapshot,
    pub dropped: Vec<DroppedGateway>,
    pub wanted: HashSet<String>,
}

impl<'a> Merger<'a> {
    pub fn new(config: &'a RegistryConfig, names: &'a Arc<GatewayNames>) -> Self {
        Merger {
            config,
            names,
            services: BTreeMap::new(),
            gateways: Vec::new(),
            dropped: Vec::new(),
            wanted: HashSet::new(),
        }
    }

    /// Adds one cluster; `stale` drops its endpoints (kept services and gateways).
    pub fn add_cluster(
        &mut self,
        id: &str,
        default_network: Option<&str>,
        data: &ClusterData,
        stale: bool,
    ) {
        // The cluster's network: its system namespace's label, else what it was configured with.
        let cluster_network = data
            .namespaces
            .get(&self.config.system_namespace)
            .and_then(|l| l.get(label::NETWORK))
            .map(String::as_str)
            .or(default_network)
            .unwrap_or("");
        for ((ns, name), svc) in &data.services {
            let view = self.service(ns, name);
            if let Some(ip) = svc.cluster_ip.as_ref().filter(|ip| ip.as_str() != "None") {
                view.cluster_ips.insert(id.to_string(), ip.clone());
            }
            if svc.cluster_ip.as_deref() == Some("None") {
                view.headless_in.push(id.to_string());
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
            view.ports.sort();
        }
        let found = gateways::of_cluster(id, data, self.names, &mut self.wanted);
        self.gateways.extend(found.gateways);
        self.dropped.extend(found.dropped);
        if !stale {
            self.add_endpoints(id, cluster_network, data);
        }
    }

    fn add_endpoints(&mut self, id: &str, cluster_network: &str, data: &ClusterData) {
        for ((ns, _), slice) in &data.slices {
            let Some(svc) = data.services.get(&(ns.clone(), slice.service.clone())) else {
                continue;
            };
            let mut endpoints = Vec::new();
            for sp in &svc.ports {
                let Some((_, target)) = slice.ports.iter().find(|(n, _)| *n == sp.name) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let place = (id, cluster_network);
                    endpoints.extend(endpoint_views(place, data, ep, *target, sp.port));
                }
            }
            self.service(ns, &slice.service).endpoints.extend(endpoints);
        }
    }

    fn service(&mut self, ns: &str, name: &str) -> &mut ServiceView {
        let hostname = format!("{name}.{ns}.svc.{}", self.config.domain);
        self.services
            .entry(hostname.clone())
            .or_insert_with(|| ServiceView {
                hostname,
                namespace: ns.to_string(),
                ..Default::default()
            })
    }

    pub fn finish(mut self) -> Merged {
        for svc in self.services.values_mut() {
            svc.headless_in.sort();
            dedup_endpoints(&mut svc.endpoints);
        }
        self.gateways.sort();
        self.gateways.dedup();
        self.dropped.sort();
        self.dropped.dedup();
        Merged {
            snapshot: Snapshot {
                services: self.services.into_values().collect(),
                gateways: self.gateways,
            },
            dropped: self.dropped,
            wanted: self.wanted,
        }
    }
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

/// One slice endpoint's views, as Istio's endpoint slice controller builds them: terminating
/// endpoints are left out (Istio's endpoint builder never sends them), and an endpoint whose
/// Pod has not been seen yet waits for it (Istio queues it until the pod arrives,
/// `pendingPods`) rather than going out without the pod's labels and identity.
fn endpoint_views(
    (cluster, cluster_network): (&str, &str),
    data: &ClusterData,
    ep: &SliceEndpoint,
    port: u16,
    service_port: u16,
) -> Vec<EndpointView> {
    if ep.terminating && !ep.ready {
        return Vec::new();
    }
    let pod = match &ep.pod {
        Some(key) => match data.pods.get(key) {
            Some(pod) => Some(pod),
            None => return Vec::new(),
        },
        None => None,
    };
    let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
    // Network: the pod's label, else the cluster's.
    let network = labels
        .get(label::NETWORK)
        .cloned()
        .unwrap_or_else(|| cluster_network.to_string());
    let node = ep
        .node
        .as_ref()
        .or_else(|| pod.and_then(|p| p.node.as_ref()));
    let locality = pod_locality(&labels).unwrap_or_else(|| {
        node.and_then(|n| data.nodes.get(n))
            .map(|n| n.locality.clone())
            .unwrap_or_default()
    });
    let service_account = pod.map(|p| p.service_account.clone()).unwrap_or_default();
    ep.addresses
        .iter()
        .map(|address| EndpointView {
            cluster: cluster.to_string(),
            network: network.clone(),
            address: address.clone(),
            port,
            service_port,
            locality: locality.to_string(),
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
                labels: labels(&[("app", "helloworld"), ("version", version)]),
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

    /// Merges `clusters` (id, default network, data) as the registry does.
    fn merge(clusters: &[(&str, Option<&str>, &ClusterData)]) -> Merged {
        let c = config();
        let names = names();
        let mut m = Merger::new(&c, &names);
        for (id, network, data) in clusters {
            m.add_cluster(id, *network, data, false);
        }
        m.finish()
    }

    #[test]
    fn endpoints_of_both_clusters_carry_network_and_locality() {
        let c = config();
        let names = names();
        let mut m = Merger::new(&c, &names);
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
        m.add_cluster("cluster1", Some("ignored"), &c1, false);
        m.add_cluster("cluster2", Some("network2"), &c2, false);
        let snap = m.finish().snapshot;
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
                    e.cluster.as_str(),
                    e.network.as_str(),
                    e.locality.as_str(),
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
        assert_eq!(hw.endpoints[0].service_account, "helloworld");
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
        let c = config();
        let names = names();
        let mut m = Merger::new(&c, &names);
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        d.pods.values_mut().for_each(|p| {
            p.labels.insert(label::NETWORK.into(), "podnet".into());
        });
        m.add_cluster("c", Some("clusternet"), &d, false);
        m.add_cluster("gone", None, &cluster("v2", "10.20.0.5", "r/z"), true);
        let snap = m.finish().snapshot;
        assert_eq!(snap.services[0].endpoints.len(), 1);
        assert_eq!(snap.services[0].endpoints[0].network, "podnet");
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
            pod.labels.extend(labels(pairs));
            merge(&[("c", Some("n"), &d)]).snapshot.services[0].endpoints[0]
                .locality
                .clone()
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
