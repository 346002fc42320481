//! Locality load balancing as Istio computes it for EDS: which priority and weight each
//! group of endpoints (one locality) gets, from the proxy's own locality and labels and the
//! DestinationRule's `localityLbSetting` (`distribute`, `failover`, `failoverPriority`).
//!
//! Istio's rules (pilot/pkg/networking/core/loadbalancer `ApplyLocalityLoadBalancer`), kept
//! here: `enabled: false` turns it all off; `distribute` excludes failover (even when no `from`
//! matches the proxy); `failover` and `failoverPriority` act only when `outlierDetection` is set.
//! `failoverPriority` alone orders by labels only; with `failover` also set, or with neither,
//! region failover follows: priorities 0 same region+zone+subzone, 1 same region+zone, 2 same
//! region, 3 another region, 4 a region other than the target of the first `failover` entry
//! from the proxy's region. Priorities are then renumbered to be consecutive (Envoy requires it).

use meshfed_model::Locality;
use meshfed_model::labels as label;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalityPolicy {
    /// `localityLbSetting.enabled`; None means on.
    pub enabled: Option<bool>,
    pub distribute: Vec<(String, Vec<(String, u32)>)>,
    pub failover: Vec<(String, String)>,
    pub failover_priority: Vec<String>,
    pub outlier_detection: bool,
}

impl LocalityPolicy {
    /// Reads `spec.trafficPolicy` of a DestinationRule (any version); absent fields are off.
    pub fn from_traffic_policy(tp: &Value) -> Self {
        let setting = &tp["loadBalancer"]["localityLbSetting"];
        let distribute = setting["distribute"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let to = d["to"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), u32::try_from(v.as_u64()?).ok()?)))
                    .collect();
                (d["from"].as_str().unwrap_or("*").to_string(), to)
            })
            .collect();
        let failover = setting["failover"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f["from"].as_str()?.to_string(),
                    f["to"].as_str()?.to_string(),
                ))
            })
            .collect();
        let failover_priority = setting["failoverPriority"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect();
        LocalityPolicy {
            enabled: setting["enabled"].as_bool(),
            distribute,
            failover,
            failover_priority,
            outlier_detection: tp.get("outlierDetection").is_some_and(|o| !o.is_null()),
        }
    }
}

impl LocalityPolicy {
    /// Whether Envoy should weigh localities (`locality_weighted_lb_config`): for `distribute`,
    /// and for `failover`/`failoverPriority` once outlier detection is on (Istio's
    /// `LocalityLBSettings.ApplyToCluster`).
    pub fn weighted(&self) -> bool {
        self.enabled != Some(false)
            && (!self.distribute.is_empty()
                || (self.outlier_detection
                    && (!self.failover.is_empty() || !self.failover_priority.is_empty())))
    }
}

/// A proxy or an endpoint, as far as locality rules can tell them apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Place {
    pub locality: Locality,
    pub network: Arc<str>,
    pub cluster: Arc<str>,
    pub labels: crate::registry::Labels,
    /// How many endpoints this stands for (a gateway stands for those behind it); 0 counts as 1.
    pub weight: u32,
}

/// The `failoverPriority` keys a place answers from its own topology, not its labels.
pub const TOPOLOGY_KEYS: [&str; 5] = [
    label::REGION,
    label::ZONE,
    label::SUBZONE,
    label::NETWORK,
    label::CLUSTER,
];

impl Place {
    /// A `failoverPriority` label: topology keys come from the place itself, others from labels.
    fn label(&self, key: &str) -> Option<&str> {
        match key {
            label::REGION => Some(&self.locality.region),
            label::ZONE => Some(&self.locality.zone),
            label::SUBZONE => Some(&self.locality.subzone),
            label::NETWORK => Some(&self.network),
            label::CLUSTER => Some(&self.cluster),
            other => self.labels.get(other).map(String::as_str),
        }
    }
}

/// One EDS locality group: the endpoints (indices into the caller's list) of one locality
/// (or, with `failoverPriority`, one locality and label-match level), its priority, and its
/// weight (None: Envoy's default, proportional to endpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub locality: Locality,
    pub priority: u32,
    pub weight: u32,
    pub endpoints: Vec<usize>,
}

/// Istio's locality pattern: `region/zone/subzone` where `*` matches the rest.
pub fn locality_matches(locality: &Locality, pattern: &str) -> bool {
    let parts = [&locality.region, &locality.zone, &locality.subzone];
    for (i, want) in pattern.split('/').enumerate() {
        if want == "*" {
            return true;
        }
        match parts.get(i) {
            Some(have) if *have == want => {}
            _ => return false,
        }
    }
    true
}

/// Groups `endpoints` by locality and applies `policy` as seen from `proxy`.
pub fn assign(proxy: &Place, endpoints: &[Place], policy: &LocalityPolicy) -> Vec<Group> {
    let one_priority = |groups: Vec<Group>| {
        merge_same_locality(
            groups
                .into_iter()
                .map(|g| Group { priority: 0, ..g })
                .collect(),
        )
    };
    if policy.enabled == Some(false) {
        return one_priority(group_by_locality(endpoints, |_| 0));
    }
    if !policy.distribute.is_empty() {
        // distribute sets weights within one priority; without a `from` matching the proxy
        // it does nothing, and failover is not applied either (Istio's either-or).
        let groups = one_priority(group_by_locality(endpoints, |_| 0));
        return match policy
            .distribute
            .iter()
            .find(|(from, _)| locality_matches(&proxy.locality, from))
        {
            Some((_, to)) => distribute(groups, to),
            None => groups,
        };
    }
    if !policy.outlier_detection {
        return one_priority(group_by_locality(endpoints, |_| 0));
    }
    let labels = &policy.failover_priority;
    let mut groups = group_by_locality(endpoints, |e| label_level(proxy, e, labels));
    if labels.is_empty() || !policy.failover.is_empty() {
        for g in &mut groups {
            g.priority =
                g.priority * 5 + locality_priority(&proxy.locality, &g.locality, &policy.failover);
        }
    }
    compact(groups)
}

/// Groups per (`level`, locality); the level is the group's priority for now.
fn group_by_locality(endpoints: &[Place], level: impl Fn(&Place) -> u32) -> Vec<Group> {
    let mut by: BTreeMap<(u32, Locality), Vec<usize>> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        by.entry((level(e), e.locality.clone()))
            .or_default()
            .push(i);
    }
    let weight = |idx: &[usize]| idx.iter().map(|&i| endpoints[i].weight.max(1)).sum();
    by.into_iter()
        .map(|((level, locality), idx)| Group {
            weight: weight(&idx),
            locality,
            priority: level,
            endpoints: idx,
        })
        .collect()
}

/// Istio's `applyFailoverPriorityPerLocality`: with n entries, 0 when the endpoint matches
/// them all, n - j when entry j is the first it misses. An entry `label=value` asks for that
/// value rather than the proxy's; a label neither has counts as matching (both empty). When
/// the first entry is the network label, a different network does not stop the comparison:
/// it adds n to what the remaining labels give, so every other network comes after every
/// same-network endpoint yet keeps its own label order.
fn label_level(proxy: &Place, e: &Place, entries: &[String]) -> u32 {
    let n = entries.len() as u32;
    let network_first = entries.first().is_some_and(|k| k == label::NETWORK);
    let mut adjust = 0;
    for (j, entry) in entries.iter().enumerate() {
        let parts: Vec<&str> = entry.split('=').collect();
        let key = parts[0];
        let wanted = match parts.as_slice() {
            [_, value] => value,
            _ => proxy.label(key).unwrap_or(""),
        };
        if wanted != e.label(key).unwrap_or("") {
            if j == 0 && network_first {
                adjust = n;
                continue;
            }
            return n - j as u32 + adjust;
        }
    }
    adjust
}

/// Istio's `applyLocalityFailover` priority of an endpoint locality for a proxy locality:
/// only the first `failover` entry from the proxy's region counts; a region other than its
/// target goes after it.
fn locality_priority(proxy: &Locality, ep: &Locality, failover: &[(String, String)]) -> u32 {
    if proxy.region == ep.region {
        return match (proxy.zone == ep.zone, proxy.subzone == ep.subzone) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
    }
    match failover.iter().find(|(from, _)| *from == proxy.region) {
        Some((_, to)) if *to != ep.region => 4,
        _ => 3,
    }
}

/// Renumbers priorities to 0, 1, 2... keeping their order.
fn compact(mut groups: Vec<Group>) -> Vec<Group> {
    let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
    used.sort_unstable();
    used.dedup();
    for g in &mut groups {
        g.priority = used.iter().position(|p| *p == g.priority).unwrap_or(0) as u32;
    }
    groups.sort_by(|a, b| (a.priority, &a.locality).cmp(&(b.priority, &b.locality)));
    groups
}

fn merge_same_locality(groups: Vec<Group>) -> Vec<Group> {
    let mut by: BTreeMap<Locality, Group> = BTreeMap::new();
    for g in groups {
        match by.get_mut(&g.locality) {
            Some(m) => {
                m.endpoints.extend(g.endpoints);
                m.endpoints.sort_unstable();
                m.weight += g.weight;
            }
            None => {
                by.insert(g.locality.clone(), g);
            }
        }
    }
    by.into_values().collect()
}

/// Istio's applyLocalityWeight: each `to` pattern's weight is shared among the localities it
/// matches in proportion to their endpoints (rounded up); a locality claimed by no pattern gets
/// no traffic. Patterns are taken most specific first, so a locality goes to the narrowest.
fn distribute(groups: Vec<Group>, to: &[(String, u32)]) -> Vec<Group> {
    let mut patterns: Vec<&(String, u32)> = to.iter().collect();
    patterns.sort_by_key(|(p, _)| {
        (
            std::cmp::Reverse(p.split('/').filter(|s| *s != "*").count()),
            p.clone(),
        )
    });
    let mut claimed: Vec<Option<u32>> = vec![None; groups.len()];
    for (pattern, weight) in patterns {
        let members: Vec<usize> = (0..groups.len())
            .filter(|&i| claimed[i].is_none() && locality_matches(&groups[i].locality, pattern))
            .collect();
        let total: u32 = members.iter().map(|&i| groups[i].weight).sum();
        for i in members {
            let share = (f64::from(groups[i].weight) * f64::from(*weight) / f64::from(total.max(1)))
                .ceil() as u32;
            claimed[i] = Some(share);
        }
    }
    groups
        .into_iter()
        .zip(claimed)
        .filter_map(|(g, w)| w.filter(|w| *w > 0).map(|weight| Group { weight, ..g }))
        .collect()
}

#[cfg(test)]
mod tests;
