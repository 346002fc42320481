//! The incremental merge against the full one: whatever sequence of watcher changes, the
//! snapshot equals the view merged from scratch, and Services a change did not touch are the
//! same `Arc` as before.

use crate::registry::{
    NodeInfo, PodInfo, Registry, RegistryConfig, ServiceInfo, ServicePort, SliceEndpoint,
    SliceInfo, Touch,
};
use meshfed_model::labels as label;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn registry() -> Registry {
    Registry::new(RegistryConfig {
        system_namespace: "istio-system".into(),
        domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        stale_endpoint_ttl: None,
        sync_timeout: Duration::from_secs(30),
    })
}

/// A small deterministic generator (no dependency needed for a test's choices).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn key(ns: &str, name: String) -> (String, String) {
    (ns.to_string(), name)
}

fn service(d: &mut Dice) -> ServiceInfo {
    let mut labels = BTreeMap::new();
    if d.roll(6) == 0 {
        labels.insert(label::NETWORK.to_string(), "net-x".to_string());
    }
    ServiceInfo {
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80 + d.roll(2) as u16,
            protocol: "TCP".into(),
            ..Default::default()
        }],
        labels,
        cluster_ip: Some(if d.roll(5) == 0 {
            "None".into()
        } else {
            format!("10.96.0.{}", d.roll(9))
        }),
        external_addresses: vec![format!("172.31.0.{}", d.roll(3))],
        service_type: "LoadBalancer".into(),
        ..Default::default()
    }
}

fn slice(d: &mut Dice) -> SliceInfo {
    let endpoints = (0..d.roll(4))
        .map(|_| SliceEndpoint {
            addresses: vec![format!("10.0.{}.{}", d.roll(3), d.roll(6))],
            ready: d.roll(4) != 0,
            terminating: d.roll(8) == 0,
            pod: (d.roll(5) != 0).then(|| key("ns", format!("pod{}", d.roll(8)))),
            node: (d.roll(2) == 0).then(|| format!("node{}", d.roll(3))),
            hostname: None,
        })
        .collect();
    SliceInfo {
        service: format!("svc{}", d.roll(4)),
        ports: vec![("http".into(), 8080)],
        endpoints,
    }
}

fn pod(d: &mut Dice) -> PodInfo {
    let mut labels = BTreeMap::new();
    labels.insert("version".to_string(), format!("v{}", d.roll(2)));
    if d.roll(4) == 0 {
        labels.insert(label::NETWORK.to_string(), "podnet".to_string());
    }
    PodInfo {
        labels: Arc::new(labels),
        service_account: format!("sa{}", d.roll(2)).into(),
        node: Some(format!("node{}", d.roll(3))),
    }
}

/// One random watcher change to cluster `id`, through the touch a watcher gives it.
fn change(r: &Registry, id: &str, generation: u64, d: &mut Dice) {
    let n = d.roll(4);
    match d.roll(8) {
        0 | 1 => {
            let k = key("ns", format!("svc{n}"));
            let svc = (d.roll(5) != 0).then(|| service(d));
            r.update_touching(
                id,
                generation,
                Touch::Service(k.clone()),
                |data| match svc {
                    Some(s) => drop(data.services.insert(k, s)),
                    None => drop(data.services.remove(&k)),
                },
            );
        }
        2..=4 => {
            let k = key("ns", format!("slice{n}"));
            let s = (d.roll(6) != 0).then(|| slice(d));
            r.update_touching(id, generation, Touch::Slice(k.clone()), |data| match s {
                Some(s) => drop(data.slices.insert(k, s)),
                None => drop(data.slices.remove(&k)),
            });
        }
        5 | 6 => {
            let k = key("ns", format!("pod{}", d.roll(8)));
            let p = (d.roll(6) != 0).then(|| pod(d));
            r.update_touching(id, generation, Touch::Pod(k.clone()), |data| match p {
                Some(p) => drop(data.pods.insert(k, p)),
                None => drop(data.pods.remove(&k)),
            });
        }
        _ => {
            let name = format!("node{}", d.roll(3));
            let node = NodeInfo {
                locality: format!("r{}/z{}", d.roll(2), d.roll(2)).parse().unwrap(),
                ..Default::default()
            };
            r.update_touching(id, generation, Touch::Node(name.clone()), |data| {
                data.nodes.insert(name, node);
            });
        }
    }
}

/// Istio's merged registry (every cluster's endpoints of one hostname in one service) built
/// incrementally: after each of many random Service, EndpointSlice, Pod and Node changes in
/// three clusters, the snapshot equals the one merged from scratch.
#[test]
fn incremental_snapshots_equal_full_merges() {
    let r = registry();
    let clusters: Vec<(String, u64)> = (1..=3)
        .map(|c| {
            let id = format!("cluster{c}");
            let generation = r.add_generation(&id, "", Some(format!("net{c}")), 1);
            (id, generation)
        })
        .collect();
    let mut d = Dice(7);
    let mut non_trivial = 0;
    for step in 0..600 {
        let (id, generation) = &clusters[d.roll(3) as usize];
        change(&r, id, *generation, &mut d);
        if d.roll(3) != 0 {
            continue;
        }
        let incremental = r.snapshot();
        let full = r.full_snapshot();
        assert_eq!(incremental, full, "step {step}");
        non_trivial += usize::from(full.services.iter().any(|s| !s.endpoints.is_empty()));
    }
    assert!(
        non_trivial > 50,
        "the changes built endpoints ({non_trivial})"
    );
}

/// A change to one EndpointSlice re-merges only its Service: every other Service of the
/// snapshot is the same `Arc` as in the one before, and the pushed state can tell them apart
/// by pointer.
#[test]
fn untouched_services_keep_their_arc() {
    let r = registry();
    let generation = r.add_generation("c1", "", Some("n1".into()), 1);
    let mut d = Dice(3);
    for n in 0..4 {
        let k = key("ns", format!("svc{n}"));
        let svc = service(&mut d);
        r.update_touching("c1", generation, Touch::Service(k.clone()), |data| {
            data.services.insert(k, svc);
        });
    }
    let slice_of = |svc: &str, ip: &str| SliceInfo {
        service: svc.into(),
        ports: vec![("http".into(), 8080)],
        endpoints: vec![SliceEndpoint {
            addresses: vec![ip.into()],
            ready: true,
            ..Default::default()
        }],
    };
    let before = r.snapshot();
    let k = key("ns", "svc1-abc".into());
    let s = slice_of("svc1", "10.0.0.9");
    r.update_touching("c1", generation, Touch::Slice(k.clone()), |data| {
        data.slices.insert(k, s);
    });
    let after = r.snapshot();
    assert_eq!(before.services.len(), 4);
    for (b, a) in before.services.iter().zip(&after.services) {
        let touched = a.hostname.starts_with("svc1.");
        assert_eq!(Arc::ptr_eq(a, b), !touched, "{}", a.hostname);
    }
    assert_eq!(after.services[1].endpoints[0].address, "10.0.0.9");
    // A change that leaves the merged Service equal keeps its Arc too.
    let k = key("ns", "svc1-abc".into());
    let same = slice_of("svc1", "10.0.0.9");
    r.update_touching("c1", generation, Touch::Slice(k.clone()), |data| {
        data.slices.insert(k, same);
    });
    assert!(Arc::ptr_eq(&r.snapshot().services[1], &after.services[1]));
}
