//! Federation benchmarks: how fast a remote endpoint change reaches the registry, and what
//! the first full sync of a large multi-cluster state costs.

use meshfed_federation::registry::{ClusterStatus, Status};
use meshfed_model::admin::AdminClient;
use meshfed_testbed::{ApiServer, ApiServerConfig};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct FederationOptions {
    pub json: PathBuf,
    pub meshfed: PathBuf,
    pub changes: usize,
    pub clusters: usize,
    pub services: usize,
    pub endpoints: usize,
}

pub(crate) async fn server(name: &str) -> Result<ApiServer, String> {
    ApiServer::start(ApiServerConfig::new(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        name,
    ))
    .await
    .map_err(|e| e.to_string())
}

fn put(s: &ApiServer, kind: &str, ns: &str, v: Value) -> Result<(), String> {
    s.insert(kind, ns, v).map(|_| ()).map_err(|e| e.message)
}

/// `services` services with `endpoints` endpoints each (pods, slices), on 10 nodes.
pub(crate) fn populate(
    s: &ApiServer,
    cluster: usize,
    services: usize,
    endpoints: usize,
) -> Result<(), String> {
    put(
        s,
        "Namespace",
        "",
        json!({"metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": format!("network{cluster}")}}}),
    )?;
    put(s, "Namespace", "", json!({"metadata": {"name": "bench"}}))?;
    for n in 0..10 {
        put(
            s,
            "Node",
            "",
            json!({"metadata": {"name": format!("node{n}"), "labels": {"topology.kubernetes.io/region": format!("region{cluster}"), "topology.kubernetes.io/zone": format!("zone{n}")}}}),
        )?;
    }
    for i in 0..services {
        let name = format!("svc{i}");
        put(
            s,
            "Service",
            "bench",
            json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 8080}], "selector": {"app": name}}}),
        )?;
        let mut eps = Vec::with_capacity(endpoints);
        for e in 0..endpoints {
            let pod = format!("{name}-{e}");
            let ip = format!(
                "10.{}.{}.{}",
                cluster,
                (i * endpoints + e) / 250 % 250,
                (i * endpoints + e) % 250
            );
            put(
                s,
                "Pod",
                "bench",
                json!({"metadata": {"name": pod, "labels": {"app": name, "version": "v1", "security.istio.io/tlsMode": "istio"}}, "spec": {"nodeName": format!("node{}", e % 10), "containers": []}}),
            )?;
            eps.push(json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": format!("node{}", e % 10), "targetRef": {"kind": "Pod", "namespace": "bench", "name": pod}}));
        }
        put(
            s,
            "EndpointSlice",
            "bench",
            json!({"metadata": {"name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}}, "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps}),
        )?;
    }
    Ok(())
}

pub(crate) fn remote_secret(local: &ApiServer, remote: &ApiServer, id: &str) -> Result<(), String> {
    let kubeconfig = meshfed_testbed::kubeconfig::render(
        id,
        &remote.url(),
        remote.ca_pem(),
        id,
        remote.admin_token(),
    );
    put(
        local,
        "Secret",
        "istio-system",
        json!({"metadata": {"name": format!("istio-remote-secret-{id}"), "labels": {"istio/multiCluster": "true"}}, "stringData": {id: kubeconfig}}),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// First full sync of `clusters` x `services` x `endpoints` by a `meshfed federation` process.
async fn scale(o: &FederationOptions) -> Result<Value, String> {
    let mut servers = Vec::new();
    for c in 1..=o.clusters {
        let s = server(&format!("cluster{c}")).await?;
        populate(&s, c, o.services, o.endpoints)?;
        servers.push(s);
    }
    for (c, remote) in servers.iter().enumerate().skip(1) {
        remote_secret(&servers[0], remote, &format!("cluster{}", c + 1))?;
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kc = dir.path().join("kubeconfig");
    servers[0]
        .write_kubeconfig(&kc)
        .map_err(|e| e.to_string())?;
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let admin = AdminClient::new(admin_addr);
    let started = Instant::now();
    let mut child = std::process::Command::new(&o.meshfed)
        .args([
            "federation",
            "--cluster-id",
            "cluster1",
            "--network",
            "network1",
            "--admin",
            &admin_addr.to_string(),
            "--kubeconfig",
        ])
        .arg(&kc)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.meshfed.display()))?;
    let pid = child.id();
    let want = o.clusters * o.services * o.endpoints;
    let deadline = started + Duration::from_secs(120);
    let (sync_s, endpoints) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status: Result<Vec<ClusterStatus>, _> = admin.json("/debug/clusterz").await;
        if let Ok(clusters) = status {
            let endpoints = clusters.iter().map(|c| c.endpoints as u64).sum::<u64>();
            if clusters.len() == o.clusters
                && clusters.iter().all(|c| c.status == Status::Synced)
                && endpoints as usize >= want
            {
                break (started.elapsed().as_secs_f64(), endpoints);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the federation process did not sync within 120 s".into());
        }
    };
    let rss = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    Ok(
        json!({"clusters": o.clusters, "services_per_cluster": o.services, "endpoints_per_service": o.endpoints, "endpoints": endpoints, "first_sync_s": (sync_s * 100.0).round() / 100.0, "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0}),
    )
}

/// Time from a remote EndpointSlice write to the registry showing it, over `changes` changes.
async fn propagation(o: &FederationOptions) -> Result<Value, String> {
    let (s1, s2) = (server("cluster1").await?, server("cluster2").await?);
    populate(&s1, 1, 10, 2)?;
    populate(&s2, 2, 10, 2)?;
    remote_secret(&s1, &s2, "cluster2")?;
    let local = meshfed_federation_client(&s1).await?;
    let remote = meshfed_federation_client(&s2).await?;
    let fed = meshfed_federation::Controllers::start(
        local,
        &meshfed_federation::FederationConfig::new("cluster1", "network1"),
    );
    let registry = fed.registry.clone();
    wait_for(&registry, |s| {
        endpoints_of(s, "svc0.bench.svc.cluster.local").len() == 4
    })
    .await?;
    let api: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        kube::Api::namespaced(remote, "bench");
    let mut samples = Vec::with_capacity(o.changes);
    for i in 0..o.changes {
        let ip = format!("10.99.{}.{}", i / 250 % 250, i % 250);
        let patch = json!({"endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node0"}]});
        let t0 = Instant::now();
        api.patch(
            "svc0-x",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| e.to_string())?;
        wait_for(&registry, |s| {
            endpoints_of(s, "svc0.bench.svc.cluster.local").contains(&ip)
        })
        .await?;
        samples.push(t0.elapsed().as_micros() as u64);
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    Ok(json!({"changes": o.changes, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}))
}

async fn meshfed_federation_client(s: &ApiServer) -> Result<kube::Client, String> {
    meshfed_federation::kubeconfig::client(&s.kubeconfig(), false)
        .await
        .map_err(|e| e.to_string())
}

fn endpoints_of(s: &meshfed_federation::registry::Snapshot, host: &str) -> Vec<String> {
    s.services
        .iter()
        .filter(|v| v.hostname == host)
        .flat_map(|v| v.endpoints.iter().map(|e| e.address.clone()))
        .collect()
}

async fn wait_for(
    registry: &meshfed_federation::registry::Registry,
    ok: impl Fn(&meshfed_federation::registry::Snapshot) -> bool,
) -> Result<(), String> {
    let mut changes = registry.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !ok(&registry.snapshot()) {
            let _ = changes.changed().await;
        }
    })
    .await
    .map_err(|_| "a change did not reach the registry within 30 s".to_string())
}

pub fn run(o: &FederationOptions) -> Result<Value, String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let report = rt.block_on(async {
        let propagation = propagation(o).await?;
        let scale = scale(o).await?;
        Ok::<_, String>(json!({"propagation": propagation, "scale": scale}))
    })?;
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", o.json.display()))?;
    Ok(report)
}
