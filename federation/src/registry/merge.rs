//! Builds the merged view from each cluster's data.

use super::RegistryConfig;
use super::types::{
    ClusterData, EndpointView, GatewayView, PortView, ServiceInfo, ServiceView, SliceEndpoint,
    Snapshot,
};
use meshfed_model::labels as label;
use std::collections::BTreeMap;

pub struct Merger<'a> {
    config: &'a RegistryConfig,
    services: BTreeMap<String, ServiceView>,
    gateways: Vec<GatewayView>,
}

impl<'a> Merger<'a> {
    pub fn new(config: &'a RegistryConfig) -> Self {
        Merger {
            config,
            services: BTreeMap::new(),
            gateways: Vec::new(),
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
            self.gateways.extend(gateways(id, svc));
        }
        if stale {
            return;
        }
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
                    endpoints.extend(endpoint_views(
                        id,
                        cluster_network,
                        data,
                        ep,
                        *target,
                        sp.port,
                    ));
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

    pub fn finish(mut self) -> Snapshot {
        for svc in self.services.values_mut() {
            svc.headless_in.sort();
            svc.endpoints.sort_by(|a, b| {
                (&a.cluster, &a.address, a.port).cmp(&(&b.cluster, &b.address, b.port))
            });
        }
        self.gateways.sort();
        self.gateways.dedup();
        Snapshot {
            services: self.services.into_values().collect(),
            gateways: self.gateways,
        }
    }
}

/// A Service labelled with a network is that network's gateway: every external address,
/// on port 15443 unless `networking.istio.io/gatewayPort` says otherwise.
fn gateways(cluster: &str, svc: &ServiceInfo) -> Vec<GatewayView> {
    let Some(network) = svc.labels.get(label::NETWORK) else {
        return Vec::new();
    };
    let port = svc
        .labels
        .get(label::GATEWAY_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(label::DEFAULT_GATEWAY_PORT);
    svc.external_addresses
        .iter()
        .map(|address| GatewayView {
            network: network.clone(),
            cluster: cluster.to_string(),
            address: address.clone(),
            port,
        })
        .collect()
}

fn endpoint_views(
    cluster: &str,
    cluster_network: &str,
    data: &ClusterData,
    ep: &SliceEndpoint,
    port: u16,
    service_port: u16,
) -> Vec<EndpointView> {
    let pod = ep.pod.as_ref().and_then(|k| data.pods.get(k));
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
    let locality = node
        .and_then(|n| data.nodes.get(n))
        .cloned()
        .unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::types::{PodInfo, ServicePort, SliceInfo};
    use meshfed_model::Locality;
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
                ..Default::default()
            },
        );
        d.pods.insert(
            ("sample".into(), format!("hw-{version}")),
            PodInfo {
                labels: labels(&[("app", "helloworld"), ("version", version)]),
                service_account: "helloworld".into(),
                node: Some("node1".into()),
                ..Default::default()
            },
        );
        d.nodes.insert(
            "node1".into(),
            Locality::new(
                zone.split('/').next().unwrap(),
                zone.split('/').nth(1).unwrap(),
                "",
            ),
        );
        d
    }

    #[test]
    fn endpoints_of_both_clusters_carry_network_and_locality() {
        let c = config();
        let mut m = Merger::new(&c);
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
        let snap = m.finish();
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
        let mut m = Merger::new(&c);
        let mut d = cluster("v1", "10.10.0.5", "r/z");
        d.pods.values_mut().for_each(|p| {
            p.labels.insert(label::NETWORK.into(), "podnet".into());
        });
        m.add_cluster("c", Some("clusternet"), &d, false);
        m.add_cluster("gone", None, &cluster("v2", "10.20.0.5", "r/z"), true);
        let snap = m.finish();
        assert_eq!(snap.services[0].endpoints.len(), 1);
        assert_eq!(snap.services[0].endpoints[0].network, "podnet");
    }
}
