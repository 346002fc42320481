//! NDS: the name table a DNS proxy answers from. A service present in the proxy's own cluster
//! resolves to its ClusterIP there; one that exists only elsewhere to a VIP that every
//! cluster computes alike (see [`vips`]).

use crate::registry::Snapshot;
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Slots 1..=65534 of 240.240.0.0/16 (and the same low 16 bits in 2001:2::/48).
const SLOTS: u32 = 65534;

/// FNV-1a, 64 bits: fixed by its definition, so VIPs survive restarts and upgrades (std's
/// hasher makes no such promise).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// VIPs for `hostnames`: each takes slot `fnv1a(name) % 65534 + 1`; when two want the same
/// slot, they are taken in name order and a later one moves to the next free slot. The result
/// depends only on the set of names, so every cluster (which sees the same services) and
/// every restart agree. With more than 65,534 names the rest get none.
pub fn vips<'a>(
    hostnames: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, (Ipv4Addr, Ipv6Addr)> {
    let mut wanted: Vec<(u32, &str)> = hostnames
        .into_iter()
        .map(|h| ((fnv1a(h) % u64::from(SLOTS)) as u32 + 1, h))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut taken = vec![false; SLOTS as usize + 2];
    let mut out = BTreeMap::new();
    for (slot, host) in wanted.into_iter().take(SLOTS as usize) {
        let mut s = slot;
        while taken[s as usize] {
            s = s % SLOTS + 1;
        }
        taken[s as usize] = true;
        out.insert(host.to_string(), addresses(s));
    }
    out
}

fn addresses(slot: u32) -> (Ipv4Addr, Ipv6Addr) {
    let [_, _, hi, lo] = slot.to_be_bytes();
    (
        Ipv4Addr::new(240, 240, hi, lo),
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, slot as u16),
    )
}

/// One entry per mesh hostname as `cluster_id`'s DNS proxy should answer it.
pub fn entries(
    snapshot: &Snapshot,
    vips: &BTreeMap<String, (Ipv4Addr, Ipv6Addr)>,
    cluster_id: &str,
    domain: &str,
) -> BTreeMap<String, NameInfo> {
    let suffix = format!(".svc.{domain}");
    snapshot
        .services
        .iter()
        .filter_map(|svc| {
            let ips = match svc.cluster_ips.get(cluster_id) {
                Some(ip) => vec![ip.clone()],
                None => {
                    let (v4, v6) = vips.get(&svc.hostname)?;
                    vec![v4.to_string(), v6.to_string()]
                }
            };
            let short = svc
                .hostname
                .strip_suffix(&suffix)
                .and_then(|h| h.strip_suffix(&format!(".{}", svc.namespace)))
                .unwrap_or_default();
            let info = NameInfo {
                ips,
                registry: "Kubernetes".into(),
                shortname: short.to_string(),
                namespace: svc.namespace.clone(),
                ..Default::default()
            };
            Some((svc.hostname.clone(), info))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ServiceView;

    fn svc(host: &str, ns: &str, ips: &[(&str, &str)]) -> ServiceView {
        ServiceView {
            hostname: host.into(),
            namespace: ns.into(),
            ports: vec![],
            endpoints: vec![],
            cluster_ips: ips
                .iter()
                .map(|(c, i)| (c.to_string(), i.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn vips_depend_only_on_the_set_of_names() {
        let names: Vec<String> = (0..3000)
            .map(|i| format!("svc{i}.ns.svc.cluster.local"))
            .collect();
        let a = vips(names.iter().map(String::as_str));
        let b = vips(names.iter().rev().map(String::as_str));
        assert_eq!(a, b);
        let mut seen: Vec<_> = a.values().map(|(v4, _)| *v4).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3000, "every name has its own VIP");
        for (v4, v6) in a.values() {
            let [o1, o2, hi, lo] = v4.octets();
            assert_eq!((o1, o2), (240, 240));
            assert!((hi, lo) != (0, 0) && (hi, lo) != (255, 255));
            assert_eq!(v6.segments()[..7], [0x2001, 2, 0, 0, 0, 0, 0]);
            assert_eq!(v6.segments()[7], u16::from_be_bytes([hi, lo]));
        }
    }

    #[test]
    fn vips_are_pinned_across_versions() {
        // Changing the hash would move every remote-only service's address: fail loudly.
        let v = vips(["helloworld.sample.svc.cluster.local"]);
        let slot = (fnv1a("helloworld.sample.svc.cluster.local") % 65534) as u32 + 1;
        assert_eq!(v["helloworld.sample.svc.cluster.local"], addresses(slot));
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn collisions_resolve_in_name_order() {
        // Find two names that want the same slot.
        let mut by_slot = std::collections::HashMap::new();
        let pair = (0..200_000)
            .map(|i| format!("s{i}.ns.svc.cluster.local"))
            .find_map(|n| {
                let slot = fnv1a(&n) % 65534;
                by_slot.insert(slot, n.clone()).map(|prev| (prev, n))
            })
            .unwrap();
        let (a, b) = if pair.0 < pair.1 {
            pair
        } else {
            (pair.1, pair.0)
        };
        let v = vips([b.as_str(), a.as_str()]);
        let slot = (fnv1a(&a) % 65534) as u32 + 1;
        assert_eq!(v[&a], addresses(slot));
        assert_eq!(v[&b], addresses(slot % 65534 + 1));
    }

    #[test]
    fn local_services_get_their_cluster_ip_and_remote_ones_the_vip() {
        let snap = Snapshot {
            services: vec![
                svc(
                    "helloworld.sample.svc.cluster.local",
                    "sample",
                    &[("cluster2", "10.96.0.10")],
                ),
                svc(
                    "sleep.sample.svc.cluster.local",
                    "sample",
                    &[("cluster1", "10.96.0.20"), ("cluster2", "10.96.0.21")],
                ),
            ],
            gateways: vec![],
        };
        let v = vips(snap.services.iter().map(|s| s.hostname.as_str()));
        let t = entries(&snap, &v, "cluster1", "cluster.local");
        let hw = &t["helloworld.sample.svc.cluster.local"];
        let (v4, v6) = v["helloworld.sample.svc.cluster.local"];
        assert_eq!(hw.ips, vec![v4.to_string(), v6.to_string()]);
        assert_eq!(
            (hw.shortname.as_str(), hw.namespace.as_str()),
            ("helloworld", "sample")
        );
        assert_eq!(t["sleep.sample.svc.cluster.local"].ips, vec!["10.96.0.20"]);
        let t2 = entries(&snap, &v, "cluster2", "cluster.local");
        assert_eq!(
            t2["helloworld.sample.svc.cluster.local"].ips,
            vec!["10.96.0.10"]
        );
    }
}
