//! Locality load balancing as Istio computes it for EDS: which priority and weight each
//! group of endpoints (one locality) gets, from the proxy's own locality and the
//! DestinationRule's `localityLbSetting` (`distribute`, `failover`, `failoverPriority`).
//!
//! Istio's rules, kept here: `distribute` always acts; `failover` and `failoverPriority` act
//! only when `outlierDetection` is set; priorities are 0 same region+zone+subzone, 1 same
//! region+zone, 2 same region, 3 a region named as a failover target, 4 any other region,
//! then renumbered to be consecutive (Envoy requires it).

use meshfed_model::Locality;
use meshfed_model::labels as label;
use serde_json::Value;
use std::collections::BTreeMap;

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

/// A proxy or an endpoint, as far as locality rules can tell them apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Place {
    pub locality: Locality,
    pub network: String,
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
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
    let mut groups = group_by_locality(
        proxy,
        endpoints,
        &policy.failover_priority,
        policy.outlier_detection,
    );
    if policy.enabled == Some(false) {
        groups.iter_mut().for_each(|g| g.priority = 0);
        return merge_same_locality(groups);
    }
    if let Some((_, to)) = policy
        .distribute
        .iter()
        .find(|(from, _)| locality_matches(&proxy.locality, from))
    {
        // distribute always acts, and sets weights within one priority.
        let groups = merge_same_locality(
            groups
                .into_iter()
                .map(|g| Group { priority: 0, ..g })
                .collect(),
        );
        return distribute(groups, to);
    }
    if !policy.outlier_detection {
        groups.iter_mut().for_each(|g| g.priority = 0);
        return merge_same_locality(groups);
    }
    for g in &mut groups {
        g.priority =
            g.priority * 5 + locality_priority(&proxy.locality, &g.locality, &policy.failover);
    }
    compact(groups)
}

/// Groups per (failoverPriority level, locality); the level is kept in `priority` for now.
fn group_by_locality(
    proxy: &Place,
    endpoints: &[Place],
    labels: &[String],
    outlier: bool,
) -> Vec<Group> {
    let mut by: BTreeMap<(u32, Locality), Vec<usize>> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        let level = if outlier {
            label_level(proxy, e, labels)
        } else {
            0
        };
        by.entry((level, e.locality.clone())).or_default().push(i);
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

/// failoverPriority: 0 when every listed label matches the proxy's, n when only the first
/// len-n do (matching counts from the front and stops at the first difference).
fn label_level(proxy: &Place, e: &Place, labels: &[String]) -> u32 {
    let matched = labels
        .iter()
        .take_while(|k| proxy.label(k).is_some() && proxy.label(k) == e.label(k))
        .count();
    (labels.len() - matched) as u32
}

fn locality_priority(proxy: &Locality, ep: &Locality, failover: &[(String, String)]) -> u32 {
    if proxy.region == ep.region {
        return match (proxy.zone == ep.zone, proxy.subzone == ep.subzone) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
    }
    let target = failover
        .iter()
        .any(|(from, to)| *from == proxy.region && *to == ep.region);
    if target { 3 } else { 4 }
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
mod tests {
    use super::*;
    use serde_json::json;

    fn place(loc: &str) -> Place {
        Place {
            locality: loc.parse().unwrap(),
            ..Default::default()
        }
    }

    fn summary(groups: &[Group]) -> Vec<(String, u32, u32)> {
        groups
            .iter()
            .map(|g| (g.locality.to_string(), g.priority, g.weight))
            .collect()
    }

    fn policy(tp: Value) -> LocalityPolicy {
        LocalityPolicy::from_traffic_policy(&tp)
    }

    fn seed_endpoints() -> Vec<Place> {
        vec![
            place("region1/zone1"),
            place("region1/zone1"),
            place("region2/zone2"),
        ]
    }

    #[test]
    fn pattern_matching() {
        let l: Locality = "region1/zone1/sub".parse().unwrap();
        for (p, ok) in [
            ("*", true),
            ("region1/*", true),
            ("region1/zone1/*", true),
            ("region1/zone1/sub", true),
            ("region1", true),
            ("region2/*", false),
            ("region1/zone2/*", false),
        ] {
            assert_eq!(locality_matches(&l, p), ok, "{p}");
        }
    }

    #[test]
    fn the_seed_distribute_rule_gives_80_20() {
        let tp = json!({"loadBalancer": {"localityLbSetting": {"enabled": true, "distribute": [
            {"from": "region1/*", "to": {"region1/*": 80, "region2/*": 20}},
            {"from": "region2/*", "to": {"region2/*": 80, "region1/*": 20}}]}},
            "outlierDetection": {"consecutive5xxErrors": 1}});
        let groups = assign(
            &place("region1/zone1"),
            &seed_endpoints(),
            &policy(tp.clone()),
        );
        assert_eq!(
            summary(&groups),
            [
                ("region1/zone1".into(), 0, 80),
                ("region2/zone2".into(), 0, 20)
            ]
        );
        assert_eq!(groups[0].endpoints, [0, 1]);
        let from2 = assign(&place("region2/zone2"), &seed_endpoints(), &policy(tp));
        assert_eq!(
            summary(&from2),
            [
                ("region1/zone1".into(), 0, 20),
                ("region2/zone2".into(), 0, 80)
            ]
        );
    }

    #[test]
    fn distribute_shares_a_wildcard_weight_and_drops_unclaimed_localities() {
        let eps = vec![
            place("r1/z1"),
            place("r1/z2"),
            place("r1/z2"),
            place("r1/z2"),
            place("r3/z9"),
        ];
        let tp = json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "*", "to": {"r1/*": 100}}]}}});
        let groups = assign(&place("r1/z1"), &eps, &policy(tp));
        assert_eq!(
            summary(&groups),
            [("r1/z1".into(), 0, 25), ("r1/z2".into(), 0, 75)]
        );
    }

    #[test]
    fn the_seed_failover_rule_prefers_the_local_region() {
        let tp = json!({"loadBalancer": {"localityLbSetting": {"enabled": true, "failover": [
            {"from": "region1", "to": "region2"}, {"from": "region2", "to": "region1"}]}},
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "1m"}});
        let groups = assign(&place("region1/zone1"), &seed_endpoints(), &policy(tp));
        assert_eq!(
            summary(&groups),
            [
                ("region1/zone1".into(), 0, 2),
                ("region2/zone2".into(), 1, 1)
            ]
        );
    }

    #[test]
    fn failover_needs_outlier_detection() {
        let tp = json!({"loadBalancer": {"localityLbSetting": {"failover": [{"from": "region1", "to": "region2"}]}}});
        let groups = assign(&place("region1/zone1"), &seed_endpoints(), &policy(tp));
        assert!(groups.iter().all(|g| g.priority == 0), "{groups:?}");
    }

    #[test]
    fn istio_priorities_before_compaction() {
        let proxy: Locality = "r1/z1/s1".parse().unwrap();
        let fo = vec![("r1".to_string(), "r2".to_string())];
        let p = |l: &str| locality_priority(&proxy, &l.parse().unwrap(), &fo);
        assert_eq!(
            [
                p("r1/z1/s1"),
                p("r1/z1/s2"),
                p("r1/z2/s1"),
                p("r2/z1/s1"),
                p("r3/z1/s1")
            ],
            [0, 1, 2, 3, 4]
        );
        let tp = json!({"loadBalancer": {"localityLbSetting": {"failover": [{"from": "r1", "to": "r2"}]}}, "outlierDetection": {}});
        let eps: Vec<Place> = ["r3/z1", "r1/z2", "r2/z1"]
            .iter()
            .map(|l| place(l))
            .collect();
        let groups = assign(&place("r1/z1"), &eps, &policy(tp));
        assert_eq!(
            summary(&groups),
            [
                ("r1/z2".into(), 0, 1),
                ("r2/z1".into(), 1, 1),
                ("r3/z1".into(), 2, 1)
            ]
        );
    }

    #[test]
    fn failover_priority_orders_by_matching_labels_first() {
        let mut proxy = place("r1/z1");
        proxy.network = "network1".into();
        let mut same_net_far = place("r2/z2");
        same_net_far.network = "network1".into();
        let mut other_net_near = place("r1/z1");
        other_net_near.network = "network2".into();
        let tp = json!({"loadBalancer": {"localityLbSetting": {"failoverPriority": ["topology.istio.io/network"]}}, "outlierDetection": {}});
        let groups = assign(&proxy, &[other_net_near, same_net_far], &policy(tp));
        assert_eq!(
            summary(&groups),
            [("r2/z2".into(), 0, 1), ("r1/z1".into(), 1, 1)]
        );
    }

    #[test]
    fn disabled_or_plain_policies_keep_one_priority() {
        let off = json!({"loadBalancer": {"localityLbSetting": {"enabled": false, "failover": [{"from": "region1", "to": "region2"}]}}, "outlierDetection": {}});
        for tp in [off, json!({})] {
            let groups = assign(&place("region1/zone1"), &seed_endpoints(), &policy(tp));
            assert_eq!(
                summary(&groups),
                [
                    ("region1/zone1".into(), 0, 2),
                    ("region2/zone2".into(), 0, 1)
                ]
            );
        }
    }
}
