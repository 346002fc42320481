//! Every endpoint by address, indexed once per push: an Envoy sidecar's own endpoints (those
//! at its IP, in its cluster when it names one, as Istio finds a proxy's service instances by
//! its IP) feed its CDS cache key, its inbound clusters and its listeners. A thousand
//! sidecars each look theirs up instead of scanning every endpoint of the mesh (a million
//! of them) at every push.
//!
//! The index holds no copy of the endpoints: a hash of the address and the endpoint's place
//! in the snapshot (service, endpoint), 16 bytes each, sorted by hash. A lookup checks the
//! address and cluster of each candidate in the snapshot itself, so a hash collision costs a
//! compare and a snapshot other than the one indexed yields misses, never someone else's
//! endpoints.

use crate::registry::{EndpointView, Snapshot};
use crate::xds::node::Proxy;
use std::hash::{BuildHasher, RandomState};

/// The endpoints of one snapshot by address (see the module doc).
#[derive(Debug, Default)]
pub struct OwnEndpoints<S = RandomState> {
    hasher: S,
    /// (hash of the address, service index, endpoint index), sorted: registry order within
    /// one hash.
    entries: Vec<(u64, u32, u32)>,
}

impl OwnEndpoints {
    /// Indexes the endpoints of `snapshot` in cluster `only` (None: every cluster's).
    pub fn new(snapshot: &Snapshot, only: Option<&str>) -> OwnEndpoints {
        OwnEndpoints::with_hasher(snapshot, RandomState::new(), only)
    }
}

impl<S: BuildHasher> OwnEndpoints<S> {
    /// Indexes `snapshot` hashing addresses with `hasher` (a seeded one by default: addresses
    /// come from remote clusters, whose owners should not be able to pile them on one hash).
    /// Only endpoints of cluster `only` are indexed, when given: lookups for proxies of
    /// other clusters then miss.
    pub fn with_hasher(snapshot: &Snapshot, hasher: S, only: Option<&str>) -> OwnEndpoints<S> {
        let mut entries = Vec::new();
        for (s, svc) in (0u32..).zip(&snapshot.services) {
            for (e, ep) in (0u32..).zip(&svc.endpoints) {
                if only.is_none_or(|c| *ep.cluster == *c) {
                    entries.push((hasher.hash_one(ep.address.as_str()), s, e));
                }
            }
        }
        entries.sort_unstable();
        OwnEndpoints { hasher, entries }
    }

    /// The endpoints at `proxy`'s IP, in its cluster when it names one, in registry order
    /// (service by service): what a scan of `snapshot` (the one indexed) would find.
    pub fn of<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        proxy: &'a Proxy,
    ) -> impl Iterator<Item = &'a EndpointView> + 'a {
        let h = self.hasher.hash_one(proxy.ip.as_str());
        let start = self.entries.partition_point(|&(x, _, _)| x < h);
        self.entries[start..]
            .iter()
            .take_while(move |&&(x, _, _)| x == h)
            .filter_map(|&(_, s, e)| {
                let svc = snapshot.services.get(usize::try_from(s).ok()?)?;
                svc.endpoints.get(usize::try_from(e).ok()?)
            })
            .filter(|e| {
                e.address == proxy.ip
                    && (proxy.cluster_id.is_empty() || *e.cluster == *proxy.cluster_id)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServiceView;
    use crate::xds::node::test_sidecar;
    use std::hash::{BuildHasherDefault, Hasher};

    fn ep(cluster: &str, address: &str, port: u16, service_port: u16) -> EndpointView {
        EndpointView {
            cluster: cluster.into(),
            address: address.into(),
            port,
            service_port,
            ..Default::default()
        }
    }

    fn svc(host: &str, endpoints: Vec<EndpointView>) -> ServiceView {
        ServiceView {
            hostname: host.into(),
            endpoints,
            ..Default::default()
        }
    }

    /// A pod at 10.0.0.1 in c1 behind two Services (`a` targets 8080; `b` targets the
    /// sidecar's 15006 on service port 5000 and 8080 as well), a pod of c2 that has the same
    /// IP (clusters may reuse pod CIDRs; Istio keys a proxy's service instances by cluster
    /// and IP), and another pod of c1. `moved` is where the pod's first endpoint is.
    fn snapshot_with(moved: &str) -> Snapshot {
        Snapshot {
            services: vec![
                svc(
                    "a.ns.svc.cluster.local",
                    vec![
                        ep("c1", "10.0.0.2", 8080, 80),
                        ep("c1", moved, 8080, 80),
                        ep("c2", "10.0.0.1", 7070, 70),
                    ],
                ),
                svc("empty.ns.svc.cluster.local", vec![]),
                svc(
                    "b.ns.svc.cluster.local",
                    vec![
                        ep("c1", "10.0.0.1", 15006, 5000),
                        ep("c2", "10.0.0.10", 8080, 80),
                        ep("c1", "10.0.0.1", 8080, 81),
                    ],
                ),
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            gateways: vec![],
        }
    }

    fn snapshot() -> Snapshot {
        snapshot_with("10.0.0.1")
    }

    /// What the per-client scan this index replaced found.
    fn scan<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Vec<&'a EndpointView> {
        snapshot
            .services
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| {
                e.address == proxy.ip
                    && (proxy.cluster_id.is_empty() || *e.cluster == *proxy.cluster_id)
            })
            .collect()
    }

    fn found(s: &Snapshot, p: &Proxy) -> Vec<(String, u16, u16)> {
        let idx = OwnEndpoints::new(s, None);
        idx.of(s, p)
            .map(|e| (e.cluster.to_string(), e.port, e.service_port))
            .collect()
    }

    fn own(cluster: &str, port: u16, service_port: u16) -> (String, u16, u16) {
        (cluster.into(), port, service_port)
    }

    /// Istio finds a sidecar's service instances by its IP (`GetProxyServiceTargets`), in
    /// its own cluster: the lookup finds the pod's endpoints in both Services, 8080 under
    /// each, in registry order; the c2 pod with the same IP is not the c1 sidecar's, and a
    /// proxy that names no cluster (older agents) gets every endpoint at its IP, as before.
    #[test]
    fn a_sidecar_finds_its_endpoints_in_every_service_and_only_in_its_cluster() {
        let s = snapshot();
        let mut p = test_sidecar();
        let want = [
            own("c1", 8080, 80),
            own("c1", 15006, 5000),
            own("c1", 8080, 81),
        ];
        assert_eq!(found(&s, &p), want);
        p.cluster_id = "c2".into();
        assert_eq!(found(&s, &p), [own("c2", 7070, 70)]);
        p.cluster_id = String::new();
        assert_eq!(
            found(&s, &p),
            [
                own("c1", 8080, 80),
                own("c2", 7070, 70),
                own("c1", 15006, 5000),
                own("c1", 8080, 81)
            ]
        );
        p.ip = "10.0.0.9".into();
        assert!(found(&s, &p).is_empty(), "no endpoint at that IP");
        p.cluster_id = "c3".into();
        p.ip = "10.0.0.1".into();
        assert!(found(&s, &p).is_empty(), "no endpoint in that cluster");
    }

    /// The lookup is the scan it replaced, for every address and cluster of the snapshot,
    /// also when every address hashes alike (candidates told apart by their address).
    #[test]
    fn the_lookup_finds_what_a_scan_finds_even_when_every_hash_collides() {
        #[derive(Default)]
        struct Zero;
        impl Hasher for Zero {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, _: &[u8]) {}
        }
        let s = snapshot();
        let seeded = OwnEndpoints::new(&s, None);
        let colliding = OwnEndpoints::with_hasher(&s, BuildHasherDefault::<Zero>::default(), None);
        let mut p = test_sidecar();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.10", "10.0.0.9", ""] {
            for cluster in ["c1", "c2", "c3", ""] {
                p.ip = ip.into();
                p.cluster_id = cluster.into();
                let want = scan(&s, &p);
                let a: Vec<_> = seeded.of(&s, &p).collect();
                let b: Vec<_> = colliding.of(&s, &p).collect();
                assert_eq!(a, want, "{ip} in {cluster}");
                assert_eq!(b, want, "{ip} in {cluster}, colliding");
            }
        }
    }

    /// An index of one cluster's endpoints finds, for proxies of that cluster, what a scan
    /// of the whole mesh finds (Istio: a proxy's service instances are in its own cluster),
    /// and nothing of another cluster.
    #[test]
    fn an_index_of_one_cluster_serves_that_clusters_proxies() {
        let s = snapshot();
        let mut p = test_sidecar();
        for cluster in ["c1", "c2"] {
            let idx = OwnEndpoints::new(&s, Some(cluster));
            for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.9"] {
                p.ip = ip.into();
                p.cluster_id = cluster.into();
                let found: Vec<_> = idx.of(&s, &p).collect();
                assert_eq!(found, scan(&s, &p), "{ip} in {cluster}");
            }
        }
        p.ip = "10.0.0.1".into();
        p.cluster_id = "c2".into();
        assert!(scan(&s, &p).len() == 1, "c2 has a pod at 10.0.0.1");
        assert_eq!(OwnEndpoints::new(&s, Some("c1")).of(&s, &p).count(), 0);
    }

    /// An index asked about another snapshot (a bug) finds nothing wrong: its entries point
    /// past the end or at endpoints whose address is not the proxy's.
    #[test]
    fn another_snapshot_yields_misses_not_other_pods() {
        let s = snapshot();
        let idx = OwnEndpoints::new(&s, None);
        let empty = Snapshot::default();
        let p = test_sidecar();
        assert_eq!(idx.of(&empty, &p).count(), 0);
        let moved = snapshot_with("10.0.0.99");
        assert_eq!(idx.of(&moved, &p).count(), 2, "the two still at 10.0.0.1");
    }
}
