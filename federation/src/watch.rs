//! One cluster's watchers: a kube-rs watcher per kind, each relist swapped in whole at
//! `InitDone` so a `410 Gone` loses and duplicates nothing. Objects are decoded as
//! [`projection`]s, only the fields the entries below read.

use crate::registry::intern::Interner;
use crate::registry::{
    ClusterData, Kind, NodeInfo, PodInfo, Registry, ServiceInfo, ServicePort, SliceEndpoint,
    SliceInfo, Touch,
};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource, ResourceExt};
use meshfed_model::{Locality, labels};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use projection::{EndpointSliceLite, NamespaceLite, NodeLite, PodLite, ServiceLite};

/// Which cluster generation a watcher feeds.
#[derive(Clone)]
pub struct Target {
    pub registry: Arc<Registry>,
    pub id: String,
    pub generation: u64,
}

/// How a watched object becomes registry data.
trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    type Key: Eq + Hash + Send;
    type Value: Send;
    const KIND: Kind;
    fn entry(&self) -> Option<(Self::Key, Self::Value)>;
    fn key(&self) -> Self::Key;
    fn map(d: &mut ClusterData) -> &mut HashMap<Self::Key, Self::Value>;
    /// What a change to the object `key` can change in the merged view (by default anything
    /// in the cluster, which is always right and only slower).
    fn touch(_key: &Self::Key) -> Touch {
        Touch::Cluster
    }
    /// What a relist of the kind can change.
    const RELIST: Touch = Touch::Cluster;
    /// Replaces what the value repeats with the registry's shared copies.
    fn share(_value: &mut Self::Value, _interner: &mut Interner) {}
}

fn ns_name<K: Resource>(o: &K) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

fn labels<K: Resource>(o: &K) -> BTreeMap<String, String> {
    o.meta().labels.clone().unwrap_or_default()
}

impl Watched for NamespaceLite {
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
    /// Only the system namespace's network label matters, and the registry compares each
    /// cluster's network at every snapshot.
    fn touch(_: &String) -> Touch {
        Touch::Nothing
    }
    const RELIST: Touch = Touch::Nothing;
}

impl Watched for NodeLite {
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
    fn touch(key: &String) -> Touch {
        Touch::Node(key.clone())
    }
}

impl Watched for ServiceLite {
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
    fn touch(key: &Self::Key) -> Touch {
        Touch::Service(key.clone())
    }
}

/// Istio's getNodeSelectorsForService: the annotation's JSON label map; one that does not
/// parse selects every node.
fn node_selector(svc: &ServiceLite) -> Option<BTreeMap<String, String>> {
    let raw = svc.annotations().get(labels::NODE_SELECTOR)?;
    Some(serde_json::from_str(raw).unwrap_or_default())
}

impl Watched for EndpointSliceLite {
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
    fn touch(key: &Self::Key) -> Touch {
        Touch::Slice(key.clone())
    }
}

impl Watched for PodLite {
    type Key = (String, String);
    type Value = PodInfo;
    const KIND: Kind = Kind::Pod;
    fn entry(&self) -> Option<(Self::Key, PodInfo)> {
        let info = PodInfo {
            labels: Arc::new(labels(self)),
            service_account: self
                .spec
                .service_account_name
                .as_deref()
                .unwrap_or("default")
                .into(),
            node: self.spec.node_name.clone(),
        };
        Some((self.key(), info))
    }
    fn key(&self) -> Self::Key {
        ns_name(self)
    }
    fn map(d: &mut ClusterData) -> &mut HashMap<Self::Key, PodInfo> {
        &mut d.pods
    }
    fn touch(key: &Self::Key) -> Touch {
        Touch::Pod(key.clone())
    }
    /// A Deployment's pods share their labels (but for `pod-template-hash`) and service
    /// account: kept once, and shared by every endpoint of those pods.
    fn share(pod: &mut PodInfo, interner: &mut Interner) {
        pod.labels = interner.share_labels(&pod.labels);
        pod.service_account = interner.str(&pod.service_account);
    }
}

/// How one watched object type lands in the registry: a kind's entry, key and map.
struct Sink<O, Key, Value> {
    kind: Kind,
    entry: fn(&O) -> Option<(Key, Value)>,
    key: fn(&O) -> Key,
    map: fn(&mut ClusterData) -> &mut HashMap<Key, Value>,
    touch: fn(&Key) -> Touch,
    relist: Touch,
    share: fn(&mut Value, &mut Interner),
}

impl<K: Watched> Sink<K, K::Key, K::Value> {
    fn of() -> Self {
        Sink {
            kind: K::KIND,
            entry: K::entry,
            key: K::key,
            map: K::map,
            touch: K::touch,
            relist: K::RELIST,
            share: K::share,
        }
    }
}

/// Watches one kind until aborted, feeding `target`.
async fn run_kind<K: Watched>(api: Api<K>, target: Target) {
    run_sink(api, target, Sink::<K, K::Key, K::Value>::of()).await
}

/// Watches `api` until aborted, feeding `target` through `sink`.
async fn run_sink<O, Key, Value>(api: Api<O>, target: Target, sink: Sink<O, Key, Value>)
where
    O: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Key: Eq + Hash + Send,
    Value: Send,
{
    let mut events = watcher(
        api,
        watcher::Config::default().page_size(crate::bounded::PAGE_SIZE),
    )
    .default_backoff()
    .boxed();
    let mut staging: Option<HashMap<Key, Value>> = None;
    let Sink {
        kind,
        entry,
        key,
        map,
        touch,
        relist,
        share,
    } = sink;
    // Shared copies are looked up outside the registry's lock.
    let decode = |o: &O| {
        let (k, mut v) = entry(o)?;
        share(&mut v, &mut target.registry.interner());
        Some((k, v))
    };
    while let Some(event) = events.next().await {
        let Target {
            registry,
            id,
            generation,
        } = &target;
        match event {
            Ok(Event::Init) => staging = Some(HashMap::new()),
            Ok(Event::InitApply(o)) => {
                if let (Some(staged), Some((k, v))) = (staging.as_mut(), decode(&o)) {
                    staged.insert(k, v);
                }
            }
            Ok(Event::InitDone) => {
                let mut old = staging.take().unwrap_or_default();
                registry.update_touching(id, *generation, relist.clone(), |d| {
                    std::mem::swap(map(d), &mut old)
                });
                // The replaced objects are freed after the lock is released.
                drop(old);
                registry.listed(id, *generation, kind);
            }
            Ok(Event::Apply(o)) => {
                let k = key(&o);
                let decoded = decode(&o);
                registry.update_touching(id, *generation, touch(&k), |d| match decoded {
                    Some((k, v)) => {
                        map(d).insert(k, v);
                    }
                    None => {
                        map(d).remove(&k);
                    }
                })
            }
            Ok(Event::Delete(o)) => {
                let k = key(&o);
                registry.update_touching(id, *generation, touch(&k), |d| {
                    map(d).remove(&k);
                })
            }
            Err(e) => registry.watch_error(id, *generation, format!("{kind:?}: {e}")),
        }
    }
}

/// What [`run_cluster`] reads of a remote cluster, as (API group, resource): all that a
/// remote secret's reader needs to be granted (`create-remote-secret` grants exactly this).
pub const REMOTE_RESOURCES: [(&str, &str); 5] = [
    ("", "namespaces"),
    ("", "services"),
    ("discovery.k8s.io", "endpointslices"),
    ("", "pods"),
    ("", "nodes"),
];

/// How many kinds a cluster lists before it counts as synced.
pub fn kinds(local: bool) -> usize {
    if local { 5 + istio::KINDS.len() } else { 5 }
}

/// Watches every kind of one cluster until aborted.
pub async fn run_cluster(client: Client, target: Target, local: bool) {
    let t = || target.clone();
    let mut tasks = vec![
        tokio::spawn(run_kind::<NamespaceLite>(Api::all(client.clone()), t())),
        tokio::spawn(run_kind::<ServiceLite>(Api::all(client.clone()), t())),
        tokio::spawn(run_kind::<EndpointSliceLite>(Api::all(client.clone()), t())),
        tokio::spawn(run_kind::<PodLite>(Api::all(client.clone()), t())),
        tokio::spawn(run_kind::<NodeLite>(Api::all(client.clone()), t())),
    ];
    if local {
        for kind in istio::KINDS {
            tasks.push(tokio::spawn(istio::run(client.clone(), t(), kind)));
        }
    }
    // Aborting this task must stop the watchers too.
    let _guard = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    futures::future::join_all(tasks).await;
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

mod istio;
mod projection;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod whole;
