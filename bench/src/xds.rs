//! `bench xds`: a remote endpoint change reaching many connected ADS clients. Two test bed
//! API servers (in this process, with the clients, on core 0) and a `meshfed federation`
//! process (core 1); every client is its own gRPC connection, as every sidecar is. Each change
//! rewrites one remote EndpointSlice (its endpoint count alternates, so the weight of the
//! remote gateway's endpoint changes); a client's latency is from the write to its receiving
//! the new assignment. Delta and state of the world are measured in the same run, and so is
//! a VirtualService change reaching proxyless clients ([`routes`], mode `vs`).

mod routes;

use super::federation::{populate, remote_secret, server};
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
    pub services: usize,
    /// Which of "delta" and "sotw" to measure.
    pub modes: Vec<String>,
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
            samples: Default::default(),
            notify: Notify::new(),
        }
    }

    /// p50, p99 and the slowest of the samples, in ms.
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

async fn delta_client(mut c: Client, i: usize, shared: Arc<Shared>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(8);
    for t in [CDS, EDS] {
        let req = DeltaDiscoveryRequest {
            node: Some(node(i)),
            type_url: t.into(),
            resource_names_subscribe: vec!["*".into()],
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
        shared
            .bytes
            .fetch_add(r.encoded_len() as u64, Ordering::Relaxed);
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

async fn sotw_client(mut c: Client, i: usize, shared: Arc<Shared>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(8);
    let req = |t: &str, names: Vec<String>, last: Option<(&str, &str)>| DiscoveryRequest {
        node: Some(node(i)),
        type_url: t.into(),
        resource_names: names,
        version_info: last.map(|l| l.0.to_string()).unwrap_or_default(),
        response_nonce: last.map(|l| l.1.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    tx.send(req(CDS, vec![], None))
        .await
        .map_err(|e| e.to_string())?;
    let mut s = c
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (mut last, mut ready, mut eds_names) = (NONE, false, None::<Vec<String>>);
    while let Some(r) = s.message().await.map_err(|e| e.to_string())? {
        shared
            .bytes
            .fetch_add(r.encoded_len() as u64, Ordering::Relaxed);
        if r.type_url == CDS {
            tx.send(req(CDS, vec![], Some((&r.version_info, &r.nonce))))
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

/// svc0's slice in cluster2 with its first `count` pods (at most the 10 `populate` made):
/// mesh workloads (`tlsMode: istio`), so cluster1's clients reach them through cluster2's
/// gateway and the gateway endpoint's weight follows their count.
fn slice(count: usize) -> Value {
    let eps: Vec<Value> = (0..count)
        .map(|e| json!({"addresses": [format!("10.2.0.{e}")], "conditions": {"ready": true}, "nodeName": format!("node{}", e % 10),
            "targetRef": {"kind": "Pod", "namespace": "bench", "name": format!("svc0-{e}")}}))
        .collect();
    json!({"metadata": {"name": "svc0-x", "labels": {"kubernetes.io/service-name": "svc0"}}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

/// One mode: connect every client, make the changes, report latency, CPU and bytes.
/// `offset`: changes made before, so that the endpoint count keeps alternating (a write
/// that changes nothing is no event).
async fn measure(
    o: &XdsOptions,
    mode: &str,
    url: &str,
    remote: &meshfed_testbed::ApiServer,
    pid: u32,
    offset: usize,
) -> Result<Value, String> {
    let shared = Arc::new(Shared::new());
    let mut tasks = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let c = connect(url, i).await?;
        let s = shared.clone();
        tasks.push(if mode == "delta" {
            tokio::spawn(async move { delta_client(c, i, s).await })
        } else {
            tokio::spawn(async move { sotw_client(c, i, s).await })
        });
    }
    until(&shared, o.clients, Duration::from_secs(120), |s| {
        s.ready.load(Ordering::Acquire)
    })
    .await?;
    let (cpu0, bytes0) = (cpu_seconds(pid), shared.bytes.load(Ordering::Relaxed));
    for i in 0..o.changes {
        shared.arrived.store(0, Ordering::Release);
        shared
            .t0_us
            .store(shared.base.elapsed().as_micros() as u64, Ordering::Release);
        shared.change.store(i as u64, Ordering::Release);
        remote
            .replace(
                "EndpointSlice",
                "bench",
                slice(if (offset + i).is_multiple_of(2) {
                    9
                } else {
                    10
                }),
            )
            .map_err(|e| e.message)?;
        until(&shared, o.clients, Duration::from_secs(30), |s| {
            s.arrived.load(Ordering::Acquire)
        })
        .await?;
    }
    let (cpu, bytes) = (
        cpu_seconds(pid) - cpu0,
        shared.bytes.load(Ordering::Relaxed) - bytes0,
    );
    for t in tasks {
        t.abort();
    }
    let (p50, p99, max) = shared.percentiles();
    let n = o.changes as f64;
    Ok(
        json!({"clients": o.clients, "changes": o.changes, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "cpu_ms_per_change": cpu * 1000.0 / n, "kib_per_change": bytes as f64 / 1024.0 / n,
        "bytes_per_client_per_change": bytes as f64 / n / o.clients as f64}),
    )
}

pub fn run(o: &XdsOptions) -> Result<Value, String> {
    super::pin_self(super::LOAD_CORE)?;
    super::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = rt.block_on(async {
        let (s1, s2) = (server("cluster1").await?, server("cluster2").await?);
        populate(&s1, 1, o.services, 10)?;
        populate(&s2, 2, o.services, 10)?;
        s2.insert("Service", "istio-system", json!({"metadata": {"name": "istio-eastwestgateway", "labels": {"topology.istio.io/network": "network2"}},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]}, "status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.2"}]}}}))
            .map_err(|e| e.message)?;
        remote_secret(&s1, &s2, "cluster2")?;
        routes::seed(&s1)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let kc = dir.path().join("kubeconfig");
        s1.write_kubeconfig(&kc).map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new("taskset")
            .args(["-c", &super::PROXY_CORE.to_string()])
            .arg(&o.meshfed)
            .args(["federation", "--cluster-id", "cluster1", "--network", "network1", "--admin", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kc)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", o.meshfed.display()))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?), &mut line).map_err(|e| e.to_string())?;
        let xds = line.split("xds ").nth(1).and_then(|r| r.split(',').next()).ok_or_else(|| format!("no xds address in {line:?}"))?;
        let url = format!("http://{xds}");
        let pid = child.id();
        let mut report = json!({"services_per_cluster": o.services});
        for (n, mode) in o.modes.iter().enumerate() {
            let r = match mode.as_str() {
                "vs" => routes::measure(o, &url, &s1, pid).await,
                _ => measure(o, mode, &url, &s2, pid, n * o.changes).await,
            };
            match r {
                Ok(r) => report[mode.as_str()] = r,
                Err(e) => {
                    let _ = child.kill();
                    return Err(format!("{mode}: {e}"));
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok::<_, String>(report)
    })?;
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", o.json.display()))?;
    Ok(report)
}
