//! The federation controller against two test bed API servers.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshfed_federation::registry::{Registry, Snapshot, Status};
use meshfed_federation::{Controllers, FederationConfig};
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde_json::json;
use std::time::Duration;

async fn server(name: &str) -> ApiServer {
    ApiServer::start(ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), name))
        .await
        .unwrap()
}

async fn client(kubeconfig: &str) -> kube::Client {
    meshfed_federation::kubeconfig::client(kubeconfig, false)
        .await
        .unwrap()
}

async fn create<K>(api: Api<K>, v: serde_json::Value)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
}

/// One cluster running helloworld `version` on a node in `locality`.
async fn seed(
    c: &kube::Client,
    cluster: &str,
    version: &str,
    ip: &str,
    region: &str,
    zone: &str,
    network: Option<&str>,
) {
    let net_labels = network
        .map(|n| json!({"topology.istio.io/network": n}))
        .unwrap_or(json!({}));
    create(
        Api::<Namespace>::all(c.clone()),
        json!({"metadata": {"name": "istio-system", "labels": net_labels}}),
    )
    .await;
    create(
        Api::<Namespace>::all(c.clone()),
        json!({"metadata": {"name": "sample"}}),
    )
    .await;
    let node = format!("{cluster}-node");
    create(Api::<Node>::all(c.clone()), json!({"metadata": {"name": node, "labels": {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}}})).await;
    create(Api::<Service>::namespaced(c.clone(), "sample"), json!({"metadata": {"name": "helloworld", "labels": {"app": "helloworld"}}, "spec": {"ports": [{"name": "http", "port": 5000}], "selector": {"app": "helloworld"}}})).await;
    let pod = format!("helloworld-{version}");
    create(Api::<Pod>::namespaced(c.clone(), "sample"), json!({"metadata": {"name": pod, "labels": {"app": "helloworld", "version": version}}, "spec": {"serviceAccountName": "helloworld", "nodeName": node, "containers": [{"name": "helloworld", "image": "helloworld"}]}, "status": {"podIP": ip}})).await;
    create(
        Api::<EndpointSlice>::namespaced(c.clone(), "sample"),
        slice(&node, &pod, &[ip], true),
    )
    .await;
}

fn slice(node: &str, pod: &str, ips: &[&str], ready: bool) -> serde_json::Value {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node, "targetRef": {"kind": "Pod", "namespace": "sample", "name": pod}})).collect();
    json!({"metadata": {"name": "helloworld-abc", "labels": {"kubernetes.io/service-name": "helloworld"}}, "addressType": "IPv4", "ports": [{"name": "http", "port": 5000}], "endpoints": endpoints})
}

async fn remote_secret(local: &kube::Client, name: &str, cluster: &str, kubeconfig: &str) {
    let api: Api<Secret> = Api::namespaced(local.clone(), "istio-system");
    let s = json!({
        "metadata": {"name": name, "labels": {"istio/multiCluster": "true"}, "annotations": {"networking.istio.io/cluster": cluster}},
        "stringData": {cluster: kubeconfig},
    });
    if api.get_opt(name).await.unwrap().is_some() {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&s))
            .await
            .unwrap();
    } else {
        api.create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }
}

/// Waits (bounded) until the registry satisfies `ok`.
async fn until(
    registry: &Registry,
    what: &str,
    ok: impl Fn(&Snapshot, &[meshfed_federation::registry::ClusterStatus]) -> bool,
) {
    let mut changes = registry.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if ok(&registry.snapshot(), &registry.clusters()) {
                return;
            }
            // Status ages (timeout) change without an event: wake at least every 100 ms.
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out waiting for {what}: {:?}\n{:?}",
        registry.clusters(),
        registry.snapshot()
    );
}

fn hw(s: &Snapshot) -> Vec<(String, String, String, bool)> {
    s.services
        .iter()
        .filter(|v| v.hostname == "helloworld.sample.svc.cluster.local")
        .flat_map(|v| {
            v.endpoints.iter().map(|e| {
                (
                    e.cluster.to_string(),
                    e.address.clone(),
                    format!("{} {}", e.network, e.locality),
                    e.ready,
                )
            })
        })
        .collect()
}

fn status_of(c: &[meshfed_federation::registry::ClusterStatus], id: &str) -> Option<Status> {
    c.iter().find(|c| c.id == id).map(|c| c.status)
}

struct Bed {
    s1: ApiServer,
    s2: ApiServer,
    c1: kube::Client,
    c2: kube::Client,
    fed: Controllers,
}

async fn bed() -> Bed {
    let (s1, s2) = (server("cluster1").await, server("cluster2").await);
    let (c1, c2) = (
        client(&s1.kubeconfig()).await,
        client(&s2.kubeconfig()).await,
    );
    seed(&c1, "cluster1", "v1", "10.10.0.5", "region1", "zone1", None).await;
    seed(
        &c2,
        "cluster2",
        "v2",
        "10.20.0.5",
        "region2",
        "zone2",
        Some("network2"),
    )
    .await;
    let gw = json!({"metadata": {"name": "istio-eastwestgateway", "labels": {"topology.istio.io/network": "network2"}}, "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]}, "status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.12"}]}}});
    create(Api::<Service>::namespaced(c2.clone(), "istio-system"), gw).await;
    remote_secret(
        &c1,
        "istio-remote-secret-cluster2",
        "cluster2",
        &s2.kubeconfig(),
    )
    .await;
    let fed = Controllers::start(c1.clone(), &FederationConfig::new("cluster1", "network1"));
    // Ready comes after every kind has listed (DestinationRules after API discovery), which
    // may be after both clusters' endpoints are in: wait for both.
    let registry = &fed.registry;
    until(registry, "both clusters, ready", |s, _| {
        hw(s).len() == 2 && registry.ready()
    })
    .await;
    Bed {
        s1,
        s2,
        c1,
        c2,
        fed,
    }
}

#[tokio::test]
async fn both_clusters_endpoints_carry_network_and_locality_and_changes_propagate() {
    let b = bed().await;
    let snap = b.fed.registry.snapshot();
    assert_eq!(
        hw(&snap),
        [
            (
                "cluster1".into(),
                "10.10.0.5".into(),
                "network1 region1/zone1".into(),
                true
            ),
            (
                "cluster2".into(),
                "10.20.0.5".into(),
                "network2 region2/zone2".into(),
                true
            ),
        ]
    );
    let ep = &snap
        .services
        .iter()
        .find(|s| s.hostname.starts_with("helloworld."))
        .unwrap()
        .endpoints[1];
    assert_eq!(
        (ep.labels["version"].as_str(), &*ep.service_account, ep.port),
        ("v2", "helloworld", 5000)
    );
    assert_eq!(snap.gateways.len(), 1);
    assert_eq!(
        (
            snap.gateways[0].network.as_str(),
            snap.gateways[0].address.as_str(),
            snap.gateways[0].port
        ),
        ("network2", "172.31.0.12", 15443)
    );
    assert!(b.fed.registry.ready());

    // A new remote endpoint, then a readiness change, reach the registry.
    let slices: Api<EndpointSlice> = Api::namespaced(b.c2.clone(), "sample");
    let two = slice(
        "cluster2-node",
        "helloworld-v2",
        &["10.20.0.5", "10.20.0.6"],
        true,
    );
    slices
        .replace(
            "helloworld-abc",
            &PostParams::default(),
            &serde_json::from_value(two).unwrap(),
        )
        .await
        .ok();
    let merge = Patch::Merge(
        json!({"endpoints": slice("cluster2-node", "helloworld-v2", &["10.20.0.5", "10.20.0.6"], true)["endpoints"]}),
    );
    slices
        .patch("helloworld-abc", &PatchParams::default(), &merge)
        .await
        .unwrap();
    until(&b.fed.registry, "the new remote endpoint", |s, _| {
        hw(s).len() == 3
    })
    .await;
    let unready = Patch::Merge(
        json!({"endpoints": slice("cluster2-node", "helloworld-v2", &["10.20.0.5", "10.20.0.6"], false)["endpoints"]}),
    );
    slices
        .patch("helloworld-abc", &PatchParams::default(), &unready)
        .await
        .unwrap();
    until(&b.fed.registry, "remote readiness", |s, _| {
        hw(s).iter().filter(|e| e.0 == "cluster2").all(|e| !e.3)
    })
    .await;
    drop(b.s1);
}

#[tokio::test]
async fn a_broken_secret_is_isolated_and_a_deleted_secret_removes_its_cluster() {
    let b = bed().await;
    remote_secret(
        &b.c1,
        "istio-remote-secret-cluster3",
        "cluster3",
        "this is not a kubeconfig",
    )
    .await;
    until(&b.fed.registry, "cluster3 in error", |_, c| {
        status_of(c, "cluster3") == Some(Status::Error)
    })
    .await;
    assert_eq!(
        status_of(&b.fed.registry.clusters(), "cluster2"),
        Some(Status::Synced)
    );
    assert_eq!(hw(&b.fed.registry.snapshot()).len(), 2);

    // The same id claimed by a second secret: reported, and the first one keeps it.
    remote_secret(&b.c1, "another-secret", "cluster2", &b.s2.kubeconfig()).await;
    until(&b.fed.registry, "the conflict", |_, c| {
        c.iter().any(|c| {
            c.id == "cluster2" && c.secret == "another-secret" && c.status == Status::Error
        })
    })
    .await;
    assert!(b.fed.registry.clusters().iter().any(|c| c.id == "cluster2"
        && c.secret == "istio-remote-secret-cluster2"
        && c.status == Status::Synced));

    let secrets: Api<Secret> = Api::namespaced(b.c1.clone(), "istio-system");
    secrets
        .delete("another-secret", &DeleteParams::default())
        .await
        .unwrap();
    secrets
        .delete("istio-remote-secret-cluster2", &DeleteParams::default())
        .await
        .unwrap();
    until(&b.fed.registry, "cluster2 gone", |s, c| {
        status_of(c, "cluster2").is_none() && hw(s).len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_stopped_remote_api_server_keeps_its_endpoints_and_is_unreachable() {
    let b = bed().await;
    b.s2.shutdown().await;
    until(&b.fed.registry, "cluster2 unreachable", |_, c| {
        status_of(c, "cluster2") == Some(Status::Unreachable)
    })
    .await;
    assert_eq!(
        hw(&b.fed.registry.snapshot()).len(),
        2,
        "endpoints of an unreachable cluster are kept by default"
    );
    let age = b
        .fed
        .registry
        .clusters()
        .iter()
        .find(|c| c.id == "cluster2")
        .and_then(|c| c.last_sync_age_s);
    assert!(age.is_some());
}

#[tokio::test]
async fn rotated_credentials_are_picked_up_without_a_restart() {
    let b = bed().await;
    let sas: Api<ServiceAccount> = Api::namespaced(b.c2.clone(), "istio-system");
    create(
        Api::<ServiceAccount>::namespaced(b.c2.clone(), "istio-system"),
        json!({"metadata": {"name": "reader"}}),
    )
    .await;
    let token = |secs: i64| {
        let sas = sas.clone();
        async move {
            let req = serde_json::from_value(json!({"spec": {"expirationSeconds": secs}})).unwrap();
            sas.create_token_request("reader", &PostParams::default(), &req)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
        }
    };
    let with_token = |t: &str| {
        meshfed_testbed::kubeconfig::render("cluster2", &b.s2.url(), b.s2.ca_pem(), "reader", t)
    };
    remote_secret(
        &b.c1,
        "istio-remote-secret-cluster2",
        "cluster2",
        &with_token(&token(3600).await),
    )
    .await;
    let first = b
        .fed
        .registry
        .clusters()
        .iter()
        .find(|c| c.id == "cluster2")
        .unwrap()
        .generation;
    until(&b.fed.registry, "the first rotation", |_, c| {
        c.iter()
            .any(|c| c.id == "cluster2" && c.generation > first && c.status == Status::Synced)
    })
    .await;
    let second = b
        .fed
        .registry
        .clusters()
        .iter()
        .find(|c| c.id == "cluster2")
        .unwrap()
        .generation;

    // Rotate again, then revoke the earlier token: changes must still arrive.
    remote_secret(
        &b.c1,
        "istio-remote-secret-cluster2",
        "cluster2",
        &with_token(&token(3600).await),
    )
    .await;
    until(&b.fed.registry, "the second rotation", |_, c| {
        c.iter()
            .any(|c| c.id == "cluster2" && c.generation > second && c.status == Status::Synced)
    })
    .await;
    assert_eq!(
        hw(&b.fed.registry.snapshot()).len(),
        2,
        "rotation lost endpoints"
    );
    let slices: Api<EndpointSlice> = Api::namespaced(b.c2.clone(), "sample");
    let merge = Patch::Merge(
        json!({"endpoints": slice("cluster2-node", "helloworld-v2", &["10.20.0.5", "10.20.0.7"], true)["endpoints"]}),
    );
    slices
        .patch("helloworld-abc", &PatchParams::default(), &merge)
        .await
        .unwrap();
    until(&b.fed.registry, "a change after rotation", |s, _| {
        hw(s).iter().any(|e| e.1 == "10.20.0.7")
    })
    .await;
    drop(b.s1);
}

#[tokio::test]
async fn a_dead_cluster_holds_readiness_only_until_the_sync_timeout() {
    let s1 = server("cluster1").await;
    let c1 = client(&s1.kubeconfig()).await;
    seed(&c1, "cluster1", "v1", "10.10.0.5", "region1", "zone1", None).await;
    // A kubeconfig that parses but points at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kubeconfig = meshfed_testbed::kubeconfig::render(
        "cluster9",
        &format!("https://{dead}"),
        s1.ca_pem(),
        "u",
        "t",
    );
    remote_secret(&c1, "istio-remote-secret-cluster9", "cluster9", &kubeconfig).await;
    let mut cfg = FederationConfig::new("cluster1", "network1");
    cfg.sync_timeout = Duration::from_millis(1500);
    let fed = Controllers::start(c1.clone(), &cfg);
    until(&fed.registry, "cluster9 known and local synced", |_, c| {
        status_of(c, "cluster9").is_some() && status_of(c, "cluster1") == Some(Status::Synced)
    })
    .await;
    assert!(
        !fed.registry.ready(),
        "a cluster that never synced must hold readiness within the timeout"
    );
    until(&fed.registry, "the sync timeout", |_, c| {
        status_of(c, "cluster9") == Some(Status::Timeout)
    })
    .await;
    assert!(fed.registry.ready());
    assert_eq!(hw(&fed.registry.snapshot()).len(), 1);
}

#[tokio::test]
async fn a_410_relist_of_a_remote_cluster_loses_and_duplicates_nothing() {
    let b = bed().await;
    let slices: Api<EndpointSlice> = Api::namespaced(b.c2.clone(), "sample");
    // Change, then end every watch of cluster2 with 410 while more changes land.
    let three = Patch::Merge(
        json!({"endpoints": slice("cluster2-node", "helloworld-v2", &["10.20.0.5", "10.20.0.6", "10.20.0.8"], true)["endpoints"]}),
    );
    slices
        .patch("helloworld-abc", &PatchParams::default(), &three)
        .await
        .unwrap();
    b.s2.store().expire_watches();
    let two = Patch::Merge(
        json!({"endpoints": slice("cluster2-node", "helloworld-v2", &["10.20.0.6", "10.20.0.8"], true)["endpoints"]}),
    );
    slices
        .patch("helloworld-abc", &PatchParams::default(), &two)
        .await
        .unwrap();
    until(
        &b.fed.registry,
        "cluster2 converged after the relist",
        |s, c| {
            let mut remote: Vec<String> = hw(s)
                .into_iter()
                .filter(|e| e.0 == "cluster2")
                .map(|e| e.1)
                .collect();
            remote.sort();
            remote == ["10.20.0.6", "10.20.0.8"] && status_of(c, "cluster2") == Some(Status::Synced)
        },
    )
    .await;
    assert_eq!(
        hw(&b.fed.registry.snapshot()).len(),
        3,
        "duplicates after the relist"
    );
    drop(b.s1);
}

#[tokio::test]
async fn destination_rules_come_from_the_local_cluster_only() {
    let b = bed().await;
    let dr_api = |c: &kube::Client| {
        let gvk =
            kube::api::GroupVersionKind::gvk("networking.istio.io", "v1beta1", "DestinationRule");
        Api::<kube::api::DynamicObject>::namespaced_with(
            c.clone(),
            "sample",
            &kube::api::ApiResource::from_gvk(&gvk),
        )
    };
    let seed_dr = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/locality-lb-weight.yaml"
    ))
    .unwrap();
    let dr: kube::api::DynamicObject = serde_yaml::from_str(&seed_dr).unwrap();
    dr_api(&b.c1)
        .create(&PostParams::default(), &dr)
        .await
        .unwrap();
    let mut remote = dr.clone();
    remote.metadata.name = Some("remote-only".into());
    dr_api(&b.c2)
        .create(&PostParams::default(), &remote)
        .await
        .unwrap();
    let mut changes = b.fed.registry.subscribe();
    tokio::time::timeout(Duration::from_secs(20), async {
        while b.fed.registry.destination_rules().is_empty() {
            let _ = changes.changed().await;
        }
    })
    .await
    .unwrap();
    let drs = b.fed.registry.destination_rules();
    assert_eq!(
        drs.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(),
        ["helloworld"]
    );
    assert_eq!(
        drs[0].2["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distribute"][0]["to"]
            ["region1/*"],
        80
    );
    drop(b.s2);
}
