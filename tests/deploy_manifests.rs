//! `deploy/meshfed.yaml` is what users apply: every document must parse as its Kubernetes type,
//! RBAC must grant exactly what the federation reads (and nothing to the gateway or the DNS
//! proxy), every container's arguments must be ones `meshfed` accepts, and admin ports (metrics,
//! debug pages) are scraped through pod annotations, never listed in a Service.

mod common;

use common::MESHFED;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
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
            "networking.istio.io/virtualservices",
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

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

/// The port of the address given to `flag` (every component takes `ADDR` as ip:port).
fn port_of(c: &Container, name: &str, f: &str) -> i32 {
    let args = c.args.clone().unwrap_or_default();
    let addr: std::net::SocketAddr = flag(&args, f)
        .unwrap_or_else(|| panic!("{name}: no {f} in {args:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {f}: {e}"));
    i32::from(addr.port())
}

/// A Service or probe port as a number: named ports are looked up in the container.
fn resolve(port: &IntOrString, c: &Container) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("{}: no port named {name}", c.name)),
    }
}

/// (deployment name, its pod labels, its one container).
fn components(m: &Manifests) -> Vec<(String, BTreeMap<String, String>, &Container)> {
    m.deployments
        .iter()
        .map(|d| {
            let name = d.metadata.name.clone().unwrap_or_default();
            let template = &d.spec.as_ref().unwrap().template;
            let labels = template.metadata.as_ref().unwrap().labels.clone();
            let [c] = &template.spec.as_ref().unwrap().containers[..] else {
                panic!("{name}: one container");
            };
            (name, labels.unwrap_or_default(), c)
        })
        .collect()
}

/// Every Service port that reaches pods with `labels`, as the container port it lands on.
fn exposed(m: &Manifests, labels: &BTreeMap<String, String>, c: &Container) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for svc in &m.services {
        let spec = svc.spec.as_ref().unwrap();
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            out.insert(resolve(&target, c));
            out.insert(p.port);
        }
    }
    out
}

#[test]
fn metrics_are_scraped_by_annotation_and_no_service_exposes_an_admin_port() {
    let m = load();
    let annotations: Vec<_> = m
        .deployments
        .iter()
        .map(|d| {
            let t = d.spec.as_ref().unwrap().template.metadata.as_ref();
            t.and_then(|t| t.annotations.clone()).unwrap_or_default()
        })
        .collect();
    for ((name, labels, c), notes) in components(&m).into_iter().zip(annotations) {
        let (admin, status) = (port_of(c, &name, "--admin"), port_of(c, &name, "--status"));
        assert_ne!(
            admin, status,
            "{name}: the status port must not be the admin port"
        );
        let note = |k: &str| notes.get(k).map(String::as_str);
        assert_eq!(note("prometheus.io/scrape"), Some("true"), "{name}");
        assert_eq!(
            note("prometheus.io/port"),
            Some(admin.to_string().as_str()),
            "{name}"
        );
        assert_eq!(note("prometheus.io/path"), Some("/metrics"), "{name}");
        let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        let probed = probe.map(|h| resolve(&h.port, c));
        assert_eq!(probed, Some(status), "{name}: readiness on the status port");
        let services = exposed(&m, &labels, c);
        assert!(
            !services.contains(&admin),
            "{name}: admin port {admin} in a Service: {services:?}"
        );
    }
}

fn service_ports(m: &Manifests, name: &str) -> BTreeSet<i32> {
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("Service {name}"));
    let spec = svc.spec.as_ref().unwrap();
    spec.ports.iter().flatten().map(|p| p.port).collect()
}

#[test]
fn the_load_balancer_has_status_and_tls_and_the_federation_service_the_secure_port_only() {
    let m = load();
    assert_eq!(
        service_ports(&m, "istio-eastwestgateway"),
        BTreeSet::from([15021, 15443])
    );
    assert_eq!(
        service_ports(&m, "meshfed-federation"),
        BTreeSet::from([15012])
    );
    assert_eq!(service_ports(&m, "meshfed-dns"), BTreeSet::from([53]));
}

/// Issue 18: no plaintext xDS; the gateway and the DNS proxy reach the federation's secure
/// port as Istio's proxies reach istiod's 15012: TLS checked against the root (only
/// `root-cert.pem` of `cacerts` mounted, never the CA key) and a projected ServiceAccount
/// token for audience `istio-ca`; the federation may create TokenReviews (auth-delegator).
#[test]
fn clients_use_the_secure_port_with_projected_tokens_and_no_plaintext_xds() {
    let m = load();
    for d in &m.deployments {
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        for c in &pod.containers {
            let args = c.args.clone().unwrap_or_default();
            assert!(
                !args
                    .iter()
                    .any(|a| a.contains("15010") || a == "--xds-listen"),
                "{args:?}"
            );
            let Some(xds) = flag(&args, "--xds") else {
                continue;
            };
            assert!(xds.ends_with(".svc:15012"), "{xds}");
            let mount_of = |path: &str| {
                let m = c
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| path.starts_with(&m.mount_path))
                    .unwrap_or_else(|| panic!("{path} is not mounted"));
                pod.volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == m.name)
                    .unwrap()
                    .clone()
            };
            let token = mount_of(flag(&args, "--xds-token-file").unwrap());
            let source = &token.projected.unwrap().sources.unwrap()[0];
            let sat = source.service_account_token.as_ref().unwrap();
            assert_eq!(sat.audience.as_deref(), Some("istio-ca"));
            let root = mount_of(flag(&args, "--xds-ca-root").unwrap())
                .secret
                .unwrap();
            assert_eq!(root.secret_name.as_deref(), Some("cacerts"));
            let keys: Vec<_> = root.items.unwrap().into_iter().map(|i| i.key).collect();
            assert_eq!(keys, ["root-cert.pem"], "only the root, never ca-key.pem");
        }
    }
    let delegator = m
        .cluster_bindings
        .iter()
        .find(|b| b.role_ref.name == "system:auth-delegator");
    assert!(delegator.is_some(), "the CA needs to create TokenReviews");
}
