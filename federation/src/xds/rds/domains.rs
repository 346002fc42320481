//! Virtual host domains for a service as Istio generates them (`httproute.go`
//! `generateVirtualHostDomains`, `GenerateAltVirtualHosts`, `appendDomainPort`): the FQDN, its
//! absolute form, the short forms the client's namespace can use, and the client cluster's
//! VIP, each also with `:port` for proxyless gRPC (which matches the dialed authority,
//! `helloworld:5000`; `SidecarIgnorePort` is off for it) and for Envoy's `http_proxy`
//! routes; Envoy's per-port routes ignore the port and get the names alone ([`names`]).

/// The domains of `fqdn` on `port` for a client in `client_ns` under `domain`
/// (`cluster.local`); `vip` is the service's ClusterIP in the client's cluster.
pub fn domains(
    fqdn: &str,
    port: u16,
    client_ns: &str,
    domain: &str,
    vip: Option<&str>,
) -> Vec<String> {
    let names = names(fqdn, client_ns, domain, vip);
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        let with_port = format!("{n}:{port}");
        out.push(n);
        out.push(with_port);
    }
    out
}

/// The domains without ports (Istio with `SidecarIgnorePort`: Envoy's per-port route
/// configurations set `ignore_port_in_host_matching`), deduplicated, gRPC-valid only.
pub fn names(fqdn: &str, client_ns: &str, domain: &str, vip: Option<&str>) -> Vec<String> {
    let mut names = vec![fqdn.to_string(), format!("{fqdn}.")];
    names.extend(alt_hosts(fqdn, client_ns, domain));
    names.extend(vip.map(String::from));
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names.into_iter().filter(|n| valid(n)) {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Istio `GenerateAltVirtualHosts`: `svc.ns.svc` and `svc.ns` for any client of the
/// service's cluster domain, and bare `svc` for a client in the service's namespace.
fn alt_hosts(fqdn: &str, client_ns: &str, domain: &str) -> Vec<String> {
    let Some(base) = fqdn.strip_suffix(&format!(".svc.{domain}")) else {
        return Vec::new();
    };
    let Some((svc, ns)) = base.split_once('.') else {
        return Vec::new();
    };
    if ns.contains('.') {
        return Vec::new();
    }
    let mut out = vec![format!("{svc}.{ns}.svc"), format!("{svc}.{ns}")];
    if ns == client_ns {
        out.push(svc.to_string());
    }
    out
}

/// gRPC (grpc-js `route-config-resource-type.ts`) refuses a domain with more than one `*`
/// or a `*` anywhere but at one end: such a domain would NACK the whole resource.
pub fn valid(d: &str) -> bool {
    let stars = d.matches('*').count();
    stars == 0 || (stars == 1 && (d.starts_with('*') || d.ends_with('*'))) && d.len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const FQDN: &str = "helloworld.sample.svc.cluster.local";

    /// Istio `generateVirtualHostDomains` (httproute_test.go "same namespace"): FQDN,
    /// absolute FQDN, `svc.ns.svc`, `svc.ns`, `svc`, the VIP, each with and without port.
    #[test]
    fn same_namespace_client_gets_every_short_form() {
        let d = domains(FQDN, 5000, "sample", "cluster.local", Some("10.0.0.5"));
        assert_eq!(
            d,
            [
                FQDN,
                "helloworld.sample.svc.cluster.local:5000",
                "helloworld.sample.svc.cluster.local.",
                "helloworld.sample.svc.cluster.local.:5000",
                "helloworld.sample.svc",
                "helloworld.sample.svc:5000",
                "helloworld.sample",
                "helloworld.sample:5000",
                "helloworld",
                "helloworld:5000",
                "10.0.0.5",
                "10.0.0.5:5000",
            ]
        );
    }

    /// Istio: a client in another namespace cannot use the bare service name.
    #[test]
    fn other_namespace_client_has_no_bare_name() {
        let d = domains(FQDN, 5000, "other", "cluster.local", None);
        assert!(d.contains(&"helloworld.sample:5000".to_string()));
        assert!(
            !d.iter()
                .any(|x| x == "helloworld" || x == "helloworld:5000")
        );
        assert!(
            !d.iter().any(|x| x == "*"),
            "no catch-all domain for proxyless"
        );
    }

    /// A ServiceEntry host outside the cluster domain has no short forms.
    #[test]
    fn external_hosts_have_only_their_name() {
        let d = domains("api.example.com", 443, "x", "cluster.local", None);
        assert_eq!(
            d,
            [
                "api.example.com",
                "api.example.com:443",
                "api.example.com.",
                "api.example.com.:443"
            ]
        );
    }

    /// gRPC: one `*` at most, only at either end (pitfall 8); others are dropped.
    #[test]
    fn domain_patterns_grpc_accepts() {
        assert!(valid("*.example.com"));
        assert!(valid("example.*"));
        assert!(valid("example.com"));
        assert!(!valid("a.*.com"));
        assert!(!valid("*.a.*"));
        assert!(!valid("*"), "the catch-all is never sent to proxyless");
        let d = domains("a.*.com", 80, "x", "cluster.local", None);
        assert!(d.is_empty());
    }
}
