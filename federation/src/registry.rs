//! The merged registry: what every cluster's watchers saw, and the merged view of services,
//! endpoints (with cluster, network, locality, labels, readiness, service account) and
//! network gateways that the xDS server, the gateway and the DNS proxy are built from.

mod gateways;
mod index;
pub mod intern;
mod merge;
pub mod names;
mod touch;
pub mod types;
mod view;

pub use touch::Touch;
pub use types::*;

use intern::Interner;
use names::{GatewayNames, Servers};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;
use touch::Tracked;
use view::{PartKey, View};

/// One connection (generation) to a cluster.
struct Entry {
    secret: String,
    default_network: Option<String>,
    tracked: Tracked,
    listed: Vec<Kind>,
    needed: usize,
    status: Status,
    error: Option<String>,
    started: Instant,
    last_good: Option<Instant>,
    /// Every kind has listed at least once.
    ever_synced: bool,
    task: Option<AbortHandle>,
}

impl Entry {
    /// What `/debug/clusterz` shows: a cluster that never synced is `timeout` once past the
    /// sync timeout, whatever went wrong.
    fn shown_status(&self, timeout: Duration) -> Status {
        match self.status {
            Status::Error => Status::Error,
            _ if !self.ever_synced && self.started.elapsed() > timeout => Status::Timeout,
            s => s,
        }
    }

    /// The local cluster has no secret: its own connection, from the federation's config.
    fn is_local(&self) -> bool {
        self.secret.is_empty()
    }

    /// Holds readiness back. The local cluster, until it has synced: serving without it would
    /// withdraw every local endpoint from clients that hold them. A remote one while it never
    /// synced, is not broken for good, and is still within the timeout.
    fn blocks_readiness(&self, timeout: Duration) -> bool {
        if self.is_local() {
            return !self.ever_synced;
        }
        !self.ever_synced && self.status != Status::Error && self.started.elapsed() <= timeout
    }

    /// When a remote cluster that holds readiness back stops doing so by timing out.
    fn gives_up_at(&self, timeout: Duration) -> Option<Instant> {
        (!self.is_local() && self.blocks_readiness(timeout)).then(|| self.started + timeout)
    }
}

/// Whether the registry may be served yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet; `timeout_at` is when a remote cluster's sync timeout passes (the registry
    /// changes, and may turn ready, without any event then).
    Waiting {
        timeout_at: Option<Instant>,
    },
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<(String, u64), Entry>,
    active: HashMap<String, u64>,
    next_gen: u64,
    /// (cluster id, secret) pairs refused because another secret claimed the id first.
    conflicts: BTreeMap<(String, String), String>,
    /// The remote secrets have been listed once: until then the set of clusters is unknown.
    secrets_listed: bool,
    /// The merged services, re-merged where changes touched them.
    view: View,
}

/// Registry settings that shape the merged view.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub system_namespace: String,
    pub domain: String,
    /// The SPIFFE trust domain of workload identities (`--trust-domain`).
    pub trust_domain: String,
    /// Endpoints of a cluster unreachable for longer than this are dropped (None: kept).
    pub stale_endpoint_ttl: Option<Duration>,
    /// A cluster still syncing after this no longer holds readiness back.
    pub sync_timeout: Duration,
}

pub struct Registry {
    inner: Mutex<Inner>,
    config: RegistryConfig,
    changed: tokio::sync::watch::Sender<u64>,
    /// LoadBalancer gateway hostnames and what they resolve to.
    names: Arc<GatewayNames>,
    /// The gateways last dropped, to log each only when it starts being dropped.
    dropped: Mutex<Vec<DroppedGateway>>,
    /// Shared strings and label maps (taken with or without the registry's lock, never the
    /// other way round).
    interner: Mutex<Interner>,
}

impl Registry {
    /// Gateway hostnames are resolved through the system's resolv.conf.
    pub fn new(config: RegistryConfig) -> Self {
        Self::with_gateway_dns(config, Servers::System, names::MIN_TTL)
    }

    /// Gateway hostnames resolved by `servers`, looked up again no sooner than `min_ttl`.
    pub fn with_gateway_dns(config: RegistryConfig, servers: Servers, min_ttl: Duration) -> Self {
        let changed = tokio::sync::watch::channel(0).0;
        Registry {
            inner: Mutex::new(Inner::default()),
            config,
            names: GatewayNames::new(changed.clone(), servers, min_ttl),
            changed,
            dropped: Mutex::new(Vec::new()),
            interner: Mutex::new(Interner::default()),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared strings and label maps: watchers share what they decode through it, so
    /// equal values are kept once.
    pub fn interner(&self) -> std::sync::MutexGuard<'_, Interner> {
        self.interner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Notified on every change (watchers of the merged view wait on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A new connection to `id`; it becomes the active one once synced (make-before-break),
    /// or at once if there is none yet. `kinds` is how many kinds must list before synced.
    pub fn add_generation(
        &self,
        id: &str,
        secret: &str,
        default_network: Option<String>,
        kinds: usize,
    ) -> u64 {
        let mut inner = self.lock();
        inner.next_gen += 1;
        let generation = inner.next_gen;
        let entry = Entry {
            secret: secret.to_string(),
            default_network,
            tracked: Tracked::default(),
            listed: Vec::new(),
            needed: kinds,
            status: Status::Syncing,
            error: None,
            started: Instant::now(),
            last_good: None,
            ever_synced: false,
            task: None,
        };
        inner.entries.insert((id.to_string(), generation), entry);
        inner.active.entry(id.to_string()).or_insert(generation);
        drop(inner);
        self.bump();
        generation
    }

    pub fn set_task(&self, id: &str, generation: u64, task: AbortHandle) {
        if let Some(e) = self.lock().entries.get_mut(&(id.to_string(), generation)) {
            e.task = Some(task);
        }
    }

    /// A cluster that cannot even be connected to (a broken kubeconfig): shown, never watched.
    pub fn set_error(&self, id: &str, generation: u64, error: String) {
        if let Some(e) = self.lock().entries.get_mut(&(id.to_string(), generation)) {
            e.status = Status::Error;
            e.error = Some(error);
        }
        self.bump();
    }

    /// Removes every generation of `id` and stops their watchers.
    pub fn remove_cluster(&self, id: &str) {
        let mut inner = self.lock();
        let gens: Vec<(String, u64)> = inner
            .entries
            .keys()
            .filter(|(i, _)| i == id)
            .cloned()
            .collect();
        for key in gens {
            if let Some(task) = inner.entries.remove(&key).and_then(|e| e.task) {
                task.abort();
            }
        }
        inner.active.remove(id);
        drop(inner);
        self.bump();
    }

    /// Applies a change to one generation's data that may touch anything in it.
    pub fn update(&self, id: &str, generation: u64, f: impl FnOnce(&mut ClusterData)) {
        self.update_touching(id, generation, Touch::Cluster, f)
    }

    /// Applies a watcher's change to one generation's data; `touch` says what it is about, so
    /// that the next snapshot re-merges only the Services it can change.
    pub fn update_touching(
        &self,
        id: &str,
        generation: u64,
        touch: Touch,
        f: impl FnOnce(&mut ClusterData),
    ) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(e) = inner.entries.get_mut(&(id.to_string(), generation)) else {
            return;
        };
        let dirty = e.tracked.apply(touch, f);
        if inner.active.get(id) == Some(&generation) {
            inner.view.mark(dirty);
        }
        e.last_good = Some(Instant::now());
        if e.status == Status::Unreachable {
            e.status = if e.listed.len() >= e.needed {
                Status::Synced
            } else {
                Status::Syncing
            };
            e.error = None;
        }
        drop(guard);
        self.bump();
    }

    /// A kind finished (re)listing. When every kind has, the generation is synced and, if
    /// newer than the active one, replaces it (the old connection is stopped only now).
    pub fn listed(&self, id: &str, generation: u64, kind: Kind) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&(id.to_string(), generation)) else {
            return;
        };
        if !e.listed.contains(&kind) {
            e.listed.push(kind);
        }
        e.last_good = Some(Instant::now());
        if e.listed.len() >= e.needed {
            e.status = Status::Synced;
            e.ever_synced = true;
            e.error = None;
            let active = inner.active.get(id).copied().unwrap_or(0);
            if generation > active {
                inner.active.insert(id.to_string(), generation);
                let old: Vec<(String, u64)> = inner
                    .entries
                    .keys()
                    .filter(|(i, g)| i == id && *g < generation)
                    .cloned()
                    .collect();
                for key in old {
                    if let Some(task) = inner.entries.remove(&key).and_then(|e| e.task) {
                        task.abort();
                    }
                }
            }
        }
        drop(inner);
        self.bump();
    }

    /// A watcher error: the cluster is unreachable until a watcher succeeds again.
    pub fn watch_error(&self, id: &str, generation: u64, error: String) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&(id.to_string(), generation)) else {
            return;
        };
        let changed = e.status != Status::Unreachable;
        e.status = Status::Unreachable;
        e.error = Some(error);
        drop(inner);
        if changed {
            self.bump();
        }
    }

    pub fn set_conflict(&self, id: &str, secret: &str, error: String) {
        self.lock()
            .conflicts
            .insert((id.to_string(), secret.to_string()), error);
        self.bump();
    }

    pub fn clear_conflicts(&self, secret: &str) {
        self.lock().conflicts.retain(|(_, s), _| s != secret);
    }

    /// Per-cluster status for `/debug/clusterz` (active generations, then refused claims).
    pub fn clusters(&self) -> Vec<ClusterStatus> {
        let inner = self.lock();
        let mut out = Vec::new();
        for ((id, secret), error) in &inner.conflicts {
            out.push(ClusterStatus {
                id: id.clone(),
                secret: secret.clone(),
                generation: 0,
                status: Status::Error,
                error: Some(error.clone()),
                last_sync_age_s: None,
                services: 0,
                endpoints: 0,
                dropped_gateways: Vec::new(),
            });
        }
        for (id, generation) in &inner.active {
            let Some(e) = inner.entries.get(&(id.clone(), *generation)) else {
                continue;
            };
            let status = e.shown_status(self.config.sync_timeout);
            let endpoints = e.tracked.index.endpoints();
            out.push(ClusterStatus {
                id: id.clone(),
                secret: e.secret.clone(),
                generation: *generation,
                status,
                error: e.error.clone(),
                last_sync_age_s: e.last_good.map(|t| t.elapsed().as_secs_f64()),
                services: e.tracked.data.services.len(),
                endpoints,
                dropped_gateways: self.dropped_gateways(id, &e.tracked),
            });
        }
        out.sort_by(|a, b| (&a.id, &a.secret).cmp(&(&b.id, &b.secret)));
        out
    }

    /// Ready once the remote secrets were listed, the local cluster has synced, and every
    /// remote cluster has synced, failed for good, or passed the sync timeout (as istiod waits
    /// for its secret controller). The xDS server answers nothing before: a controller that
    /// restarts while its API server is down must not withdraw what clients hold.
    pub fn ready(&self) -> bool {
        matches!(self.readiness(), Readiness::Ready)
    }

    /// [`Registry::ready`], or when it may next become so without a registry change.
    pub fn readiness(&self) -> Readiness {
        let inner = self.lock();
        let timeout = self.config.sync_timeout;
        let entries = || {
            inner
                .active
                .iter()
                .filter_map(|(id, g)| inner.entries.get(&(id.clone(), *g)))
        };
        if inner.secrets_listed && entries().all(|e| !e.blocks_readiness(timeout)) {
            return Readiness::Ready;
        }
        Readiness::Waiting {
            timeout_at: entries().filter_map(|e| e.gives_up_at(timeout)).min(),
        }
    }

    /// Every cluster has synced: what the registry lacks is gone, not merely unseen.
    pub fn complete(&self) -> bool {
        let inner = self.lock();
        inner.secrets_listed
            && inner
                .active
                .iter()
                .filter_map(|(id, g)| inner.entries.get(&(id.clone(), *g)))
                .all(|e| e.ever_synced && e.status == Status::Synced)
    }

    /// Called by the secret controller after its first list.
    pub fn mark_secrets_listed(&self) {
        self.lock().secrets_listed = true;
        self.changed.send_modify(|g| *g += 1);
    }

    /// One cluster's gateway Services that give no gateway, and why.
    fn dropped_gateways(&self, id: &str, t: &Tracked) -> Vec<DroppedGateway> {
        let mut wanted = std::collections::HashSet::new();
        let candidates = t.index.gateways();
        let mut dropped =
            gateways::of_cluster(id, &t.data, candidates, &self.names, &mut wanted).dropped;
        dropped.sort();
        dropped
    }

    /// The merged view: the Services changed since the last snapshot are re-merged, the rest
    /// are shared with it ([`view`]).
    pub fn snapshot(&self) -> Snapshot {
        let mut guard = self.lock();
        let Inner {
            entries,
            active,
            view,
            ..
        } = &mut *guard;
        let mut keys: Vec<(String, u64)> = active.iter().map(|(i, g)| (i.clone(), *g)).collect();
        keys.sort();
        for key in &keys {
            if let Some(e) = entries.get_mut(key) {
                view.mark(e.tracked.take_pod_services());
            }
        }
        let parts: Vec<merge::Part<'_>> = keys
            .iter()
            .filter_map(|key| {
                let e = entries.get(key)?;
                let stale = self.config.stale_endpoint_ttl.is_some_and(|ttl| {
                    e.status == Status::Unreachable && e.last_good.is_none_or(|t| t.elapsed() > ttl)
                });
                let (data, index) = (&e.tracked.data, &e.tracked.index);
                let network = e.default_network.as_deref();
                Some(merge::Part::new(
                    &key.0,
                    network,
                    data,
                    index,
                    stale,
                    &self.config,
                ))
            })
            .collect();
        let now = parts
            .iter()
            .zip(&keys)
            .map(|(p, (id, generation))| PartKey {
                id: id.clone(),
                generation: *generation,
                stale: p.stale,
                network: p.network.clone(),
            })
            .collect();
        let services = view.refresh(&self.config, &parts, now, &mut self.interner());
        let mut wanted = std::collections::HashSet::new();
        let (gateways, dropped) = merge::gateways(&parts, &self.names, &mut wanted);
        drop(parts);
        drop(guard);
        self.names.retain(&wanted);
        self.report_dropped(dropped);
        Snapshot { services, gateways }
    }

    /// The merged view built from scratch, as the incremental one must equal.
    #[cfg(test)]
    pub fn full_snapshot(&self) -> Snapshot {
        self.lock().view.mark_all();
        self.snapshot()
    }

    /// Logs gateways as they start being dropped and sets `meshfed_registry_dropped_gateways`
    /// per reason.
    fn report_dropped(&self, dropped: Vec<DroppedGateway>) {
        for kind in DropKind::ALL {
            let count = dropped.iter().filter(|d| d.kind == kind).count();
            metrics::gauge!("meshfed_registry_dropped_gateways", "reason" => kind.as_str())
                .set(count as f64);
        }
        let mut last = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        for d in dropped.iter().filter(|d| !last.contains(d)) {
            tracing::warn!(
                cluster = %d.cluster, service = %d.service, network = %d.network,
                reason = %d.reason, "network gateway dropped"
            );
        }
        *last = dropped;
    }

    /// The federation's own cluster: the one connection made without a secret.
    pub fn local_cluster(&self) -> Option<String> {
        let inner = self.lock();
        inner
            .active
            .iter()
            .find(|(id, g)| {
                inner
                    .entries
                    .get(&((*id).clone(), **g))
                    .is_some_and(Entry::is_local)
            })
            .map(|(id, _)| id.clone())
    }

    /// Each active cluster's network as the merged view assigns it: the system namespace's
    /// `topology.istio.io/network` label, else the network the cluster was configured with.
    pub fn cluster_networks(&self) -> BTreeMap<String, String> {
        let inner = self.lock();
        let system = &self.config.system_namespace;
        inner
            .active
            .iter()
            .filter_map(|(id, g)| {
                let e = inner.entries.get(&(id.clone(), *g))?;
                let label = e.tracked.data.namespaces.get(system);
                let network = label.and_then(|l| l.get(meshfed_model::labels::NETWORK));
                Some((id.clone(), network.or(e.default_network.as_ref())?.clone()))
            })
            .collect()
    }

    /// DestinationRules of every active generation (the local cluster is the only one that
    /// watches them), as (namespace, name, object), sorted.
    pub fn destination_rules(&self) -> Vec<(String, String, serde_json::Value)> {
        self.istio_objects(|d| &d.destination_rules)
    }

    /// VirtualServices of every active generation (local cluster only, as DestinationRules),
    /// as (namespace, name, object), sorted.
    pub fn virtual_services(&self) -> Vec<(String, String, serde_json::Value)> {
        self.istio_objects(|d| &d.virtual_services)
    }

    fn istio_objects(
        &self,
        map: fn(&ClusterData) -> &HashMap<(String, String), serde_json::Value>,
    ) -> Vec<(String, String, serde_json::Value)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .active
            .iter()
            .filter_map(|(id, generation)| inner.entries.get(&(id.clone(), *generation)))
            .flat_map(|e| {
                map(&e.tracked.data)
                    .iter()
                    .map(|((ns, n), v)| (ns.clone(), n.clone(), v.clone()))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }
}
