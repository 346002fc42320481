//! Real kubectl, a client we did not write, drives the test bed API server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// An API server on its own runtime, and a kubeconfig for it.
struct Bed {
    _rt: tokio::runtime::Runtime,
    server: meshfed_testbed::ApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Bed {
    fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(common::server());
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        Bed {
            _rt: rt,
            server,
            _dir: dir,
            kubeconfig,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is required; the README's test command installs it");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) -> String {
        let out = self.run(&["apply", "--validate=false", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sample, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: sample, labels: {app: helloworld, service: helloworld}}
spec:
  ports: [{port: 5000, name: http}]
  selector: {app: helloworld}
---
apiVersion: v1
kind: Service
metadata: {name: sleep, namespace: sample, labels: {app: sleep}}
spec:
  ports: [{port: 80, name: http}]
  selector: {app: sleep}
---
apiVersion: v1
kind: Pod
metadata: {name: helloworld-v1, namespace: sample, labels: {app: helloworld, version: v1}}
spec:
  containers: [{name: helloworld, image: docker.io/istio/examples-helloworld-v1, ports: [{containerPort: 5000}]}]
status: {phase: Running, podIP: 10.10.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: helloworld-v2, namespace: sample, labels: {app: helloworld, version: v2}}
spec:
  containers: [{name: helloworld, image: docker.io/istio/examples-helloworld-v2}]
"#;

#[test]
fn apply_get_delete_and_label_selectors() {
    let bed = Bed::start();
    let out = bed.apply(APP);
    assert!(
        out.contains("service/helloworld created") && out.contains("pod/helloworld-v2 created"),
        "{out}"
    );

    assert_eq!(
        lines(&bed.ok(&[
            "get",
            "svc",
            "-n",
            "sample",
            "-l",
            "app=helloworld",
            "-o",
            "name"
        ])),
        ["service/helloworld"]
    );
    assert_eq!(
        lines(&bed.ok(&[
            "get",
            "pods",
            "-A",
            "-l",
            "app=helloworld,version in (v1)",
            "-o",
            "name"
        ])),
        ["pod/helloworld-v1"]
    );
    assert_eq!(
        lines(&bed.ok(&[
            "get",
            "pods",
            "-n",
            "sample",
            "-l",
            "version!=v1",
            "-o",
            "name"
        ])),
        ["pod/helloworld-v2"]
    );
    assert_eq!(
        lines(&bed.ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "metadata.name=helloworld-v2",
            "-o",
            "name"
        ])),
        ["pod/helloworld-v2"]
    );
    let table = bed.ok(&["get", "svc", "-n", "sample"]);
    assert!(
        table.contains("NAME") && table.contains("helloworld") && table.contains("10.96."),
        "{table}"
    );
    // The pod was created with a status and keeps it: there is no kubelet to overwrite it.
    assert_eq!(
        bed.ok(&[
            "get",
            "pod",
            "helloworld-v1",
            "-n",
            "sample",
            "-o",
            "jsonpath={.status.podIP}"
        ]),
        "10.10.0.5"
    );

    // Re-applying a change goes through strategic merge patch.
    let changed = APP.replace(
        "ports: [{port: 5000, name: http}]",
        "ports: [{port: 5000, name: http}, {port: 5001, name: grpc}]",
    );
    assert!(
        bed.apply(&changed)
            .contains("service/helloworld configured")
    );
    let ports = bed.ok(&[
        "get",
        "svc",
        "helloworld",
        "-n",
        "sample",
        "-o",
        "jsonpath={.spec.ports[*].port}",
    ]);
    assert_eq!(ports, "5000 5001");
    assert!(bed.apply(&changed).contains("service/helloworld unchanged"));

    assert!(
        bed.ok(&["delete", "pods", "-n", "sample", "-l", "version=v2"])
            .contains("helloworld-v2")
    );
    let gone = bed.run(&["get", "pod", "helloworld-v2", "-n", "sample"], None);
    assert!(!gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    bed.ok(&["delete", "namespace", "sample"]);
    assert_eq!(
        bed.ok(&["get", "svc", "-A", "-o", "name"]).trim(),
        "",
        "namespace deletion left services"
    );
}

#[test]
fn get_watch_prints_events_in_order() {
    let bed = Bed::start();
    bed.ok(&["create", "configmap", "pre", "-n", "default"]);
    let mut watch = bed
        .command(&[
            "get",
            "configmaps",
            "-n",
            "default",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || out.next().expect("watch ended").unwrap();
    // The existing object arrives first: from then on the watch is established.
    assert_eq!(next(), "ADDED pre");
    bed.ok(&["create", "configmap", "a", "-n", "default"]);
    bed.ok(&["label", "configmap", "a", "-n", "default", "tier=web"]);
    bed.ok(&["delete", "configmap", "a", "-n", "default"]);
    let seen: Vec<String> = (0..3).map(|_| next()).collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen, ["ADDED a", "MODIFIED a", "DELETED a"]);
}

#[test]
fn seed_destination_rules_round_trip_in_every_version() {
    let bed = Bed::start();
    bed.ok(&["create", "namespace", "sample"]);
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["locality-lb-weight.yaml", "locality-lb-failover.yaml"] {
        let yaml = std::fs::read_to_string(format!("{root}/../samples/{file}")).unwrap();
        bed.apply(&yaml);
        let sent: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let kind = format!("destinationrules.{version}.networking.istio.io");
            let got: serde_json::Value = serde_json::from_str(&bed.ok(&[
                "get",
                &kind,
                "helloworld",
                "-n",
                "sample",
                "-o",
                "json",
            ]))
            .unwrap();
            assert_eq!(got["spec"], sent["spec"], "{file} read back as {version}");
            assert_eq!(got["apiVersion"], format!("networking.istio.io/{version}"));
        }
    }
    assert_eq!(
        lines(&bed.ok(&["get", "dr", "-A", "-o", "name"])),
        ["destinationrule.networking.istio.io/helloworld"]
    );
    bed.ok(&["delete", "dr", "helloworld", "-n", "sample"]);
    assert_eq!(bed.ok(&["get", "dr", "-A", "-o", "name"]).trim(), "");
}

/// `v` with every number as a float: kube-apiserver (Go's JSON) writes `100.0` back as
/// `100`, as the test bed does.
fn numbers_as_floats(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The seed walkthrough's VirtualServices (and the DestinationRules and Gateway beside them)
/// apply unchanged with kubectl, re-applying a rule updates it as on a cluster with Istio's
/// CRDs, and each reads back in every served version with the spec as sent (Istio's CRDs keep
/// unknown and deprecated fields such as `percent`).
#[test]
fn seed_virtual_services_apply_unchanged() {
    let bed = Bed::start();
    bed.ok(&["create", "namespace", "bookinfo"]);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/seed-vs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 11);
    for file in files {
        let yaml = std::fs::read_to_string(&file).unwrap();
        bed.apply(&yaml);
        // The documents (the seed puts comments after `---`).
        for doc in yaml.split("---") {
            let sent: serde_json::Value = serde_yaml::from_str(doc).unwrap();
            if sent["kind"] != "VirtualService" {
                continue;
            }
            let name = sent["metadata"]["name"].as_str().unwrap();
            let ns = sent["metadata"]["namespace"].as_str().unwrap_or("default");
            for version in ["v1", "v1beta1", "v1alpha3"] {
                let kind = format!("virtualservices.{version}.networking.istio.io");
                let got: serde_json::Value =
                    serde_json::from_str(&bed.ok(&["get", &kind, name, "-n", ns, "-o", "json"]))
                        .unwrap();
                assert_eq!(
                    numbers_as_floats(&got["spec"]),
                    numbers_as_floats(&sent["spec"]),
                    "{}: {name} as {version}",
                    file.display()
                );
            }
        }
    }
    let mut names = lines(&bed.ok(&["get", "vs", "-A", "-o", "name"]))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    names.sort();
    names.dedup();
    let want: Vec<String> = [
        "details",
        "httpbin",
        "productpage",
        "ratings",
        "reviews",
        "tcp-echo",
    ]
    .iter()
    .map(|n| format!("virtualservice.networking.istio.io/{n}"))
    .collect();
    assert_eq!(names, want);
}

#[test]
fn unknown_token_is_unauthorized() {
    let bed = Bed::start();
    let bad = bed.kubeconfig.with_file_name("bad-kubeconfig");
    let text = std::fs::read_to_string(&bed.kubeconfig)
        .unwrap()
        .replace(bed.server.admin_token(), "not-a-token");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new("kubectl")
        .args(["get", "namespaces"])
        .env("KUBECONFIG", &bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kubectl's wording for a 401 (the reason in brackets depends on which request got it).
    assert!(
        stderr.contains("You must be logged in to the server"),
        "{stderr}"
    );
}

#[test]
fn typed_create_commands_send_protobuf_and_work() {
    let bed = Bed::start();
    bed.ok(&["create", "namespace", "istio-system"]);
    bed.ok(&[
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        "--from-literal=root-cert.pem=PEM",
    ]);
    assert_eq!(
        bed.ok(&[
            "get",
            "secret",
            "cacerts",
            "-n",
            "istio-system",
            "-o",
            "jsonpath={.data.root-cert\\.pem}"
        ]),
        "UEVN"
    );
    bed.ok(&[
        "create",
        "configmap",
        "mesh",
        "-n",
        "istio-system",
        "--from-literal=a=b",
    ]);
    bed.ok(&[
        "create",
        "service",
        "clusterip",
        "istiod",
        "-n",
        "istio-system",
        "--tcp=15012:15012",
    ]);
    let port = bed.ok(&[
        "get",
        "svc",
        "istiod",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(port, "15012");
    bed.ok(&[
        "create",
        "serviceaccount",
        "istio-reader",
        "-n",
        "istio-system",
    ]);
    let token = bed.ok(&[
        "create",
        "token",
        "istio-reader",
        "-n",
        "istio-system",
        "--duration=10m",
    ]);
    assert!(token.trim().len() > 20, "{token}");
    let out = bed.run(
        &["--token", token.trim(), "get", "namespaces", "-o", "name"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/istio-system"));
}

#[test]
fn status_subresource_through_kubectl() {
    let bed = Bed::start();
    bed.apply("apiVersion: v1\nkind: Service\nmetadata: {name: eastwest, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 15443, name: tls}]}\n");
    let status = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"172.31.0.10"}]}}}"#;
    bed.ok(&[
        "patch",
        "svc",
        "eastwest",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let ip = bed.ok(&[
        "get",
        "svc",
        "eastwest",
        "-n",
        "default",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    assert_eq!(ip, "172.31.0.10");
    bed.ok(&[
        "patch",
        "svc",
        "eastwest",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"status":null}"#,
    ]);
    let ip = bed.ok(&[
        "get",
        "svc",
        "eastwest",
        "-n",
        "default",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    assert_eq!(ip, "172.31.0.10", "main endpoint changed status");
}

/// `kubectl create -f` of a TokenReview for `token` and `audience`, printed as JSON.
fn token_review(bed: &Bed, token: &str, audience: &str) -> serde_json::Value {
    let file = bed._dir.path().join(format!("review-{audience}.yaml"));
    let yaml = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n  audiences: [{audience}]\n"
    );
    std::fs::write(&file, yaml).unwrap();
    // The test bed serves no OpenAPI for kubectl's client-side validation (see README).
    let path = file.to_str().unwrap();
    let out = bed.ok(&["create", "--validate=false", "-f", path, "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

/// Istio's CA flow with kubectl as the client: `kubectl create token` issues a bound token
/// for audience `istio-ca` (also bound to a pod), and a TokenReview created with
/// `kubectl create -f` authenticates it as the namespace's `default` ServiceAccount (made
/// with the namespace, as kube-controller-manager does) for `istio-ca` only.
#[test]
fn create_token_and_token_review_with_kubectl() {
    let bed = Bed::start();
    bed.apply(APP);
    let token = bed.ok(&[
        "create",
        "token",
        "default",
        "-n",
        "sample",
        "--audience",
        "istio-ca",
        "--duration",
        "10m",
    ]);
    let review = token_review(&bed, token.trim(), "istio-ca");
    assert_eq!(review["kind"], "TokenReview");
    let status = &review["status"];
    assert_eq!(status["authenticated"], true, "{review}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:sample:default"
    );
    assert_eq!(status["audiences"], serde_json::json!(["istio-ca"]));
    let uid = bed.ok(&[
        "get",
        "sa",
        "default",
        "-n",
        "sample",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(status["user"]["uid"], uid.as_str());

    let review = token_review(&bed, token.trim(), "other");
    assert_ne!(review["status"]["authenticated"], true, "{review}");
    assert!(
        review["status"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    let bound = bed.ok(&[
        "create",
        "token",
        "default",
        "-n",
        "sample",
        "--audience",
        "istio-ca",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "helloworld-v1",
    ]);
    let review = token_review(&bed, bound.trim(), "istio-ca");
    let extra = &review["status"]["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["helloworld-v1"]),
        "{review}"
    );
}
