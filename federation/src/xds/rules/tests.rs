use super::*;
use serde_json::json;

const FQDN: &str = "helloworld.sample.svc.cluster.local";

fn rule(ns: &str, name: &str, host: &str) -> Rule {
    exported(ns, name, host, json!(null))
}

fn exported(ns: &str, name: &str, host: &str, export_to: Value) -> Rule {
    let obj = json!({"spec": {"host": host, "exportTo": export_to, "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}
    ], "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}});
    Rule::from_object(ns, name, &obj, "cluster.local")
        .unwrap()
        .in_root("istio-system")
}

fn found(rules: &[Rule], client: &str) -> Option<String> {
    find(rules, FQDN, "sample", client).map(|r| format!("{}/{}", r.namespace, r.name))
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
    assert_eq!(found(&rules, "client").unwrap(), "client/client-ns");
    assert_eq!(found(&rules, "other").unwrap(), "sample/svc-ns");
    assert_eq!(found(&rules[..1], "other").unwrap(), "sample/wild");
    assert!(find(&rules, "other.sample2.svc.cluster.local", "sample2", "x").is_none());
}

/// Istio (`MostSpecificHostMatch`): among wildcard hosts the longest wins, whatever the
/// rules' names or order.
#[test]
fn the_most_specific_wildcard_wins() {
    let rules = vec![
        rule("sample", "a-wide", "*.svc.cluster.local"),
        rule("sample", "b-narrow", "*.sample.svc.cluster.local"),
        rule("sample", "c-all", "*"),
    ];
    assert_eq!(found(&rules, "other").unwrap(), "sample/b-narrow");
    assert_eq!(
        found(&[rules[0].clone(), rules[2].clone()], "x").unwrap(),
        "sample/a-wide"
    );
}

/// Istio (`setDestinationRules`, `getExportedDestinationRuleFromNamespace`): `exportTo: ["."]`
/// keeps a rule to its own namespace's clients; a namespace list exports to those only; `*`
/// or no exportTo to everyone. A rule of the client's namespace applies there only when it
/// is visible there (`.`, `*`, its namespace, or no exportTo).
#[test]
fn export_to_decides_who_sees_a_rule() {
    let private = vec![exported("sample", "dr", "helloworld", json!(["."]))];
    assert_eq!(found(&private, "sample").unwrap(), "sample/dr");
    assert_eq!(found(&private, "client"), None);
    let listed = vec![exported("sample", "dr", "helloworld", json!(["client"]))];
    assert_eq!(found(&listed, "client").unwrap(), "sample/dr");
    assert_eq!(found(&listed, "other"), None);
    assert_eq!(
        found(&listed, "sample"),
        None,
        "not exported to its own namespace"
    );
    let public = vec![exported("sample", "dr", "helloworld", json!(["*"]))];
    assert_eq!(found(&public, "other").unwrap(), "sample/dr");
    // A client-namespace rule exported elsewhere only is not the client's.
    let away = vec![
        exported("client", "away", FQDN, json!(["elsewhere"])),
        rule("sample", "svc", "helloworld"),
    ];
    assert_eq!(found(&away, "client").unwrap(), "sample/svc");
    // A third namespace's rule is never looked at, whatever it exports.
    assert_eq!(found(&away, "elsewhere").unwrap(), "sample/svc");
    assert_eq!(found(&away[..1], "elsewhere"), None);
}

/// Istio (`PushContext.destinationRule` step 4): with no rule of the client's or the
/// service's namespace, one the root namespace (meshConfig.rootNamespace; meshfed's system
/// namespace) exports applies; a root rule kept private (`.`) applies only to clients in the
/// root namespace, and for those before the service namespace's rules.
#[test]
fn the_root_namespace_is_the_last_resort() {
    let root = rule("istio-system", "mesh-wide", "*.svc.cluster.local");
    let svc = exported("sample", "svc", "helloworld", json!(["."]));
    let rules = vec![root.clone(), svc.clone()];
    assert_eq!(found(&rules, "client").unwrap(), "istio-system/mesh-wide");
    assert_eq!(found(&rules, "sample").unwrap(), "sample/svc");
    let root_private = exported("istio-system", "private", FQDN, json!(["."]));
    let public_svc = rule("sample", "svc", "helloworld");
    let rules = vec![root_private.clone(), public_svc];
    assert_eq!(
        found(&rules, "istio-system").unwrap(),
        "istio-system/private"
    );
    assert_eq!(found(&rules, "client").unwrap(), "sample/svc");
    assert_eq!(found(&[root_private], "client"), None);
    // Not marked as the root's: an ordinary namespace nobody else looks in.
    let elsewhere = rule("tools", "x", "*.svc.cluster.local");
    assert_eq!(found(&[elsewhere], "client"), None);
}

/// Istio: the service namespace's most specific rule is the one checked for export; when it
/// is not exported to the client, a wider rule there does not stand in (the root's does).
#[test]
fn an_unexported_best_match_hides_wider_rules_of_its_namespace() {
    let rules = vec![
        exported("sample", "exact", "helloworld", json!(["somewhere"])),
        rule("sample", "wide", "*.sample.svc.cluster.local"),
        rule("istio-system", "root", "*.svc.cluster.local"),
    ];
    assert_eq!(found(&rules, "client").unwrap(), "istio-system/root");
    assert_eq!(found(&rules, "somewhere").unwrap(), "sample/exact");
}

#[test]
fn subset_labels_are_read() {
    let r = rule("sample", "dr", "helloworld");
    assert_eq!(r.subsets[0].labels["version"], "v1");
    assert_eq!(
        r.policy(None, 80)["loadBalancer"]["simple"],
        "LEAST_REQUEST"
    );
    assert_eq!(r.policy(Some("v2"), 80)["loadBalancer"]["simple"], "RANDOM");
}

fn with_policy(tp: Value, subset_tp: Value) -> Rule {
    let obj = json!({"spec": {"host": "helloworld", "trafficPolicy": tp,
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": subset_tp}]}});
    Rule::from_object("sample", "dr", &obj, "cluster.local").unwrap()
}

/// Istio (`MergeTrafficPolicy`): a subset's policy replaces the rule's loadBalancer,
/// connectionPool, outlierDetection and tls only where the subset sets them; the rest is the
/// rule's.
#[test]
fn a_subset_policy_overrides_the_rule_field_by_field() {
    let r = with_policy(
        json!({"loadBalancer": {"simple": "LEAST_REQUEST"}, "outlierDetection": {"consecutive5xxErrors": 3},
            "tls": {"mode": "ISTIO_MUTUAL"}}),
        json!({"loadBalancer": {"simple": "RANDOM"}}),
    );
    let p = r.policy(Some("v1"), 5000);
    assert_eq!(p["loadBalancer"]["simple"], "RANDOM");
    assert_eq!(p["outlierDetection"]["consecutive5xxErrors"], 3);
    assert_eq!(p["tls"]["mode"], "ISTIO_MUTUAL");
    assert_eq!(
        r.policy(None, 5000)["loadBalancer"]["simple"],
        "LEAST_REQUEST"
    );
    let bare = with_policy(json!(null), json!({"tls": {"mode": "DISABLE"}}));
    assert_eq!(
        bare.policy(Some("v1"), 1),
        json!({"tls": {"mode": "DISABLE"}})
    );
    assert_eq!(bare.policy(None, 1), Value::Null);
}

/// Istio (`GetPortLevelTrafficPolicy`): the `portLevelSettings` entry for a port stands in
/// for the rule's policy on that port; fields it leaves out take their defaults, not the
/// rule's values. Other ports keep the rule's policy.
#[test]
fn port_level_settings_replace_the_policy_on_their_port() {
    let r = with_policy(
        json!({"loadBalancer": {"simple": "LEAST_REQUEST"}, "outlierDetection": {"consecutive5xxErrors": 3},
            "portLevelSettings": [{"port": {"number": 5000}, "loadBalancer": {"simple": "RANDOM"}}]}),
        json!(null),
    );
    assert_eq!(
        r.policy(None, 5000),
        json!({"loadBalancer": {"simple": "RANDOM"}})
    );
    let other = r.policy(Some("v1"), 9000);
    assert_eq!(other["loadBalancer"]["simple"], "LEAST_REQUEST");
    assert_eq!(other["outlierDetection"]["consecutive5xxErrors"], 3);
}

/// Istio (`MergeSubsetTrafficPolicy` with `hasPortLevel`): a subset's port-level entry for the
/// port replaces all four port fields of the rule's (port-level) policy, set or not; its other
/// ports merge field by field.
#[test]
fn a_subset_port_level_entry_replaces_the_port_fields() {
    let r = with_policy(
        json!({"loadBalancer": {"simple": "LEAST_REQUEST"}, "outlierDetection": {"consecutive5xxErrors": 3},
            "portLevelSettings": [{"port": {"number": 5000}, "tls": {"mode": "ISTIO_MUTUAL"}}]}),
        json!({"connectionPool": {"tcp": {"maxConnections": 7}},
            "portLevelSettings": [{"port": {"number": 5000}, "loadBalancer": {"simple": "RANDOM"}}]}),
    );
    assert_eq!(
        r.policy(Some("v1"), 5000),
        json!({"loadBalancer": {"simple": "RANDOM"}})
    );
    let p = r.policy(Some("v1"), 9000);
    assert_eq!(p["connectionPool"]["tcp"]["maxConnections"], 7);
    assert_eq!(p["loadBalancer"]["simple"], "LEAST_REQUEST");
    assert_eq!(
        r.policy(None, 5000),
        json!({"tls": {"mode": "ISTIO_MUTUAL"}})
    );
}

/// The federation's system namespace is Istio's root namespace: rules read from there are
/// marked so, and only those.
#[test]
fn rules_from_the_system_namespace_are_the_roots() {
    let obj = |host: &str| json!({"spec": {"host": host}});
    let objects = vec![
        ("istio-system".to_string(), "a".to_string(), obj("*.local")),
        ("sample".to_string(), "b".to_string(), obj("helloworld")),
        (
            "sample".to_string(),
            "no-host".to_string(),
            json!({"spec": {}}),
        ),
    ];
    let rules = from_objects(&objects, "cluster.local", "istio-system");
    let roots: Vec<(&str, bool)> = rules.iter().map(|r| (r.name.as_str(), r.root)).collect();
    assert_eq!(roots, [("a", true), ("b", false)]);
    assert_eq!(rules[1].host, FQDN);
}

/// A `failoverPriority` can sit in a port-level entry of the rule or of a subset: every
/// policy is looked through (the EDS cache key needs the labels any of them reads).
#[test]
fn every_policy_includes_port_level_entries() {
    let r = with_policy(
        json!({"portLevelSettings": [{"port": {"number": 1}, "loadBalancer": {"simple": "RANDOM"}}]}),
        json!({"portLevelSettings": [{"port": {"number": 2}, "tls": {"mode": "DISABLE"}}]}),
    );
    let all: Vec<&Value> = r.every_policy().collect();
    assert_eq!(all.len(), 4);
    assert_eq!(all[1]["loadBalancer"]["simple"], "RANDOM");
    assert_eq!(all[3]["tls"]["mode"], "DISABLE");
}

/// Istio (`mergeDestinationRule`, rules sorted by creation time): rules for one host in one
/// namespace with equal `exportTo` become one: the oldest's name and top-level policy (a
/// later one's when the oldest has none), subsets of later rules appended unless the name is
/// taken. A different `exportTo` keeps a rule apart.
#[test]
fn rules_for_one_host_are_merged_oldest_first() {
    let dr = |created: &str, subsets: Value, tp: Value, export: Value| {
        json!({"metadata": {"creationTimestamp": created},
            "spec": {"host": "helloworld", "subsets": subsets, "trafficPolicy": tp, "exportTo": export}})
    };
    let subset = |n: &str| json!({"name": n, "labels": {"version": n}});
    let lb = |s: &str| json!({"loadBalancer": {"simple": s}});
    let objects = vec![
        (
            "sample".to_string(),
            "a-later".to_string(),
            dr(
                "2024-01-02T00:00:00Z",
                json!([subset("v2"), subset("v1")]),
                lb("RANDOM"),
                json!(null),
            ),
        ),
        (
            "sample".to_string(),
            "b-earlier".to_string(),
            dr(
                "2024-01-01T00:00:00Z",
                json!([subset("v1")]),
                json!(null),
                json!(null),
            ),
        ),
        (
            "sample".to_string(),
            "c-private".to_string(),
            dr(
                "2024-01-01T00:00:00Z",
                json!([subset("v3")]),
                lb("LEAST_REQUEST"),
                json!(["."]),
            ),
        ),
    ];
    let rules = from_objects(&objects, "cluster.local", "istio-system");
    let summary: Vec<(&str, Vec<&str>, &Value)> = rules
        .iter()
        .map(|r| {
            let subsets = r.subsets.iter().map(|s| s.name.as_str()).collect();
            (
                r.name.as_str(),
                subsets,
                &r.traffic_policy["loadBalancer"]["simple"],
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("b-earlier", vec!["v1", "v2"], &json!("RANDOM")),
            ("c-private", vec!["v3"], &json!("LEAST_REQUEST")),
        ]
    );
    // Rules left apart: the newest (last) that the client may see applies.
    assert_eq!(found(&rules, "other").unwrap(), "sample/b-earlier");
    assert_eq!(found(&rules, "sample").unwrap(), "sample/c-private");
}
