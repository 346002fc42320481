//! `bench xds`: a remote endpoint change reaching many connected ADS clients. Test bed API
//! servers (`--clusters`, each `--services` x `--endpoints`; in this process, with the
//! clients, on core 0) and a `meshfed federation` process (core 1); every client is its own
//! gRPC connection, as every sidecar is. Each change rewrites one remote EndpointSlice (svc0's
//! in cluster2; its endpoint count alternates, so the weight of the remote gateway's endpoint
//! changes); a client's latency is from the write to its receiving the new assignment. Delta
//! and state of the world are measured in the same run, and so is a VirtualService change
//! reaching proxyless clients ([`routes`], mode `vs`).
//!
//! What clients subscribe to ([`Subscribe`]): every cluster and assignment (wildcard, an
//! Envoy sidecar without a `Sidecar` scope), or only those of the service they call (named,
//! as proxyless gRPC asks for the clusters its routes name, and as a sidecar scoped by a
//! `Sidecar` egress list gets them): at a million endpoints the wildcard would send each
//! client every assignment.

mod routes;
mod setup;

use super::peers::cpu_seconds;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use meshfed_proto::ads::Identity;
use prost::Message;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

pub struct XdsOptions {
    pub json: PathBuf,
    pub meshfed: PathBuf,
    pub clients: usize,
    pub changes: usize,
    /// Clusters in the mesh (cluster1 local, the others remote on networks of their own).
    pub clusters: usize,
    pub services: usize,
    /// Endpoints (pods) per service and cluster.
    pub endpoints: usize,
    pub subscribe: Subscribe,
    /// Which of "delta" and "sotw" to measure.
    pub modes: Vec<String>,
}

/// What the endpoint-change clients subscribe to (CDS and EDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribe {
    /// Every cluster and assignment: delta `*`, state of the world every name CDS gave.
    Wildcard,
    /// Only the cluster and assignment of the service they call ([`TARGET`]).
    Named,
}

impl Subscribe {
    fn names(self) -> Vec<String> {
        match self {
            Subscribe::Wildcard => vec!["*".into()],
            Subscribe::Named => vec![TARGET.into()],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Subscribe::Wildcard => "wildcard",
            Subscribe::Named => "named",
        }
    }
}

use meshfed_proto::ads::{CLUSTER_TYPE as CDS, ENDPOINT_TYPE as EDS};
const TARGET: &str = "outbound|8080||svc0.bench.svc.cluster.local";
const NONE: u64 = u64::MAX;

/// What the clients report to the driver.
struct Shared {
    base: Instant,
    change: AtomicU64,
    t0_us: AtomicU64,
    arrived: AtomicUsize,
    ready: AtomicUsize,
    bytes: AtomicU64,
    /// Of `bytes`, those of EDS responses (the rest: CDS, and for `vs` LDS/RDS).
    eds_bytes: AtomicU64,
    samples: std::sync::Mutex<Vec<u64>>,
    notify: Notify,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            base: Instant::now(),
            change: AtomicU64::new(NONE),
            t0_us: AtomicU64::new(0),
            arrived: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            eds_bytes: AtomicU64::new(0),
            samples: Default::default(),
            notify: Notify::new(),
        }
    }

    /// p50, p99 and the slowest of the samples, in ms.
    /// Counts a response of `type_url` that encodes to `len` bytes.
    fn received(&self, type_url: &str, len: usize) {
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if type_url == EDS {
            self.eds_bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    fn percentiles(&self) -> (f64, f64, f64) {
        let mut samples =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        samples.sort_unstable();
        let pct = |p: f64| {
            let i = ((samples.len().max(1) - 1) as f64 * p).round() as usize;
            samples.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        (pct(0.5), pct(0.99), pct(1.0))
    }

    /// A client got an assignment of the target cluster: the first time per change counts.
    fn saw_target(&self, last: &mut u64) {
        let c = self.change.load(Ordering::Acquire);
        if c == NONE || c == *last {
            return;
        }
        *last = c;
        let us = self.base.elapsed().as_micros() as u64 - self.t0_us.load(Ordering::Acquire);
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(us);
        self.arrived.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }
}

fn node(i: usize) -> Node {
    Identity {
        kind: "sidecar".into(),
        cluster_id: "cluster1".into(),
        network: "network1".into(),
        ip: format!("10.1.{}.{}", i / 250, i % 250),
        pod: format!("client-{i}"),
        namespace: "bench".into(),
        locality: Locality {
            region: "region1".into(),
            zone: "zone0".into(),
            sub_zone: String::new(),
        },
    }
    .node()
}

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

/// Client `i`'s own gRPC connection, as every sidecar has.
async fn connect(url: &str, i: usize) -> Result<Client, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("client {i}: {e}"))?;
    Ok(Client::new(channel).max_decoding_message_size(64 << 20))
}

async fn delta_client(
    mut c: Client,
    i: usize,
    sub: Subscribe,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(8);
    for t in [CDS, EDS] {
        let req = DeltaDiscoveryRequest {
            node: Some(node(i)),
            type_url: t.into(),
            resource_names_subscribe: sub.names(),
            ..Default::default()
        };
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
    let mut s = c
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (mut last, mut ready) = (NONE, false);
    while let Some(r) = s.message().await.map_err(|e| e.to_string())? {
        shared.received(&r.type_url, r.encoded_len());
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        tx.send(ack).await.map_err(|e| e.to_string())?;
        if r.type_url == EDS && r.resources.iter().any(|x| x.name == TARGET) {
            if !ready {
                ready = true;
                shared.ready.fetch_add(1, Ordering::AcqRel);
                shared.notify.notify_one();
            }
            shared.saw_target(&mut last);
        }
    }
    Ok(())
}

async fn sotw_client(
    mut c: Client,
    i: usize,
    sub: Subscribe,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(8);
    let req = |t: &str, names: Vec<String>, last: Option<(&str, &str)>| DiscoveryRequest {
        node: Some(node(i)),
        type_url: t.into(),
        resource_names: names,
        version_info: last.map(|l| l.0.to_string()).unwrap_or_default(),
        response_nonce: last.map(|l| l.1.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    // State of the world names no `*`: all is an empty list.
    let cds_names = match sub {
        Subscribe::Wildcard => vec![],
        Subscribe::Named => sub.names(),
    };
    tx.send(req(CDS, cds_names.clone(), None))
        .await
        .map_err(|e| e.to_string())?;
    let mut s = c
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (mut last, mut ready, mut eds_names) = (NONE, false, None::<Vec<String>>);
    while let Some(r) = s.message().await.map_err(|e| e.to_string())? {
        shared.received(&r.type_url, r.encoded_len());
        if r.type_url == CDS {
            tx.send(req(
                CDS,
                cds_names.clone(),
                Some((&r.version_info, &r.nonce)),
            ))
            .await
            .map_err(|e| e.to_string())?;
            if eds_names.is_none() {
                let names: Vec<String> = r
                    .resources
                    .iter()
                    .filter_map(|a| {
                        envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(
                            a.value.as_slice(),
                        )
                        .ok()
                    })
                    .map(|c| c.name)
                    .collect();
                tx.send(req(EDS, names.clone(), None))
                    .await
                    .map_err(|e| e.to_string())?;
                eds_names = Some(names);
            }
        } else if r.type_url == EDS {
            let names = eds_names.clone().unwrap_or_default();
            tx.send(req(EDS, names, Some((&r.version_info, &r.nonce))))
                .await
                .map_err(|e| e.to_string())?;
            if !ready {
                ready = true;
                shared.ready.fetch_add(1, Ordering::AcqRel);
                shared.notify.notify_one();
                continue;
            }
            shared.saw_target(&mut last);
        }
    }
    Ok(())
}

/// Waits until `count()` reaches `want`, for at most `limit`.
async fn until(
    shared: &Shared,
    want: usize,
    limit: Duration,
    count: impl Fn(&Shared) -> usize,
) -> Result<(), String> {
    tokio::time::timeout(limit, async {
        while count(shared) < want {
            let wake = shared.notify.notified();
            if count(shared) >= want {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), wake).await;
        }
    })
    .await
    .map_err(|_| format!("only {} of {want} clients within {limit:?}", count(shared)))
}

/// svc0's slice in cluster2 with its first `count` pods (at most the `endpoints` `populate`
/// made, with its addresses): mesh workloads (`tlsMode: istio`), so cluster1's clients reach
/// them through cluster2's gateway and the gateway endpoint's weight follows their count.
fn slice(count: usize) -> Value {
    let eps: Vec<Value> = (0..count)
        .map(|e| json!({"addresses": [format!("10.2.{}.{}", e / 250 % 250, e % 250)], "conditions": {"ready": true}, "nodeName": format!("node{}", e % 10),
            "targetRef": {"kind": "Pod", "namespace": "bench", "name": format!("svc0-{e}")}}))
        .collect();
    json!({"metadata": {"name": "svc0-x", "labels": {"kubernetes.io/service-name": "svc0"}}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

/// How long the clients may take to connect and get their first assignment, and one change
/// to reach them all: generous at a million endpoints, where a push rebuilds much today.
fn limits(o: &XdsOptions) -> (Duration, Duration) {
    let big = o.clusters * o.services * o.endpoints >= 100_000 || o.clients > 2000;
    if big {
        (Duration::from_secs(900), Duration::from_secs(120))
    } else {
        (Duration::from_secs(120), Duration::from_secs(30))
    }
}

/// Connects every client of `mode`, each on its own connection; returns their tasks once
/// all hold the target's assignment.
async fn connect_all(
    o: &XdsOptions,
    mode: &str,
    url: &str,
    shared: &Arc<Shared>,
) -> Result<Vec<tokio::task::JoinHandle<Result<(), String>>>, String> {
    let mut tasks = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let c = connect(url, i).await?;
        let (s, sub) = (shared.clone(), o.subscribe);
        tasks.push(if mode == "delta" {
            tokio::spawn(async move { delta_client(c, i, sub, s).await })
        } else {
            tokio::spawn(async move { sotw_client(c, i, sub, s).await })
        });
    }
    until(shared, o.clients, limits(o).0, |s| {
        s.ready.load(Ordering::Acquire)
    })
    .await?;
    settle(shared, limits(o).0).await;
    Ok(tasks)
}

/// Waits until no response has arrived for a quarter second (at most `limit`): a client is
/// ready once it holds the target's assignment, but a delta first sync comes in 16 KiB
/// messages, and the rest of it must not be counted (nor compete) as the first change.
async fn settle(shared: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let before = shared.bytes.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
        if shared.bytes.load(Ordering::Relaxed) == before || Instant::now() > deadline {
            return;
        }
    }
}

/// One mode: connect every client, make the changes, report latency, CPU, bytes and the
/// federation's memory. `offset`: changes made before, so that the endpoint count keeps
/// alternating (a write that changes nothing is no event).
async fn measure(
    o: &XdsOptions,
    mode: &str,
    fed: &setup::Federation,
    remote: &meshfed_testbed::ApiServer,
    offset: usize,
) -> Result<Value, String> {
    let shared = Arc::new(Shared::new());
    let started = Instant::now();
    let tasks = connect_all(o, mode, &fed.url, &shared).await?;
    let connect_s = started.elapsed().as_secs_f64();
    let first_sync_bytes = shared.bytes.load(Ordering::Relaxed);
    let (cpu0, bytes0) = (cpu_seconds(fed.pid), first_sync_bytes);
    let eds0 = shared.eds_bytes.load(Ordering::Relaxed);
    for i in 0..o.changes {
        shared.arrived.store(0, Ordering::Release);
        shared
            .t0_us
            .store(shared.base.elapsed().as_micros() as u64, Ordering::Release);
        shared.change.store(i as u64, Ordering::Release);
        let count = if (offset + i).is_multiple_of(2) {
            o.endpoints.saturating_sub(1)
        } else {
            o.endpoints
        };
        remote
            .replace("EndpointSlice", "bench", slice(count))
            .map_err(|e| e.message)?;
        until(&shared, o.clients, limits(o).1, |s| {
            s.arrived.load(Ordering::Acquire)
        })
        .await?;
    }
    let (cpu, bytes) = (
        cpu_seconds(fed.pid) - cpu0,
        shared.bytes.load(Ordering::Relaxed) - bytes0,
    );
    let eds = shared.eds_bytes.load(Ordering::Relaxed) - eds0;
    let (rss, hwm) = fed.memory_mib();
    for t in tasks {
        t.abort();
    }
    let (p50, p99, max) = shared.percentiles();
    let n = o.changes as f64;
    Ok(
        json!({"clients": o.clients, "changes": o.changes, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "cpu_ms_per_change": cpu * 1000.0 / n, "kib_per_change": bytes as f64 / 1024.0 / n,
        "bytes_per_client_per_change": bytes as f64 / n / o.clients as f64,
        "eds_bytes_per_client_per_change": eds as f64 / n / o.clients as f64,
        "connect_s": round2(connect_s), "first_sync_bytes_per_client": first_sync_bytes as f64 / o.clients as f64,
        "federation_rss_mib": rss, "federation_peak_rss_mib": hwm}),
    )
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Checks that this process may hold every client's connection (and the API servers').
fn check_fd_limit(o: &XdsOptions) -> Result<(), String> {
    let limit = super::raise_fd_limit();
    let need = (o.clients + 64 * o.clusters + 256) as u64;
    if limit < need {
        return Err(format!(
            "{} clients need about {need} open files; the hard limit (ulimit -Hn) is {limit}",
            o.clients
        ));
    }
    Ok(())
}

pub fn run(o: &XdsOptions) -> Result<Value, String> {
    if o.clusters < 2 || o.services == 0 || o.endpoints == 0 {
        return Err("xds needs at least 2 clusters, 1 service and 1 endpoint".into());
    }
    super::pin_self(super::LOAD_CORE)?;
    check_fd_limit(o)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = rt.block_on(async {
        let mesh = setup::seed(o).await?;
        let started = Instant::now();
        let fed = setup::start(o, &mesh)?;
        let endpoints = fed.synced(o, Duration::from_secs(1800)).await?;
        let sync_s = started.elapsed().as_secs_f64();
        let (rss, _) = fed.memory_mib();
        let mut report = json!({"services_per_cluster": o.services,
            "setup": {"clusters": o.clusters, "services_per_cluster": o.services, "endpoints_per_service": o.endpoints,
                "endpoints": endpoints, "subscribe": o.subscribe.as_str(), "seed_s": round2(mesh.seed_s),
                "federation_sync_s": round2(sync_s), "federation_rss_mib_synced": rss}});
        for (n, mode) in o.modes.iter().enumerate() {
            let r = match mode.as_str() {
                "vs" => routes::measure(o, &fed.url, &mesh.local, fed.pid).await,
                _ => measure(o, mode, &fed, &mesh.remotes[0], n * o.changes).await,
            };
            report[mode.as_str()] = r.map_err(|e| format!("{mode}: {e}"))?;
        }
        let (_, bench_peak) = setup::memory_mib(std::process::id());
        report["setup"]["bench_peak_rss_mib"] = json!(bench_peak);
        Ok::<_, String>(report)
    })?;
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", o.json.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{Subscribe, TARGET, slice};
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn addresses(s: &EndpointSlice) -> Vec<String> {
        s.endpoints
            .iter()
            .flat_map(|e| e.addresses.clone())
            .collect()
    }

    /// An endpoint change only drops or restores svc0's last pod in cluster2: the full slice
    /// the bench writes is the EndpointSlice `populate` seeded (as the EndpointSlice
    /// controller would rewrite it), so each change is an update of that one object
    /// (kube's MODIFIED), never new addresses.
    #[tokio::test]
    async fn the_full_slice_is_the_seeded_one() {
        let s = super::super::federation::server("cluster2")
            .await
            .expect("server");
        // Past 250 endpoints the addresses carry into the third octet.
        super::super::federation::populate(&s, 2, 2, 260).expect("populate");
        let client = meshfed_federation::kubeconfig::client(&s.kubeconfig(), false)
            .await
            .expect("client");
        let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, "bench");
        let seeded = api.get("svc0-x").await.expect("seeded slice");
        let full: EndpointSlice = serde_json::from_value(slice(260)).expect("slice");
        let fewer: EndpointSlice = serde_json::from_value(slice(259)).expect("slice");
        assert_eq!(addresses(&full), addresses(&seeded));
        assert_eq!(addresses(&fewer), addresses(&seeded)[..259].to_vec());
        assert_eq!(full.metadata.name, seeded.metadata.name);
    }

    /// Named clients ask for svc0's cluster and assignment alone, as proxyless gRPC does;
    /// wildcard ones for `*` (delta's wildcard name).
    #[test]
    fn named_clients_ask_for_the_target_alone() {
        assert_eq!(Subscribe::Named.names(), vec![TARGET.to_string()]);
        assert_eq!(Subscribe::Wildcard.names(), vec!["*".to_string()]);
    }
}
