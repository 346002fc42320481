//! The traffic policy one cluster (a port, maybe a subset) gets from its DestinationRule, as
//! Istio's `MergeSubsetTrafficPolicy` works it out: `portLevelSettings` for the port replace
//! the rule's policy, a subset's policy overrides the result field by field.

use super::Rule;
use serde_json::{Map, Value};

/// The fields a `portLevelSettings` entry carries (Istio's `shadowCopyPortTrafficPolicy`).
const PORT_FIELDS: [&str; 4] = ["connectionPool", "loadBalancer", "outlierDetection", "tls"];
/// Fields a subset overrides only where it sets them, even with port-level settings.
const OTHER_FIELDS: [&str; 3] = ["tunnel", "proxyProtocol", "retryBudget"];

impl Rule {
    /// The policy of the cluster for `port` and `subset` (None: the service's own cluster);
    /// `Value::Null` when nothing applies.
    pub fn policy(&self, subset: Option<&str>, port: u16) -> Value {
        let subset = subset
            .and_then(|n| self.subsets.iter().find(|s| s.name == n))
            .map_or(&Value::Null, |s| &s.traffic_policy);
        merge(&self.traffic_policy, subset, port)
    }
}

impl Rule {
    /// Every policy the rule holds: its own, its subsets', and their `portLevelSettings`
    /// entries (what a cache key must look through for the proxy labels a rule reads).
    pub fn every_policy(&self) -> impl Iterator<Item = &Value> {
        std::iter::once(&self.traffic_policy)
            .chain(self.subsets.iter().map(|s| &s.traffic_policy))
            .flat_map(|tp| {
                let ports = tp["portLevelSettings"].as_array().into_iter().flatten();
                std::iter::once(tp).chain(ports)
            })
    }
}

/// Istio's `MergeSubsetTrafficPolicy`: the rule's policy for `port`, then the subset's policy
/// for `port` over it. A subset field replaces the rule's where set; when the subset has
/// port-level settings for this port, its four port fields replace the rule's even where
/// unset (port-level settings never inherit).
fn merge(rule: &Value, subset: &Value, port: u16) -> Value {
    let (rule, _) = for_port(rule, port);
    if !subset.is_object() {
        return rule;
    }
    let (subset, port_level) = for_port(subset, port);
    let Value::Object(mut merged) = rule else {
        return subset;
    };
    for field in PORT_FIELDS {
        if port_level || set(&subset[field]) {
            put(&mut merged, field, &subset[field]);
        }
    }
    for field in OTHER_FIELDS.into_iter().filter(|f| set(&subset[*f])) {
        put(&mut merged, field, &subset[field]);
    }
    Value::Object(merged)
}

/// Istio's `GetPortLevelTrafficPolicy`: the first `portLevelSettings` entry for `port`
/// stands in for the whole policy (its four fields only; what it leaves out takes the
/// default, not the rule's value), and says so; otherwise the policy as it is.
fn for_port(policy: &Value, port: u16) -> (Value, bool) {
    let entry = policy["portLevelSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"]["number"].as_u64() == Some(u64::from(port)));
    match entry {
        Some(p) => {
            let mut out = Map::new();
            for field in PORT_FIELDS {
                put(&mut out, field, &p[field]);
            }
            (Value::Object(out), true)
        }
        None if policy.is_object() => (policy.clone(), false),
        None => (Value::Null, false),
    }
}

fn set(v: &Value) -> bool {
    !v.is_null()
}

/// Sets `field` to `v`, or removes it when `v` is unset.
fn put(map: &mut Map<String, Value>, field: &str, v: &Value) {
    if set(v) {
        map.insert(field.to_string(), v.clone());
    } else {
        map.remove(field);
    }
}
