//! The names the proxy answers itself, built from the NameTable as Istio's agent builds them:
//! every mesh host under its fqdn, `svc.ns.svc`, `svc.ns`, bare `svc` in the proxy's own
//! namespace and the Multi-Cluster Services name `svc.ns.svc.clusterset.local` (a
//! StatefulSet pod's `pod.svc.ns.svc.<domain>` gets the same forms but that one); and each of
//! those with a search domain appended (what a resolver with `ndots:5` asks first), answered
//! with a CNAME to the fqdn so the client needs no second round trip.

use hickory_server::proto::rr::{LowerName, Name};
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the proxy stands: the namespace bare names belong to, and the search domains its
/// clients' resolvers append.
#[derive(Debug, Clone)]
pub struct Scope {
    pub namespace: String,
    pub search: Vec<String>,
}

impl Scope {
    /// Kubernetes' own search path for a pod in `namespace`, then any extra domains.
    pub fn kubernetes(namespace: &str, domain: &str, extra: &[String]) -> Scope {
        let mut search = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        for d in extra {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if !d.is_empty() && !search.contains(&d) {
                search.push(d);
            }
        }
        Scope {
            namespace: namespace.to_string(),
            search,
        }
    }
}

/// One mesh host: its fqdn and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: Name,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// What a name found in the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// The host itself under one of its names: answer with its addresses.
    Direct(&'a Host),
    /// A search-domain expansion: answer with a CNAME to the host, then its addresses.
    Alias(&'a Host),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Direct,
    Alias,
}

/// The lookup table the proxy answers from.
#[derive(Debug, Default)]
pub struct Names {
    hosts: Vec<Host>,
    index: HashMap<LowerName, (u32, Kind)>,
}

impl Names {
    /// Builds the table from NameTable entries (hostname to info). Where two hosts claim one
    /// name, the first in hostname order keeps it, and a direct name wins over an expansion.
    pub fn build(table: &BTreeMap<String, NameInfo>, scope: &Scope) -> Names {
        let mut names = Names::default();
        let mut expansions = Vec::new();
        for (hostname, info) in table {
            let Some(host) = host(hostname, info) else {
                tracing::debug!(
                    hostname,
                    "skipping a NameTable entry without usable name or addresses"
                );
                continue;
            };
            let id = names.hosts.len() as u32;
            let alts = alternates(hostname, info, scope);
            for alt in &alts {
                names.insert(alt, id, Kind::Direct);
            }
            for alt in &alts {
                for domain in &scope.search {
                    expansions.push((format!("{alt}.{domain}"), id));
                }
            }
            names.hosts.push(host);
        }
        for (name, id) in expansions {
            names.insert(&name, id, Kind::Alias);
        }
        names
    }

    fn insert(&mut self, name: &str, id: u32, kind: Kind) {
        let Ok(n) = Name::from_ascii(format!("{name}.")) else {
            return;
        };
        self.index.entry(LowerName::from(n)).or_insert((id, kind));
    }

    pub fn lookup(&self, name: &LowerName) -> Option<Found<'_>> {
        let (id, kind) = self.index.get(name)?;
        let host = self.hosts.get(*id as usize)?;
        Some(match kind {
            Kind::Direct => Found::Direct(host),
            Kind::Alias => Found::Alias(host),
        })
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Every host with its addresses, for `/debug/names`.
    pub fn dump(&self) -> BTreeMap<String, Vec<String>> {
        self.hosts
            .iter()
            .map(|h| {
                let ips = h.v4.iter().map(|a| a.to_string());
                (
                    h.name.to_ascii(),
                    ips.chain(h.v6.iter().map(|a| a.to_string())).collect(),
                )
            })
            .collect()
    }
}

fn host(hostname: &str, info: &NameInfo) -> Option<Host> {
    let name = Name::from_ascii(format!("{}.", hostname.trim_end_matches('.'))).ok()?;
    let mut host = Host {
        name,
        v4: vec![],
        v6: vec![],
    };
    for ip in &info.ips {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => host.v4.push(a),
            Ok(IpAddr::V6(a)) => host.v6.push(a),
            Err(_) => tracing::debug!(hostname, ip, "ignoring an address that does not parse"),
        }
    }
    (!host.v4.is_empty() || !host.v6.is_empty()).then_some(host)
}

/// The names a host answers to directly, lowercase, without the trailing dot.
fn alternates(hostname: &str, info: &NameInfo, scope: &Scope) -> Vec<String> {
    let fqdn = hostname.trim_end_matches('.').to_ascii_lowercase();
    let mut out = vec![fqdn.clone()];
    let (svc, ns) = (
        info.shortname.to_ascii_lowercase(),
        info.namespace.to_ascii_lowercase(),
    );
    let kubernetes = info.registry == "Kubernetes" && !svc.is_empty() && !ns.is_empty();
    // Short forms only for hosts of the form svc.ns.svc.<domain>: another shape has no
    // unambiguous short name.
    if !kubernetes || !fqdn.starts_with(&format!("{svc}.{ns}.svc.")) {
        return out;
    }
    out.push(format!("{svc}.{ns}.svc"));
    out.push(format!("{svc}.{ns}"));
    // A pod of a headless Service (`mysql-0.mysql`) has no such name: MCS names its pods
    // `<hostname>.<cluster>.<service>.<ns>.svc.clusterset.local`.
    if !svc.contains('.') {
        out.push(format!("{svc}.{ns}.svc.clusterset.local"));
    }
    if ns == scope.namespace.to_ascii_lowercase() {
        out.push(svc);
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
