//! The route table: SNI name -> the endpoints that may serve it. Built whole from a source
//! (static file or xDS) and swapped atomically; endpoint health and connection counts are
//! kept per address so that a reload does not forget an ejected endpoint.

use meshfed_model::{ClusterName, Endpoint, labels_match};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// One service port as a source describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceRoutes {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub endpoints: Vec<StaticEndpoint>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticEndpoint {
    pub address: SocketAddr,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub locality: meshfed_model::Locality,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Runtime state of one backend address, shared by every cluster that routes to it.
#[derive(Debug, Default)]
pub struct Health {
    pub active: AtomicUsize,
    /// Milliseconds since [`epoch`] until which the endpoint is set aside; 0 = healthy.
    ejected_until: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Health {
    pub fn eject(&self, for_: Duration) {
        self.ejected_until
            .store(now_ms() + for_.as_millis() as u64, Ordering::Relaxed);
    }
    pub fn restore(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
    }
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }
}

#[derive(Debug, Clone)]
pub struct RouteEndpoint {
    pub endpoint: Endpoint,
    pub health: Arc<Health>,
}

#[derive(Debug)]
pub struct Cluster {
    pub name: ClusterName,
    pub endpoints: Vec<Arc<RouteEndpoint>>,
    /// Round-robin cursor.
    pub next: AtomicUsize,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    clusters: HashMap<String, Arc<Cluster>>,
    health: HashMap<SocketAddr, Arc<Health>>,
}

impl RouteTable {
    /// Builds a table with a cluster per service port and per subset; health state of
    /// addresses that `previous` knew is carried over.
    pub fn build(services: &[ServiceRoutes], previous: &RouteTable) -> RouteTable {
        let mut table = RouteTable::default();
        for svc in services {
            let endpoints: Vec<Arc<RouteEndpoint>> = svc
                .endpoints
                .iter()
                .map(|e| Arc::new(table.endpoint(e, previous)))
                .collect();
            table.insert(
                ClusterName::new(svc.port, None, &svc.host),
                endpoints.clone(),
            );
            for subset in &svc.subsets {
                let chosen = endpoints
                    .iter()
                    .filter(|e| labels_match(&subset.labels, &e.endpoint.labels))
                    .cloned()
                    .collect();
                table.insert(
                    ClusterName::new(svc.port, Some(&subset.name), &svc.host),
                    chosen,
                );
            }
        }
        table
    }

    /// Builds a table from clusters given whole (xDS: one per SNI, endpoints already chosen).
    pub fn from_clusters(
        clusters: &[(ClusterName, Vec<StaticEndpoint>)],
        previous: &RouteTable,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        for (name, endpoints) in clusters {
            let eps = endpoints
                .iter()
                .map(|e| Arc::new(table.endpoint(e, previous)))
                .collect();
            table.insert(name.clone(), eps);
        }
        table
    }

    fn endpoint(&mut self, e: &StaticEndpoint, previous: &RouteTable) -> RouteEndpoint {
        let health = self
            .health
            .entry(e.address)
            .or_insert_with(|| previous.health.get(&e.address).cloned().unwrap_or_default())
            .clone();
        let endpoint = Endpoint {
            address: e.address,
            labels: e.labels.clone(),
            locality: e.locality.clone(),
        };
        RouteEndpoint { endpoint, health }
    }

    fn insert(&mut self, name: ClusterName, endpoints: Vec<Arc<RouteEndpoint>>) {
        let cluster = Cluster {
            name: name.clone(),
            endpoints,
            next: AtomicUsize::new(0),
        };
        self.clusters.insert(name.sni(), Arc::new(cluster));
    }

    /// The cluster for a (lowercased) SNI; None for anything that is not a known mesh name.
    pub fn lookup(&self, sni: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(sni).cloned()
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// For `/debug/routes`: every SNI with its endpoints and their state, sorted.
    pub fn debug_json(&self) -> serde_json::Value {
        let mut names: Vec<&String> = self.clusters.keys().collect();
        names.sort();
        let routes: Vec<serde_json::Value> = names
            .into_iter()
            .map(|sni| {
                let c = &self.clusters[sni];
                let endpoints: Vec<serde_json::Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "address": e.endpoint.address.to_string(),
                            "labels": e.endpoint.labels,
                            "locality": e.endpoint.locality.to_string(),
                            "active_connections": e.health.active.load(Ordering::Relaxed),
                            "ejected": e.health.is_ejected(),
                        })
                    })
                    .collect();
                serde_json::json!({"sni": sni, "cluster": c.name.cluster(), "endpoints": endpoints})
            })
            .collect();
        serde_json::json!({"routes": routes})
    }
}

/// The current table, swapped whole by a route source; readers clone the Arc once per
/// connection, so a reload never blocks or changes a connection in flight.
#[derive(Clone, Default)]
pub struct RouteHandle {
    current: Arc<RwLock<Arc<RouteTable>>>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl RouteHandle {
    pub fn get(&self) -> Arc<RouteTable> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the table with one built from `services`.
    pub fn update(&self, services: &[ServiceRoutes]) {
        let next = Arc::new(RouteTable::build(services, &self.get()));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.generation.send_modify(|g| *g += 1);
    }

    /// Replaces the table with `clusters` as an xDS source delivers them.
    pub fn update_clusters(&self, clusters: &[(ClusterName, Vec<StaticEndpoint>)]) {
        let next = Arc::new(RouteTable::from_clusters(clusters, &self.get()));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.generation.send_modify(|g| *g += 1);
    }

    /// Completes after the next table swap (tests and readiness wait on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceRoutes {
        serde_yaml::from_str(
            r#"
host: helloworld.sample.svc.cluster.local
port: 5000
endpoints:
- {address: "10.1.0.5:5000", labels: {version: v1}, locality: region1/zone1}
- {address: "10.1.0.6:5000", labels: {version: v2}}
subsets:
- {name: v1, labels: {version: v1}}
- {name: v3, labels: {version: v3}}
"#,
        )
        .unwrap()
    }

    #[test]
    fn clusters_per_port_and_subset() {
        let t = RouteTable::build(&[svc()], &RouteTable::default());
        let all = t
            .lookup("outbound_.5000_._.helloworld.sample.svc.cluster.local")
            .unwrap();
        assert_eq!(all.endpoints.len(), 2);
        let v1 = t
            .lookup("outbound_.5000_.v1_.helloworld.sample.svc.cluster.local")
            .unwrap();
        assert_eq!(v1.endpoints.len(), 1);
        assert_eq!(v1.endpoints[0].endpoint.locality.region, "region1");
        // A subset with no endpoints still routes (to nothing) rather than being unknown.
        assert!(
            t.lookup("outbound_.5000_.v3_.helloworld.sample.svc.cluster.local")
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert!(
            t.lookup("outbound_.5001_._.helloworld.sample.svc.cluster.local")
                .is_none()
        );
        assert!(t.lookup("helloworld.sample.svc.cluster.local").is_none());
    }

    #[test]
    fn health_survives_a_reload_and_is_shared_across_subsets() {
        let handle = RouteHandle::default();
        handle.update(&[svc()]);
        let t = handle.get();
        let all = t
            .lookup("outbound_.5000_._.helloworld.sample.svc.cluster.local")
            .unwrap();
        all.endpoints[0].health.eject(Duration::from_secs(60));
        let v1 = t
            .lookup("outbound_.5000_.v1_.helloworld.sample.svc.cluster.local")
            .unwrap();
        assert!(v1.endpoints[0].health.is_ejected());
        handle.update(&[svc()]);
        assert_eq!(handle.generation(), 2);
        let v1 = handle
            .get()
            .lookup("outbound_.5000_.v1_.helloworld.sample.svc.cluster.local")
            .unwrap();
        assert!(
            v1.endpoints[0].health.is_ejected(),
            "reload forgot the ejection"
        );
    }

    #[test]
    fn unknown_fields_in_the_file_are_errors() {
        let r: Result<ServiceRoutes, _> = serde_yaml::from_str("host: a\nport: 1\nendpoint: []\n");
        assert!(r.is_err());
    }
}
