//! The registry entries of whole k8s_openapi objects, as the watchers made them before the
//! projections (issue 21; commit 94effd8 for Pods): the reference the projection tests
//! compare against. Test-only: the watchers decode [`super::projection`]'s types.

// `labels` is both watch.rs's function and the meshfed_model module it imports.
use super::{Watched, labels, ns_name};
use crate::registry::{
    ClusterData, Kind, NodeInfo, PodInfo, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use meshfed_model::Locality;
use std::collections::{BTreeMap, HashMap};

impl Watched for Namespace {
    type Key = String;
    type Value = BTreeMap<String, String>;
    const KIND: Kind = Kind::Namespace;
    fn entry(&self) -> Option<(String, Self::Value)> {
        Some((self.key(), labels(self)))
    }
    fn key(&self) -> String {
        self.name_any()
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<String, Self::Value> {
        &mut d.namespaces
    }
}

impl Watched for Node {
    type Key = String;
    type Value = NodeInfo;
    const KIND: Kind = Kind::Node;
    /// Istio's getPodLocality: the GA topology labels, else the legacy `failure-domain.beta`
    /// ones; addresses of type `ExternalIP` (all Istio reaches NodePort gateways on).
    fn entry(&self) -> Option<(String, NodeInfo)> {
        let l = labels(self);
        let get = |k: &str, legacy: &str| {
            l.get(k)
                .or_else(|| l.get(legacy))
                .map(String::as_str)
                .unwrap_or("")
        };
        let locality = Locality::new(
            get(labels::REGION, labels::LEGACY_REGION),
            get(labels::ZONE, labels::LEGACY_ZONE),
            get(labels::SUBZONE, labels::SUBZONE),
        );
        let external_ips = self
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "ExternalIP" && !a.address.is_empty())
            .map(|a| a.address.clone())
            .collect();
        let info = NodeInfo {
            locality,
            labels: l.clone(),
            external_ips,
        };
        Some((self.key(), info))
    }
    fn key(&self) -> String {
        self.name_any()
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<String, NodeInfo> {
        &mut d.nodes
    }
}

impl Watched for Service {
    type Key = (String, String);
    type Value = ServiceInfo;
    const KIND: Kind = Kind::Service;
    fn entry(&self) -> Option<(Self::Key, ServiceInfo)> {
        let spec = self.spec.as_ref()?;
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    app_protocol: p.app_protocol.clone(),
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                })
            })
            .collect();
        let ingress = self
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let mut external: Vec<String> = ingress
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .collect();
        external.extend(spec.external_ips.iter().flatten().cloned());
        let info = ServiceInfo {
            ports,
            labels: labels(self),
            cluster_ip: spec.cluster_ip.clone(),
            external_addresses: external,
            service_type: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            external_name: spec.external_name.clone(),
            node_selector: node_selector(self),
        };
        Some((self.key(), info))
    }
    fn key(&self) -> Self::Key {
        ns_name(self)
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<Self::Key, ServiceInfo> {
        &mut d.services
    }
}

/// Istio's getNodeSelectorsForService: the annotation's JSON label map; one that does not
/// parse selects every node.
fn node_selector(svc: &Service) -> Option<BTreeMap<String, String>> {
    let raw = svc.annotations().get(labels::NODE_SELECTOR)?;
    Some(serde_json::from_str(raw).unwrap_or_default())
}

impl Watched for EndpointSlice {
    type Key = (String, String);
    type Value = SliceInfo;
    const KIND: Kind = Kind::EndpointSlice;
    /// FQDN slices are skipped, as Istio's endpoint slice controller does (its issue 34995).
    fn entry(&self) -> Option<(Self::Key, SliceInfo)> {
        if self.address_type == "FQDN" {
            return None;
        }
        let service = labels(self).get("kubernetes.io/service-name")?.clone();
        let ports = self
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| SliceEndpoint {
                addresses: e.addresses.clone(),
                // Kubernetes: an unknown readiness is to be read as ready.
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                terminating: e
                    .conditions
                    .as_ref()
                    .and_then(|c| c.terminating)
                    .unwrap_or(false),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .map(|r| {
                        (
                            r.namespace.clone().unwrap_or_default(),
                            r.name.clone().unwrap_or_default(),
                        )
                    }),
                node: e.node_name.clone(),
                hostname: e.hostname.clone(),
            })
            .collect();
        Some((
            self.key(),
            SliceInfo {
                service,
                ports,
                endpoints,
            },
        ))
    }
    fn key(&self) -> Self::Key {
        ns_name(self)
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<Self::Key, SliceInfo> {
        &mut d.slices
    }
}

impl Watched for Pod {
    type Key = (String, String);
    type Value = PodInfo;
    const KIND: Kind = Kind::Pod;
    fn entry(&self) -> Option<(Self::Key, PodInfo)> {
        let spec = self.spec.as_ref();
        let info = PodInfo {
            labels: labels(self).into(),
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default")
                .into(),
            node: spec.and_then(|s| s.node_name.clone()),
        };
        Some((self.key(), info))
    }
    fn key(&self) -> Self::Key {
        ns_name(self)
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<Self::Key, PodInfo> {
        &mut d.pods
    }
}
