//! Which VirtualService applies to a service for a client, as Istio's sidecar scope picks it
//! (`SidecarScope`/`PushContext.VirtualServicesForGateway` and `selectVirtualServices`):
//! only rules bound to `mesh`, visible to the client's namespace through `exportTo`, in the
//! order the client's own namespace, then those exported to it by name, then the public ones;
//! within a group the oldest first (then namespace/name). For one host the first rule wins;
//! sidecars do not merge rules, later ones are shadowed.

use super::virtual_service::VirtualService;

/// The rule that routes `fqdn` for a client in `client_ns`, if any.
pub fn find<'a>(
    rules: &'a [VirtualService],
    client_ns: &str,
    fqdn: &str,
) -> Option<&'a VirtualService> {
    ordered(rules, client_ns)
        .into_iter()
        .find(|vs| vs.hosts.iter().any(|h| host_matches(h, fqdn)))
}

/// The rules a client in `client_ns` sees, in the order Istio tries them.
pub fn ordered<'a>(rules: &'a [VirtualService], client_ns: &str) -> Vec<&'a VirtualService> {
    let mut seen: Vec<(u8, &VirtualService)> = rules
        .iter()
        .filter(|vs| vs.mesh)
        .filter_map(|vs| group(vs, client_ns).map(|g| (g, vs)))
        .collect();
    seen.sort_by(|(ga, a), (gb, b)| {
        (ga, &a.created, &a.namespace, &a.name).cmp(&(gb, &b.created, &b.namespace, &b.name))
    });
    seen.into_iter().map(|(_, vs)| vs).collect()
}

/// 0: the client's own namespace; 1: exported to it by name; 2: public; None: not visible.
fn group(vs: &VirtualService, client_ns: &str) -> Option<u8> {
    if vs.namespace == client_ns {
        // `exportTo: [.]` and any list naming the own namespace: visible at home. A list
        // naming only other namespaces hides the rule from its own namespace (Istio's
        // exportTo is the whole set of namespaces that see it).
        let home = vs.export_to.is_empty()
            || vs
                .export_to
                .iter()
                .any(|e| e == "." || e == "*" || e == client_ns);
        return home.then_some(0);
    }
    if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
        return Some(2);
    }
    vs.export_to.iter().any(|e| e == client_ns).then_some(1)
}

/// A rule host (qualified; `*` or `*.suffix` wildcards) covers the service `fqdn`.
pub fn host_matches(host: &str, fqdn: &str) -> bool {
    if host == "*" {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix),
        None => host == fqdn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FQDN: &str = "reviews.bookinfo.svc.cluster.local";

    fn vs(ns: &str, name: &str, created: &str, export_to: &[&str]) -> VirtualService {
        VirtualService {
            namespace: ns.into(),
            name: name.into(),
            created: created.into(),
            hosts: vec![FQDN.into()],
            gateways: vec![],
            mesh: true,
            export_to: export_to.iter().map(|s| s.to_string()).collect(),
            http: vec![],
            tcp: vec![],
            warnings: vec![],
        }
    }

    fn found(rules: &[VirtualService], ns: &str) -> Option<String> {
        find(rules, ns, FQDN).map(|v| format!("{}/{}", v.namespace, v.name))
    }

    /// Istio: `exportTo: [.]` keeps a rule to its own namespace; a list of names exports it
    /// to those namespaces only; empty and `*` export it everywhere.
    #[test]
    fn export_to_limits_who_sees_a_rule() {
        let rules = [vs("bookinfo", "private", "2026-01-01T00:00:00Z", &["."])];
        assert_eq!(
            found(&rules, "bookinfo").as_deref(),
            Some("bookinfo/private")
        );
        assert_eq!(found(&rules, "other"), None);
        let rules = [vs("bookinfo", "named", "2026-01-01T00:00:00Z", &["team-a"])];
        assert_eq!(found(&rules, "team-a").as_deref(), Some("bookinfo/named"));
        assert_eq!(found(&rules, "team-b"), None);
        assert_eq!(found(&rules, "bookinfo"), None);
        for export in [&[][..], &["*"][..]] {
            let rules = [vs("bookinfo", "public", "2026-01-01T00:00:00Z", export)];
            assert_eq!(found(&rules, "anyone").as_deref(), Some("bookinfo/public"));
        }
    }

    /// Istio: the client's own namespace's rule wins over an older public one from
    /// elsewhere, and one exported to it by name wins over a public one.
    #[test]
    fn the_client_namespace_comes_first_then_named_exports() {
        let rules = [
            vs("elsewhere", "public", "2020-01-01T00:00:00Z", &[]),
            vs("team-a", "own", "2026-01-01T00:00:00Z", &[]),
            vs("other", "named", "2025-01-01T00:00:00Z", &["team-a"]),
        ];
        assert_eq!(found(&rules, "team-a").as_deref(), Some("team-a/own"));
        assert_eq!(
            found(&rules[..1], "team-a").as_deref(),
            Some("elsewhere/public")
        );
        let no_own = [rules[0].clone(), rules[2].clone()];
        assert_eq!(found(&no_own, "team-a").as_deref(), Some("other/named"));
    }

    /// Istio: among rules for one host in one group, the oldest (creationTimestamp) wins,
    /// then namespace/name; later ones are shadowed.
    #[test]
    fn the_oldest_rule_wins() {
        let rules = [
            vs("bookinfo", "b-new", "2026-02-01T00:00:00Z", &[]),
            vs("bookinfo", "z-old", "2026-01-01T00:00:00Z", &[]),
            vs("bookinfo", "a-old", "2026-01-01T00:00:00Z", &[]),
        ];
        assert_eq!(found(&rules, "bookinfo").as_deref(), Some("bookinfo/a-old"));
    }

    /// Istio: a rule bound only to gateways (the seed's `tcp-echo` VS on
    /// `tcp-echo-gateway`) does not apply to sidecars or proxyless clients.
    #[test]
    fn gateway_only_rules_are_not_for_the_mesh() {
        let mut gw = vs("bookinfo", "gw", "2020-01-01T00:00:00Z", &[]);
        gw.mesh = false;
        gw.gateways = vec!["tcp-echo-gateway".into()];
        assert_eq!(found(std::slice::from_ref(&gw), "bookinfo"), None);
        let rules = [gw, vs("bookinfo", "mesh", "2026-01-01T00:00:00Z", &[])];
        assert_eq!(found(&rules, "bookinfo").as_deref(), Some("bookinfo/mesh"));
    }

    /// Istio: `*.suffix` hosts cover services under the suffix; other hosts do not match.
    #[test]
    fn wildcard_hosts_cover_their_suffix() {
        let mut w = vs("bookinfo", "w", "2026-01-01T00:00:00Z", &[]);
        w.hosts = vec!["*.bookinfo.svc.cluster.local".into()];
        let rules = [w];
        assert_eq!(found(&rules, "bookinfo").as_deref(), Some("bookinfo/w"));
        assert_eq!(
            find(&rules, "bookinfo", "ratings.other.svc.cluster.local"),
            None
        );
        assert!(host_matches("*", FQDN));
        assert!(!host_matches("ratings.bookinfo.svc.cluster.local", FQDN));
    }
}
