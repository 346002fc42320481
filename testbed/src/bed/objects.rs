//! The seed scenario's Kubernetes objects in one test bed cluster. There is no kubelet:
//! the test bed writes pod addresses and readiness itself, as the kubelet and the endpoint
//! controller would.

use crate::seed::{ClusterSpec, create};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use meshfed_model::labels::TLS_MODE;
use serde::Deserialize;
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

/// The `networking.istio.io` kinds the test bed's API server serves, with their plurals.
const ISTIO_KINDS: [(&str, &str); 4] = [
    ("DestinationRule", "destinationrules"),
    ("VirtualService", "virtualservices"),
    ("ServiceEntry", "serviceentries"),
    ("Gateway", "gateways"),
];

fn yaml_error(what: impl std::fmt::Display) -> kube::Error {
    kube::Error::Service(format!("Istio YAML: {what}").into())
}

/// The API resource and namespace of an Istio object: its `kind` and version as the object
/// says, in `sample` when it names no namespace.
fn istio_resource(obj: &DynamicObject) -> Result<(ApiResource, String), kube::Error> {
    let types = obj
        .types
        .as_ref()
        .ok_or_else(|| yaml_error("no apiVersion and kind"))?;
    // A bare version (`v1`) is the core group.
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", &types.api_version));
    if group != "networking.istio.io" {
        return Err(yaml_error(format!(
            "{} is not networking.istio.io",
            types.api_version
        )));
    }
    let plural = ISTIO_KINDS
        .iter()
        .find(|(k, _)| *k == types.kind)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            yaml_error(format!(
                "kind {:?} is not one the test bed serves",
                types.kind
            ))
        })?;
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: types.kind.clone(),
        plural: plural.into(),
    };
    let ns = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "sample".into());
    Ok((resource, ns))
}

/// The objects of a (multi-document) YAML text; empty documents are skipped, as kubectl does.
fn istio_objects(yaml: &str) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).map_err(yaml_error)?;
        if !value.is_null() {
            out.push(serde_yaml::from_value(value).map_err(yaml_error)?);
        }
    }
    Ok(out)
}

/// `kubectl apply -f` for Istio networking objects (DestinationRule, VirtualService,
/// ServiceEntry, Gateway): each object of `yaml` is created, or replaces the one of the same
/// name.
pub async fn apply_istio(c: &kube::Client, yaml: &str) -> Result<(), kube::Error> {
    for mut obj in istio_objects(yaml)? {
        let (resource, ns) = istio_resource(&obj)?;
        let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns, &resource);
        let name = obj.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await? {
            Some(existing) => {
                obj.metadata.resource_version = existing.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &obj).await?;
            }
            None => {
                api.create(&PostParams::default(), &obj).await?;
            }
        }
    }
    Ok(())
}

/// `kubectl delete --ignore-not-found -f` for the Istio networking objects of `yaml`.
pub async fn delete_istio(c: &kube::Client, yaml: &str) -> Result<(), kube::Error> {
    for obj in istio_objects(yaml)? {
        let (resource, ns) = istio_resource(&obj)?;
        let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns, &resource);
        let name = obj.metadata.name.clone().unwrap_or_default();
        if api.get_opt(&name).await?.is_some() {
            api.delete(&name, &DeleteParams::default()).await?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// As `kubectl apply -f` reads a file: every document of a multi-document YAML (empty ones
    /// skipped), each at its own kind's plural and version, in its namespace (`sample` when
    /// it names none); kinds outside `networking.istio.io`, or ones the test bed does not
    /// serve, are refused before anything is sent.
    #[test]
    fn istio_objects_map_to_their_resources() {
        let yaml = "# a comment\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\n\
metadata: {name: helloworld}\nspec: {hosts: [helloworld]}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: helloworld, namespace: other}\n\
spec: {host: helloworld}\n";
        let objs = istio_objects(yaml).unwrap();
        let seen: Vec<(String, String, String, String)> = objs
            .iter()
            .map(|o| {
                let (r, ns) = istio_resource(o).unwrap();
                (r.kind, r.plural, r.api_version, ns)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "VirtualService".to_string(),
                    "virtualservices".to_string(),
                    "networking.istio.io/v1alpha3".to_string(),
                    "sample".to_string()
                ),
                (
                    "DestinationRule".to_string(),
                    "destinationrules".to_string(),
                    "networking.istio.io/v1".to_string(),
                    "other".to_string()
                ),
            ]
        );
        assert_eq!(objs[0].data["spec"]["hosts"][0], "helloworld");
        let refused = |y: &str| istio_objects(y).and_then(|o| istio_resource(&o[0]).map(|_| ()));
        assert!(refused("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n").is_err());
        assert!(
            refused("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: x}\n")
                .is_err()
        );
        assert!(istio_objects("kind: [").is_err());
    }
}
