//! The projections keep every field the registry, EDS and NDS read (issue 21): list bodies as
//! a real API server serves them (`testdata/`: managedFields, status, containers, annotations
//! and all), decoded whole and as projections, give the same registry view.

use super::*;
use crate::registry::names::{self, Servers};
use crate::registry::{
    DropKind, EndpointView, GatewayView, Registry, RegistryConfig, ServiceView, Snapshot,
};
use crate::watch::Watched;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::core::ObjectList;
use std::collections::HashMap;
use std::time::Duration;

const NAMESPACES: &str = include_str!("testdata/namespaces.json");
const SERVICES: &str = include_str!("testdata/services.json");
const SLICES: &str = include_str!("testdata/endpointslices.json");
const PODS: &str = include_str!("testdata/pods.json");
const NODES: &str = include_str!("testdata/nodes.json");

const CLUSTER: &str = "cluster2";

fn config() -> RegistryConfig {
    RegistryConfig {
        system_namespace: "istio-system".into(),
        domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        stale_endpoint_ttl: None,
        sync_timeout: Duration::from_secs(30),
    }
}

/// One kind's relist as the watcher applies it: the list body decoded as kube decodes it
/// (`ObjectList<K>`), its entries swapped in at `InitDone`, then the kind marked listed.
fn relist<K: Watched>(registry: &Registry, generation: u64, body: &str) {
    let list: ObjectList<K> = serde_json::from_str(body).expect("a list body");
    let fresh: HashMap<K::Key, K::Value> = list.items.iter().filter_map(K::entry).collect();
    registry.update(CLUSTER, generation, |d| *K::map(d) = fresh);
    registry.listed(CLUSTER, generation, K::KIND);
}

/// What the registry serves of one remote cluster whose watchers decode `Ns`, `Svc`,
/// `Slice`, `P` and `N`: the merged snapshot (EDS, CDS, NDS and gateways are built from it)
/// and `/debug/clusterz` (without the time since the last update).
fn registry_view<Ns, Svc, Slice, P, N>() -> (Snapshot, serde_json::Value)
where
    Ns: Watched,
    Svc: Watched,
    Slice: Watched,
    P: Watched,
    N: Watched,
{
    // No async runtime here: LoadBalancer hostnames stay unresolved, on both sides alike.
    let registry = Registry::with_gateway_dns(config(), Servers::Udp(Vec::new()), names::MIN_TTL);
    let generation = registry.add_generation(CLUSTER, "istio-remote-secret-cluster2", None, 5);
    relist::<Ns>(&registry, generation, NAMESPACES);
    relist::<Svc>(&registry, generation, SERVICES);
    relist::<Slice>(&registry, generation, SLICES);
    relist::<P>(&registry, generation, PODS);
    relist::<N>(&registry, generation, NODES);
    let mut clusters = registry.clusters();
    for c in &mut clusters {
        c.last_sync_age_s = None;
    }
    let clusters = serde_json::to_value(clusters).expect("serialisable");
    (registry.snapshot(), clusters)
}

fn whole_view() -> (Snapshot, serde_json::Value) {
    registry_view::<Namespace, Service, EndpointSlice, Pod, Node>()
}

fn projected_view() -> (Snapshot, serde_json::Value) {
    registry_view::<NamespaceLite, ServiceLite, EndpointSliceLite, PodLite, NodeLite>()
}

/// Issue 21's proof: Pods, Services (ClusterIP, dual-stack, LoadBalancer with an ingress IP
/// and hostname, NodePort with Istio's `traffic.istio.io/nodeSelector`, externalIPs with
/// `networking.istio.io/gatewayPort`, headless, ExternalName), EndpointSlices (IPv4 and IPv6;
/// ready, not ready and terminating endpoints; Pod targetRefs; hostnames; nodeName present or
/// taken from the Pod; an FQDN slice, which Istio skips), Nodes (GA and legacy
/// `failure-domain.beta` topology labels, ExternalIP and InternalIP addresses) and Namespaces
/// (the system namespace's network label) give the same registry view decoded whole and as
/// projections.
#[test]
fn projections_give_the_same_registry_view_as_whole_objects() {
    let (whole, whole_clusters) = whole_view();
    let (projected, projected_clusters) = projected_view();
    assert_eq!(projected, whole);
    assert_eq!(projected_clusters, whole_clusters);
}

/// Every object of a list body gives the same registry entry (or none, as an FQDN slice)
/// decoded whole (`W`) and as its projection (`L`); returns how many gave one.
fn same_entries<W, L>(body: &str) -> usize
where
    W: Watched,
    L: Watched<Key = W::Key, Value = W::Value>,
    W::Key: PartialEq + std::fmt::Debug,
    W::Value: PartialEq + std::fmt::Debug,
{
    let whole: ObjectList<W> = serde_json::from_str(body).expect("decoded whole");
    let projected: ObjectList<L> = serde_json::from_str(body).expect("decoded as projection");
    assert_eq!(whole.items.len(), projected.items.len());
    let mut entries = 0;
    for (w, l) in whole.items.iter().zip(&projected.items) {
        assert_eq!(l.entry(), w.entry());
        assert_eq!(l.key(), w.key());
        entries += usize::from(w.entry().is_some());
    }
    entries
}

/// Entry by entry, for objects the merged view does not show too (a pending Pod with neither
/// `serviceAccountName` nor `nodeName`, whose service account reads as Kubernetes'
/// `default`; a terminating Pod; the FQDN slice, which gives no entry either way).
#[test]
fn each_object_gives_the_same_entry_whole_and_projected() {
    assert_eq!(same_entries::<Namespace, NamespaceLite>(NAMESPACES), 2);
    assert_eq!(same_entries::<Service, ServiceLite>(SERVICES), 7);
    assert_eq!(same_entries::<EndpointSlice, EndpointSliceLite>(SLICES), 5);
    assert_eq!(same_entries::<Pod, PodLite>(PODS), 8);
    assert_eq!(same_entries::<Node, NodeLite>(NODES), 3);
}

fn service<'a>(snapshot: &'a Snapshot, hostname: &str) -> &'a ServiceView {
    let found = snapshot.services.iter().find(|s| s.hostname == hostname);
    found.unwrap_or_else(|| panic!("{hostname} in the snapshot"))
}

/// (address, service port, target port, ready, network, locality, service account, hostname)
type Seen<'a> = (
    &'a str,
    u16,
    u16,
    bool,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
);

fn seen(e: &EndpointView) -> Seen<'_> {
    (
        &e.address,
        e.service_port,
        e.port,
        e.ready,
        &e.network,
        &e.locality,
        &e.service_account,
        e.hostname.as_deref(),
    )
}

/// The view compared above holds what EDS needs (so the comparison cannot pass on an empty
/// view): Istio's endpoint slice controller leaves out terminating endpoints and FQDN slices,
/// keeps not-ready ones as unhealthy, takes the network from the Pod's
/// `topology.istio.io/network` else the system namespace's, the locality from the Pod's
/// `topology.istio.io/locality` else its node's (GA labels, else legacy), the Pod's service
/// account (`default` when unset) and the StatefulSet hostname.
#[test]
fn the_projected_view_has_the_endpoints_istio_would_send() {
    let (snapshot, _) = projected_view();
    assert_eq!(snapshot.services.len(), 7);
    let hw = service(&snapshot, "helloworld.sample.svc.cluster.local");
    let hw_seen: Vec<Seen> = hw.endpoints.iter().map(seen).collect();
    let east = "us-east1/us-east1-b/rack1";
    assert_eq!(
        hw_seen,
        [
            (
                "10.244.1.5",
                5000,
                5000,
                true,
                "network2",
                east,
                "helloworld",
                None
            ),
            (
                "10.244.2.6",
                5000,
                5000,
                false,
                "network2",
                "us-west1/us-west1-a",
                "helloworld",
                None
            ),
            (
                "fd00:10:244:1::5",
                5000,
                5000,
                true,
                "network2",
                east,
                "helloworld",
                None
            ),
        ]
    );
    assert_eq!(
        hw.endpoints[0].labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert_eq!(
        hw.cluster_ips.get(CLUSTER).map(String::as_str),
        Some("10.96.10.1")
    );

    let ratings = service(&snapshot, "ratings.sample.svc.cluster.local");
    let west = "us-west1/us-west1-a";
    let ratings_seen: Vec<Seen> = ratings.endpoints.iter().map(seen).collect();
    assert_eq!(
        ratings_seen,
        [
            (
                "10.244.2.8",
                8125,
                8125,
                true,
                "network2",
                west,
                "bookinfo-ratings",
                None
            ),
            (
                "10.244.2.8",
                9080,
                9081,
                true,
                "network2",
                west,
                "bookinfo-ratings",
                None
            ),
            (
                "10.244.2.8",
                15090,
                15090,
                true,
                "network2",
                west,
                "bookinfo-ratings",
                None
            ),
        ]
    );
    let ports: Vec<(&str, u16, &str, Option<&str>)> = ratings
        .ports
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.port,
                p.protocol.as_str(),
                p.app_protocol.as_deref(),
            )
        })
        .collect();
    assert!(ports.contains(&("grpc-ratings", 9080, "TCP", Some("grpc"))));
    assert!(ports.contains(&("statsd", 8125, "UDP", None)));
    assert!(ports.contains(&("metrics", 15090, "TCP", None)));

    let mysql = service(&snapshot, "mysql-headless.sample.svc.cluster.local");
    let mysql_seen: Vec<Seen> = mysql.endpoints.iter().map(seen).collect();
    let (rack9, east_c) = ("eu-west1/eu-west1-b/rack9", "us-east1/us-east1-c");
    assert_eq!(
        mysql_seen,
        [
            (
                "10.244.3.10",
                3306,
                3306,
                false,
                "network2",
                east_c,
                "mysql",
                Some("mysql-1")
            ),
            (
                "10.244.3.9",
                3306,
                3306,
                true,
                "network2",
                rack9,
                "default",
                Some("mysql-0")
            ),
        ]
    );
    assert_eq!(mysql.headless_in, [CLUSTER]);
    assert!(mysql.cluster_ips.is_empty());

    let db = service(&snapshot, "external-db.sample.svc.cluster.local");
    assert_eq!(db.external_name.as_deref(), Some("db.example.com"));
    assert!(db.endpoints.is_empty(), "the FQDN slice is skipped");
}

/// The view holds the network gateways Istio finds (pilot's `extractGatewaysInner`): a
/// LoadBalancer's ingress IP (its hostname waits for DNS and is reported dropped), a NodePort
/// Service's node port on the ExternalIPs of the nodes its `traffic.istio.io/nodeSelector`
/// selects (a selected node with only an InternalIP adds none), and externalIPs at the
/// `networking.istio.io/gatewayPort` label's port.
#[test]
fn the_projected_view_has_the_gateways_istio_would_find() {
    let (snapshot, clusters) = projected_view();
    let gateway = |network: &str, address: &str, port| GatewayView {
        network: network.into(),
        cluster: CLUSTER.into(),
        address: address.into(),
        port,
    };
    assert_eq!(
        snapshot.gateways,
        [
            gateway("network2", "198.51.100.7", 15443),
            gateway("network3", "203.0.113.10", 30443),
            gateway("network4", "192.0.2.50", 16443),
        ]
    );
    let cluster = &clusters[0];
    assert_eq!(cluster["status"], "synced");
    assert_eq!(cluster["services"], 7);
    assert_eq!(cluster["endpoints"], 8);
    let dropped = &cluster["dropped_gateways"];
    assert_eq!(dropped.as_array().map(Vec::len), Some(1));
    assert_eq!(dropped[0]["service"], "istio-system/istio-eastwestgateway");
    assert_eq!(dropped[0]["kind"], DropKind::Unresolved.as_str());
    let reason = dropped[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ewgw-1234.elb.us-east-1.amazonaws.com"),
        "{reason}"
    );
}

/// A projection keeps no `managedFields` and, of the annotations, only a Service's
/// `traffic.istio.io/nodeSelector`; kube's watcher still gets each object's resourceVersion
/// and uid.
#[test]
fn projections_keep_only_what_is_read() {
    let services: ObjectList<ServiceLite> = serde_json::from_str(SERVICES).expect("services");
    for svc in &services.items {
        assert!(svc.metadata.managed_fields.is_none());
        assert!(svc.metadata.resource_version.is_some() && svc.metadata.uid.is_some());
        let kept: Vec<&String> = svc
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|a| a.0)
            .collect();
        let name = svc.metadata.name.as_deref();
        if name == Some("istio-nodeport-gateway") {
            assert_eq!(kept, ["traffic.istio.io/nodeSelector"]);
        } else {
            assert!(svc.metadata.annotations.is_none(), "{name:?}: {kept:?}");
        }
    }
    let pods: ObjectList<PodLite> = serde_json::from_str(PODS).expect("pods");
    assert_eq!(pods.items.len(), 8);
    for pod in &pods.items {
        let m = &pod.metadata;
        assert!(m.managed_fields.is_none() && m.annotations.is_none());
        assert!(m.owner_references.is_none() && m.deletion_timestamp.is_none());
        assert!(m.resource_version.is_some() && m.uid.is_some());
    }
}

/// An annotations map of `null`, as some clients write it, reads as no annotations, as
/// k8s_openapi reads it.
#[test]
fn null_annotations_read_as_none() {
    let json = r#"{"metadata": {"name": "s", "annotations": null}, "spec": {}}"#;
    let svc: ServiceLite = serde_json::from_str(json).expect("a Service");
    assert!(svc.metadata.annotations.is_none());
}

/// kube's watcher lists and watches each projection at its full type's URL.
#[test]
fn projections_are_watched_at_their_kinds_urls() {
    assert_eq!(PodLite::url_path(&(), None), Pod::url_path(&(), None));
    assert_eq!(PodLite::url_path(&(), None), "/api/v1/pods");
    assert_eq!(ServiceLite::url_path(&(), None), "/api/v1/services");
    assert_eq!(NodeLite::url_path(&(), None), "/api/v1/nodes");
    assert_eq!(NamespaceLite::url_path(&(), None), "/api/v1/namespaces");
    assert_eq!(
        EndpointSliceLite::url_path(&(), Some("sample")),
        EndpointSlice::url_path(&(), Some("sample"))
    );
    assert_eq!(EndpointSliceLite::api_version(&()), "discovery.k8s.io/v1");
    assert_eq!(EndpointSliceLite::kind(&()), "EndpointSlice");
    assert_eq!(ServiceLite::kind(&()), "Service");
}
