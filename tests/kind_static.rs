//! The kind test bed (`kind/`) needs Docker, which this machine does not have, so it is checked
//! statically: every script passes shellcheck; every manifest parses as its Kubernetes type (and
//! loses no field doing so), or, for kind's and MetalLB's own types, has the fields they
//! require; the Envoy sidecars' bootstrap, rendered exactly as up.sh and the sidecar's own start
//! command render it, is one Envoy's schema takes, a node meshfed's xDS server takes for a
//! sidecar of its own namespace, reaches the federation's secure port over TLS with the agent's
//! SDS credentials, and routes helloworld to meshfed's CDS cluster; the agent beside it gets
//! its certificate from the federation's CA with the pod's own istio-ca token (issue 18); and
//! up.sh's substitution of deploy/meshfed.yaml changes every line marked `# CLUSTER` and
//! nothing else. The functions checked are the ones the scripts run (kind/lib.sh, sourced by
//! bash).

#[path = "common/envoy_schema.rs"]
mod envoy_schema;
#[path = "kind_static/xds.rs"]
mod xds;

use envoy_schema::Schema;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount, Volume,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshfed_federation::ca::DEFAULT_TOKEN_AUDIENCE;
use meshfed_federation::ca::serving;
use meshfed_federation::xds::node::{Generator, Interception, Proxy, ProxyKind};
use meshfed_model::{ClusterName, Locality};
use meshfed_proto::ads::{SDS_CLUSTER, SDS_ROOT_SECRET, SDS_WORKLOAD_SECRET};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const HELLOWORLD: &str = "helloworld.sample.svc.cluster.local";
/// What the sidecars fill in themselves when they start (kind/lib.sh's POD_PLACEHOLDERS).
const POD_PLACEHOLDERS: [&str; 3] = ["POD_IP", "POD_NAME", "APP"];

fn kind_dir() -> PathBuf {
    Path::new(ROOT).join("kind")
}

/// The files of `dir` ending in `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `script` in bash with kind/lib.sh sourced, as the kind scripts run it.
fn lib(script: &str) -> Output {
    let work = tempfile::tempdir().unwrap();
    Command::new("bash")
        .current_dir(ROOT)
        .env("MESHFED_KIND_WORK", work.path())
        .arg("-c")
        .arg(format!("source kind/lib.sh\n{script}"))
        .output()
        .expect("bash is required")
}

/// kind/manifests/`name` as up.sh renders it for cluster `i` (its `cluster_vars`, plus the
/// MetalLB range it computes).
fn rendered(name: &str, i: u32) -> String {
    ok(
        lib(&format!(
            "mapfile -t vars < <(cluster_vars {i})\n\
             render kind/manifests/{name} \"${{vars[@]}}\" LB_RANGE=172.18.255.10-172.18.255.19"
        )),
        name,
    )
}

/// Every `${NAME}` in `text`.
fn placeholders(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// `typed` written back must be `original`: a misspelt or misplaced field, which k8s-openapi
/// would skip, shows up as a difference.
fn round_trip<T: DeserializeOwned + serde::Serialize>(original: &Value, what: &str) -> T {
    let typed: T = serde_yaml::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{what}: {e}\n{original:?}"));
    let back = serde_yaml::to_value(&typed).unwrap();
    assert_eq!(&back, original, "{what}: fields lost or changed by parsing");
    typed
}

#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    crds: Vec<CustomResourceDefinition>,
    kind_clusters: Vec<Value>,
    pools: Vec<String>,
    advertised_pools: Vec<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str], what: &str) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what}: {} must be a non-empty string", path.join(".")))
}

fn parse(text: &str, what: &str, into: &mut Objects) {
    for v in documents(text) {
        let api = str_at(&v, &["apiVersion"], what).to_string();
        let kind = str_at(&v, &["kind"], what).to_string();
        let what = &format!("{what}: {api} {kind}");
        match (api.as_str(), kind.as_str()) {
            ("v1", "Namespace") => into.namespaces.push(round_trip(&v, what)),
            ("v1", "ServiceAccount") => into.accounts.push(round_trip(&v, what)),
            ("v1", "Service") => into.services.push(round_trip(&v, what)),
            ("v1", "ConfigMap") => into.config_maps.push(round_trip(&v, what)),
            ("apps/v1", "Deployment") => into.deployments.push(round_trip(&v, what)),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                into.crds.push(round_trip(&v, what))
            }
            ("kind.x-k8s.io/v1alpha4", "Cluster") => {
                str_at(&v, &["name"], what);
                str_at(&v, &["networking", "podSubnet"], what);
                str_at(&v, &["networking", "serviceSubnet"], what);
                let nodes = v["nodes"].as_sequence().expect("kind Cluster: nodes");
                assert!(!nodes.is_empty(), "{what}: no nodes");
                assert!(
                    nodes.iter().any(|n| n["role"] == "control-plane"),
                    "{what}: no control-plane node"
                );
                for n in nodes {
                    str_at(n, &["labels", "topology.kubernetes.io/region"], what);
                    str_at(n, &["labels", "topology.kubernetes.io/zone"], what);
                }
                into.kind_clusters.push(v.clone());
            }
            ("metallb.io/v1beta1", "IPAddressPool") => {
                assert_eq!(
                    str_at(&v, &["metadata", "namespace"], what),
                    "metallb-system"
                );
                let addresses = v["spec"]["addresses"].as_sequence().expect("addresses");
                assert!(!addresses.is_empty(), "{what}: no addresses");
                for a in addresses {
                    assert!(a.as_str().is_some_and(|s| !s.is_empty()), "{what}: {a:?}");
                }
                into.pools
                    .push(str_at(&v, &["metadata", "name"], what).to_string());
            }
            ("metallb.io/v1beta1", "L2Advertisement") => {
                assert_eq!(
                    str_at(&v, &["metadata", "namespace"], what),
                    "metallb-system"
                );
                let pools = v["spec"]["ipAddressPools"].as_sequence().expect("pools");
                assert!(!pools.is_empty(), "{what}: advertises no pool");
                into.advertised_pools
                    .extend(pools.iter().map(|p| p.as_str().unwrap().to_string()));
            }
            _ => panic!("{what}: a kind this test does not know; teach it"),
        }
    }
}

fn all_manifests(render_for: Option<u32>) -> Objects {
    let mut objects = Objects::default();
    let paths = files(&kind_dir().join("manifests"), "yaml");
    assert!(paths.len() >= 7, "kind/manifests: {paths:?}");
    for p in paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        let text = match render_for {
            Some(i) => rendered(name, i),
            None => read(&p),
        };
        parse(&text, name, &mut objects);
    }
    objects
}

fn deployment<'a>(o: &'a Objects, name: &str) -> &'a Deployment {
    o.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn service<'a>(o: &'a Objects, name: &str) -> &'a Service {
    o.services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn pod_labels(d: &Deployment) -> &std::collections::BTreeMap<String, String> {
    let template = &d.spec.as_ref().unwrap().template;
    template.metadata.as_ref().unwrap().labels.as_ref().unwrap()
}

fn containers(d: &Deployment) -> &[Container] {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
}

fn container<'a>(d: &'a Deployment, name: &str) -> &'a Container {
    containers(d)
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {:?}", d.metadata.name))
}

/// The bootstrap template (kind/manifests/envoy-bootstrap.yaml, ConfigMap key envoy.yaml).
fn bootstrap_of(o: &Objects) -> String {
    let cm = o
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("envoy-bootstrap"))
        .expect("ConfigMap envoy-bootstrap");
    cm.data.as_ref().unwrap()["envoy.yaml"].clone()
}

/// The federation's secure port (CA and xDS, TLS) as deploy/meshfed.yaml exposes it: the one
/// Service port that leads to the federation container's `--secure-listen` port.
struct SecurePort {
    service: String,
    namespace: String,
    port: i32,
}

impl SecurePort {
    /// The name the federation's certificate carries for it (and the agent's CA address uses).
    fn svc(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

fn secure_port() -> SecurePort {
    let text = read(&Path::new(ROOT).join("deploy/meshfed.yaml"));
    let (mut deployments, mut services) = (Vec::<Deployment>::new(), Vec::<Service>::new());
    for v in documents(&text) {
        match v["kind"].as_str() {
            Some("Deployment") => deployments.push(serde_yaml::from_value(v).unwrap()),
            Some("Service") => services.push(serde_yaml::from_value(v).unwrap()),
            _ => {}
        }
    }
    let federation = deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("meshfed-federation"))
        .expect("the federation's Deployment");
    let c = container(federation, "federation");
    let args = c.args.clone().unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| a == "--secure-listen")
        .map(|i| args[i + 1].clone())
        .expect("the federation's --secure-listen");
    let target: i32 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let labels = pod_labels(federation);
    let mut found = Vec::new();
    for s in &services {
        let spec = s.spec.as_ref().unwrap();
        let selected = spec
            .selector
            .as_ref()
            .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
        for p in spec.ports.iter().flatten().filter(|_| selected) {
            let to = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name))
                    .map_or(-1, |cp| cp.container_port),
            };
            if to == target {
                found.push(SecurePort {
                    service: s.metadata.name.clone().unwrap(),
                    namespace: s.metadata.namespace.clone().unwrap(),
                    port: p.port,
                });
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one Service port for the secure port {target}"
    );
    found.remove(0)
}

/// The pod's volume `name`.
fn volume<'a>(pod: &'a PodSpec, name: &str) -> &'a Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mounted at `dir` in `c`.
fn mounted_at(c: &Container, dir: &str) -> String {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir);
    m.map(|m| m.name.clone())
        .unwrap_or_else(|| panic!("{}: nothing at {dir}", c.name))
}

/// The static cluster `name` of a bootstrap.
fn static_cluster<'a>(b: &'a Value, name: &str) -> &'a Value {
    b["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no static cluster {name}"))
}

#[test]
fn every_script_is_shellcheck_clean_strict_bash() {
    let scripts = files(&kind_dir(), "sh");
    let names: BTreeSet<String> = scripts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in ["up.sh", "verify.sh", "down.sh"] {
        assert!(names.contains(needed), "kind/{needed} is missing");
    }
    assert!(
        !kind_dir().join(".shellcheckrc").exists(),
        "no shellcheckrc: disables are per line, with a reason"
    );
    for s in &scripts {
        let text = read(s);
        assert!(
            text.starts_with("#!/usr/bin/env bash\n"),
            "{}: shebang",
            s.display()
        );
        assert!(
            text.lines().any(|l| l == "set -euo pipefail"),
            "{}: set -euo pipefail",
            s.display()
        );
        // Only targeted disables: named SC codes, each with a reason after them.
        for line in text.lines().filter(|l| l.contains("shellcheck disable=")) {
            let spec = line.split("disable=").nth(1).unwrap();
            let (codes, reason) = spec.split_once(" # ").unwrap_or((spec, ""));
            assert!(
                !reason.trim().is_empty(),
                "{}: a disable needs a reason: {line}",
                s.display()
            );
            for code in codes.split(',') {
                assert!(
                    code.starts_with("SC") && code[2..].chars().all(|c| c.is_ascii_digit()),
                    "{}: blanket or malformed disable: {line}",
                    s.display()
                );
            }
        }
    }
    for runnable in ["up.sh", "verify.sh", "down.sh"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kind_dir().join(runnable))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "kind/{runnable} is not executable");
    }
    // Every severity, sourced files followed (lib.sh), from another directory than kind/.
    let out = Command::new("shellcheck")
        .arg("--external-sources")
        .arg("--severity=style")
        .args(&scripts)
        .current_dir(ROOT)
        .output()
        .expect("shellcheck is required (apt-get install shellcheck; scripts/test.sh installs it)");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_manifest_parses_as_its_type_before_and_after_rendering() {
    for render_for in [None, Some(1), Some(2)] {
        let o = all_manifests(render_for);
        assert_eq!(o.kind_clusters.len(), 1);
        assert!(!o.pools.is_empty());
        for p in &o.advertised_pools {
            assert!(o.pools.contains(p), "L2Advertisement of unknown pool {p}");
        }
        assert!(
            o.namespaces
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some("sample"))
        );
        let accounts: BTreeSet<_> = o
            .accounts
            .iter()
            .filter_map(|a| a.metadata.name.clone())
            .collect();
        for d in &o.deployments {
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let sa = pod.service_account_name.clone().unwrap_or_default();
            assert!(
                accounts.contains(&sa),
                "{:?}: account {sa}",
                d.metadata.name
            );
            // Pinned images only (meshfed's is the one up.sh builds and loads).
            for c in &pod.containers {
                let image = c.image.as_deref().unwrap();
                if render_for.is_none() && image == "${MESHFED_IMAGE}" {
                    continue;
                }
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                    "{image} is not pinned"
                );
            }
        }
    }
    // Rendered for cluster 2: the values up.sh gives cluster 2, and nothing left to fill in
    // but what the sidecars fill in at start.
    let o = all_manifests(Some(2));
    let kc = &o.kind_clusters[0];
    assert_eq!(kc["name"], "cluster2");
    assert_eq!(
        kc["nodes"][0]["labels"]["topology.kubernetes.io/region"],
        "region2"
    );
    assert_eq!(
        kc["nodes"][0]["labels"]["topology.kubernetes.io/zone"],
        "zone2"
    );
    let c1 = &all_manifests(Some(1)).kind_clusters[0];
    for key in ["podSubnet", "serviceSubnet"] {
        assert_ne!(
            c1["networking"][key], kc["networking"][key],
            "{key} must differ"
        );
    }
    deployment(&o, "helloworld-v2");
    deployment(&o, "sleep");
    for name in files(&kind_dir().join("manifests"), "yaml") {
        let name = name.file_name().unwrap().to_str().unwrap();
        let left = placeholders(&rendered(name, 2));
        for p in &left {
            assert!(
                POD_PLACEHOLDERS.contains(&p.as_str()),
                "{name}: ${{{p}}} left"
            );
        }
    }
    // The samples verify.sh applies (the seed's DestinationRules, the VirtualServices) are
    // served by the bed's CRDs, which the federation watches, in the same versions.
    let kinds: Vec<&str> = o.crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(kinds, ["DestinationRule", "VirtualService"]);
    let served = |crd: &CustomResourceDefinition| -> BTreeSet<String> {
        crd.spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| format!("networking.istio.io/{}", v.name))
            .collect()
    };
    for crd in &o.crds {
        assert_eq!(crd.spec.group, "networking.istio.io");
        assert!(
            served(crd).contains("networking.istio.io/v1"),
            "meshfed watches v1"
        );
    }
    let dr_served = served(&o.crds[0]);
    assert_eq!(dr_served, served(&o.crds[1]));
    for dr in files(&Path::new(ROOT).join("samples"), "yaml") {
        for v in documents(&read(&dr)) {
            let kind = v["kind"].as_str().unwrap_or("");
            assert!(kinds.contains(&kind), "{}: no CRD for {kind}", dr.display());
            let api = v["apiVersion"].as_str().unwrap();
            assert!(
                dr_served.contains(api),
                "{}: {api} not served",
                dr.display()
            );
        }
    }
    // A manifest placeholder with no value makes render fail (up.sh stops there).
    let out = lib("render kind/manifests/metallb-pool.yaml CLUSTER=cluster1");
    assert!(!out.status.success(), "render without LB_RANGE must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("LB_RANGE"));
}

#[test]
fn the_sidecars_reach_meshfed_and_route_helloworld_to_its_cds_cluster() {
    let raw = all_manifests(None);
    // The template itself is YAML (placeholders only inside strings).
    let b: Value = serde_yaml::from_str(&bootstrap_of(&raw)).unwrap();
    let id = str_at(&b, &["node", "id"], "node");
    assert_eq!(
        id.split('~').collect::<Vec<_>>(),
        [
            "sidecar",
            "${POD_IP}",
            "${POD_NAME}.sample",
            "sample.svc.cluster.local"
        ],
        "Istio's sidecar node id"
    );
    for k in ["CLUSTER_ID", "NETWORK", "NAMESPACE"] {
        str_at(&b, &["node", "metadata", k], "node metadata");
    }
    str_at(&b, &["node", "locality", "region"], "locality");
    str_at(&b, &["node", "locality", "zone"], "locality");

    let ads = &b["dynamic_resources"]["ads_config"];
    assert_eq!(ads["api_type"], "DELTA_GRPC");
    assert_eq!(ads["transport_api_version"], "V3");
    assert_eq!(
        ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
        "xds-grpc"
    );
    // Listeners and clusters come from meshfed over ADS (RDS follows the listeners).
    for config in ["cds_config", "lds_config"] {
        assert!(
            b["dynamic_resources"][config]["ads"].is_mapping(),
            "{config}"
        );
        assert_eq!(b["dynamic_resources"][config]["resource_api_version"], "V3");
    }
    assert!(
        b["static_resources"]["listeners"].is_null(),
        "no static listeners: meshfed serves them"
    );
    let statics: Vec<&str> = b["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        statics,
        [SDS_CLUSTER, "xds-grpc"],
        "only SDS and xDS are static"
    );
    // Istio's agent metadata for a pod without capture.
    assert_eq!(
        str_at(&b, &["node", "metadata", "HTTP_PROXY_PORT"], "node"),
        "15001"
    );
    assert_eq!(
        str_at(&b, &["node", "metadata", "INTERCEPTION_MODE"], "node"),
        "NONE"
    );
    assert_eq!(
        str_at(&b, &["node", "metadata", "LABELS", "app"], "node"),
        "${APP}"
    );

    let cluster = |name: &str| static_cluster(&b, name);
    // The federation's secure port, by the cluster-local name Envoy resolves (STRICT_DNS).
    let secure = secure_port();
    let xds = &cluster("xds-grpc")["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(
        xds["address"].as_str().unwrap(),
        format!("{}.cluster.local", secure.svc())
    );
    assert_eq!(xds["port_value"], secure.port);
    for name in ["xds-grpc", SDS_CLUSTER] {
        let opts = &cluster(name)["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(
            opts["explicit_http_config"]["http2_protocol_options"].is_mapping(),
            "{name} speaks gRPC: HTTP/2"
        );
    }
    // meshfed's CDS points Istio mTLS at this cluster; without it Envoy refuses those clusters.
    cluster(SDS_CLUSTER);
    xds_grpc_is_tls_with_the_agents_credentials(&b, &secure);

    // The outbound route and the inbound listener are meshfed's: see
    // meshfed_serves_the_sidecars_listeners_routes_and_clusters.
    let expected = ClusterName::new(5000, None, HELLOWORLD).cluster();
    assert_eq!(
        expected,
        "outbound|5000||helloworld.sample.svc.cluster.local"
    );

    // Rendered by up.sh for cluster 1, then by the sidecar's own start command: a node
    // meshfed's xDS server takes for a sidecar of cluster1/network1 in region1/zone1.
    let o = all_manifests(Some(1));
    let template = bootstrap_of(&o);
    for name in ["sleep", "helloworld-v1"] {
        let d = deployment(&o, name);
        let app = pod_labels(d)["app"].clone();
        let final_yaml = start_sidecar(d, &template, "10.11.0.7", "pod-0");
        assert!(
            placeholders(&final_yaml).is_empty(),
            "{name}: unfilled placeholders"
        );
        let b: Value = serde_yaml::from_str(&final_yaml).unwrap();
        assert_eq!(
            str_at(&b, &["node", "id"], name),
            "sidecar~10.11.0.7~pod-0.sample~sample.svc.cluster.local"
        );
        assert_eq!(
            str_at(&b, &["node", "cluster"], name),
            format!("{app}.sample")
        );
        let p = Proxy::from_node(&node_of(&b, name)).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.generator, Generator::Envoy);
        assert_eq!(p.ip, "10.11.0.7");
        assert_eq!(p.namespace, "sample");
        // The federation serves a node only the namespace of whoever called: Envoy calls with
        // the pod's certificate, whose identity is the pod's own namespace.
        assert_eq!(d.metadata.namespace.as_deref(), Some(p.namespace.as_str()));
        assert_eq!(p.cluster_id, "cluster1");
        assert_eq!(p.network, "network1");
        assert_eq!(p.locality, Locality::new("region1", "zone1", ""));
        assert_eq!(p.http_proxy_port, Some(15001));
        assert_eq!(p.interception, Interception::None);
        assert_eq!(p.labels.get("app"), Some(&app));
    }
}

/// The node a sidecar started with the bootstrap `b` sends, as Envoy sends it: the id, the
/// locality and the metadata (strings, and `LABELS` as a struct).
fn node_of(b: &Value, what: &str) -> envoy_types::pb::envoy::config::core::v3::Node {
    use envoy_types::pb::google::protobuf::{Struct, Value as Pb, value};
    let meta = |k: &str| str_at(b, &["node", "metadata", k], what).to_string();
    let mut node = meshfed_proto::ads::Identity {
        kind: "sidecar".into(),
        cluster_id: meta("CLUSTER_ID"),
        network: meta("NETWORK"),
        namespace: meta("NAMESPACE"),
        ..Default::default()
    }
    .node();
    node.id = str_at(b, &["node", "id"], what).to_string();
    let loc = node.locality.as_mut().unwrap();
    loc.region = str_at(b, &["node", "locality", "region"], what).to_string();
    loc.zone = str_at(b, &["node", "locality", "zone"], what).to_string();
    let s = |v: &str| Pb {
        kind: Some(value::Kind::StringValue(v.to_string())),
    };
    let fields = &mut node.metadata.as_mut().unwrap().fields;
    for k in ["HTTP_PROXY_PORT", "INTERCEPTION_MODE"] {
        fields.insert(k.into(), s(&meta(k)));
    }
    let labels = b["node"]["metadata"]["LABELS"]
        .as_mapping()
        .expect("LABELS");
    let labels = labels
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), s(v.as_str().unwrap())))
        .collect();
    fields.insert(
        "LABELS".into(),
        Pb {
            kind: Some(value::Kind::StructValue(Struct { fields: labels })),
        },
    );
    node
}

/// xds-grpc reaches the federation's secure port as Envoy reaches a peer: TLS (Envoy's
/// UpstreamTlsContext) with SNI and a DNS SAN match that are names the federation's serving
/// certificate carries (it has no SPIFFE id), ALPN h2 for gRPC, the root (ROOTCA) to check it
/// and the workload certificate (default) to authenticate with, both from sds-grpc, which comes
/// first among the static clusters.
fn xds_grpc_is_tls_with_the_agents_credentials(b: &Value, secure: &SecurePort) {
    let xds = static_cluster(b, "xds-grpc");
    let socket = &xds["transport_socket"];
    assert_eq!(socket["name"], "envoy.transport_sockets.tls");
    let tls = &socket["typed_config"];
    assert_eq!(
        tls["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    let names = serving::names(&secure.namespace);
    let sni = str_at(tls, &["sni"], "xds-grpc");
    assert_eq!(sni, secure.svc());
    assert!(names.iter().any(|n| n == sni), "{sni} not in {names:?}");
    let common = &tls["common_tls_context"];
    assert_eq!(common["alpn_protocols"], Value::from(vec!["h2"]));
    let certs = common["tls_certificate_sds_secret_configs"]
        .as_sequence()
        .unwrap();
    let certs: Vec<&str> = certs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(certs, [SDS_WORKLOAD_SECRET], "Envoy's workload certificate");
    let validation = &common["combined_validation_context"];
    assert_eq!(
        validation["validation_context_sds_secret_config"]["name"],
        SDS_ROOT_SECRET
    );
    let sans = validation["default_validation_context"]["match_typed_subject_alt_names"]
        .as_sequence()
        .expect("the federation's name is checked");
    for san in sans {
        assert_eq!(
            san["san_type"], "DNS",
            "the serving certificate has DNS SANs only"
        );
        let exact = str_at(san, &["matcher", "exact"], "SAN matcher");
        assert!(names.iter().any(|n| n == exact), "{exact} not in {names:?}");
    }
    assert!(!sans.is_empty());
    // Where they come from: the agent's SDS (secret_configs checks the source).
    let mut asked = BTreeSet::new();
    secret_configs(tls, &mut asked);
    assert_eq!(asked.len(), 2);
    let order: Vec<&str> = b["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let at = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(at(SDS_CLUSTER) < at("xds-grpc"), "sds-grpc before xds-grpc");
}

/// The bootstrap, as each sidecar starts with it, is one Envoy's loader takes: every key a
/// field of its message in Envoy's API (from the descriptors envoy-types ships), every enum a
/// known value, every typed_config a known message, durations and scalars of the right JSON
/// kind. A misspelt key in the TLS context or a wrong SAN type is caught (the check is real).
#[test]
fn the_bootstrap_is_one_envoys_schema_takes() {
    const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";
    let schema = Schema::envoy();
    assert!(schema.has_message(BOOTSTRAP));
    let o = all_manifests(Some(1));
    let template = bootstrap_of(&o);
    let mut rendered = None;
    for name in ["sleep", "helloworld-v1"] {
        let yaml = start_sidecar(deployment(&o, name), &template, "10.11.0.7", "pod-0");
        let b: Value = serde_yaml::from_str(&yaml).unwrap();
        let errors = schema.check(BOOTSTRAP, &b);
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
        rendered = Some(b);
    }

    let b = rendered.unwrap();
    let clusters = b["static_resources"]["clusters"].as_sequence().unwrap();
    let at = clusters
        .iter()
        .position(|c| c["name"] == "xds-grpc")
        .unwrap();
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut b = b.clone();
        edit(&mut b["static_resources"]["clusters"][at]["transport_socket"]["typed_config"]);
        schema.check(BOOTSTRAP, &b)
    };
    let misspelt = broken(&|tls| {
        let sni = tls.as_mapping_mut().unwrap().remove("sni").unwrap();
        tls["server_name"] = sni;
    });
    assert!(
        misspelt.len() == 1
            && misspelt[0].contains("UpstreamTlsContext has no field \"server_name\""),
        "{misspelt:?}"
    );
    let san = broken(&|tls| {
        tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
            [0]["san_type"] = "DNS_NAME".into();
    });
    assert!(
        san.len() == 1 && san[0].contains("SubjectAltNameMatcher.SanType"),
        "{san:?}"
    );
    let unknown = broken(&|tls| {
        tls["@type"] =
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTls".into();
    });
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    let duration = {
        let mut b = b.clone();
        b["static_resources"]["clusters"][at]["connect_timeout"] = 5.into();
        schema.check(BOOTSTRAP, &b)
    };
    assert!(
        duration.len() == 1 && duration[0].contains("Duration"),
        "{duration:?}"
    );
}

#[test]
fn every_sidecar_gets_its_workload_certificate_from_meshfed_agent_over_sds() {
    let raw = all_manifests(None);
    let b: Value = serde_yaml::from_str(&bootstrap_of(&raw)).unwrap();
    // Every secret the bootstrap asks for is one the agent serves, from the agent, in the
    // state-of-the-world dialect it speaks.
    let mut asked = BTreeSet::new();
    secret_configs(&b, &mut asked);
    assert_eq!(
        asked,
        BTreeSet::from([SDS_WORKLOAD_SECRET.to_string(), SDS_ROOT_SECRET.to_string()]),
        "the inbound listener and xds-grpc take both secrets over SDS"
    );
    let sds = static_cluster(&b, SDS_CLUSTER);
    let socket = str_at(
        &sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
        &["pipe", "path"],
        "sds-grpc",
    );
    assert_eq!(socket, meshfed_agent::DEFAULT_SOCKET);
    let socket_dir = Path::new(socket).parent().unwrap().to_str().unwrap();

    let o = all_manifests(Some(1));
    let image = ok(lib("printf %s \"$IMAGE\""), "IMAGE");
    for name in ["sleep", "helloworld-v1"] {
        let d = deployment(&o, name);
        let template = &d.spec.as_ref().unwrap().template;
        assert_eq!(
            pod_labels(d)
                .get("security.istio.io/tlsMode")
                .map(String::as_str),
            Some("istio"),
            "{name}: meshfed's EDS marks only labelled pods for mTLS"
        );
        let pod = template.spec.as_ref().unwrap();
        let (envoy, agent) = (container(d, "envoy"), container(d, "meshfed-agent"));
        assert_eq!(agent.image.as_deref(), Some(image.as_str()), "{name}");
        let args = agent.args.clone().unwrap_or_default();
        assert_eq!(args.first().map(String::as_str), Some("agent"));
        assert_eq!(flag(&args, "--socket").as_deref(), Some(socket), "{name}");
        // The args are ones meshfed takes (clap stops at --help only once they all parsed).
        let help = Command::new(env!("CARGO_BIN_EXE_meshfed"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{name}: {args:?}: {}",
            String::from_utf8_lossy(&help.stderr)
        );

        // The socket's directory is one emptyDir both containers mount.
        let shared = mounted_at(envoy, socket_dir);
        assert_eq!(mounted_at(agent, socket_dir), shared);
        assert!(
            volume(pod, &shared).empty_dir.is_some(),
            "{name}: {shared} is an emptyDir"
        );
        // The socket is owner-only: the agent runs as Envoy's user.
        let user = |c: &Container| c.security_context.as_ref().and_then(|s| s.run_as_user);
        assert!(user(envoy).is_some());
        assert_eq!(user(agent), user(envoy), "{name}");
        agent_asks_the_federations_ca(d);
    }
}

/// The value after `name` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name);
    at.and_then(|i| args.get(i + 1)).cloned()
}

/// Istio's CA flow in pod `d` (issue 18): its meshfed agent runs in CA mode against the
/// federation's secure Service port, under a name the federation's certificate carries, with
/// the root of the ConfigMap istio-ca-root-cert (as istiod publishes it) and a projected
/// ServiceAccount token with the audience the CA's TokenReview asks for. Kubernetes projects
/// only the pod's own account's token, and the agent asks for the pod's own namespace and
/// account (downward API), the identity the CA checks the CSR against. The token is mounted in
/// the agent alone, the pod mounts no API token, and no Secret holds a workload key.
fn agent_asks_the_federations_ca(d: &Deployment) {
    let name = d.metadata.name.clone().unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let agent = container(d, "meshfed-agent");
    let args = agent.args.clone().unwrap_or_default();
    let secure = secure_port();
    assert_eq!(
        flag(&args, "--ca-address"),
        Some(format!("{}:{}", secure.svc(), secure.port)),
        "{name}: the federation's secure Service port"
    );
    let server_name = flag(&args, "--ca-server-name").unwrap_or_else(|| secure.svc());
    assert!(
        serving::names(&secure.namespace).contains(&server_name),
        "{name}: the CA's certificate does not carry {server_name}"
    );
    assert!(
        flag(&args, "--cert-dir").is_none(),
        "{name}: not mounted files"
    );
    for absent in ["--namespace", "--service-account"] {
        assert!(
            flag(&args, absent).is_none(),
            "{name}: {absent} overrides the pod's own"
        );
    }
    assert_eq!(
        flag(&args, "--trust-domain").as_deref(),
        None,
        "{name}: the CA's trust domain is the default"
    );
    // The identity is the pod's own namespace and account, from the downward API.
    let env = agent.env.as_deref().unwrap_or_default();
    for (var, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        let from = env
            .iter()
            .find(|e| e.name == var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(from, Some(field), "{name}: {var}");
    }

    // The token: a projected istio-ca token, alone in its volume, mounted in the agent only.
    let token = flag(&args, "--token-file").expect("--token-file");
    let token = Path::new(&token);
    let token_volume = mounted_at(agent, token.parent().unwrap().to_str().unwrap());
    let sources = volume(pod, &token_volume)
        .projected
        .as_ref()
        .and_then(|p| p.sources.clone())
        .unwrap_or_default();
    let [source] = &sources[..] else {
        panic!("{name}: the token's volume projects {sources:?}")
    };
    let sat = source
        .service_account_token
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: {source:?} is not a ServiceAccount token"));
    assert_eq!(
        sat.audience.as_deref(),
        Some(DEFAULT_TOKEN_AUDIENCE),
        "{name}"
    );
    assert_eq!(sat.expiration_seconds, Some(3600), "{name}");
    assert_eq!(
        Path::new(&sat.path),
        token.file_name().map(Path::new).unwrap()
    );
    let federation_args = container_args_of_deploy("meshfed-federation");
    assert!(
        flag(&federation_args, "--token-audience").is_none_or(|a| a == DEFAULT_TOKEN_AUDIENCE),
        "the CA reviews tokens for another audience"
    );
    for c in containers(d).iter().filter(|c| c.name != agent.name) {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != token_volume),
            "{name}/{}: only the agent holds the token",
            c.name
        );
    }
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "{name}: no other token in the pod"
    );
    assert!(
        pod.service_account_name.is_some(),
        "{name}: the pod's own account"
    );

    // The root: root-cert.pem of istio-ca-root-cert.
    let root = flag(&args, "--ca-root").unwrap_or(meshfed_agent::ca::DEFAULT_CA_ROOT.into());
    let root = Path::new(&root);
    let root_volume = mounted_at(agent, root.parent().unwrap().to_str().unwrap());
    let cm = volume(pod, &root_volume)
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: the root is not from a ConfigMap"));
    assert_eq!(cm.name, "istio-ca-root-cert", "{name}");
    assert_eq!(root.file_name().unwrap(), "root-cert.pem", "{name}");
    assert!(cm.items.is_none(), "{name}: every key as its file");

    // No workload key outside the agent: the pod mounts no Secret.
    for v in pod.volumes.iter().flatten() {
        assert!(v.secret.is_none(), "{name}: Secret volume {}", v.name);
    }
}

/// The args of the first container of deploy/meshfed.yaml's Deployment `name`.
fn container_args_of_deploy(name: &str) -> Vec<String> {
    let text = read(&Path::new(ROOT).join("deploy/meshfed.yaml"));
    documents(&text)
        .into_iter()
        .filter(|v| v["kind"] == "Deployment" && v["metadata"]["name"] == name)
        .map(|v| serde_yaml::from_value::<Deployment>(v).unwrap())
        .map(|d| containers(&d)[0].args.clone().unwrap_or_default())
        .next()
        .unwrap_or_else(|| panic!("no Deployment {name} in deploy/meshfed.yaml"))
}

/// Istio publishes the root in every namespace as the ConfigMap istio-ca-root-cert (key
/// root-cert.pem); up.sh does the same in `sample` with the shared root, through lib.sh's
/// root_cert_configmap (run here with kubectl, as up.sh runs it), and mints no workload
/// certificate or Secret: the agents ask the CA.
#[test]
fn up_publishes_the_root_and_mints_no_workload_certificate() {
    let up = read(&kind_dir().join("up.sh"));
    assert!(
        up.contains(
            "root_cert_configmap sample \"$WORK/certs/root/root-cert.pem\" | k \"$i\" apply -f -"
        ),
        "up.sh publishes the shared root in sample"
    );
    for gone in ["certs workload", "create secret", "-certs\""] {
        assert!(!up.contains(gone), "up.sh still has {gone:?}");
    }
    let o = all_manifests(Some(1));
    for name in ["sleep", "helloworld-v1"] {
        assert_eq!(
            deployment(&o, name).metadata.namespace.as_deref(),
            Some("sample"),
            "the root is published where the pods are"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    ok(
        Command::new(env!("CARGO_BIN_EXE_meshfed"))
            .args(["certs", "root-ca", "--out"])
            .arg(&root)
            .output()
            .unwrap(),
        "meshfed certs root-ca",
    );
    let pem = root.join("root-cert.pem");
    let out = ok(
        lib(&format!("root_cert_configmap sample {}", pem.display())),
        "root_cert_configmap (needs kubectl)",
    );
    let [doc] = &documents(&out)[..] else {
        panic!("one ConfigMap: {out}")
    };
    let cm: ConfigMap = serde_yaml::from_value(doc.clone()).unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("istio-ca-root-cert"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("sample"));
    let data = cm.data.unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["root-cert.pem"]);
    assert_eq!(
        data["root-cert.pem"],
        read(&pem),
        "the shared root, as it is"
    );
}

/// The names of every SDS secret config under `v`, each checked to come from sds-grpc (GRPC).
fn secret_configs(v: &Value, names: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            if let (Some(name), Some(source)) = (m.get("name"), m.get("sds_config")) {
                let api = &source["api_config_source"];
                assert_eq!(
                    api["api_type"], "GRPC",
                    "meshfed agent speaks state of the world"
                );
                assert_eq!(
                    api["grpc_services"][0]["envoy_grpc"]["cluster_name"],
                    SDS_CLUSTER
                );
                names.insert(name.as_str().unwrap().to_string());
            }
            m.values().for_each(|x| secret_configs(x, names));
        }
        Value::Sequence(s) => s.iter().for_each(|x| secret_configs(x, names)),
        _ => {}
    }
}

/// Runs the envoy container's start command of `d` as the container would, with the bootstrap
/// `template` where the ConfigMap is mounted and `envoy` replaced by a no-op: the bootstrap
/// Envoy would start with.
fn start_sidecar(d: &Deployment, template: &str, ip: &str, pod: &str) -> String {
    let c = container(d, "envoy");
    assert_eq!(
        c.command.as_deref(),
        Some(&["/bin/sh".to_string(), "-ec".to_string()][..])
    );
    let [script] = &c.args.as_deref().unwrap() else {
        panic!("one script")
    };
    let pod_spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = pod_spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some("envoy-bootstrap"))
        .expect("the envoy-bootstrap ConfigMap as a volume");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("mounted in the envoy container");
    let input = format!("{}/envoy.yaml", mount.mount_path);
    assert!(script.contains(&input), "the script reads {input}");
    let output = script
        .split("exec envoy -c ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("exec envoy -c FILE");
    // The downward API gives the pod-start placeholders their values.
    let env = c.env.as_deref().unwrap_or_default();
    for p in POD_PLACEHOLDERS {
        let e = env
            .iter()
            .find(|e| e.name == p)
            .unwrap_or_else(|| panic!("envoy container: no env {p}"));
        assert!(
            e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .is_some(),
            "{p} from the downward API"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (tin, tout) = (dir.path().join("in.yaml"), dir.path().join("out.yaml"));
    std::fs::write(&tin, template).unwrap();
    let script = script
        .replace(&input, tin.to_str().unwrap())
        .replace(output, tout.to_str().unwrap())
        .replace("exec envoy", "exec true");
    let app = pod_labels(d)["app"].clone();
    ok(
        Command::new("sh")
            .arg("-ec")
            .arg(&script)
            .env("POD_IP", ip)
            .env("POD_NAME", pod)
            .env("APP", app)
            .output()
            .unwrap(),
        "the sidecar's start command",
    );
    read(&tout)
}

#[test]
fn up_substitutes_every_cluster_line_of_deploy_meshfed_yaml() {
    let up = read(&kind_dir().join("up.sh"));
    assert!(
        up.contains("render_meshfed \"$i\" \"$IMAGE\" | k \"$i\" apply -f -"),
        "up.sh installs deploy/meshfed.yaml through render_meshfed"
    );
    // The federation reads the cacerts Secret once, when it starts (else its CA and secure
    // port stay off): up.sh applies the Secret first.
    let line = |needle: &str| {
        up.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("up.sh: no {needle}"))
    };
    assert!(
        line("certs cacerts-secret") < line("render_meshfed \"$i\""),
        "up.sh applies cacerts before deploy/meshfed.yaml"
    );
    assert!(
        line("create namespace istio-system") < line("certs cacerts-secret"),
        "the Secret's namespace exists first"
    );
    let original = read(&Path::new(ROOT).join("deploy/meshfed.yaml"));
    let image = "registry.example/meshfed:kind-3";
    let out = ok(lib(&format!("render_meshfed 3 {image}")), "render_meshfed");
    let (before, after): (Vec<&str>, Vec<&str>) =
        (original.lines().collect(), out.lines().collect());
    assert_eq!(before.len(), after.len());
    let mut marked = 0;
    for (b, a) in before.iter().zip(&after) {
        if b.trim_end().ends_with("# CLUSTER") {
            marked += 1;
            assert_ne!(b, a, "a # CLUSTER line up.sh leaves as it is");
            for default in ["cluster1", "network1", "ghcr.io/meshfed/meshfed:latest"] {
                assert!(!a.contains(default), "{default} left in: {a}");
            }
        } else {
            assert_eq!(b, a, "only # CLUSTER lines may change");
        }
    }
    assert!(
        marked >= 5,
        "deploy/meshfed.yaml marks its per-cluster lines"
    );

    // What those lines mean, once parsed: every component is cluster3 on network3.
    let mut namespaces = Vec::new();
    let mut deployments: Vec<Deployment> = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    for v in documents(&out) {
        match v["kind"].as_str().unwrap() {
            "Namespace" => namespaces.push(serde_yaml::from_value::<Namespace>(v).unwrap()),
            "Deployment" => deployments.push(serde_yaml::from_value(v).unwrap()),
            "Service" => services.push(serde_yaml::from_value(v).unwrap()),
            _ => {}
        }
    }
    let label = |labels: &Option<std::collections::BTreeMap<String, String>>| {
        labels
            .as_ref()
            .and_then(|l| l.get("topology.istio.io/network").cloned())
    };
    assert_eq!(
        label(&namespaces[0].metadata.labels).as_deref(),
        Some("network3")
    );
    let gw = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("istio-eastwestgateway"))
        .unwrap();
    assert_eq!(label(&gw.metadata.labels).as_deref(), Some("network3"));
    assert_eq!(deployments.len(), 3);
    for d in &deployments {
        for c in containers(d) {
            assert_eq!(c.image.as_deref(), Some(image));
            let args = c.args.clone().unwrap();
            let after = |flag: &str| {
                args.iter()
                    .position(|a| a == flag)
                    .map(|i| args[i + 1].as_str())
            };
            assert_eq!(after("--cluster-id"), Some("cluster3"), "{args:?}");
            if let Some(net) = after("--network") {
                assert_eq!(net, "network3", "{args:?}");
            }
        }
    }

    // The MetalLB ranges up.sh carves: distinct per cluster, inside the kind network.
    let ranges = ok(
        lib(
            "lb_range 172.18.0.0/16 1; lb_range 172.18.0.0/16 2; lb_range 192.168.8.0/24 1; lb_range 10.1.0.0/20 1",
        ),
        "lb_range",
    );
    assert_eq!(
        ranges.lines().collect::<Vec<_>>(),
        [
            "172.18.255.10-172.18.255.19",
            "172.18.255.20-172.18.255.29",
            "192.168.8.110-192.168.8.119",
            "10.1.15.10-10.1.15.19"
        ]
    );
    assert!(!lib("lb_range 172.18.0.0/25 1").status.success());
}
