//! What each client is sent: the resources of one type for one proxy, built from one push
//! (a registry snapshot, the DestinationRules and VirtualServices) and shared by every proxy
//! that would get the same ones.
//!
//! [`builder`] is the one place that says how each generator's resources are built: CDS, EDS
//! and NDS all at once per [`cache_key`]; LDS and RDS per name ([`Push::build_named`] names
//! the builders), each built once per key and name; or, for resources that depend on the
//! proxy alone, per client.

mod named;
#[cfg(test)]
mod tests;

use super::cache_key::{self, CacheKey};
use super::eds;
use super::locality::{LocalityPolicy, Place};
use super::node::{Defaults, Generator, Proxy, ProxyKind};
use super::rules::Rule;
use super::virtual_service::status::Parsed;
use super::virtual_service::{RuleError, VirtualService};
use super::{cds, lds, nds, rds};
use crate::registry::{ServiceView, Snapshot};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use meshfed_model::{ClusterName, labels};
use meshfed_proto::nds::NameTable;
pub use named::MAX_NAMED;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use meshfed_proto::ads::{CLUSTER_TYPE, ENDPOINT_TYPE};
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub use meshfed_proto::nds::NAME_TABLE_TYPE_URL as NAME_TABLE_TYPE;

/// The resource types served, in the order ADS clients want them pushed (clusters before
/// their endpoints, listeners before their routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
    NameTable,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
        Kind::NameTable,
    ];

    pub fn from_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.url() == url)
    }

    pub fn url(self) -> &'static str {
        match self {
            Kind::Cluster => CLUSTER_TYPE,
            Kind::Endpoint => ENDPOINT_TYPE,
            Kind::Listener => LISTENER_TYPE,
            Kind::Route => ROUTE_TYPE,
            Kind::NameTable => NAME_TABLE_TYPE,
        }
    }

    /// Short name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Cluster => "cds",
            Kind::Endpoint => "eds",
            Kind::Listener => "lds",
            Kind::Route => "rds",
            Kind::NameTable => "nds",
        }
    }

    /// Whether an empty first subscription means "everything" (xDS's wildcard types).
    pub fn wildcard_when_empty(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener | Kind::NameTable)
    }
}

/// One named resource and its version (a hash of its bytes: equal bytes, equal version).
/// Streams keep what each client holds as (`name`, `hash`): the name shared, not copied.
#[derive(Debug, PartialEq)]
pub struct Resource {
    pub name: Arc<str>,
    pub hash: u64,
    pub body: Any,
}

impl Resource {
    fn new(name: String, body: Any) -> Arc<Resource> {
        let hash = hash(&body.value);
        Arc::new(Resource {
            name: name.into(),
            hash,
            body,
        })
    }

    /// The version on the wire: the hash in hex.
    pub fn version(&self) -> String {
        format_version(self.hash)
    }
}

pub fn format_version(hash: u64) -> String {
    format!("{hash:016x}")
}

/// A version a client says it holds, as a hash ([`Resource::version`] in reverse); one that is
/// not ours matches nothing, so the resource is sent again.
pub fn parse_version(version: &str) -> u64 {
    u64::from_str_radix(version, 16).unwrap_or(0)
}

pub type Resources = BTreeMap<String, Arc<Resource>>;

/// What a client subscribed to for one type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscription {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
}

impl Subscription {
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Clusters whose own-endpoint indexes a push keeps ([`Push::own_endpoints`]).
pub const MAX_OWN_INDEXES: usize = 64;

/// Distinct builds kept per push and kind of key (see [`cache_key`]).
pub const MAX_CACHED: usize = 1024;

/// One state of the mesh, as pushed to every client.
pub struct Push {
    pub version: u64,
    /// When the first registry change folded into this push happened.
    pub changed_at: Instant,
    pub snapshot: Snapshot,
    pub rules: Vec<Rule>,
    /// The VirtualServices that validated, sorted by namespace and name (routes are built
    /// from them).
    pub virtual_services: Vec<VirtualService>,
    /// Their errors (refused rules, unknown subsets), for reporting.
    pub config_errors: Vec<RuleError>,
    pub domain: String,
    /// The SPIFFE trust domain of the SANs peers are checked against.
    pub trust_domain: String,
    /// Built while every cluster was synced: a name missing here is gone (see
    /// [`crate::registry::Registry::complete`]).
    pub complete: bool,
    /// What a client that names no cluster or network is taken to be in.
    pub defaults: Defaults,
    vips: BTreeMap<String, (Ipv4Addr, Ipv6Addr)>,
    /// Proxy labels some `failoverPriority` reads: part of the EDS cache key.
    label_keys: BTreeSet<String>,
    /// Proxy labels some VirtualService `sourceLabels` reads: part of the RDS cache key.
    source_label_keys: BTreeSet<String>,
    /// At most [`MAX_CACHED`] builds; past it, resources are built per client (the cost is
    /// CPU, not memory that grows with the number of distinct clients).
    cache: Mutex<HashMap<CacheKey, Arc<Resources>>>,
    /// The previous push's resources (not the push itself: no chain of pushes is kept), so
    /// that what changed is worked out once per kind of proxy rather than once per client.
    previous: HashMap<CacheKey, Arc<Resources>>,
    changes: Mutex<HashMap<CacheKey, Arc<Changes>>>,
    /// LDS/RDS by key and name, at most [`MAX_NAMED`].
    named: Mutex<named::Named>,
    previous_named: named::Built,
    /// Endpoints by address, for Envoy sidecars' own endpoints (inbound clusters and their
    /// CDS key, listeners).
    own_endpoints: Mutex<HashMap<String, Arc<cds::inbound::OwnEndpoints>>>,
    /// Hostnames whose Service is the very one of the previous push, with the same rules and
    /// gateways: their CDS and EDS resources are taken from it, not rebuilt.
    same_services: HashSet<String>,
}

/// What changed for one kind of proxy between the previous push and this one.
#[derive(Debug, Default)]
pub struct Changes {
    pub updated: Vec<Arc<Resource>>,
    pub removed: Vec<String>,
    /// For kinds built per name: the names compared (those the previous push built).
    covers: Option<BTreeSet<String>>,
}

impl Changes {
    /// Whether these changes tell everything for `sub`: the kinds built all at once always
    /// do; those built per name only for names the previous push built (a client that asked
    /// for one only after this push copied that push's builds is compared name by name).
    fn cover(&self, sub: &Subscription) -> bool {
        match &self.covers {
            None => true,
            Some(names) => !sub.wildcard && sub.names.iter().all(|n| names.contains(n)),
        }
    }
}

/// How a proxy's resources of one kind are built.
enum Builder {
    /// All at once, shared by every proxy with the same [`cache_key`].
    Shared,
    /// One per name ([`Push::build_named`]), shared by proxies with the same key.
    ByName,
    /// All at once for this proxy alone (what depends on its address or own endpoints).
    ForProxy(fn(&Push, &Proxy) -> Resources),
}

/// The dispatch: how `generator`'s resources of `kind` are built.
fn builder(generator: Generator, kind: Kind) -> Builder {
    match (generator, kind) {
        (_, Kind::Cluster | Kind::Endpoint | Kind::NameTable) => Builder::Shared,
        (Generator::Grpc, Kind::Listener | Kind::Route) => Builder::ByName,
        // Envoy sidecars: RDS by name ("5000", "http_proxy") in `build_named`; listeners per
        // proxy (its IP, HTTP_PROXY_PORT, interception mode and own endpoints).
        (Generator::Envoy, Kind::Route) => Builder::ByName,
        (Generator::Envoy, Kind::Listener) => Builder::ForProxy(|push, proxy| {
            if proxy.kind != ProxyKind::Sidecar {
                return Resources::new(); // Gateways get none: no need to index endpoints.
            }
            let index = push.own_endpoints(proxy);
            let own: Vec<_> = index.of(&push.snapshot, proxy).collect();
            lds::sidecar::listeners_with(proxy, &push.sources(), &own, &push.trust_domain)
                .into_iter()
                .map(|l| (l.name.clone(), Resource::new(l.name.clone(), pack_any(l))))
                .collect()
        }),
    }
}

impl Push {
    pub fn new(
        version: u64,
        changed_at: Instant,
        snapshot: Snapshot,
        rules: Vec<Rule>,
        domain: &str,
    ) -> Push {
        let vips = nds::vips(snapshot.services.iter().map(|s| s.hostname.as_str()));
        let label_keys = cache_key::failover_labels(&rules);
        let source_label_keys = BTreeSet::new();
        Push {
            version,
            changed_at,
            snapshot,
            rules,
            virtual_services: Vec::new(),
            config_errors: Vec::new(),
            domain: domain.to_string(),
            trust_domain: domain.to_string(),
            complete: true,
            defaults: Defaults::default(),
            vips,
            label_keys,
            source_label_keys,
            cache: Mutex::new(HashMap::new()),
            previous: HashMap::new(),
            changes: Mutex::new(HashMap::new()),
            named: Mutex::new(named::Named::default()),
            previous_named: named::Built::new(),
            own_endpoints: Mutex::new(HashMap::new()),
            same_services: HashSet::new(),
        }
    }

    /// Peers' SPIFFE ids in CDS name `trust_domain` (by default the DNS domain, as Istio's
    /// `cluster.local` is both).
    pub fn trust_domain(mut self, trust_domain: &str) -> Push {
        self.trust_domain = trust_domain.to_string();
        self
    }

    /// The push's VirtualServices, as [`parse_all`](super::virtual_service::status::parse_all)
    /// gives them.
    pub fn virtual_services(mut self, parsed: Parsed) -> Push {
        self.virtual_services = parsed.virtual_services;
        self.config_errors = parsed.errors;
        self.source_label_keys = cache_key::source_labels(&self.virtual_services);
        self
    }

    /// Whether every cluster had synced when this push was built.
    pub fn complete(mut self, complete: bool) -> Push {
        self.complete = complete;
        self
    }

    /// Clients that leave out `CLUSTER_ID` or `NETWORK` get these ([`Proxy::apply_defaults`]).
    pub fn defaults(mut self, defaults: Defaults) -> Push {
        self.defaults = defaults;
        self
    }

    /// Remembers `previous`'s resources so that [`Push::changes`] can answer.
    pub fn follow(mut self, previous: &Push) -> Push {
        self.previous = lock(&previous.cache).clone();
        self.previous_named = lock(&previous.named).built.clone();
        if self.rules == previous.rules && self.snapshot.gateways == previous.snapshot.gateways {
            self.same_services = same_services(&previous.snapshot, &self.snapshot);
        }
        self
    }

    /// What changed for proxies like `proxy` since the push just before this one, for a
    /// client subscribed to `sub`; None when that push never built them (the caller then
    /// compares resource by resource).
    pub fn changes(&self, proxy: &Proxy, kind: Kind, sub: &Subscription) -> Option<Arc<Changes>> {
        let key = self.key(proxy, kind);
        let c = match builder(proxy.generator, kind) {
            Builder::Shared => {
                let before = self.previous.get(&key)?;
                self.memo(&key, || {
                    let now = self.all(proxy, kind);
                    let updated = now
                        .iter()
                        .filter(|(n, r)| before.get(*n).is_none_or(|b| b.hash != r.hash))
                        .map(|(_, r)| r.clone())
                        .collect();
                    let removed = before
                        .keys()
                        .filter(|n| !now.contains_key(*n))
                        .cloned()
                        .collect();
                    Changes {
                        updated,
                        removed,
                        covers: None,
                    }
                })
            }
            Builder::ByName => {
                let before = self.previous_named.get(&key)?;
                self.memo(&key, || {
                    named::changes(before, |n| self.named(proxy, kind, &key, n))
                })
            }
            Builder::ForProxy(_) => return None,
        };
        c.cover(sub).then_some(c)
    }

    /// The changes for `key`, worked out once per push.
    fn memo(&self, key: &CacheKey, work: impl FnOnce() -> Changes) -> Arc<Changes> {
        if let Some(c) = lock(&self.changes).get(key) {
            return c.clone();
        }
        let c = Arc::new(work());
        lock(&self.changes).insert(key.clone(), c.clone());
        c
    }

    /// The resources of `kind` that `proxy` subscribed to.
    pub fn resources(&self, proxy: &Proxy, kind: Kind, sub: &Subscription) -> Resources {
        let all = match builder(proxy.generator, kind) {
            Builder::Shared => self.all(proxy, kind),
            Builder::ByName => return self.by_name(proxy, kind, sub),
            Builder::ForProxy(build) => Arc::new(build(self, proxy)),
        };
        if sub.wildcard {
            return (*all).clone();
        }
        sub.names
            .iter()
            .filter_map(|n| all.get(n).map(|r| (n.clone(), r.clone())))
            .collect()
    }

    fn key(&self, proxy: &Proxy, kind: Kind) -> CacheKey {
        let labels = match kind {
            Kind::Route => &self.source_label_keys,
            _ => &self.label_keys,
        };
        let key = cache_key::key(proxy, kind, labels);
        if kind == Kind::Cluster && cds::inbound::has_inbound(proxy) {
            let ports = self.own_endpoints(proxy).app_ports(&self.snapshot, proxy);
            return key.with_inbound_ports(ports);
        }
        key
    }

    /// The endpoints `proxy` may own by address, indexed once per push and cluster: a proxy
    /// that names its cluster can only own endpoints of that cluster, so a federation serving
    /// its own cluster's sidecars indexes that cluster's endpoints, not the whole mesh's. At
    /// most [`MAX_OWN_INDEXES`] clusters (clients name them); past that, and for proxies that
    /// name none, one index of every endpoint.
    fn own_endpoints(&self, proxy: &Proxy) -> Arc<cds::inbound::OwnEndpoints> {
        let mut indexes = lock(&self.own_endpoints);
        let cluster = match indexes.contains_key(&proxy.cluster_id) {
            true => proxy.cluster_id.as_str(),
            false if indexes.len() < MAX_OWN_INDEXES => proxy.cluster_id.as_str(),
            false => "",
        };
        if let Some(index) = indexes.get(cluster) {
            return index.clone();
        }
        let only = (!cluster.is_empty()).then_some(cluster);
        let index = Arc::new(cds::inbound::OwnEndpoints::new(&self.snapshot, only));
        indexes.insert(cluster.to_string(), index.clone());
        index
    }

    /// Every resource of `kind` for proxies like `proxy`, built once per push.
    pub fn all(&self, proxy: &Proxy, kind: Kind) -> Arc<Resources> {
        let key = self.key(proxy, kind);
        let mut cache = lock(&self.cache);
        if let Some(r) = cache.get(&key) {
            return r.clone();
        }
        if cache.len() >= MAX_CACHED {
            drop(cache);
            return Arc::new(self.build(proxy, kind));
        }
        // Built under the lock: a thousand clients woken by one push wait for one build
        // rather than each doing it.
        let built = Arc::new(self.build(proxy, kind));
        cache.insert(key, built.clone());
        built
    }

    fn build(&self, proxy: &Proxy, kind: Kind) -> Resources {
        match kind {
            Kind::Cluster => self.clusters(proxy),
            Kind::Endpoint => self.endpoints(proxy),
            Kind::NameTable => self.names(proxy),
            Kind::Listener | Kind::Route => Resources::new(),
        }
    }

    /// CDS: a cluster per service port and subset, and an Envoy sidecar's own inbound
    /// clusters (`inbound|P||`, by the app ports in its cache key).
    fn clusters(&self, proxy: &Proxy) -> Resources {
        let inbound = self
            .own_endpoints(proxy)
            .app_ports(&self.snapshot, proxy)
            .into_iter()
            .map(cds::inbound::cluster);
        let before = self.previous.get(&self.key(proxy, Kind::Cluster));
        let mut out: Resources = inbound
            .map(|c: Cluster| (c.name.clone(), Resource::new(c.name.clone(), pack_any(c))))
            .collect();
        for spec in cds::specs(&self.snapshot, &self.rules, proxy) {
            if let Some(r) = self.taken_over(before, &cds::resource_name(proxy, &spec.name), &spec)
            {
                out.insert(r.name.to_string(), r);
                continue;
            }
            let c = cds::cluster(proxy, &spec, &self.trust_domain);
            out.insert(c.name.clone(), Resource::new(c.name.clone(), pack_any(c)));
        }
        out
    }

    /// The previous push's resource `name` (of the same key), when it was built from the same
    /// Service `spec` is for, with the same rules.
    fn taken_over(
        &self,
        before: Option<&Arc<Resources>>,
        name: &str,
        spec: &cds::ClusterSpec<'_>,
    ) -> Option<Arc<Resource>> {
        if !self.same_services.contains(&spec.service.hostname) {
            return None;
        }
        before?.get(name).cloned()
    }

    fn endpoints(&self, proxy: &Proxy) -> Resources {
        // A router serves its own network's mesh workloads only: remote endpoints are none of
        // its business, and anything without a sidecar would make it an open relay.
        let local;
        let snapshot = if proxy.kind == ProxyKind::Router {
            local = router_view(&self.snapshot, &proxy.network);
            &local
        } else {
            &self.snapshot
        };
        let place = Place {
            locality: proxy.locality.clone(),
            network: proxy.network.as_str().into(),
            cluster: proxy.cluster_id.as_str().into(),
            labels: Arc::new(proxy.labels.clone()),
            weight: 1,
        };
        let before = self.previous.get(&self.key(proxy, Kind::Endpoint));
        cds::specs(snapshot, &self.rules, proxy)
            .iter()
            .map(|spec| {
                let name = cds::resource_name(proxy, &spec.name);
                if let Some(r) = self.taken_over(before, &name, spec) {
                    return (name, r);
                }
                let policy = LocalityPolicy::from_traffic_policy(&spec.policy);
                let mut cla = eds::of_service(
                    &spec.name,
                    Some(spec.service),
                    snapshot,
                    &place,
                    &spec.subset_labels,
                    &policy,
                );
                cla.cluster_name = name;
                (
                    cla.cluster_name.clone(),
                    Resource::new(cla.cluster_name.clone(), pack_any(cla)),
                )
            })
            .collect()
    }

    /// NDS per hostname (delta sends them one by one; state of the world folds them into one
    /// table, see [`name_table`]).
    fn names(&self, proxy: &Proxy) -> Resources {
        nds::entries(&self.snapshot, &self.vips, &proxy.cluster_id, &self.domain)
            .into_iter()
            .map(|(host, info)| {
                let table = NameTable {
                    name_info: Some(info),
                    ..Default::default()
                };
                let any = Any {
                    type_url: NAME_TABLE_TYPE.to_string(),
                    value: table.encode_to_vec(),
                };
                (host.clone(), Resource::new(host, any))
            })
            .collect()
    }

    /// The subscribed resources of a kind built per name, each looked up (or built once)
    /// under the proxy's key.
    fn by_name(&self, proxy: &Proxy, kind: Kind, sub: &Subscription) -> Resources {
        let key = self.key(proxy, kind);
        let names: Vec<String> = if sub.wildcard {
            self.every_name(kind)
        } else {
            sub.names.iter().cloned().collect()
        };
        names
            .into_iter()
            .filter_map(|n| {
                let r = self.named(proxy, kind, &key, &n)?;
                Some((n, r))
            })
            .collect()
    }

    /// The resource `name` of `kind` for proxies with `key` (that of `proxy`), built once
    /// per push while there is room (see [`MAX_NAMED`]). Built under the lock, as [`Push::all`]
    /// builds: a thousand clients woken by one push wait for one build.
    fn named(
        &self,
        proxy: &Proxy,
        kind: Kind,
        key: &CacheKey,
        name: &str,
    ) -> Option<Arc<Resource>> {
        lock(&self.named).get_or_build(key, name, || {
            let any = self.build_named(proxy, kind, name)?;
            Some(Resource::new(name.to_string(), any))
        })
    }

    /// The builders of the resources built per name, by generator: whatever they read of
    /// `proxy` must be in its [`cache_key`].
    fn build_named(&self, proxy: &Proxy, kind: Kind, name: &str) -> Option<Any> {
        match (proxy.generator, kind) {
            // A listener per target `host:port`, short names resolved in the namespace.
            (Generator::Grpc, Kind::Listener) => {
                let cluster = lds::target(name, &self.snapshot, &proxy.namespace, &self.domain)?;
                Some(pack_any(lds::listener(name, &cluster)))
            }
            // A route configuration per service port, `outbound|port||fqdn`.
            (Generator::Grpc, Kind::Route) => {
                let cluster = rds::target(name, &self.snapshot)?;
                Some(pack_any(rds::grpc(&cluster, proxy, &self.sources())))
            }
            // Envoy sidecars: "<port>" or "http_proxy".
            (Generator::Envoy, Kind::Route) if proxy.kind == ProxyKind::Sidecar => {
                rds::envoy::by_name(name, proxy, &self.sources()).map(pack_any)
            }
            _ => None,
        }
    }

    /// What route configurations are built from.
    fn sources(&self) -> rds::Sources<'_> {
        rds::Sources {
            snapshot: &self.snapshot,
            virtual_services: &self.virtual_services,
            domain: &self.domain,
        }
    }

    /// A wildcard subscription to proxyless LDS or RDS: every service port, as a listener
    /// `fqdn:port` or a route configuration `outbound|port||fqdn`.
    fn every_name(&self, kind: Kind) -> Vec<String> {
        self.snapshot
            .services
            .iter()
            .flat_map(|s| {
                s.ports.iter().map(move |p| match kind {
                    Kind::Listener => format!("{}:{}", s.hostname, p.port),
                    _ => ClusterName::new(p.port, None, &s.hostname).cluster(),
                })
            })
            .collect()
    }
}

/// The state-of-the-world NDS resource: every hostname's entry in one table.
pub fn name_table(resources: &Resources) -> Any {
    let table = resources
        .iter()
        .filter_map(|(host, r)| {
            let t = NameTable::decode(r.body.value.as_slice()).ok()?;
            Some((host.clone(), t.name_info?))
        })
        .collect();
    let t = NameTable {
        table,
        ..Default::default()
    };
    Any {
        type_url: NAME_TABLE_TYPE.to_string(),
        value: t.encode_to_vec(),
    }
}

/// What an east-west gateway may route to: endpoints of its own network whose pod carries
/// `security.istio.io/tlsMode: istio`, as Istio builds its AUTO_PASSTHROUGH (sni-dnat)
/// clusters for mesh workloads only. A selector-less Service pointing at the API server or
/// any other plain address is never reachable through the gateway.
/// The hostnames whose Service is the same `Arc` in both snapshots (both are sorted by
/// hostname): the registry re-merges only what changed, so this is what did not.
fn same_services(before: &Snapshot, now: &Snapshot) -> HashSet<String> {
    let before: HashMap<&str, &Arc<ServiceView>> = before
        .services
        .iter()
        .map(|s| (s.hostname.as_str(), s))
        .collect();
    now.services
        .iter()
        .filter(|s| {
            before
                .get(s.hostname.as_str())
                .is_some_and(|b| Arc::ptr_eq(b, s))
        })
        .map(|s| s.hostname.clone())
        .collect()
}

fn router_view(snapshot: &Snapshot, network: &str) -> Snapshot {
    let mut s = snapshot.clone();
    for svc in &mut s.services {
        Arc::make_mut(svc).endpoints.retain(|e| {
            (*e.network == *network || e.network.is_empty())
                && e.labels.get(labels::TLS_MODE).map(String::as_str)
                    == Some(labels::TLS_MODE_ISTIO)
        });
    }
    s
}

/// At most 256 characters of a client's text (a NACK's error detail) for the log.
pub fn short(text: &str) -> &str {
    match text.char_indices().nth(256) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
