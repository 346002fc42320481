//! DestinationRules as the xDS generators use them: which rule applies to a host for a given
//! client (Istio's lookup: client namespace, service namespace, root namespace, `exportTo`
//! honoured), its subsets, and the traffic policy of one cluster (see [`policy`]).

use serde_json::Value;
use std::collections::BTreeMap;

mod policy;

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub namespace: String,
    pub name: String,
    /// The `host` field made fully qualified (`*.` prefixes kept).
    pub host: String,
    pub traffic_policy: Value,
    pub subsets: Vec<SubsetRule>,
    /// `exportTo` as written (`.`, `*` or namespaces); empty means every namespace, Istio's
    /// default `defaultDestinationRuleExportTo`.
    pub export_to: Vec<String>,
    /// The rule lives in the mesh's root namespace (the federation's system namespace, Istio's
    /// `meshConfig.rootNamespace`): the fallback for every client. Set by [`Rule::in_root`].
    pub root: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubsetRule {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Value,
}

impl Rule {
    /// From a DestinationRule object of any version; None when it has no host.
    pub fn from_object(namespace: &str, name: &str, obj: &Value, domain: &str) -> Option<Rule> {
        let spec = &obj["spec"];
        let host = qualify(spec["host"].as_str()?, namespace, domain);
        let subsets = spec["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(SubsetRule {
                    name: s["name"].as_str()?.to_string(),
                    labels: strings(&s["labels"]),
                    traffic_policy: s["trafficPolicy"].clone(),
                })
            })
            .collect();
        let export_to = spec["exportTo"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        Some(Rule {
            namespace: namespace.to_string(),
            name: name.to_string(),
            host,
            traffic_policy: spec["trafficPolicy"].clone(),
            subsets,
            export_to,
            root: false,
        })
    }

    /// Marks the rule as the root namespace's when `root_namespace` is its namespace.
    pub fn in_root(mut self, root_namespace: &str) -> Rule {
        self.root = self.namespace == root_namespace;
        self
    }

    fn matches(&self, fqdn: &str) -> bool {
        match self.host.strip_prefix('*') {
            Some(suffix) => fqdn.ends_with(suffix),
            None => self.host == fqdn,
        }
    }

    /// Istio's `host.MoreSpecific` order: an exact host first, then the longest wildcard.
    fn specificity(&self) -> (bool, std::cmp::Reverse<usize>) {
        (
            self.host.starts_with('*'),
            std::cmp::Reverse(self.host.len()),
        )
    }

    /// Same namespace, same host, same `exportTo` set: Istio merges such rules.
    fn merges_with(&self, other: &Rule) -> bool {
        let set = |r: &Rule| {
            r.export_to
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        };
        self.namespace == other.namespace && self.host == other.host && set(self) == set(other)
    }

    /// Takes `later`'s subsets whose names are new, and its policy if this rule has none.
    fn absorb(&mut self, later: Rule) {
        if self.traffic_policy.is_null() {
            self.traffic_policy = later.traffic_policy;
        }
        for s in later.subsets {
            if !self.subsets.iter().any(|have| have.name == s.name) {
                self.subsets.push(s);
            }
        }
    }

    /// Only its own namespace sees it: `exportTo` is exactly `.` or that namespace.
    fn private(&self) -> bool {
        matches!(self.export_to.as_slice(), [one] if one == "." || *one == self.namespace)
    }

    /// Visible to clients of its own namespace (Istio's namespace-local index).
    fn local(&self) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == "." || *e == self.namespace)
    }

    /// Exported to clients in `client_ns` from another namespace.
    fn exported_to(&self, client_ns: &str) -> bool {
        self.export_to.is_empty() || self.export_to.iter().any(|e| e == "*" || e == client_ns)
    }
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The rules of a push from the registry's `(namespace, name, object)` list: hosts qualified
/// in `domain`, those of `root_namespace` marked as the mesh's root namespace's, and rules for
/// one host in one namespace with the same `exportTo` merged into one (Istio's
/// `mergeDestinationRule`, oldest first: subsets with new names appended, the first
/// top-level policy kept).
pub fn from_objects(
    objects: &[(String, String, Value)],
    domain: &str,
    root_namespace: &str,
) -> Vec<Rule> {
    let mut parsed: Vec<(&str, Rule)> = objects
        .iter()
        .filter_map(|(ns, name, obj)| {
            let created = obj["metadata"]["creationTimestamp"].as_str().unwrap_or("");
            Some((created, Rule::from_object(ns, name, obj, domain)?))
        })
        .collect();
    // Istio's order: creation time, then name, then namespace.
    parsed.sort_by(|(a, ra), (b, rb)| {
        (a, &ra.name, &ra.namespace).cmp(&(b, &rb.name, &rb.namespace))
    });
    let mut out: Vec<Rule> = Vec::new();
    for (_, rule) in parsed {
        let rule = rule.in_root(root_namespace);
        match out.iter_mut().find(|r| r.merges_with(&rule)) {
            Some(first) => first.absorb(rule),
            None => out.push(rule),
        }
    }
    out
}

/// Istio's short names: `svc` is in the rule's namespace, `svc.ns` and `svc.ns.svc` get the
/// domain appended; anything with more dots is already qualified.
pub fn qualify(host: &str, namespace: &str, domain: &str) -> String {
    if host.starts_with('*') {
        return host.to_string();
    }
    match host.split('.').count() {
        1 => format!("{host}.{namespace}.svc.{domain}"),
        2 => format!("{host}.svc.{domain}"),
        3 if host.ends_with(".svc") => format!("{host}.{domain}"),
        _ => host.to_string(),
    }
}

/// The rule for `fqdn` as a client in `proxy_ns` sees it, in Istio's order
/// (`PushContext.destinationRule`): a rule of the client's own namespace visible there (for a
/// client in the root namespace, the root namespace's private rules), else one the service's
/// namespace exports to the client, else one the root namespace exports to it. Within a
/// namespace the most specific host wins; a namespace whose best match is not exported to the
/// client gives nothing (Istio does not fall back to a wider host there).
pub fn find<'a>(
    rules: &'a [Rule],
    fqdn: &str,
    service_ns: &str,
    proxy_ns: &str,
) -> Option<&'a Rule> {
    let root_ns = rules.iter().find(|r| r.root).map(|r| r.namespace.as_str());
    let own = if root_ns == Some(proxy_ns) {
        best(rules, fqdn, |r| r.root && r.private())
    } else {
        best(rules, fqdn, |r| r.namespace == proxy_ns && r.local())
    };
    let exported = |ns: &str| {
        let host = best(rules, fqdn, |r| r.namespace == ns && !r.private())?
            .host
            .clone();
        rules.iter().rev().find(|r| {
            r.namespace == ns && !r.private() && r.host == host && r.exported_to(proxy_ns)
        })
    };
    own.or_else(|| exported(service_ns))
        .or_else(|| root_ns.and_then(exported))
}

/// The most specific rule for `fqdn` among those `keep` accepts; of equally specific ones
/// the last (Istio's `SidecarScope.DestinationRule` keeps the last rule without a selector,
/// so of rules for one host that were not merged, the newest applies).
fn best<'a>(rules: &'a [Rule], fqdn: &str, keep: impl Fn(&Rule) -> bool) -> Option<&'a Rule> {
    rules
        .iter()
        .filter(|r| keep(r) && r.matches(fqdn))
        .max_by_key(|r| std::cmp::Reverse(r.specificity()))
}

#[cfg(test)]
mod tests;
