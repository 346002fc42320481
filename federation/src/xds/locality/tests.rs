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

fn labelled(loc: &str, network: &str, labels: &[(&str, &str)]) -> Place {
    Place {
        network: network.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
            .into(),
        ..place(loc)
    }
}

fn priorities(groups: &[Group], n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            groups
                .iter()
                .find(|g| g.endpoints.contains(&i))
                .map_or(u32::MAX, |g| g.priority)
        })
        .collect()
}

fn failover_priority(entries: Value, failover: Value) -> LocalityPolicy {
    policy(json!({"loadBalancer": {"localityLbSetting": {
        "failoverPriority": entries, "failover": failover}}, "outlierDetection": {}}))
}

/// Istio (`ApplyLocalityLoadBalancer`): with `failoverPriority` and no `failover`, priorities
/// come from the labels only; region/zone failover is not added.
#[test]
fn failover_priority_alone_adds_no_region_failover() {
    let proxy = labelled("r1/z1", "n1", &[]);
    let eps = [
        labelled("r1/z1", "n1", &[]),
        labelled("r1/z2", "n1", &[]),
        labelled("r2/z1", "n1", &[]),
        labelled("r2/z1", "n2", &[]),
    ];
    let only = failover_priority(json!(["topology.istio.io/network"]), json!(null));
    assert_eq!(priorities(&assign(&proxy, &eps, &only), 4), [0, 0, 0, 1]);
    // With `failover` too, region failover orders within each label level.
    let both = failover_priority(
        json!(["topology.istio.io/network"]),
        json!([{"from": "r1", "to": "r2"}]),
    );
    assert_eq!(priorities(&assign(&proxy, &eps, &both), 4), [0, 1, 2, 3]);
}

/// Istio (`priorityLabelOverrides`): an entry `label=value` matches endpoints with that
/// value, whatever the proxy's own value is.
#[test]
fn a_label_value_entry_asks_for_that_value() {
    let proxy = labelled("r1/z1", "n1", &[("version", "v1")]);
    let eps = [
        labelled("r1/z1", "n1", &[("version", "v1")]),
        labelled("r1/z1", "n1", &[("version", "v2")]),
    ];
    let p = failover_priority(json!(["version=v2"]), json!(null));
    assert_eq!(priorities(&assign(&proxy, &eps, &p), 2), [1, 0]);
    let net = failover_priority(json!(["topology.istio.io/network=n2"]), json!(null));
    let eps = [labelled("r1/z1", "n1", &[]), labelled("r1/z1", "n2", &[])];
    assert_eq!(priorities(&assign(&proxy, &eps, &net), 2), [1, 0]);
}

/// Istio (`applyFailoverPriorityPerLocality`): when the network label comes first, another
/// network does not end the comparison; it sends the endpoint after every same-network one
/// while the remaining labels still order endpoints of other networks.
#[test]
fn the_network_label_first_keeps_label_order_across_networks() {
    let proxy = labelled("r1/z1", "n1", &[("app", "a")]);
    let eps = [
        labelled("r1/z1", "n1", &[("app", "a")]),
        labelled("r1/z1", "n1", &[("app", "b")]),
        labelled("r1/z1", "n2", &[("app", "a")]),
        labelled("r1/z1", "n2", &[("app", "b")]),
    ];
    let p = failover_priority(json!(["topology.istio.io/network", "app"]), json!(null));
    assert_eq!(priorities(&assign(&proxy, &eps, &p), 4), [0, 1, 2, 3]);
}

/// Istio: a label the proxy does not have matches endpoints that do not have it either
/// (both read as empty).
#[test]
fn a_label_missing_on_both_sides_matches() {
    let proxy = labelled("r1/z1", "n1", &[]);
    let eps = [
        labelled("r1/z1", "n1", &[]),
        labelled("r1/z1", "n1", &[("app", "x")]),
    ];
    let p = failover_priority(json!(["app"]), json!(null));
    assert_eq!(priorities(&assign(&proxy, &eps, &p), 2), [0, 1]);
}

/// Istio (`applyLocalityFailover`): only the first `failover` entry from the proxy's region
/// applies; later entries from the same region are ignored.
#[test]
fn only_the_first_failover_entry_from_the_region_counts() {
    let tp = json!({"loadBalancer": {"localityLbSetting": {"failover": [
        {"from": "r1", "to": "r2"}, {"from": "r1", "to": "r3"}]}}, "outlierDetection": {}});
    let eps: Vec<Place> = ["r2/z1", "r3/z1", "r4/z1"]
        .iter()
        .map(|l| place(l))
        .collect();
    let groups = assign(&place("r1/z1"), &eps, &policy(tp));
    assert_eq!(priorities(&groups, 3), [0, 1, 1]);
}

/// Istio: `distribute` and failover are either-or; a `distribute` with no `from` matching the
/// proxy changes nothing and failover is still not applied.
#[test]
fn distribute_without_a_matching_from_applies_no_failover() {
    let tp = json!({"loadBalancer": {"localityLbSetting": {
        "distribute": [{"from": "region9/*", "to": {"region1/*": 100}}],
        "failover": [{"from": "region1", "to": "region2"}]}}, "outlierDetection": {}});
    let groups = assign(&place("region1/zone1"), &seed_endpoints(), &policy(tp));
    assert_eq!(
        summary(&groups),
        [
            ("region1/zone1".into(), 0, 2),
            ("region2/zone2".into(), 0, 1)
        ]
    );
}

/// Istio (`LocalityLBSettings.ApplyToCluster`): locality weights are turned on for
/// `distribute`, or for `failover`/`failoverPriority` with outlier detection; not otherwise.
#[test]
fn locality_weights_are_on_when_istio_turns_them_on() {
    let lb = |setting: Value, od: bool| {
        let mut tp = json!({"loadBalancer": {"localityLbSetting": setting}});
        if od {
            tp["outlierDetection"] = json!({});
        }
        policy(tp).weighted()
    };
    let failover = json!({"failover": [{"from": "r1", "to": "r2"}]});
    assert!(lb(failover.clone(), true));
    assert!(!lb(failover, false));
    assert!(lb(json!({"failoverPriority": ["app"]}), true));
    assert!(lb(
        json!({"distribute": [{"from": "*", "to": {"r1/*": 100}}]}),
        false
    ));
    assert!(!lb(json!({}), true));
    assert!(!lb(
        json!({"enabled": false, "failoverPriority": ["app"]}),
        true
    ));
}
