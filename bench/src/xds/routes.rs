//! `bench xds --modes vs`: a VirtualService change reaching many proxyless gRPC clients
//! (issue 20). Each client is a delta ADS stream with `GENERATOR=grpc`, as gRPC's xDS client
//! is: it subscribes to the listener of its target, then to the RouteConfiguration that
//! listener names. Each change flips the weights of the VirtualService of that service (svc1)
//! (v1/v2 90/10, then 10/90, ...) in the local cluster; a client's latency is from the write
//! to its receiving the RouteConfiguration with the new weights.

use super::{Client, NONE, Shared, connect, until};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Value as PbValue, value};
use meshfed_federation::xds::generate::{LISTENER_TYPE as LDS, ROUTE_TYPE as RDS};
use prost::Message;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Not svc0, whose endpoints the endpoint-change modes rewrite: subsets on it would add
/// assignments to their figure.
const HOST: &str = "svc1.bench.svc.cluster.local";
/// The target as a gRPC client in namespace `bench` dials it: `xds:///svc1:8080`.
const LISTENER: &str = "svc1:8080";

/// The VirtualService in state `state`: v1/v2 at 90/10 when even, 10/90 when odd.
fn virtual_service(state: usize) -> Value {
    let (v1, v2) = if state.is_multiple_of(2) {
        (90, 10)
    } else {
        (10, 90)
    };
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "svc1"},
        "spec": {"hosts": ["svc1"], "http": [{"route": [
            {"destination": {"host": "svc1", "subset": "v1"}, "weight": v1},
            {"destination": {"host": "svc1", "subset": "v2"}, "weight": v2}]}]}})
}

fn destination_rule() -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "svc1"},
        "spec": {"host": "svc1", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]}})
}

/// Puts the rules for the first state into the local cluster (before the clients connect).
pub(super) fn seed(local: &meshfed_testbed::ApiServer) -> Result<(), String> {
    local
        .insert("DestinationRule", "bench", destination_rule())
        .map_err(|e| e.message)?;
    local
        .insert("VirtualService", "bench", virtual_service(0))
        .map_err(|e| e.message)?;
    Ok(())
}

/// The weight of subset v1 in the first route, if the configuration splits by weight.
fn v1_weight(rc: &RouteConfiguration) -> Option<u32> {
    let route = rc.virtual_hosts.first()?.routes.first()?;
    let Some(Action::Route(a)) = &route.action else {
        return None;
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        return None;
    };
    let v1 = w.clusters.iter().find(|c| c.name.contains("|v1|"))?;
    Some(v1.weight.as_ref()?.value)
}

/// The RDS name a listener's HttpConnectionManager asks for.
fn route_name(l: &Listener) -> Option<String> {
    let any = l.api_listener.as_ref()?.api_listener.as_ref()?;
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).ok()?;
    match hcm.route_specifier? {
        RouteSpecifier::Rds(r) => Some(r.route_config_name),
        _ => None,
    }
}

fn proxyless_node(i: usize) -> envoy_types::pb::envoy::config::core::v3::Node {
    let mut n = super::node(i);
    if let Some(m) = n.metadata.as_mut() {
        let grpc = PbValue {
            kind: Some(value::Kind::StringValue("grpc".into())),
        };
        m.fields.insert("GENERATOR".into(), grpc);
    }
    n
}

/// One proxyless client: LDS for its target, then RDS as the listener says; ACKs all.
async fn client(
    mut c: Client,
    i: usize,
    shared: Arc<Shared>,
    rds_bytes: Arc<AtomicU64>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(8);
    let subscribe = |t: &str, name: String| DeltaDiscoveryRequest {
        node: Some(proxyless_node(i)),
        type_url: t.into(),
        resource_names_subscribe: vec![name],
        ..Default::default()
    };
    tx.send(subscribe(LDS, LISTENER.into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut s = c
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (mut last, mut ready, mut asked) = (NONE, false, false);
    while let Some(r) = s.message().await.map_err(|e| e.to_string())? {
        let len = r.encoded_len() as u64;
        shared.bytes.fetch_add(len, Ordering::Relaxed);
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        tx.send(ack).await.map_err(|e| e.to_string())?;
        if r.type_url == LDS && !asked {
            if let Some(name) = listener_route(&r) {
                asked = true;
                tx.send(subscribe(RDS, name))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        } else if r.type_url == RDS {
            rds_bytes.fetch_add(len, Ordering::Relaxed);
            let Some(w) = weight(&r) else { continue };
            if !ready {
                ready = true;
                shared.ready.fetch_add(1, Ordering::AcqRel);
                shared.notify.notify_one();
            }
            // Counted only with the weights the current change wrote.
            let c = shared.change.load(Ordering::Acquire);
            if c != NONE && w == v1_of(c as usize + 1) {
                shared.saw_target(&mut last);
            }
        }
    }
    Ok(())
}

fn v1_of(state: usize) -> u32 {
    if state.is_multiple_of(2) { 90 } else { 10 }
}

fn listener_route(r: &DeltaDiscoveryResponse) -> Option<String> {
    let l = r.resources.iter().find(|x| x.name == LISTENER)?;
    route_name(&Listener::decode(l.resource.as_ref()?.value.as_slice()).ok()?)
}

fn weight(r: &DeltaDiscoveryResponse) -> Option<u32> {
    let want = format!("outbound|8080||{HOST}");
    let x = r.resources.iter().find(|x| x.name == want)?;
    v1_weight(&RouteConfiguration::decode(x.resource.as_ref()?.value.as_slice()).ok()?)
}

/// Connects the clients, flips the weights `changes` times, reports latency, bytes and CPU.
pub(super) async fn measure(
    o: &super::XdsOptions,
    url: &str,
    local: &meshfed_testbed::ApiServer,
    pid: u32,
) -> Result<Value, String> {
    let shared = Arc::new(Shared::new());
    let rds_bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let c = connect(url, i).await?;
        let (s, b) = (shared.clone(), rds_bytes.clone());
        tasks.push(tokio::spawn(async move { client(c, i, s, b).await }));
    }
    until(&shared, o.clients, Duration::from_secs(120), |s| {
        s.ready.load(Ordering::Acquire)
    })
    .await?;
    let cpu0 = super::cpu_seconds(pid);
    let (bytes0, rds0) = (
        shared.bytes.load(Ordering::Relaxed),
        rds_bytes.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    for i in 0..o.changes {
        shared.arrived.store(0, Ordering::Release);
        shared
            .t0_us
            .store(shared.base.elapsed().as_micros() as u64, Ordering::Release);
        shared.change.store(i as u64, Ordering::Release);
        local
            .replace("VirtualService", "bench", virtual_service(i + 1))
            .map_err(|e| e.message)?;
        until(&shared, o.clients, Duration::from_secs(30), |s| {
            s.arrived.load(Ordering::Acquire)
        })
        .await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = super::cpu_seconds(pid) - cpu0;
    let bytes = shared.bytes.load(Ordering::Relaxed) - bytes0;
    let rds = rds_bytes.load(Ordering::Relaxed) - rds0;
    for t in tasks {
        t.abort();
    }
    let (p50, p99, max) = shared.percentiles();
    let per_client = |b: u64| b as f64 / o.changes as f64 / o.clients as f64;
    Ok(
        json!({"clients": o.clients, "changes": o.changes, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "cpu_ms_per_change": cpu * 1000.0 / o.changes as f64,
        "rds_bytes_per_client_per_change": per_client(rds),
        "bytes_per_client_per_change": per_client(bytes),
        "seconds": elapsed}),
    )
}
