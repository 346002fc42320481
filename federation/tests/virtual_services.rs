//! VirtualServices from the local cluster: watched at the newest served version, parsed on
//! each push, and reported on `/debug/configz` and `/metrics` when they do not validate.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use meshfed_federation::FederationConfig;
use meshfed_federation::registry::{Registry, Status};
use meshfed_federation::watch::{self, Target};
use meshfed_federation::xds;
use meshfed_model::admin::AdminClient;
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

async fn create(api: &Api<DynamicObject>, v: Value) {
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
}

fn vs(version: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("networking.istio.io/{version}"), "kind": "VirtualService",
        "metadata": {"name": name}, "spec": spec})
}

/// Waits (on registry changes, at most 20 s) until `pred` holds.
async fn until(registry: &Registry, pred: impl Fn(&Registry) -> bool) {
    let mut changes = registry.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !pred(registry) {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out: {:?}", registry.clusters());
}

/// Istio: VirtualServices are read whatever networking.istio.io version the cluster serves
/// (here an Istio older than 1.22: v1beta1 and v1alpha3 only), each rule is validated alone
/// (a refused rule does not take the valid ones with it), and istiod reports the refused one
/// (meshfed: `/debug/configz` with its reason, `meshfed_config_errors`), a rule created
/// after the first list reaches the registry too, and the push carries the valid rules.
#[tokio::test]
async fn virtual_services_reach_the_registry_and_errors_reach_configz() {
    let mut config = ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), "cluster1");
    config.istio_versions = vec!["v1beta1".into(), "v1alpha3".into()];
    let server = ApiServer::start(config).await.unwrap();
    let client = meshfed_federation::kubeconfig::client(&server.kubeconfig(), false)
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "sample"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "VirtualService");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "sample", &ApiResource::from_gvk(&gvk));
    let route = json!([{"destination": {"host": "helloworld", "subset": "v1"}}]);
    create(
        &api,
        vs(
            "v1alpha3",
            "good",
            json!({"hosts": ["helloworld"], "http": [{"route": route}]}),
        ),
    )
    .await;
    create(
        &api,
        vs(
            "v1alpha3",
            "bad",
            json!({"hosts": ["helloworld"],
        "http": [{"route": route, "timeout": "soon"}]}),
        ),
    )
    .await;

    let registry = Arc::new(Registry::new(
        FederationConfig::new("cluster1", "network1").registry(),
    ));
    let generation = registry.add_generation("cluster1", "", None, watch::kinds(true));
    registry.mark_secrets_listed();
    let target = Target {
        registry: registry.clone(),
        id: "cluster1".into(),
        generation,
    };
    let watchers = tokio::spawn(watch::run_cluster(client, target, true));
    until(&registry, |r| r.clusters()[0].status == Status::Synced).await;
    let names = |r: &Registry| -> Vec<String> {
        r.virtual_services()
            .into_iter()
            .map(|(_, n, _)| n)
            .collect()
    };
    assert_eq!(names(&registry), ["bad", "good"]);
    let (ns, _, obj) = &registry.virtual_services()[1];
    assert_eq!(ns, "sample");
    assert_eq!(obj["apiVersion"], "networking.istio.io/v1beta1");
    assert!(obj["metadata"]["creationTimestamp"].is_string());

    // A rule created later is watched too.
    create(
        &api,
        vs(
            "v1alpha3",
            "later",
            json!({"hosts": ["other"], "http": [{"route": [{"destination": {"host": "other"}}]}]}),
        ),
    )
    .await;
    until(&registry, |r| names(r).len() == 3).await;

    // /debug/configz: the refused rule with its reason; the good one applied but reported
    // for its subset (no DestinationRule defines v1); the later one ok.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = AdminClient::new(listener.local_addr().unwrap());
    let admin_task = tokio::spawn(meshfed_federation::admin::serve(listener, registry.clone()));
    let page: Value = serde_json::from_str(&admin.page("/debug/configz").await.unwrap()).unwrap();
    let line = |name: &str| {
        page.as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name && l["kind"] == "VirtualService")
            .unwrap_or_else(|| panic!("{name} not in {page}"))
            .clone()
    };
    let bad = line("bad");
    assert_eq!(
        (bad["status"].as_str(), bad["applied"].as_bool()),
        (Some("errors"), Some(false))
    );
    let reason = bad["errors"][0].as_str().unwrap();
    assert!(
        reason.starts_with("http[0].timeout:") && reason.contains("invalid_duration"),
        "{reason}"
    );
    let good = line("good");
    assert_eq!(
        (good["status"].as_str(), good["applied"].as_bool()),
        (Some("errors"), Some(true))
    );
    assert!(
        good["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown_subset"),
        "{good}"
    );
    assert_eq!(line("later")["status"], "ok");

    // The push carries the valid rules; the metric counts the errors by reason.
    let (pusher, mut pushes) = xds::start_pusher(registry.clone(), xds::Debounce::default());
    let push = tokio::time::timeout(Duration::from_secs(20), pushes.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .clone()
        .unwrap();
    let pushed: Vec<&str> = push
        .virtual_services
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(pushed, ["good", "later"]);
    let metrics = admin.page("/metrics").await.unwrap();
    for want in [
        r#"meshfed_config_errors{kind="VirtualService",reason="invalid_duration"} 1"#,
        r#"meshfed_config_errors{kind="VirtualService",reason="unknown_subset"} 1"#,
        r#"meshfed_config_errors{kind="VirtualService",reason="invalid_regex"} 0"#,
    ] {
        assert!(metrics.contains(want), "{want} not in {metrics}");
    }
    pusher.abort();
    admin_task.abort();
    watchers.abort();
}
