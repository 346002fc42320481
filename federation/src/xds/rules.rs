//! DestinationRules as the xDS generators use them: which rule applies to a host, its
//! subsets, and the traffic policy of a subset (the subset's own, else the rule's).

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub namespace: String,
    pub name: String,
    /// The `host` field made fully qualified (`*.` prefixes kept).
    pub host: String,
    pub traffic_policy: Value,
    pub subsets: Vec<SubsetRule>,
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
                    labels: s["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect(),
                    traffic_policy: s["trafficPolicy"].clone(),
                })
            })
            .collect();
        Some(Rule {
            namespace: namespace.to_string(),
            name: name.to_string(),
            host,
            traffic_policy: spec["trafficPolicy"].clone(),
            subsets,
        })
    }

    fn matches(&self, fqdn: &str) -> bool {
        match self.host.strip_prefix('*') {
            Some(suffix) => fqdn.ends_with(suffix),
            None => self.host == fqdn,
        }
    }

    /// The policy of `subset` (None: the rule's own): a subset's policy replaces the rule's.
    pub fn policy(&self, subset: Option<&str>) -> &Value {
        subset
            .and_then(|n| self.subsets.iter().find(|s| s.name == n))
            .map(|s| &s.traffic_policy)
            .filter(|p| !p.is_null())
            .unwrap_or(&self.traffic_policy)
    }
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

/// The rule for `fqdn` as seen from a proxy in `proxy_ns`: exact hosts before wildcards, then
/// a rule in the proxy's namespace, then one in the service's, then the first by name
/// (Istio's lookup order, without exportTo).
pub fn find<'a>(
    rules: &'a [Rule],
    fqdn: &str,
    service_ns: &str,
    proxy_ns: &str,
) -> Option<&'a Rule> {
    rules.iter().filter(|r| r.matches(fqdn)).min_by_key(|r| {
        (
            r.host.starts_with('*'),
            r.namespace != proxy_ns,
            r.namespace != service_ns,
            (r.namespace.clone(), r.name.clone()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FQDN: &str = "helloworld.sample.svc.cluster.local";

    fn rule(ns: &str, name: &str, host: &str) -> Rule {
        let obj = json!({"spec": {"host": host, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}
        ], "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}});
        Rule::from_object(ns, name, &obj, "cluster.local").unwrap()
    }

    #[test]
    fn short_hosts_are_qualified_in_the_rule_namespace() {
        assert_eq!(qualify("helloworld", "sample", "cluster.local"), FQDN);
        assert_eq!(qualify("helloworld.sample", "x", "cluster.local"), FQDN);
        assert_eq!(qualify("helloworld.sample.svc", "x", "cluster.local"), FQDN);
        assert_eq!(qualify(FQDN, "x", "cluster.local"), FQDN);
        assert_eq!(
            qualify("*.sample.svc.cluster.local", "x", "d"),
            "*.sample.svc.cluster.local"
        );
    }

    #[test]
    fn exact_beats_wildcard_and_proxy_namespace_beats_service_namespace() {
        let rules = vec![
            rule("sample", "wild", "*.sample.svc.cluster.local"),
            rule("sample", "svc-ns", "helloworld"),
            rule("client", "client-ns", FQDN),
        ];
        assert_eq!(
            find(&rules, FQDN, "sample", "client").unwrap().name,
            "client-ns"
        );
        assert_eq!(
            find(&rules, FQDN, "sample", "other").unwrap().name,
            "svc-ns"
        );
        assert_eq!(
            find(&rules[..1], FQDN, "sample", "other").unwrap().name,
            "wild"
        );
        assert!(find(&rules, "other.sample2.svc.cluster.local", "sample2", "x").is_none());
    }

    #[test]
    fn subset_policy_replaces_the_rule_policy() {
        let r = rule("sample", "dr", "helloworld");
        assert_eq!(r.policy(None)["loadBalancer"]["simple"], "LEAST_REQUEST");
        assert_eq!(
            r.policy(Some("v1"))["loadBalancer"]["simple"],
            "LEAST_REQUEST"
        );
        assert_eq!(r.policy(Some("v2"))["loadBalancer"]["simple"], "RANDOM");
        assert_eq!(r.subsets[0].labels["version"], "v1");
    }
}
