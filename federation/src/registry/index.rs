//! What the incremental merge needs to find one service's parts in one cluster's data
//! without scanning it: the EndpointSlices of each Service, the Services labelled as network
//! gateways, and how many endpoint addresses the slices hold (for `/debug/clusterz`).
//! Kept per cluster generation, next to its data, and updated with every watcher change.

use super::types::{ClusterData, ServiceInfo, SliceInfo};
use meshfed_model::labels as label;
use std::collections::{BTreeSet, HashMap};

/// A namespaced object's (namespace, name).
pub type Key = (String, String);

#[derive(Debug, Default)]
pub struct Index {
    /// (namespace, Service name) -> the names of its slices (in that namespace).
    slices: HashMap<Key, BTreeSet<String>>,
    /// Services labelled `topology.istio.io/network`.
    gateways: BTreeSet<Key>,
    /// Endpoint addresses over every slice.
    endpoints: usize,
}

impl Index {
    /// Indexes everything in `data` (after a relist or a new generation).
    pub fn build(data: &ClusterData) -> Index {
        let mut index = Index::default();
        for (key, slice) in &data.slices {
            index.slice_added(key, slice);
        }
        for (key, svc) in &data.services {
            index.service_changed(key, Some(svc));
        }
        index
    }

    pub fn slice_added(&mut self, (ns, name): &Key, slice: &SliceInfo) {
        self.slices
            .entry((ns.clone(), slice.service.clone()))
            .or_default()
            .insert(name.clone());
        self.endpoints += addresses(slice);
    }

    pub fn slice_removed(&mut self, (ns, name): &Key, slice: &SliceInfo) {
        let service = (ns.clone(), slice.service.clone());
        if let Some(names) = self.slices.get_mut(&service) {
            names.remove(name);
            if names.is_empty() {
                self.slices.remove(&service);
            }
        }
        self.endpoints = self.endpoints.saturating_sub(addresses(slice));
    }

    /// The Service `key` is now `svc` (None: deleted).
    pub fn service_changed(&mut self, key: &Key, svc: Option<&ServiceInfo>) {
        let gateway = svc.is_some_and(|s| s.labels.contains_key(label::NETWORK));
        if gateway {
            self.gateways.insert(key.clone());
        } else {
            self.gateways.remove(key);
        }
    }

    /// The names of the slices of Service `key`.
    pub fn slices_of<'a>(&'a self, key: &Key) -> impl Iterator<Item = &'a String> + 'a {
        self.slices.get(key).into_iter().flatten()
    }

    /// The Services that may be network gateways.
    pub fn gateways(&self) -> impl Iterator<Item = &Key> {
        self.gateways.iter()
    }

    pub fn endpoints(&self) -> usize {
        self.endpoints
    }
}

fn addresses(slice: &SliceInfo) -> usize {
    slice.endpoints.iter().map(|e| e.addresses.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::types::SliceEndpoint;

    fn slice(service: &str, ips: &[&str]) -> SliceInfo {
        SliceInfo {
            service: service.into(),
            ports: vec![],
            endpoints: vec![SliceEndpoint {
                addresses: ips.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }],
        }
    }

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
    }

    /// Updating slice by slice gives the index a full build gives, including a slice that
    /// moves to another Service (its `kubernetes.io/service-name` label changed).
    #[test]
    fn updates_agree_with_a_full_build() {
        let mut data = ClusterData::default();
        let mut index = Index::default();
        let mut put = |data: &mut ClusterData, k: Key, s: SliceInfo| {
            if let Some(old) = data.slices.get(&k) {
                index.slice_removed(&k, old);
            }
            index.slice_added(&k, &s);
            data.slices.insert(k, s);
        };
        put(
            &mut data,
            key("ns", "a-1"),
            slice("a", &["10.0.0.1", "10.0.0.2"]),
        );
        put(&mut data, key("ns", "a-2"), slice("a", &["10.0.0.3"]));
        put(&mut data, key("ns", "a-2"), slice("b", &["10.0.0.4"]));
        let built = Index::build(&data);
        assert_eq!(built.slices, index.slices);
        assert_eq!(index.endpoints(), 3);
        let of_a: Vec<_> = index.slices_of(&key("ns", "a")).collect();
        assert_eq!(of_a, ["a-1"]);
        let of_b: Vec<_> = index.slices_of(&key("ns", "b")).collect();
        assert_eq!(of_b, ["a-2"]);
    }
}
