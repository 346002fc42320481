//! DestinationRule `connectionPool` circuit breaking judged by gRPC's own proxyless clients
//! (grpcio; @grpc/grpc-js-xds): two test bed clusters, one helloworld backend in each that
//! holds every call, and a rule with `http.http2MaxRequests: 2` applied with kubectl. Istio's
//! grpcgen (`applyCircuitBreakers`) sends that as the cluster's
//! `circuit_breakers.thresholds[DEFAULT].max_requests`, and gRFC A32 has the client fail calls
//! beyond it at once with UNAVAILABLE instead of queueing them.

use meshfed_e2e::federation;
use meshfed_e2e::judges::{self, ChannelCreds, Judge};
use meshfed_e2e::kubectl;
use meshfed_e2e::proxyless::{self, Client, calls};
use meshfed_e2e::workloads;
use meshfed_federation::Controllers;
use meshfed_testbed::ApiServer;
use meshfed_testbed::seed;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const HOST: &str = "helloworld.sample.svc.cluster.local";
/// How long each backend holds a call: long enough that calls overlap, short for the test.
const HOLD: f64 = 1.5;

const RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld-pool, namespace: sample}
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {http2MaxRequests: 2}
";

/// The judges each get their own bed (the gRPC clients' call counters are per process, the
/// bed per test); they take turns so the held calls do not compete for the two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Bed {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _servers: (ApiServer, ApiServer),
    _backends: Vec<Judge>,
    _fed: Controllers,
    kubeconfig: tempfile::NamedTempFile,
    bootstrap: tempfile::NamedTempFile,
}

async fn bed() -> Bed {
    let serial = SERIAL.lock().await;
    let (s1, c1) = seed::cluster("cluster1").await.unwrap();
    let (s2, c2) = seed::cluster("cluster2").await.unwrap();
    let v1 = judges::held_backend("127.0.0.21", "v1", HOLD)
        .await
        .unwrap();
    let v2 = judges::held_backend("127.0.0.22", "v2", HOLD)
        .await
        .unwrap();
    seed::helloworld(&c1, &workloads::helloworld(1, "127.0.0.21", v1.1))
        .await
        .unwrap();
    seed::helloworld(&c2, &workloads::helloworld(2, "127.0.0.22", v2.1))
        .await
        .unwrap();
    let fed = federation::start(&c1, &s2).await.unwrap();
    let mut changes = fed.registry.subscribe();
    tokio::time::timeout(T, async {
        while federation::endpoints(&fed, HOST) < 2 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("both clusters' endpoints in the registry");
    let addr = federation::serve_xds(&fed).await.unwrap().to_string();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    s1.write_kubeconfig(kubeconfig.path()).unwrap();
    let boot = proxyless::sleep_bootstrap(&addr, &ChannelCreds::Insecure, "127.0.0.1", "sample");
    let bootstrap = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bootstrap.path(), boot.to_string()).unwrap();
    Bed {
        _serial: serial,
        _servers: (s1, s2),
        _backends: vec![v1.0, v2.0],
        _fed: fed,
        kubeconfig,
        bootstrap,
    }
}

fn answered(v: &Value) -> u64 {
    calls(v, "v1") + calls(v, "v2")
}

/// The scenario for either client: with no rule six held calls all succeed (gRPC's default
/// limit is 1024); with `http2MaxRequests: 2` exactly two are in flight and the other four
/// fail with UNAVAILABLE before the held ones are answered; once those end, two more fit.
async fn scenario(b: &Bed, mut client: Judge) {
    let ready = client.json(T).await.unwrap();
    assert!(ready["ready"] == "v1" || ready["ready"] == "v2", "{ready}");

    let r = client.ask("concurrent 6", T).await.unwrap();
    assert_eq!(answered(&r), 6, "no rule, no limit: {r}");

    kubectl::apply(b.kubeconfig.path(), RULE).unwrap();
    // The push lands within a few rounds; each round lasts one hold.
    let mut last = Value::Null;
    for _ in 0..20 {
        last = client.ask("concurrent 6", T).await.unwrap();
        if answered(&last) == 2 {
            break;
        }
    }
    let r = last;
    assert_eq!(
        (answered(&r), calls(&r, "error:UNAVAILABLE")),
        (2, 4),
        "two in flight, four dropped: {r}"
    );
    let dropped = r["seconds"]["error:UNAVAILABLE"].as_f64().unwrap();
    assert!(dropped < HOLD / 2.0, "drops come at once: {r}");
    let held = ["v1", "v2"]
        .iter()
        .filter_map(|k| r["seconds"][*k].as_f64())
        .fold(0.0, f64::max);
    assert!(held >= HOLD * 0.9, "the two admitted calls were held: {r}");
    eprintln!("circuit breaking at 2: {r}");

    // The limit counts calls in flight, not calls made.
    let r = client.ask("concurrent 2", T).await.unwrap();
    assert_eq!(answered(&r), 2, "{r}");
    client.kill().await;
}

/// grpcio (C-core's xds_cluster_impl policy, gRFC A32): calls beyond the cluster's
/// `max_requests`, which Istio sets from `http2MaxRequests`, fail at once with UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_drops_calls_beyond_http2_max_requests() {
    let b = bed().await;
    let client =
        proxyless::spawn(Client::Grpcio, &format!("{HOST}:5000"), b.bootstrap.path()).unwrap();
    scenario(&b, client).await;
}

/// @grpc/grpc-js-xds (its xds_cluster_impl picker, gRFC A32): the same limit, the same
/// immediate UNAVAILABLE for calls beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_drops_calls_beyond_http2_max_requests() {
    let b = bed().await;
    let client =
        proxyless::spawn(Client::GrpcJs, &format!("{HOST}:5000"), b.bootstrap.path()).unwrap();
    scenario(&b, client).await;
}
