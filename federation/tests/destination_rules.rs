//! DestinationRules read from whichever version of networking.istio.io a cluster serves.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use meshfed_federation::FederationConfig;
use meshfed_federation::registry::{Registry, Status};
use meshfed_federation::watch::{self, Target};
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A test bed API server whose Istio CRDs serve only `versions`.
async fn server(versions: &[&str]) -> ApiServer {
    let mut config = ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "cluster1");
    config.istio_versions = versions.iter().map(|v| v.to_string()).collect();
    ApiServer::start(config).await.unwrap()
}

async fn create<K>(api: Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
}

/// Creates a DestinationRule through `version` and returns what the federation's local
/// cluster watchers read (apiVersion, name, the spec's host), once synced.
async fn read_through(served: &[&str], version: &str) -> (String, String, String) {
    let server = server(served).await;
    let client = meshfed_federation::kubeconfig::client(&server.kubeconfig(), false)
        .await
        .unwrap();
    create(
        Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": "sample"}}),
    )
    .await;
    let gvk = GroupVersionKind::gvk("networking.istio.io", version, "DestinationRule");
    let rules: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "sample", &ApiResource::from_gvk(&gvk));
    create(rules, json!({"apiVersion": format!("networking.istio.io/{version}"), "kind": "DestinationRule", "metadata": {"name": "helloworld"}, "spec": {"host": "helloworld.sample.svc.cluster.local"}})).await;

    let registry = Arc::new(Registry::new(
        FederationConfig::new("cluster1", "network1").registry(),
    ));
    let generation = registry.add_generation("cluster1", "", None, watch::kinds(true));
    let target = Target {
        registry: registry.clone(),
        id: "cluster1".into(),
        generation,
    };
    let watchers = tokio::spawn(watch::run_cluster(client, target, true));
    let mut changes = registry.subscribe();
    let synced = || registry.clusters()[0].status == Status::Synced;
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !synced() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    watchers.abort();
    assert!(waited.is_ok(), "not synced: {:?}", registry.clusters());
    let rules = registry.destination_rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let (_, name, rule) = &rules[0];
    let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        field(&rule["apiVersion"]),
        name.clone(),
        field(&rule["spec"]["host"]),
    )
}

/// Istio's CRDs serve networking.istio.io v1 (1.22 on), v1beta1 and v1alpha3 with one schema;
/// istiod reads them whatever the cluster serves. The federation picks the newest version the
/// API server serves (API discovery), so a cluster whose CRDs predate v1 has its rules read.
#[tokio::test]
async fn destination_rules_are_read_from_the_newest_served_version() {
    let host = "helloworld.sample.svc.cluster.local".to_string();
    for (served, version, want) in [
        (&["v1beta1", "v1alpha3"][..], "v1alpha3", "v1beta1"),
        (&["v1alpha3"][..], "v1alpha3", "v1alpha3"),
        (&["v1", "v1beta1", "v1alpha3"][..], "v1beta1", "v1"),
    ] {
        let got = read_through(served, version).await;
        let want = (
            format!("networking.istio.io/{want}"),
            "helloworld".to_string(),
            host.clone(),
        );
        assert_eq!(got, want, "serving {served:?}");
    }
}
