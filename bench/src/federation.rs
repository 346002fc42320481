//! Federation benchmarks: how fast a remote endpoint change reaches the registry (with a
//! small state, and with the registry holding a large multi-cluster one), and what the first
//! full sync of that large state costs a `meshfed federation` process. The large state is
//! seeded straight into in-process test bed API servers (`ApiServer::insert_many`).

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
    /// Changes timed against the registry holding the full scale state.
    pub registry_changes: usize,
    /// How long a first full sync may take before the run fails.
    pub sync_timeout: Duration,
    /// Which figures: "propagation" (small state), "scale" (first sync of a `meshfed
    /// federation` process), "registry" (a change at the full scale state, in-process).
    pub modes: Vec<String>,
}

impl FederationOptions {
    fn runs(&self, mode: &str) -> bool {
        self.modes.iter().any(|m| m == mode)
    }
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

/// Seeds many objects of one kind at once (no watch events: nobody watches yet).
fn put_many(
    s: &ApiServer,
    kind: &str,
    ns: &str,
    objects: impl IntoIterator<Item = Value>,
) -> Result<(), String> {
    s.insert_many(kind, ns, objects)
        .map(|_| ())
        .map_err(|e| format!("seeding {kind}: {}", e.message))
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
    put_many(s, "Node", "", (0..10).map(|n| node(cluster, n)))?;
    put_many(s, "Service", "bench", (0..services).map(service))?;
    let pods = (0..services).flat_map(|i| (0..endpoints).map(move |e| pod(i, e)));
    put_many(s, "Pod", "bench", pods)?;
    let slices = (0..services).map(|i| slice(cluster, i, endpoints));
    put_many(s, "EndpointSlice", "bench", slices)
}

fn node(cluster: usize, n: usize) -> Value {
    json!({"metadata": {"name": format!("node{n}"), "labels": {"topology.kubernetes.io/region": format!("region{cluster}"), "topology.kubernetes.io/zone": format!("zone{n}")}}})
}

/// Service `svc{i}`. Its ClusterIP is the one the API server would allocate for the i-th
/// Service (10.96.0.2 on), given here so seeding skips the allocator's scan of every Service.
fn service(i: usize) -> Value {
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 2)) + i as u32);
    json!({"metadata": {"name": format!("svc{i}")}, "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "http", "port": 8080}], "selector": {"app": format!("svc{i}")}}})
}

fn pod(i: usize, e: usize) -> Value {
    json!({"metadata": {"name": format!("svc{i}-{e}"), "labels": {"app": format!("svc{i}"), "version": "v1", "security.istio.io/tlsMode": "istio"}}, "spec": {"nodeName": format!("node{}", e % 10), "containers": []}})
}

fn slice(cluster: usize, i: usize, endpoints: usize) -> Value {
    let eps: Vec<Value> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e;
            let ip = format!("10.{cluster}.{}.{}", n / 250 % 250, n % 250);
            json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": format!("node{}", e % 10), "targetRef": {"kind": "Pod", "namespace": "bench", "name": format!("svc{i}-{e}")}})
        })
        .collect();
    json!({"metadata": {"name": format!("svc{i}-x"), "labels": {"kubernetes.io/service-name": format!("svc{i}")}}, "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
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

/// A line of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `clusters` API servers, each seeded by [`populate`] (two at a time, one per core), the
/// first holding a remote secret for each other one.
async fn seeded(o: &FederationOptions) -> Result<Vec<ApiServer>, String> {
    let mut servers = Vec::new();
    for c in 1..=o.clusters {
        servers.push(server(&format!("cluster{c}")).await?);
    }
    let (services, endpoints) = (o.services, o.endpoints);
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let servers = &servers;
                    scope.spawn(move || {
                        servers
                            .iter()
                            .enumerate()
                            .skip(t)
                            .step_by(2)
                            .try_for_each(|(i, s)| populate(s, i + 1, services, endpoints))
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a seeding thread panicked".into()))
            })
        })
    })?;
    for (c, remote) in servers.iter().enumerate().skip(1) {
        remote_secret(&servers[0], remote, &format!("cluster{}", c + 1))?;
    }
    Ok(servers)
}

/// First full sync of the seeded state by a `meshfed federation` process: wall time, its own
/// CPU seconds (utime+stime) until then, and its RSS once synced.
async fn scale(o: &FederationOptions, servers: &[ApiServer]) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kc = dir.path().join("kubeconfig");
    servers[0]
        .write_kubeconfig(&kc)
        .map_err(|e| e.to_string())?;
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let admin = AdminClient::new(admin_addr);
    // The API servers serve that sync from this process, on the same cores.
    let serve_cpu0 = crate::peers::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut child = std::process::Command::new("taskset")
        .args(["-c", &super::PROXY_CORE.to_string()])
        .arg(&o.meshfed)
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
    let deadline = started + o.sync_timeout;
    let (sync_s, cpu_s, endpoints) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status: Result<Vec<ClusterStatus>, _> = admin.json("/debug/clusterz").await;
        if let Ok(clusters) = status
            && let Some(endpoints) = synced(&clusters, o.clusters, want)
        {
            let cpu = crate::peers::cpu_seconds(pid);
            break (started.elapsed().as_secs_f64(), cpu, endpoints);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the federation process did not sync within {} s",
                o.sync_timeout.as_secs()
            ));
        }
    };
    let serve_cpu = crate::peers::cpu_seconds(std::process::id()) - serve_cpu0;
    let rss = status_kib(pid, "VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    Ok(
        json!({"clusters": o.clusters, "services_per_cluster": o.services, "endpoints_per_service": o.endpoints, "endpoints": endpoints, "first_sync_s": round2(sync_s), "first_sync_cpu_s": round2(cpu_s), "api_servers_cpu_s": round2(serve_cpu), "rss_mib": mib(rss)}),
    )
}

/// The endpoints held if every one of `clusters` is synced with at least `want` in all.
fn synced(status: &[ClusterStatus], clusters: usize, want: usize) -> Option<u64> {
    let endpoints = status.iter().map(|c| c.endpoints as u64).sum::<u64>();
    (status.len() == clusters
        && status.iter().all(|c| c.status == Status::Synced)
        && endpoints as usize >= want)
        .then_some(endpoints)
}

/// Time from a remote EndpointSlice write to the registry showing it, over `changes` changes,
/// with 10 services x 2 endpoints in each of two clusters.
async fn propagation(o: &FederationOptions) -> Result<Value, String> {
    let (s1, s2) = (server("cluster1").await?, server("cluster2").await?);
    populate(&s1, 1, 10, 2)?;
    populate(&s2, 2, 10, 2)?;
    remote_secret(&s1, &s2, "cluster2")?;
    let local = meshfed_federation_client(&s1).await?;
    let fed = meshfed_federation::Controllers::start(
        local,
        &meshfed_federation::FederationConfig::new("cluster1", "network1"),
    );
    let registry = fed.registry.clone();
    wait_for(&registry, |s| {
        endpoints_of(s, "svc0.bench.svc.cluster.local").len() == 4
    })
    .await?;
    let samples = slice_changes(&s2, &registry, o.changes).await?;
    Ok(percentiles(o.changes, samples))
}

/// The same figure with the registry holding the whole seeded state (every cluster's
/// services and endpoints): in-process controllers connect to the seeded servers, sync
/// fully, then one remote slice is rewritten `registry_changes` times.
async fn registry_at_scale(o: &FederationOptions, servers: &[ApiServer]) -> Result<Value, String> {
    let remote = servers
        .get(1)
        .ok_or("the registry figure needs at least two clusters")?;
    let local = meshfed_federation_client(&servers[0]).await?;
    let started = Instant::now();
    let fed = meshfed_federation::Controllers::start(
        local,
        &meshfed_federation::FederationConfig::new("cluster1", "network1"),
    );
    let registry = fed.registry.clone();
    let want = o.clusters * o.services * o.endpoints;
    let endpoints = loop {
        if let Some(n) = synced(&registry.clusters(), o.clusters, want) {
            break n;
        }
        if started.elapsed() > o.sync_timeout {
            return Err(format!(
                "the in-process registry did not sync within {} s",
                o.sync_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sync_s = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let _ = registry.snapshot();
    let first_snapshot_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let samples = slice_changes(remote, &registry, o.registry_changes).await?;
    let mut out = percentiles(o.registry_changes, samples);
    out["endpoints"] = endpoints.into();
    out["in_process_sync_s"] = round2(sync_s).into();
    out["first_snapshot_ms"] = round2(first_snapshot_ms).into();
    Ok(out)
}

/// Rewrites svc0's slice in `remote` (cluster2) `n` times, each with a new address, timing
/// each from the write until the registry's snapshot shows the address (microseconds).
async fn slice_changes(
    remote: &ApiServer,
    registry: &meshfed_federation::registry::Registry,
    n: usize,
) -> Result<Vec<u64>, String> {
    let client = meshfed_federation_client(remote).await?;
    let api: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        kube::Api::namespaced(client, "bench");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let ip = format!("10.99.{}.{}", i / 250 % 250, i % 250);
        let patch = json!({"endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node0"}]});
        // Subscribed before the write, so the change that carries it cannot be missed and
        // no snapshot is taken before the registry has changed.
        let changes = registry.subscribe();
        let t0 = Instant::now();
        api.patch(
            "svc0-x",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| e.to_string())?;
        wait_after(registry, changes, |s| {
            endpoints_of(s, "svc0.bench.svc.cluster.local").contains(&ip)
        })
        .await?;
        samples.push(t0.elapsed().as_micros() as u64);
    }
    Ok(samples)
}

fn percentiles(changes: usize, mut samples: Vec<u64>) -> Value {
    samples.sort_unstable();
    if samples.is_empty() {
        return json!({"changes": 0});
    }
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    json!({"changes": changes, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
}

async fn meshfed_federation_client(s: &ApiServer) -> Result<kube::Client, String> {
    meshfed_federation::kubeconfig::client(&s.kubeconfig(), false)
        .await
        .map_err(|e| e.to_string())
}

fn endpoints_of(s: &meshfed_federation::registry::Snapshot, host: &str) -> Vec<String> {
    // Compared and copied through str, whichever string type the registry holds.
    s.services
        .iter()
        .filter(|v| *v.hostname == *host)
        .flat_map(|v| v.endpoints.iter().map(|e| e.address.to_string()))
        .collect()
}

async fn wait_for(
    registry: &meshfed_federation::registry::Registry,
    ok: impl Fn(&meshfed_federation::registry::Snapshot) -> bool,
) -> Result<(), String> {
    let mut changes = registry.subscribe();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !ok(&registry.snapshot()) {
            let _ = changes.changed().await;
        }
    })
    .await
    .map_err(|_| "a change did not reach the registry within 60 s".to_string())
}

/// Waits until a snapshot taken after a change notified on `changes` satisfies `ok`.
async fn wait_after(
    registry: &meshfed_federation::registry::Registry,
    mut changes: tokio::sync::watch::Receiver<u64>,
    ok: impl Fn(&meshfed_federation::registry::Snapshot) -> bool,
) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if changes.changed().await.is_err() {
                return Err("the registry is gone".to_string());
            }
            if ok(&registry.snapshot()) {
                return Ok(());
            }
        }
    })
    .await
    .map_err(|_| "a change did not reach the registry within 60 s".to_string())?
}

/// Seeds the scale state and measures what `o.modes` asks on it: the seeding itself (wall
/// time, the bench process's RSS after it and its peak), then "scale" and "registry".
async fn at_scale(
    o: &FederationOptions,
    report: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    let started = Instant::now();
    let servers = seeded(o).await?;
    let me = std::process::id();
    report.insert(
        "seeding".into(),
        json!({"objects_per_cluster": o.services * (o.endpoints + 2) + 10, "seed_s": round2(started.elapsed().as_secs_f64()), "bench_rss_mib": mib(status_kib(me, "VmRSS")), "bench_peak_rss_mib": mib(status_kib(me, "VmHWM"))}),
    );
    if o.runs("scale") {
        report.insert("scale".into(), scale(o, &servers).await?);
    }
    if o.runs("registry") {
        report.insert("registry".into(), registry_at_scale(o, &servers).await?);
    }
    Ok(())
}

pub fn run(o: &FederationOptions) -> Result<Value, String> {
    // As the other benches: the API servers (and in-process controllers) on one core, the
    // `meshfed federation` process on the other, so neither's figure is the other's load.
    super::pin_self(super::LOAD_CORE)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let report = rt.block_on(async {
        let mut report = serde_json::Map::new();
        if o.runs("propagation") {
            report.insert("propagation".into(), propagation(o).await?);
        }
        if o.runs("scale") || o.runs("registry") {
            at_scale(o, &mut report).await?;
        }
        Ok::<_, String>(Value::Object(report))
    })?;
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", o.json.display()))?;
    Ok(report)
}
