//! The seed scenario's Kubernetes objects in one test bed cluster. There is no kubelet:
//! the test bed writes pod addresses and readiness itself, as the kubelet and the endpoint
//! controller would.

use crate::seed::{ClusterSpec, create};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use meshfed_model::labels::TLS_MODE;
use serde_json::{Value, json};

/// One pod of the sample namespace and the Service selecting it.
#[derive(Debug, Clone)]
pub struct SamplePod {
    pub name: String,
    pub app: String,
    pub version: Option<String>,
    pub service_account: String,
    pub ip: String,
    pub port: u16,
}

/// `istio-system`, labelled with the cluster's network, and `sample`.
pub async fn namespaces(c: &kube::Client, spec: &ClusterSpec) -> Result<(), kube::Error> {
    let ns: Api<Namespace> = Api::all(c.clone());
    let system = json!({"metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": spec.network}}});
    create(ns.clone(), system).await?;
    create(ns, json!({"metadata": {"name": "sample"}})).await
}

/// ServiceAccount `name` in `namespace`: what a workload's token and certificate name.
pub async fn service_account(
    c: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    create(
        Api::<ServiceAccount>::namespaced(c.clone(), namespace),
        json!({"metadata": {"name": name}}),
    )
    .await
}

/// The cluster's node, labelled with its region and zone.
pub async fn node(c: &kube::Client, spec: &ClusterSpec) -> Result<(), kube::Error> {
    let labels = json!({"topology.kubernetes.io/region": spec.region, "topology.kubernetes.io/zone": spec.zone});
    create(
        Api::<Node>::all(c.clone()),
        json!({"metadata": {"name": spec.node(), "labels": labels}}),
    )
    .await
}

/// A Service `service` (port `port`, named http) selecting `selector`.
pub async fn service(
    c: &kube::Client,
    service: &str,
    selector: Value,
    port: u16,
) -> Result<(), kube::Error> {
    create(
        Api::<Service>::namespaced(c.clone(), "sample"),
        json!({"metadata": {"name": service},
            "spec": {"ports": [{"name": "http", "port": port}], "selector": selector}}),
    )
    .await
}

/// The pod on `node` and its (ready) endpoint in the slice of every Service in `services`.
pub async fn pod(
    c: &kube::Client,
    p: &SamplePod,
    node: &str,
    services: &[&str],
) -> Result<(), kube::Error> {
    let mut labels = json!({"app": p.app, TLS_MODE: "istio"});
    if let Some(v) = &p.version {
        labels["version"] = json!(v);
    }
    create(Api::<Pod>::namespaced(c.clone(), "sample"), json!({"metadata": {"name": p.name, "labels": labels},
        "spec": {"serviceAccountName": p.service_account, "nodeName": node, "containers": [{"name": p.app, "image": p.app}]},
        "status": {"podIP": p.ip, "phase": "Running"}})).await?;
    for svc in services {
        let slices = Api::<EndpointSlice>::namespaced(c.clone(), "sample");
        create(slices, slice(svc, p, node, true)).await?;
    }
    Ok(())
}

fn slice(service: &str, p: &SamplePod, node: &str, ready: bool) -> Value {
    json!({"metadata": {"name": format!("{service}-{}", p.name), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": p.port}],
        "endpoints": [{"addresses": [p.ip], "conditions": {"ready": ready}, "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": "sample", "name": p.name}}]})
}

/// Flips the pod's endpoints' `ready` condition, as the endpoint controller does when the
/// kubelet's readiness probe changes.
pub async fn set_ready(
    c: &kube::Client,
    p: &SamplePod,
    node: &str,
    services: &[&str],
    ready: bool,
) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(c.clone(), "sample");
    for svc in services {
        let name = format!("{svc}-{}", p.name);
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&slice(svc, p, node, ready)),
        )
        .await?;
    }
    Ok(())
}

/// Creates the DestinationRule in `yaml`, or replaces the one of the same name.
pub async fn apply_destination_rule(c: &kube::Client, yaml: &str) -> Result<(), kube::Error> {
    let mut obj: DynamicObject = serde_yaml::from_str(yaml)
        .map_err(|e| kube::Error::Service(format!("DestinationRule YAML: {e}").into()))?;
    let version = obj
        .types
        .as_ref()
        .and_then(|t| t.api_version.split_once('/').map(|(_, v)| v.to_string()))
        .unwrap_or_else(|| "v1".into());
    let resource = ApiResource {
        group: "networking.istio.io".into(),
        version: version.clone(),
        api_version: format!("networking.istio.io/{version}"),
        kind: "DestinationRule".into(),
        plural: "destinationrules".into(),
    };
    let ns = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "sample".into());
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns, &resource);
    let name = obj.metadata.name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        Some(existing) => {
            obj.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &obj)
                .await
                .map(|_| ())
        }
        None => api.create(&PostParams::default(), &obj).await.map(|_| ()),
    }
}

/// Deletes the remote secret for `cluster` (what `istioctl create-remote-secret | kubectl
/// delete -f -` does).
pub async fn delete_remote_secret(c: &kube::Client, cluster: &str) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(c.clone(), "istio-system");
    api.delete(
        &format!("istio-remote-secret-{cluster}"),
        &DeleteParams::default(),
    )
    .await
    .map(|_| ())
}

/// The `cacerts` Secret (Istio's plug-in CA layout) from `meshfed certs cacerts-secret`.
pub async fn cacerts(c: &kube::Client, yaml: &str) -> Result<(), kube::Error> {
    let secret: Secret = serde_yaml::from_str(yaml)
        .map_err(|e| kube::Error::Service(format!("cacerts YAML: {e}").into()))?;
    let api: Api<Secret> = Api::namespaced(c.clone(), "istio-system");
    api.create(&PostParams::default(), &secret)
        .await
        .map(|_| ())
}
