//! `deploy/meshfed.yaml` is what users apply: every document must parse as its Kubernetes type,
//! RBAC must grant exactly what the federation reads (and nothing to the gateway or the DNS
//! proxy), and every container's arguments must be ones `meshfed` accepts.

mod common;

use common::MESHFED;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::process::Command;

#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
}

fn load() -> Manifests {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/meshfed.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut m = Manifests::default();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Namespace" => m.namespaces.push(serde_yaml::from_value(v).unwrap()),
            "ServiceAccount" => m.accounts.push(serde_yaml::from_value(v).unwrap()),
            "ClusterRole" => m.cluster_roles.push(serde_yaml::from_value(v).unwrap()),
            "ClusterRoleBinding" => m.cluster_bindings.push(serde_yaml::from_value(v).unwrap()),
            "Role" => m.roles.push(serde_yaml::from_value(v).unwrap()),
            "RoleBinding" => m.bindings.push(serde_yaml::from_value(v).unwrap()),
            "Deployment" => m.deployments.push(serde_yaml::from_value(v).unwrap()),
            "Service" => m.services.push(serde_yaml::from_value(v).unwrap()),
            other => panic!("unexpected kind {other:?} in {path}"),
        }
    }
    m
}

/// (api group, resource, verb) for every rule.
fn grants<'a>(
    rules: impl Iterator<Item = &'a k8s_openapi::api::rbac::v1::PolicyRule>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert(format!("{g}/{res}/{v}"));
                }
            }
        }
    }
    out
}

fn read(items: &[&str]) -> BTreeSet<String> {
    items
        .iter()
        .flat_map(|r| ["get", "list", "watch"].map(|v| format!("{r}/{v}")))
        .collect()
}

#[test]
fn rbac_grants_exactly_what_the_federation_reads() {
    let m = load();
    let [cr] = &m.cluster_roles[..] else {
        panic!("one ClusterRole");
    };
    assert_eq!(
        grants(cr.rules.iter().flatten()),
        read(&[
            "/namespaces",
            "/services",
            "/pods",
            "/nodes",
            "discovery.k8s.io/endpointslices",
            "networking.istio.io/destinationrules",
        ])
    );
    let [role] = &m.roles[..] else {
        panic!("one Role");
    };
    assert_eq!(role.metadata.namespace.as_deref(), Some("istio-system"));
    assert_eq!(grants(role.rules.iter().flatten()), read(&["/secrets"]));
    let subjects = m
        .cluster_bindings
        .iter()
        .flat_map(|b| b.subjects.iter().flatten())
        .chain(m.bindings.iter().flat_map(|b| b.subjects.iter().flatten()));
    for s in subjects {
        assert_eq!(s.name, "meshfed-federation", "only the federation is bound");
    }
    // The gateway and the DNS proxy talk to no API server: no token mounted.
    for a in &m.accounts {
        let name = a.metadata.name.as_deref().unwrap_or_default();
        if name != "meshfed-federation" {
            assert_eq!(a.automount_service_account_token, Some(false), "{name}");
        }
    }
}

#[test]
fn the_gateway_service_is_what_remote_sidecars_dial() {
    let m = load();
    let gw = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("istio-eastwestgateway"))
        .unwrap();
    let spec = gw.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert!(spec.ports.iter().flatten().any(|p| p.port == 15443));
    let net = gw
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .get("topology.istio.io/network");
    assert_eq!(net.map(String::as_str), Some("network1"));
    let ns = &m.namespaces[0];
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("topology.istio.io/network"),
        net
    );
}

#[test]
fn every_container_runs_as_non_root_with_arguments_meshfed_accepts() {
    let m = load();
    assert_eq!(m.deployments.len(), 3);
    for d in &m.deployments {
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        for c in &pod.containers {
            let args = c.args.clone().unwrap_or_default();
            // clap rejects an unknown flag or a bad value before it would print help.
            let out = Command::new(MESHFED)
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
            assert_eq!(
                probe.and_then(|h| h.path.as_deref()),
                Some("/healthz/ready")
            );
        }
    }
}
