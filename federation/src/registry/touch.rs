//! What a watcher's change touches: which Services of the merged view it can change. The
//! registry applies the change to the cluster's data, keeps the cluster's [`Index`] in step,
//! and re-merges only the Services named here at the next snapshot.

use super::index::{Index, Key};
use super::types::ClusterData;
use std::collections::HashSet;

/// The object a change is about.
#[derive(Debug, Clone)]
pub enum Touch {
    /// A Service (namespace, name).
    Service(Key),
    /// An EndpointSlice (namespace, name): its Service before and after.
    Slice(Key),
    /// A Pod (namespace, name): the Services whose slices point at it, when what the registry
    /// keeps of it changed.
    Pod(Key),
    /// A Node: every Service of the cluster if its locality changed (gateways are worked out
    /// at every snapshot).
    Node(String),
    /// Nothing the merged services read (Namespaces: the cluster's network is compared at
    /// every snapshot; DestinationRules and VirtualServices are read separately).
    Nothing,
    /// Anything (a relist): every Service of the cluster, and the index rebuilt.
    Cluster,
}

/// What one generation keeps beside its data for the incremental merge.
#[derive(Debug, Default)]
pub struct Tracked {
    pub data: ClusterData,
    pub index: Index,
    /// Pods whose change may touch Services through slices: resolved at the next snapshot
    /// with one pass over the cluster's slices, whatever their number.
    pub dirty_pods: HashSet<Key>,
}

impl Tracked {
    /// Applies `f` to the data; returns the Services it may have changed.
    pub fn apply(&mut self, touch: Touch, f: impl FnOnce(&mut ClusterData)) -> Vec<Key> {
        let mut dirty = Vec::new();
        match touch {
            Touch::Service(key) => {
                f(&mut self.data);
                self.index
                    .service_changed(&key, self.data.services.get(&key));
                dirty.push(key);
            }
            Touch::Slice(key) => {
                if let Some(old) = self.data.slices.get(&key) {
                    self.index.slice_removed(&key, old);
                    dirty.push((key.0.clone(), old.service.clone()));
                }
                f(&mut self.data);
                if let Some(new) = self.data.slices.get(&key) {
                    self.index.slice_added(&key, new);
                    dirty.push((key.0.clone(), new.service.clone()));
                }
            }
            Touch::Pod(key) => {
                let old = self.data.pods.get(&key).cloned();
                f(&mut self.data);
                if self.data.pods.get(&key) != old.as_ref() {
                    self.dirty_pods.insert(key);
                }
            }
            Touch::Node(name) => {
                let locality = |d: &ClusterData| d.nodes.get(&name).map(|n| n.locality.clone());
                let old = locality(&self.data);
                f(&mut self.data);
                if locality(&self.data) != old {
                    dirty.extend(self.data.services.keys().cloned());
                }
            }
            Touch::Nothing => f(&mut self.data),
            Touch::Cluster => {
                dirty.extend(self.data.services.keys().cloned());
                f(&mut self.data);
                self.index = Index::build(&self.data);
                dirty.extend(self.data.services.keys().cloned());
            }
        }
        dirty
    }

    /// The Services whose slices point at a pod changed since the last call.
    pub fn take_pod_services(&mut self) -> HashSet<Key> {
        if self.dirty_pods.is_empty() {
            return HashSet::new();
        }
        let pods = std::mem::take(&mut self.dirty_pods);
        self.data
            .slices
            .iter()
            .filter(|(_, s)| {
                s.endpoints
                    .iter()
                    .any(|e| e.pod.as_ref().is_some_and(|p| pods.contains(p)))
            })
            .map(|((ns, _), s)| (ns.clone(), s.service.clone()))
            .collect()
    }
}
