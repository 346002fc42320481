//! `create-remote-secret` against the test bed API server: the output's shape, that its
//! token works, idempotence, errors, and that kubectl applies it.

use base64::Engine;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshfed_federation::remote_secret::{
    Error, RemoteSecretOptions, create_remote_secret, from_kubeconfig,
};
use meshfed_testbed::{ApiServer, ApiServerConfig};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

/// A test bed cluster and its admin kubeconfig file.
struct Bed {
    server: ApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn bed(name: &str) -> Bed {
    let cfg = ApiServerConfig::new("127.0.0.1:0".parse().unwrap(), name);
    let server = ApiServer::start(cfg).await.expect("start API server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    Bed {
        server,
        _dir: dir,
        kubeconfig,
    }
}

async fn client_from_yaml(yaml: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(cfg).expect("client")
}

async fn admin(bed: &Bed) -> kube::Client {
    client_from_yaml(&bed.server.kubeconfig()).await
}

async fn run(bed: &Bed, opts: &RemoteSecretOptions) -> String {
    timeout(WAIT, from_kubeconfig(&bed.kubeconfig, None, opts))
        .await
        .expect("create-remote-secret timed out")
        .expect("create-remote-secret")
        .yaml
}

/// The output Secret and the kubeconfig it carries, checked against what Istio expects.
fn parse_output(yaml: &str, cluster: &str) -> (Secret, Kubeconfig) {
    let secret: Secret = serde_yaml::from_str(yaml).expect("output is a Secret");
    let meta = &secret.metadata;
    let want_name = format!("istio-remote-secret-{cluster}");
    assert_eq!(meta.name.as_deref(), Some(want_name.as_str()));
    assert_eq!(meta.namespace.as_deref(), Some("istio-system"));
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("istio/multiCluster").map(String::as_str),
        Some("true")
    );
    let annotations = meta.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("networking.istio.io/cluster")
            .map(String::as_str),
        Some(cluster)
    );
    assert!(secret.data.is_none(), "only stringData: {yaml}");
    let data = secret.string_data.clone().unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), [cluster]);
    let kubeconfig = Kubeconfig::from_yaml(&data[cluster]).expect("embedded kubeconfig parses");
    check_kubeconfig(&kubeconfig, cluster);
    (secret, kubeconfig)
}

fn check_kubeconfig(kc: &Kubeconfig, cluster: &str) {
    assert_eq!(kc.current_context.as_deref(), Some(cluster));
    let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        names(kc.clusters.iter().map(|c| c.name.as_str()).collect()),
        [cluster]
    );
    assert_eq!(
        names(kc.contexts.iter().map(|c| c.name.as_str()).collect()),
        [cluster]
    );
    assert_eq!(
        names(kc.auth_infos.iter().map(|c| c.name.as_str()).collect()),
        [cluster]
    );
    let ctx = kc.contexts[0].context.as_ref().unwrap();
    assert_eq!(
        (ctx.cluster.as_str(), ctx.user.as_deref()),
        (cluster, Some(cluster))
    );
}

fn server_of(kc: &Kubeconfig) -> String {
    kc.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap()
}

fn ca_of(kc: &Kubeconfig) -> String {
    let data = kc.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority_data
        .clone()
        .expect("certificate-authority-data");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    String::from_utf8(pem).unwrap()
}

/// Read from the YAML: kube's kubeconfig types keep the token in a `SecretString`.
fn token_of(kubeconfig_yaml: &str) -> String {
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig_yaml).unwrap();
    doc["users"][0]["user"]["token"]
        .as_str()
        .expect("user token")
        .to_string()
}

/// The token authenticates: the client lists Services in the exported cluster.
async fn assert_token_works(kubeconfig_yaml: &str) {
    let client = client_from_yaml(kubeconfig_yaml).await;
    let services: Api<Service> = Api::all(client);
    timeout(WAIT, services.list(&Default::default()))
        .await
        .expect("list timed out")
        .expect("the exported token lists Services");
}

fn embedded(secret: &Secret, cluster: &str) -> String {
    secret.string_data.as_ref().unwrap()[cluster].clone()
}

async fn long_lived_token(client: &kube::Client) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let secret = secrets
        .get("istio-reader-service-account-istio-remote-secret-token")
        .await
        .expect("long-lived token secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    let token = &secret.data.as_ref().unwrap()["token"].0;
    String::from_utf8(token.clone()).unwrap()
}

async fn check_rbac(client: &kube::Client) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "istio-system");
    sas.get("istio-reader-service-account")
        .await
        .expect("reader ServiceAccount");
    let role = Api::<ClusterRole>::all(client.clone())
        .get("istio-reader-clusterrole-istio-system")
        .await
        .expect("ClusterRole");
    let rules = role.rules.unwrap_or_default();
    let find = |group: &str| {
        rules
            .iter()
            .find(|r| r.api_groups.as_deref() == Some(&[group.to_string()][..]))
            .unwrap_or_else(|| panic!("no rule for group {group:?}: {rules:?}"))
    };
    for rule in &rules {
        assert_eq!(rule.verbs, ["get", "list", "watch"], "read-only: {rule:?}");
    }
    // Exactly what the federation watches remotely: no Secrets, ConfigMaps or
    // ServiceAccounts (Istio's reader role grants those cluster-wide), no Istio config.
    let mut core = find("").resources.clone().unwrap_or_default();
    core.sort();
    assert_eq!(core, ["namespaces", "nodes", "pods", "services"]);
    assert_eq!(
        find("discovery.k8s.io").resources.as_deref(),
        Some(&["endpointslices".to_string()][..])
    );
    assert_eq!(rules.len(), 2, "{rules:?}");
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get("istio-reader-clusterrole-istio-system")
        .await
        .expect("ClusterRoleBinding");
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("ClusterRole", "istio-reader-clusterrole-istio-system")
    );
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        (
            "ServiceAccount",
            "istio-reader-service-account",
            Some("istio-system")
        )
    );
}

#[tokio::test]
async fn default_mode_exports_a_working_long_lived_token() {
    let cluster2 = bed("cluster2").await;
    let opts = RemoteSecretOptions::new("cluster2");
    let yaml = run(&cluster2, &opts).await;
    let (secret, kc) = parse_output(&yaml, "cluster2");
    assert_eq!(server_of(&kc), cluster2.server.url());
    assert_eq!(ca_of(&kc).trim(), cluster2.server.ca_pem().trim());
    let token = token_of(&embedded(&secret, "cluster2"));
    assert_ne!(
        token,
        cluster2.server.admin_token(),
        "not the admin's token"
    );
    assert_token_works(&embedded(&secret, "cluster2")).await;

    let admin = admin(&cluster2).await;
    assert_eq!(token, long_lived_token(&admin).await);
    check_rbac(&admin).await;

    // Again: everything exists now, and the same long-lived token comes back.
    let again = run(&cluster2, &opts).await;
    let (secret2, _) = parse_output(&again, "cluster2");
    assert_eq!(token_of(&embedded(&secret2, "cluster2")), token);
    assert_token_works(&embedded(&secret2, "cluster2")).await;
    check_rbac(&admin).await;
}

#[tokio::test]
async fn token_duration_exports_a_bound_token() {
    let cluster2 = bed("cluster2").await;
    // A long-lived token first, so there is one the bound token must differ from.
    let long_lived = run(&cluster2, &RemoteSecretOptions::new("cluster2")).await;
    let (long_secret, _) = parse_output(&long_lived, "cluster2");

    let mut opts = RemoteSecretOptions::new("cluster2");
    opts.token_duration = Some(Duration::from_secs(600));
    let yaml = run(&cluster2, &opts).await;
    let (secret, _) = parse_output(&yaml, "cluster2");
    let token = token_of(&embedded(&secret, "cluster2"));
    assert_ne!(
        token,
        token_of(&embedded(&long_secret, "cluster2")),
        "a bound token, not the secret's"
    );
    assert_ne!(token, long_lived_token(&admin(&cluster2).await).await);
    assert_token_works(&embedded(&secret, "cluster2")).await;

    // It expires after the 10 minutes asked for; the long-lived one does not.
    cluster2.server.advance_clock(Duration::from_secs(601));
    let services: Api<Service> = Api::all(client_from_yaml(&embedded(&secret, "cluster2")).await);
    let err = timeout(WAIT, services.list(&Default::default()))
        .await
        .expect("list timed out")
        .expect_err("an expired token is refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err}"
    );
    assert_token_works(&embedded(&long_secret, "cluster2")).await;
}

#[tokio::test]
async fn server_override_and_der_ca() {
    let cluster2 = bed("cluster2").await;
    let client = admin(&cluster2).await;
    let der = pem_to_der(cluster2.server.ca_pem());
    let mut opts = RemoteSecretOptions::new("cluster2");
    // Another name for the same server (its certificate covers localhost).
    let other = format!("https://localhost:{}", cluster2.server.addr().port());
    opts.server = Some(other.clone());
    // A bound token has no Secret with a ca.crt: the CA given is the one written.
    opts.token_duration = Some(Duration::from_secs(600));
    let out = timeout(
        WAIT,
        create_remote_secret(client, "https://unused.invalid", Some(&der), &opts),
    )
    .await
    .expect("timed out")
    .expect("create_remote_secret");
    let (secret, kc) = parse_output(&out.yaml, "cluster2");
    assert_eq!(server_of(&kc), other);
    assert_eq!(pem_to_der(&ca_of(&kc)), der);
    assert_token_works(&embedded(&secret, "cluster2")).await;
    assert!(out.warnings[0].contains("loopback"), "{:?}", out.warnings);
}

/// istioctl (remote_secret.go `tokenDataFromSecret`) writes the token Secret's `ca.crt`,
/// the cluster's own root, not the CA of the kubeconfig it was run with; `--server` and
/// `--tls-server-name` go into the cluster entry; a server other clusters can reach is not
/// warned about.
#[tokio::test]
async fn the_ca_is_the_token_secrets_and_tls_server_name_is_written() {
    let cluster2 = bed("cluster2").await;
    let client = admin(&cluster2).await;
    let mut opts = RemoteSecretOptions::new("cluster2");
    opts.server = Some("https://203.0.113.7:6443".into());
    opts.tls_server_name = Some("kubernetes.default.svc".into());
    let other_ca = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
    let out = timeout(
        WAIT,
        create_remote_secret(
            client,
            "https://unused.invalid",
            Some(other_ca.as_bytes()),
            &opts,
        ),
    )
    .await
    .expect("timed out")
    .expect("create_remote_secret");
    let (_, kc) = parse_output(&out.yaml, "cluster2");
    assert_eq!(ca_of(&kc).trim(), cluster2.server.ca_pem().trim());
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://203.0.113.7:6443"));
    assert_eq!(
        cluster.tls_server_name.as_deref(),
        Some("kubernetes.default.svc")
    );
    assert_eq!(out.warnings, Vec::<String>::new());
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn assert_one_line(err: &Error, mentions: &str) {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(
        msg.contains(mentions),
        "{msg:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn errors_are_one_line() {
    let opts = RemoteSecretOptions::new("cluster2");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let err = from_kubeconfig(&missing, None, &opts).await.unwrap_err();
    assert!(matches!(err, Error::Kubeconfig { .. }), "{err:?}");
    assert_one_line(&err, "no-such-kubeconfig");

    let cluster2 = bed("cluster2").await;
    let err = from_kubeconfig(&cluster2.kubeconfig, Some("nope"), &opts)
        .await
        .unwrap_err();
    assert_one_line(&err, "\"nope\"");

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "clusters: [\n  {name: a\n  - :\n").unwrap();
    let err = from_kubeconfig(&garbage, None, &opts).await.unwrap_err();
    assert_one_line(&err, "garbage");

    let no_ca = dir.path().join("no-ca");
    let yaml = cluster2.server.kubeconfig();
    let stripped: String = yaml
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&no_ca, stripped).unwrap();
    let mut bound = opts.clone();
    bound.token_duration = Some(Duration::from_secs(600));
    let err = from_kubeconfig(&no_ca, None, &bound).await.unwrap_err();
    assert!(matches!(err, Error::Ca(_)), "{err:?}");
    assert_one_line(&err, "ca.crt");

    let err = from_kubeconfig(
        &cluster2.kubeconfig,
        None,
        &RemoteSecretOptions::new("Bad_Name"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Options(_)), "{err:?}");
    assert_one_line(&err, "Bad_Name");
}

async fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .expect("kubectl timed out")
        .expect("kubectl ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn kubectl_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
}

#[tokio::test]
async fn kubectl_applies_the_output_in_another_cluster() {
    // A missing judge is a failure, never a skip: the README's test command installs kubectl.
    assert!(
        kubectl_on_path(),
        "kubectl is required; run the README's test command"
    );
    let (cluster1, cluster2) = (bed("cluster1").await, bed("cluster2").await);
    let yaml = run(&cluster2, &RemoteSecretOptions::new("cluster2")).await;
    let kc1 = &cluster1.kubeconfig;
    kubectl(kc1, &["create", "namespace", "istio-system"], "").await;
    // The test bed serves no OpenAPI for kubectl's client-side schema validation.
    let applied = kubectl(kc1, &["apply", "--validate=false", "-f", "-"], &yaml).await;
    assert!(
        applied.contains("secret/istio-remote-secret-cluster2 created"),
        "{applied}"
    );
    let listed = kubectl(
        kc1,
        &[
            "get",
            "secret",
            "-n",
            "istio-system",
            "-l",
            "istio/multiCluster=true",
            "-o",
            "name",
        ],
        "",
    )
    .await;
    assert_eq!(listed.trim(), "secret/istio-remote-secret-cluster2");

    // What landed in cluster1 still carries a working kubeconfig for cluster2.
    let stored = Api::<Secret>::namespaced(admin(&cluster1).await, "istio-system")
        .get("istio-remote-secret-cluster2")
        .await
        .expect("stored remote secret");
    // kube-apiserver moves stringData into data; read either, so this checks our output
    // rather than the test bed's handling of stringData.
    let from_data = stored.data.as_ref().and_then(|d| d.get("cluster2"));
    let kubeconfig = match from_data {
        Some(bytes) => String::from_utf8(bytes.0.clone()).unwrap(),
        None => embedded(&stored, "cluster2"),
    };
    check_kubeconfig(&Kubeconfig::from_yaml(&kubeconfig).unwrap(), "cluster2");
    assert_token_works(&kubeconfig).await;
    // Applying again is a no-op, as it is for istioctl's output.
    let again = kubectl(kc1, &["apply", "--validate=false", "-f", "-"], &yaml).await;
    assert!(
        again.contains("unchanged") || again.contains("configured"),
        "{again}"
    );
}
