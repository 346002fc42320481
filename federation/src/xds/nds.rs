//! NDS: the name table a DNS proxy answers from. A service present in the proxy's own cluster
//! resolves to its ClusterIP there (or, headless, to its ready pods there); one that exists
//! only elsewhere to a VIP that every cluster computes alike (see [`vips`]), when it has a
//! route; ExternalName Services and names without a route are left to the upstream resolver.

use crate::registry::{ServiceView, Snapshot};
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// One entry per mesh hostname as `cluster_id`'s DNS proxy should answer it, as Istio's
/// `BuildNameTable` decides (pkg/dns/server/name_table.go):
/// - a Service with a ClusterIP in the client's cluster answers that ClusterIP;
/// - one headless there answers its ready pods' addresses in that cluster, and each pod with a
///   hostname (a StatefulSet's) also gets `<hostname>.<service>.<ns>.svc.<domain>`; with no
///   ready pod it is left out, as Istio leaves out a headless Service without addresses;
/// - an ExternalName Service is left out, so the query goes upstream and gets its CNAME;
/// - otherwise a VIP, but only for a Service something can route to (see [`routable`]):
///   a name without a route is left out and answered upstream, never given an address that
///   leads nowhere.
///
/// A name left out is forwarded by the DNS proxy, as Istio's agent forwards names not in its
/// table.
pub fn entries(
    snapshot: &Snapshot,
    vips: &BTreeMap<String, (Ipv4Addr, Ipv6Addr)>,
    cluster_id: &str,
    domain: &str,
) -> BTreeMap<String, NameInfo> {
    let mut out = BTreeMap::new();
    for svc in &snapshot.services {
        let short = short_name(svc, domain);
        let ips = if let Some(ip) = svc.cluster_ips.get(cluster_id) {
            vec![ip.clone()]
        } else if svc.headless_in.iter().any(|c| c == cluster_id) {
            headless(svc, cluster_id, &short, &mut out)
        } else if svc.external_name.is_some() || !routable(svc) {
            continue;
        } else if let Some((v4, v6)) = vips.get(&svc.hostname) {
            vec![v4.to_string(), v6.to_string()]
        } else {
            continue;
        };
        if ips.is_empty() {
            continue;
        }
        let info = name_info(ips, short, &svc.namespace);
        out.insert(svc.hostname.clone(), info);
    }
    out
}

/// `svc` of `svc.ns.svc.<domain>`, empty for another shape.
fn short_name(svc: &ServiceView, domain: &str) -> String {
    svc.hostname
        .strip_suffix(&format!(".svc.{domain}"))
        .and_then(|h| h.strip_suffix(&format!(".{}", svc.namespace)))
        .unwrap_or_default()
        .to_string()
}

fn name_info(ips: Vec<String>, shortname: String, namespace: &str) -> NameInfo {
    NameInfo {
        ips,
        registry: "Kubernetes".into(),
        shortname,
        namespace: namespace.to_string(),
        ..Default::default()
    }
}

/// A headless Service's addresses for a client in `cluster_id`: its ready endpoints there
/// (each address once, though listed once per port), as Kubernetes' own DNS answers and as
/// Istio does with `ENABLE_MULTICLUSTER_HEADLESS=false`. Pods with a hostname also get their
/// own name into `out`. Istio requires ports (`len(svc.Ports) > 0`) for either.
fn headless(
    svc: &ServiceView,
    cluster_id: &str,
    short: &str,
    out: &mut BTreeMap<String, NameInfo>,
) -> Vec<String> {
    let mut ips: Vec<String> = Vec::new();
    let mut pods: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let ready = svc
        .endpoints
        .iter()
        .filter(|e| *e.cluster == *cluster_id && e.ready && e.address.parse::<IpAddr>().is_ok());
    for ep in ready.filter(|_| !svc.ports.is_empty()) {
        if ips.contains(&ep.address) {
            continue;
        }
        ips.push(ep.address.clone());
        let Some(hostname) = ep.hostname.as_deref().filter(|h| !h.is_empty()) else {
            continue;
        };
        if !short.is_empty() {
            pods.entry(hostname.to_string())
                .or_default()
                .push(ep.address.clone());
        }
    }
    let parent = svc.hostname.split_once('.').map_or("", |(_, rest)| rest);
    for (hostname, addresses) in pods {
        // `<hostname>.<service>` is the pod's name in its namespace, as Istio's shortname.
        let info = name_info(addresses, format!("{hostname}.{short}"), &svc.namespace);
        out.insert(format!("{hostname}.{short}.{parent}"), info);
    }
    ips
}

/// Whether a client outside the Service's clusters has a route for a VIP: the Service load
/// balances somewhere (a ClusterIP in some cluster: a headless Service is passthrough, and
/// Istio never auto-allocates an address to one, as it skips `resolution: NONE`) and has a
/// ready endpoint on a port the mesh carries (TCP: the gateway tunnels TCP, and no cluster is
/// built for a UDP port).
pub fn routable(svc: &ServiceView) -> bool {
    let carried = |port: u16| {
        svc.ports
            .iter()
            .any(|p| p.port == port && !p.protocol.eq_ignore_ascii_case("UDP"))
    };
    !svc.cluster_ips.is_empty()
        && svc
            .endpoints
            .iter()
            .any(|e| e.ready && carried(e.service_port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointView, PortView, ServiceView};

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

    fn port(port: u16, protocol: &str) -> PortView {
        PortView {
            name: format!("p{port}"),
            port,
            protocol: protocol.into(),
            ..Default::default()
        }
    }

    fn ep(cluster: &str, address: &str, port: u16, ready: bool) -> EndpointView {
        EndpointView {
            cluster: cluster.into(),
            address: address.into(),
            port,
            service_port: port,
            ready,
            ..Default::default()
        }
    }

    fn pod(cluster: &str, address: &str, port: u16, hostname: &str) -> EndpointView {
        EndpointView {
            hostname: Some(hostname.into()),
            ..ep(cluster, address, port, true)
        }
    }

    /// A TCP port 5000 and one ready endpoint in cluster2: something to route a VIP to.
    fn routed(mut s: ServiceView) -> ServiceView {
        s.ports.push(port(5000, "TCP"));
        s.endpoints.push(ep("cluster2", "10.20.0.5", 5000, true));
        s
    }

    fn table(services: Vec<ServiceView>, cluster: &str) -> BTreeMap<String, NameInfo> {
        let snap = Snapshot {
            services: services.into_iter().map(std::sync::Arc::new).collect(),
            gateways: vec![],
        };
        let v = vips(snap.services.iter().map(|s| s.hostname.as_str()));
        entries(&snap, &v, cluster, "cluster.local")
    }

    fn vip_of(host: &str) -> Vec<String> {
        let (v4, v6) = vips([host])[host];
        vec![v4.to_string(), v6.to_string()]
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
                routed(svc(
                    "helloworld.sample.svc.cluster.local",
                    "sample",
                    &[("cluster2", "10.96.0.10")],
                )),
                svc(
                    "sleep.sample.svc.cluster.local",
                    "sample",
                    &[("cluster1", "10.96.0.20"), ("cluster2", "10.96.0.21")],
                ),
            ]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
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

    const DB: &str = "mysql.db.svc.cluster.local";

    /// A headless Service (`clusterIP: None`) in cluster1 and cluster2 of one network.
    fn mysql() -> ServiceView {
        ServiceView {
            hostname: DB.into(),
            namespace: "db".into(),
            ports: vec![port(3306, "TCP"), port(33060, "TCP")],
            headless_in: vec!["cluster1".into(), "cluster2".into()],
            endpoints: vec![
                pod("cluster1", "10.10.0.7", 3306, "mysql-0"),
                pod("cluster1", "10.10.0.7", 33060, "mysql-0"),
                pod("cluster1", "10.10.0.8", 3306, "mysql-1"),
                pod("cluster1", "10.10.0.8", 33060, "mysql-1"),
                ep("cluster1", "10.10.0.9", 3306, false),
                pod("cluster2", "10.20.0.7", 3306, "mysql-0"),
            ],
            ..Default::default()
        }
    }

    /// Istio (`BuildNameTable`, headless branch): a headless Service answers the addresses of
    /// its ready endpoints, each once though listed per port, not-ready ones left out; only the
    /// client's cluster's, as Kubernetes DNS answers (Istio with
    /// `ENABLE_MULTICLUSTER_HEADLESS=false`). No VIP: Istio gives passthrough Services none.
    #[test]
    fn headless_services_resolve_to_ready_pods_of_the_clients_cluster() {
        let t = table(vec![mysql()], "cluster1");
        let db = &t[DB];
        assert_eq!(db.ips, vec!["10.10.0.7", "10.10.0.8"]);
        assert_eq!(
            (db.shortname.as_str(), db.namespace.as_str()),
            ("mysql", "db")
        );
        assert_eq!(table(vec![mysql()], "cluster2")[DB].ips, vec!["10.20.0.7"]);
        // A cluster without the Service: headless elsewhere is passthrough, never a VIP.
        assert!(!table(vec![mysql()], "cluster3").contains_key(DB));
    }

    /// Istio: "for each individual pod, populate the dns table with the endpoint IP with a
    /// manufactured host name" `<hostname>.<subdomain>.<ns>.svc.<domain>` (a StatefulSet's
    /// pods, `mysql-0.mysql.db.svc.cluster.local`), shortname `<hostname>.<subdomain>` so
    /// `mysql-0.mysql.db` resolves too; the client's cluster's pod wins its name.
    #[test]
    fn statefulset_pods_get_their_own_names() {
        let t = table(vec![mysql()], "cluster1");
        let p0 = &t["mysql-0.mysql.db.svc.cluster.local"];
        assert_eq!(p0.ips, vec!["10.10.0.7"]);
        assert_eq!(
            (
                p0.shortname.as_str(),
                p0.namespace.as_str(),
                p0.registry.as_str()
            ),
            ("mysql-0.mysql", "db", "Kubernetes")
        );
        assert_eq!(
            t["mysql-1.mysql.db.svc.cluster.local"].ips,
            vec!["10.10.0.8"]
        );
        assert_eq!(t.len(), 3, "the service and its two ready pods: {t:?}");
        let t2 = table(vec![mysql()], "cluster2");
        assert_eq!(
            t2["mysql-0.mysql.db.svc.cluster.local"].ips,
            vec!["10.20.0.7"]
        );
        assert!(!t2.contains_key("mysql-1.mysql.db.svc.cluster.local"));
    }

    /// Istio leaves a headless Service out when it "could not reliably determine the addresses
    /// of endpoints" (no ready one, or no ports): the query goes upstream, to the cluster's DNS.
    #[test]
    fn a_headless_service_without_ready_pods_is_left_out() {
        let mut none_ready = mysql();
        none_ready
            .endpoints
            .retain(|e| !e.ready || &*e.cluster != "cluster1");
        assert!(table(vec![none_ready], "cluster1").is_empty());
        let mut no_ports = mysql();
        no_ports.ports.clear();
        assert!(table(vec![no_ports], "cluster1").is_empty());
    }

    /// Istio: an ExternalName Service is `Resolution: Alias` with no address, so
    /// `BuildNameTable` skips it and the agent forwards the query (the cluster's DNS answers
    /// the CNAME); it never gets an auto-allocated VIP.
    #[test]
    fn external_name_services_are_left_out() {
        let ext = ServiceView {
            external_name: Some("db.example.com".into()),
            ..routed(svc("ext.sample.svc.cluster.local", "sample", &[]))
        };
        assert!(table(vec![ext.clone()], "cluster1").is_empty());
        assert!(table(vec![ext], "cluster2").is_empty());
    }

    /// Istio gives an auto-allocated address only to what the dataplane can route (not to
    /// `resolution: NONE`); a VIP for a Service with no port, no ready endpoint, only UDP
    /// ports or only headless clusters would lead nowhere: left out, so the cluster's DNS
    /// answers (NXDOMAIN). A Service with a ClusterIP in the client's cluster keeps it even
    /// without endpoints, as Kubernetes and Istio answer it.
    #[test]
    fn no_vip_is_given_to_a_name_without_a_route() {
        let host = "hw.sample.svc.cluster.local";
        let bare = svc(host, "sample", &[("cluster2", "10.96.0.10")]);
        assert!(
            table(vec![bare.clone()], "cluster1").is_empty(),
            "no port, no endpoint"
        );
        let mut not_ready = routed(bare.clone());
        not_ready.endpoints[0].ready = false;
        assert!(table(vec![not_ready], "cluster1").is_empty());
        let mut udp = routed(bare.clone());
        udp.ports[0].protocol = "UDP".into();
        assert!(table(vec![udp], "cluster1").is_empty());
        let mut headless = routed(svc(host, "sample", &[]));
        headless.headless_in = vec!["cluster2".into()];
        assert!(table(vec![headless], "cluster1").is_empty());
        assert_eq!(
            table(vec![routed(bare.clone())], "cluster1")[host].ips,
            vip_of(host)
        );
        assert_eq!(table(vec![bare], "cluster2")[host].ips, vec!["10.96.0.10"]);
    }
}
