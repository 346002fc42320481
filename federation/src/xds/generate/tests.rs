//! LDS/RDS built once per key and name, and what a VirtualService change sends.

use super::*;
use crate::xds::delta::Delta;
use crate::xds::node::test_sidecar;
use crate::xds::virtual_service::{
    Destination, HttpMatch, HttpRoute, RouteDestination, VirtualService,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

const A: &str = "a.ns.svc.cluster.local";
const B: &str = "b.ns.svc.cluster.local";

fn route_name(fqdn: &str) -> String {
    format!("outbound|80||{fqdn}")
}

fn grpc(ns: &str, labels: &[(&str, &str)], ip: &str) -> Proxy {
    let mut p = test_sidecar();
    p.generator = Generator::Grpc;
    p.namespace = ns.into();
    p.ip = ip.into();
    p.id = format!("sidecar~{ip}~x.{ns}~{ns}.svc.cluster.local");
    p.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p
}

fn dest(subset: &str, weight: u32) -> RouteDestination {
    RouteDestination {
        destination: Destination {
            host: A.into(),
            subset: Some(subset.into()),
            port: None,
        },
        weight,
        headers: Default::default(),
    }
}

/// A rule for service `a`: v1/v2 by `weights`; with `source` labels, only clients carrying
/// them get the split, everyone else v1.
fn rule(weights: (u32, u32), source: &[(&str, &str)]) -> VirtualService {
    let mut split = HttpRoute {
        route: vec![dest("v1", weights.0), dest("v2", weights.1)],
        ..Default::default()
    };
    let mut http = vec![];
    if !source.is_empty() {
        let m = HttpMatch {
            source_labels: source
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        split.matches = vec![m];
        http.push(split);
        http.push(HttpRoute {
            route: vec![dest("v1", 0)],
            ..Default::default()
        });
    } else {
        http.push(split);
    }
    VirtualService {
        namespace: "ns".into(),
        name: "a".into(),
        created: "2026-01-01T00:00:00Z".into(),
        hosts: vec![A.into()],
        gateways: vec![],
        mesh: true,
        export_to: vec![],
        http,
        tcp: vec![],
        warnings: vec![],
    }
}

fn push(version: u64, rules: Vec<VirtualService>) -> Push {
    crate::xds::ads::test_push(version, &["a", "b"]).virtual_services(
        crate::xds::virtual_service::status::Parsed {
            virtual_services: rules,
            errors: vec![],
        },
    )
}

fn sub(names: &[&str]) -> Subscription {
    Subscription {
        wildcard: false,
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn route(p: &Push, proxy: &Proxy, fqdn: &str) -> Arc<Resource> {
    let name = route_name(fqdn);
    p.resources(proxy, Kind::Route, &sub(&[&name]))
        .remove(&name)
        .expect("the route configuration")
}

fn decode(r: &Resource) -> RouteConfiguration {
    prost::Message::decode(r.body.value.as_slice()).expect("a RouteConfiguration")
}

/// Istio's RDS cache (`route_cache.go`) shares a route configuration between proxies of one
/// namespace and cluster: two proxyless clients that differ only in address and in labels no
/// `sourceLabels` reads get the very same build; a client in another namespace gets its own
/// (its domains differ: `a:80` resolves only in `ns`).
#[test]
fn clients_with_the_same_key_share_one_route_configuration() {
    let p = push(2, vec![rule((50, 50), &[])]);
    let one = grpc("ns", &[("app", "x")], "10.0.0.1");
    let two = grpc("ns", &[("app", "y")], "10.0.0.2");
    let (r1, r2) = (route(&p, &one, A), route(&p, &two, A));
    assert!(Arc::ptr_eq(&r1, &r2), "one build for both clients");
    let other = route(&p, &grpc("other", &[], "10.0.0.3"), A);
    assert!(!Arc::ptr_eq(&r1, &other));
    assert_ne!(r1.hash, other.hash);
    let domains = |r: &Resource| decode(r).virtual_hosts[0].domains.clone();
    assert!(domains(&r1).contains(&"a:80".to_string()));
    assert!(!domains(&other).contains(&"a:80".to_string()));
    // The listener is shared the same way.
    let l = |proxy: &Proxy| {
        p.resources(proxy, Kind::Listener, &sub(&["a:80"]))
            .remove("a:80")
            .expect("the listener")
    };
    assert!(Arc::ptr_eq(&l(&one), &l(&two)));
}

/// Istio `TranslateRoute`: a match whose `sourceLabels` the client lacks is left out, so the
/// labels a rule's `sourceLabels` read split the builds: `version: v2` clients get the
/// split, `version: v1` ones v1 only; labels no rule reads still share one build.
#[test]
fn source_labels_split_the_route_builds_by_those_labels_only() {
    let p = push(2, vec![rule((50, 50), &[("version", "v2")])]);
    let v2a = grpc("ns", &[("version", "v2"), ("app", "x")], "10.0.0.1");
    let v2b = grpc("ns", &[("version", "v2"), ("app", "y")], "10.0.0.2");
    let v1 = grpc("ns", &[("version", "v1"), ("app", "x")], "10.0.0.3");
    let (a, b, c) = (route(&p, &v2a, A), route(&p, &v2b, A), route(&p, &v1, A));
    assert!(Arc::ptr_eq(&a, &b));
    assert_ne!(a.hash, c.hash);
    let first = |r: &Resource| format!("{:?}", decode(r).virtual_hosts[0].routes[0]);
    assert!(
        first(&a).contains("outbound|80|v2|"),
        "the split: {}",
        first(&a)
    );
    assert!(
        !first(&c).contains("outbound|80|v2|"),
        "v1 only: {}",
        first(&c)
    );
    // Without such a rule, the version label is no part of the key.
    let plain = push(3, vec![rule((50, 50), &[])]);
    assert!(Arc::ptr_eq(&route(&plain, &v2a, A), &route(&plain, &v1, A)));
}

/// The xDS incremental protocol: a VirtualService change (weights flipped on `a`) sends a
/// delta client only the RouteConfiguration that changed; `b`'s is not resent. The push's
/// precomputed changes say the same, once for every client with that key.
#[test]
fn a_virtual_service_change_sends_only_the_changed_route() {
    let proxy = grpc("ns", &[], "10.0.0.1");
    let names = [route_name(A), route_name(B)];
    let before = push(2, vec![rule((90, 10), &[])]);
    let mut d = Delta::new(proxy.clone());
    let req = DeltaDiscoveryRequest {
        type_url: Kind::Route.url().into(),
        resource_names_subscribe: names.to_vec(),
        ..Default::default()
    };
    let first = d.request(&req, &before).expect("the first answer");
    assert_eq!(first.resources.len(), 2);
    let after = push(3, vec![rule((10, 90), &[])]).follow(&before);
    let c = after
        .changes(&proxy, Kind::Route, &sub(&[&names[0], &names[1]]))
        .expect("changes worked out from the previous push's builds");
    let updated: Vec<&str> = c.updated.iter().map(|r| &*r.name).collect();
    assert_eq!(updated, [names[0].as_str()]);
    assert!(c.removed.is_empty());
    let sent = d.push(&after);
    assert_eq!(sent.len(), 1);
    let sent_names: Vec<&str> = sent[0].resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent_names, [names[0].as_str()]);
    let weights = |r: &Resource| format!("{:?}", decode(r).virtual_hosts[0].routes[0]);
    assert!(weights(&c.updated[0]).contains("value: 90"));
    // Removing the rule goes back to the default route, again for `a` alone.
    let plain = push(4, vec![]).follow(&after);
    let sent = d.push(&plain);
    let sent_names: Vec<&str> = sent[0].resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sent_names, [names[0].as_str()]);
}

/// A name the previous push did not build for this key (a client asked for it only after
/// this push copied that push's builds) is not covered by the precomputed changes: the
/// client is then compared name by name, so no change is missed.
#[test]
fn changes_cover_only_the_names_the_previous_push_built() {
    let proxy = grpc("ns", &[], "10.0.0.1");
    let before = push(2, vec![]);
    let _ = route(&before, &proxy, A);
    let after = push(3, vec![rule((10, 90), &[])]).follow(&before);
    let (a, b) = (route_name(A), route_name(B));
    assert!(after.changes(&proxy, Kind::Route, &sub(&[&a])).is_some());
    assert!(
        after
            .changes(&proxy, Kind::Route, &sub(&[&a, &b]))
            .is_none()
    );
    let wildcard = Subscription {
        wildcard: true,
        names: Default::default(),
    };
    assert!(after.changes(&proxy, Kind::Route, &wildcard).is_none());
    // Envoy sidecars get no proxyless routes, and no changes for them.
    assert!(
        after
            .changes(&test_sidecar(), Kind::Route, &sub(&[&a]))
            .is_none()
    );
}

fn subscribe(names: &[String], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: Kind::Route.url().into(),
        resource_names_subscribe: names.to_vec(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// xDS incremental protocol: an ACK changes nothing the client holds, so the push after it
/// is sent from the changes worked out once for every client with the same key (not by
/// comparing each client's resources): every client ACKs every response, and otherwise the
/// precomputed changes would never be used.
#[test]
fn after_an_ack_the_next_push_is_sent_from_the_precomputed_changes() {
    let proxy = grpc("ns", &[], "10.0.0.1");
    let before = push(2, vec![rule((90, 10), &[])]);
    let mut d = Delta::new(proxy.clone());
    let first = d
        .request(&subscribe(&[route_name(A)], ""), &before)
        .expect("the first answer");
    assert!(d.request(&subscribe(&[], &first.nonce), &before).is_none());
    let after = push(3, vec![rule((10, 90), &[])]).follow(&before);
    let sent = d.push(&after);
    assert_eq!(sent.len(), 1);
    let key = after.key(&proxy, Kind::Route);
    assert!(
        lock(&after.changes).contains_key(&key),
        "the push's changes were used"
    );
}

/// A name subscribed to while the stream handles a push newer than the one the client
/// holds is sent even though it did not change between the two: new names are compared in
/// full, not through the newer push's changes.
#[test]
fn a_name_subscribed_with_a_newer_push_is_sent_though_unchanged() {
    let proxy = grpc("ns", &[], "10.0.0.1");
    let before = push(2, vec![]);
    let mut d = Delta::new(proxy.clone());
    let first = d
        .request(&subscribe(&[route_name(A)], ""), &before)
        .expect("the first answer");
    assert!(d.request(&subscribe(&[], &first.nonce), &before).is_none());
    let _ = route(&before, &grpc("ns", &[], "10.0.0.2"), B); // another client had `b` built
    // `a` changes in push 3, `b` does not; the client asks for `b` before it is pushed 3.
    let after = push(3, vec![rule((10, 90), &[])]).follow(&before);
    let resp = d
        .request(&subscribe(&[route_name(B)], &first.nonce), &after)
        .expect("an answer");
    let names: Vec<&str> = resp.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&route_name(B).as_str()), "{names:?}");
    assert!(resp.removed_resources.is_empty(), "{resp:?}");
}

fn envoy_sidecar_at(ip: &str) -> Proxy {
    let mut p = test_sidecar();
    p.ip = ip.into();
    p.id = format!("sidecar~{ip}~x.ns~ns.svc.cluster.local");
    p
}

/// Istio builds a sidecar's inbound clusters from its own endpoints (`buildInboundClusters`).
/// Here they depend only on the app ports, which are part of the CDS key: the sidecars of
/// `a` and `b` (both apps on 8080) share one CDS build with `inbound|8080||`, a proxy with
/// no endpoints gets one without it, and a push that adds a service tells the sidecar just
/// that cluster from the precomputed changes instead of a compare per client.
#[test]
fn sidecars_with_the_same_app_ports_share_cds_and_its_changes() {
    let first = crate::xds::ads::test_push(1, &["a", "b"]);
    let (a, b, none) = (
        envoy_sidecar_at("10.0.0.10"),
        envoy_sidecar_at("10.0.0.11"),
        envoy_sidecar_at("10.9.9.9"),
    );
    let built = first.all(&a, Kind::Cluster);
    assert!(Arc::ptr_eq(&built, &first.all(&b, Kind::Cluster)));
    assert!(built.contains_key("inbound|8080||"));
    let bare = first.all(&none, Kind::Cluster);
    assert!(!bare.contains_key("inbound|8080||"));
    assert!(bare.contains_key("outbound|80||a.ns.svc.cluster.local"));

    let second = crate::xds::ads::test_push(2, &["a", "b", "c"]).follow(&first);
    let all = Subscription {
        wildcard: true,
        names: Default::default(),
    };
    let changes = second
        .changes(&a, Kind::Cluster, &all)
        .expect("changes worked out once for the key, not compared per client");
    let names: Vec<&str> = changes.updated.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["outbound|80||c.ns.svc.cluster.local"]);
    assert!(changes.removed.is_empty());
    assert!(
        second
            .resources(&a, Kind::Cluster, &all)
            .contains_key("inbound|8080||")
    );
}

/// The push after `first` with Service `b` given another endpoint and every other Service
/// the registry's very `Arc` (as an incremental snapshot shares them).
fn with_b_changed(first: &Push) -> Push {
    let mut snapshot = first.snapshot.clone();
    let b = snapshot
        .services
        .iter_mut()
        .find(|s| s.hostname == B)
        .expect("b");
    let mut ep = b.endpoints[0].clone();
    ep.address = "10.0.0.99".into();
    Arc::make_mut(b).endpoints.push(ep);
    Push::new(2, Instant::now(), snapshot, Vec::new(), "cluster.local")
}

/// Istio rebuilds EDS only for the services a push names (`EdsUpdate` with the changed
/// `ConfigsUpdated`); here a push takes the load assignments of Services the registry did
/// not re-merge from the previous push, and rebuilds the rest: `a`'s is the very resource of
/// the first push, `b`'s is new, and both equal what a push built from scratch gives.
#[test]
fn a_push_rebuilds_the_endpoints_of_changed_services_only() {
    let first = crate::xds::ads::test_push(1, &["a", "b"]);
    let p = envoy_sidecar_at("10.0.0.10");
    let before = first.all(&p, Kind::Endpoint);
    let second = with_b_changed(&first).follow(&first);
    let after = second.all(&p, Kind::Endpoint);
    let (a, b) = (format!("outbound|80||{A}"), format!("outbound|80||{B}"));
    assert!(Arc::ptr_eq(&before[&a], &after[&a]), "a is taken over");
    assert!(!Arc::ptr_eq(&before[&b], &after[&b]));
    assert_ne!(before[&b].hash, after[&b].hash, "b has its new endpoint");
    let scratch = with_b_changed(&first).all(&p, Kind::Endpoint);
    let bodies = |r: &Resources| -> Vec<(String, u64)> {
        r.iter().map(|(n, r)| (n.clone(), r.hash)).collect()
    };
    assert_eq!(bodies(&after), bodies(&scratch));
    // New rules may change any assignment: nothing is taken over then.
    let mut ruled = with_b_changed(&first);
    ruled.rules = crate::xds::rules::from_objects(
        &[(
            "ns".into(),
            "a".into(),
            serde_json::json!({"spec": {"host": A, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}}),
        )],
        "cluster.local",
        "istio-system",
    );
    let ruled = ruled.follow(&first);
    assert!(!Arc::ptr_eq(
        &before[&a],
        &ruled.all(&p, Kind::Endpoint)[&a]
    ));
}

/// The same for CDS: the clusters of a Service the registry did not re-merge are the
/// previous push's, the changed one's is rebuilt (its SANs read the endpoints' accounts), and
/// the whole equals a build from scratch, the sidecar's inbound cluster included.
#[test]
fn a_push_rebuilds_the_clusters_of_changed_services_only() {
    let first = crate::xds::ads::test_push(1, &["a", "b"]);
    let p = envoy_sidecar_at("10.0.0.10");
    let before = first.all(&p, Kind::Cluster);
    let second = with_b_changed(&first).follow(&first);
    let after = second.all(&p, Kind::Cluster);
    let (a, b) = (format!("outbound|80||{A}"), format!("outbound|80||{B}"));
    assert!(Arc::ptr_eq(&before[&a], &after[&a]), "a is taken over");
    assert!(!Arc::ptr_eq(&before[&b], &after[&b]));
    assert!(after.contains_key("inbound|8080||"));
    let scratch = with_b_changed(&first).all(&p, Kind::Cluster);
    let bodies = |r: &Resources| -> Vec<(String, u64)> {
        r.iter().map(|(n, r)| (n.clone(), r.hash)).collect()
    };
    assert_eq!(bodies(&after), bodies(&scratch));
}

/// Clients name their cluster, so the per-cluster indexes of own endpoints are bounded: a
/// hundred made-up cluster names leave at most [`MAX_OWN_INDEXES`] of them plus the index of
/// every endpoint, and a sidecar of the real cluster still gets its inbound cluster.
#[test]
fn own_endpoint_indexes_are_bounded_by_cluster_count() {
    let push = crate::xds::ads::test_push(1, &["a", "b"]);
    for i in 0..100 {
        let mut p = envoy_sidecar_at("10.0.0.10");
        p.cluster_id = format!("made-up-{i}");
        push.all(&p, Kind::Cluster);
    }
    assert!(lock(&push.own_endpoints).len() <= MAX_OWN_INDEXES + 1);
    let mut real = envoy_sidecar_at("10.0.0.10");
    real.cluster_id = "c1".into();
    assert!(
        push.all(&real, Kind::Cluster)
            .contains_key("inbound|8080||")
    );
}
