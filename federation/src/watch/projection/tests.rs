//! The projections keep every field the registry reads: the same object decoded whole and
//! as its projection gives the same registry entry.

use super::*;
use crate::registry::PodInfo;
use crate::watch::Watched;

/// A Pod as a real API server sends it (an Istio-injected pod: labels, annotations, owner
/// references, managedFields, containers, status), with one field the registry reads per line.
fn full_pod(sa: Option<&str>, node: Option<&str>) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "containers": [
            {"name": "app", "image": "helloworld:v1", "ports": [{"containerPort": 5000}],
             "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1"}}},
            {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"]}
        ],
        "volumes": [{"name": "istio-token", "projected": {"sources": []}}],
        "restartPolicy": "Always",
    });
    if let Some(sa) = sa {
        spec["serviceAccountName"] = sa.into();
    }
    if let Some(node) = node {
        spec["nodeName"] = node.into();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "helloworld-v1-abc",
            "namespace": "sample",
            "uid": "0b9f",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-12-05T10:00:00Z",
            "labels": {"app": "helloworld", "version": "v1",
                       "security.istio.io/tlsMode": "istio",
                       "topology.istio.io/network": "network1"},
            "annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "helloworld-v1", "uid": "1", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        },
        "spec": spec,
        "status": {
            "phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                   "image": "helloworld:v1", "imageID": "sha256:x"}]
        }
    })
}

/// What the registry kept of a whole Pod before the projection (the old `Watched for Pod`):
/// its labels, `serviceAccountName` (Kubernetes' `default` when unset) and `nodeName`.
fn from_whole(pod: &Pod) -> ((String, String), PodInfo) {
    let spec = pod.spec.as_ref();
    let info = PodInfo {
        labels: pod.metadata.labels.clone().unwrap_or_default().into(),
        service_account: spec
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default")
            .into(),
        node: spec.and_then(|s| s.node_name.clone()),
    };
    let key = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    (key, info)
}

#[test]
fn a_pod_gives_the_same_registry_entry_whole_and_projected() {
    for (sa, node) in [
        (Some("helloworld"), Some("node-a")),
        (None, Some("node-a")),
        (Some("helloworld"), None),
        (None, None),
    ] {
        let json = full_pod(sa, node).to_string();
        let whole: Pod = serde_json::from_str(&json).expect("a Pod");
        let lite: PodLite = serde_json::from_str(&json).expect("the projection");
        assert_eq!(
            lite.entry(),
            Some(from_whole(&whole)),
            "sa {sa:?} node {node:?}"
        );
        // kube's watcher reads these of every object.
        assert_eq!(lite.metadata.resource_version.as_deref(), Some("4711"));
        assert_eq!(lite.metadata.uid.as_deref(), Some("0b9f"));
        assert!(lite.metadata.managed_fields.is_none());
    }
}

/// kube's watcher lists and watches the projection at the Pod's own URL.
#[test]
fn the_projection_is_watched_at_the_pods_url() {
    assert_eq!(PodLite::url_path(&(), None), Pod::url_path(&(), None));
    assert_eq!(PodLite::api_version(&()), "v1");
    assert_eq!(PodLite::kind(&()), "Pod");
}
