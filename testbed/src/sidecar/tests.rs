//! The proxy as Envoy behaves for Istio's routes: a sidecar fed a Table (the routes decoded
//! from hand-built RDS, as meshfed sends Envoy) in front of plain HTTP backends that count
//! and answer as told.

use super::routes::decode::tests::*;
use super::routes::decode::{listener, route_configuration};
use super::*;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a backend does with its n-th request (from 0): status and how long it waits first.
type Behaviour = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

struct Backend {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    /// Request heads as received.
    heads: Arc<Mutex<Vec<String>>>,
    /// Notified as each request head arrives.
    arrived: Arc<tokio::sync::Notify>,
}

async fn backend(name: &'static str, behaviour: Behaviour) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (c, h, a) = (count.clone(), heads.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let (behaviour, heads, arrived) = (behaviour.clone(), h.clone(), a.clone());
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                heads.lock().expect("heads").push(head);
                arrived.notify_one();
                let (status, wait) = behaviour(n);
                tokio::time::sleep(wait).await;
                let msg = format!(
                    "HTTP/1.1 {status} X\r\nx-backend: {name}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(msg.as_bytes()).await;
            });
        }
    });
    Backend {
        addr,
        count,
        heads,
        arrived,
    }
}

fn ok() -> Behaviour {
    Arc::new(|_| (200, Duration::ZERO))
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn upstream(hosts: &[SocketAddr], limits: Limits) -> Upstream {
    Upstream {
        connect_timeout: Duration::from_secs(1),
        locality_weighted: false,
        outlier: None,
        tls: None,
        limits,
        endpoints: hosts
            .iter()
            .map(|a| Host {
                addr: *a,
                priority: 0,
                locality: Locality::default(),
                locality_weight: 1,
                weight: 1,
                healthy: true,
                tls: false,
            })
            .collect(),
    }
}

fn credentials() -> Credentials {
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "mesh".into(),
        days: 1,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    let ca = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "c1".into(),
            days: 1,
            key: KeyAlgorithm::EcdsaP256,
        })
        .expect("ca");
    let id = SpiffeId::new("cluster.local", "sample", "sleep").expect("id");
    let cert = ca.issue_workload(&WorkloadOptions::new(id)).expect("cert");
    Credentials::new(crate::mesh_tls::Material::from_workload(&cert).expect("material"))
}

const HW: &str = "outbound|5000||helloworld.sample.svc.cluster.local";
const V1: &str = "outbound|5000|v1|helloworld.sample.svc.cluster.local";
const V2: &str = "outbound|5000|v2|helloworld.sample.svc.cluster.local";

/// A running proxy and the table it routes by.
struct Proxy {
    addr: SocketAddr,
    table: watch::Sender<Arc<Table>>,
    _serve: tokio::task::JoinHandle<()>,
}

async fn proxy() -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = watch::channel(Arc::new(Table::default()));
    let shared = Arc::new(Shared {
        table: rx,
        balancer: Mutex::new(pick::Balancer::default()),
        breakers: breaker::Breakers::default(),
        port: addr.port(),
        credentials: credentials(),
        namespace: "sample".into(),
        domain: "cluster.local".into(),
    });
    Proxy {
        addr,
        table: tx,
        _serve: tokio::spawn(proxy::serve(l, shared)),
    }
}

impl Proxy {
    /// Sets the clusters and, if given, Istio's HTTP proxy listener with this RDS.
    fn set(&self, clusters: Vec<(&str, Upstream)>, rds: Option<rt::RouteConfiguration>) {
        let mut t = Table {
            clusters: clusters
                .into_iter()
                .map(|(n, u)| (n.to_string(), u))
                .collect(),
            ..Default::default()
        };
        if let Some(rc) = rds {
            let name = Table::http_proxy_name(self.addr.port());
            let l = proxy_listener(&name, "http_proxy", istio_filters());
            let l = listener(&l).expect("listener").expect("an HCM");
            t.listeners.insert(name, l);
            let rt = route_configuration(&rc).expect("routes decode");
            t.routes.insert("http_proxy".into(), Arc::new(rt));
        }
        self.table.send_replace(Arc::new(t));
    }

    /// One request through the proxy: status, answer head, body and time taken.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let start = std::time::Instant::now();
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: helloworld:5000\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Reply {
            status: head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
            took: start.elapsed(),
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
    took: Duration,
}

const DOMAINS: &[&str] = &[
    "helloworld:5000",
    "helloworld.sample.svc.cluster.local:5000",
];

fn one(routes: Vec<rt::Route>) -> Option<rt::RouteConfiguration> {
    Some(config(DOMAINS, routes))
}

/// Before any RDS arrives the sidecar keeps its old behaviour (Host → `outbound|port||fqdn`),
/// so the demo's first steps do not race the first push; once routes exist they decide.
#[tokio::test]
async fn before_routes_the_host_names_the_cluster_then_routes_decide() {
    let (v1, v2) = (backend("v1", ok()).await, backend("v2", ok()).await);
    let p = proxy().await;
    let clusters = || {
        vec![
            (HW, upstream(&[v1.addr], Limits::default())),
            (V2, upstream(&[v2.addr], Limits::default())),
        ]
    };
    p.set(clusters(), None);
    assert_eq!(p.get("/hello", &[]).await.body, "v1");
    p.set(clusters(), one(vec![route("/", to_cluster(V2))]));
    assert_eq!(p.get("/hello", &[]).await.body, "v2");
}

/// Envoy answers 404 when no virtual host takes the Host or no route matches; a
/// `direct_response` route answers itself (Istio's `block_all`: 502).
#[tokio::test]
async fn no_vhost_or_route_is_404_and_direct_responses_answer() {
    let v1 = backend("v1", ok()).await;
    let p = proxy().await;
    let mut rc = config(&["elsewhere:5000"], vec![route("/", to_cluster(HW))]);
    p.set(
        vec![(HW, upstream(&[v1.addr], Limits::default()))],
        Some(rc.clone()),
    );
    assert_eq!(p.get("/", &[]).await.status, 404, "no vhost");
    rc.virtual_hosts[0].domains = vec!["helloworld:5000".into()];
    rc.virtual_hosts[0].routes = vec![route("/only", to_cluster(HW))];
    p.set(
        vec![(HW, upstream(&[v1.addr], Limits::default()))],
        Some(rc.clone()),
    );
    assert_eq!(p.get("/", &[]).await.status, 404, "no route");
    rc.virtual_hosts[0].routes = vec![rt::Route {
        action: Some(rt::route::Action::DirectResponse(
            rt::DirectResponseAction {
                status: 502,
                ..Default::default()
            },
        )),
        ..route("/", to_cluster(HW))
    }];
    p.set(vec![], Some(rc));
    assert_eq!(p.get("/", &[]).await.status, 502);
    assert_eq!(v1.count.load(Ordering::SeqCst), 0);
}

/// The seed's `end-user: jason` VirtualService: the header route to v2 comes first, the
/// catch-all to v1 after it.
#[tokio::test]
async fn header_route_sends_jason_to_v2_and_everyone_else_to_v1() {
    let (v1, v2) = (backend("v1", ok()).await, backend("v2", ok()).await);
    let p = proxy().await;
    let mut jason = route("/", to_cluster(V2));
    if let Some(m) = jason.r#match.as_mut() {
        m.headers = vec![header("end-user", MatchPattern::Exact("jason".into()))];
    }
    p.set(
        vec![
            (V1, upstream(&[v1.addr], Limits::default())),
            (V2, upstream(&[v2.addr], Limits::default())),
        ],
        one(vec![jason, route("/", to_cluster(V1))]),
    );
    for _ in 0..5 {
        assert_eq!(p.get("/hello", &[("end-user", "jason")]).await.body, "v2");
        assert_eq!(p.get("/hello", &[("end-user", "bob")]).await.body, "v1");
        assert_eq!(p.get("/hello", &[]).await.body, "v1");
    }
}

/// Weighted clusters (VirtualService `weight`): smooth weighted round robin keeps the split
/// exact, 50/50 and 80/20 over every cycle.
#[tokio::test]
async fn weighted_clusters_split_exactly() {
    let (v1, v2) = (backend("v1", ok()).await, backend("v2", ok()).await);
    let p = proxy().await;
    let clusters = || {
        vec![
            (V1, upstream(&[v1.addr], Limits::default())),
            (V2, upstream(&[v2.addr], Limits::default())),
        ]
    };
    for (w1, w2, n, want1) in [(50, 50, 10, 5), (80, 20, 10, 8)] {
        p.set(
            clusters(),
            one(vec![route("/", weighted_to(&[(V1, w1), (V2, w2)]))]),
        );
        let mut got1 = 0;
        for _ in 0..n {
            if p.get("/", &[]).await.body == "v1" {
                got1 += 1;
            }
        }
        assert_eq!(got1, want1, "{w1}/{w2}");
    }
}

/// Istio's fault: an abort answers with the status and Envoy's body `fault filter abort`
/// without reaching the backend; a delay holds the request for the fixed delay first.
#[tokio::test]
async fn faults_abort_and_delay() {
    let v1 = backend("v1", ok()).await;
    let p = proxy().await;
    let mut jason = with_fault(route("/", to_cluster(HW)), abort(500, Some(100)));
    if let Some(m) = jason.r#match.as_mut() {
        m.headers = vec![header("end-user", MatchPattern::Exact("jason".into()))];
    }
    let mut tester = with_fault(route("/", to_cluster(HW)), delay(0.3, 100));
    if let Some(m) = tester.r#match.as_mut() {
        m.headers = vec![header("end-user", MatchPattern::Exact("tester".into()))];
    }
    let never = with_fault(route("/never", to_cluster(HW)), abort(503, None));
    p.set(
        vec![(HW, upstream(&[v1.addr], Limits::default()))],
        one(vec![jason, tester, never, route("/", to_cluster(HW))]),
    );
    let r = p.get("/", &[("end-user", "jason")]).await;
    assert_eq!((r.status, r.body.as_str()), (500, "fault filter abort"));
    assert_eq!(
        v1.count.load(Ordering::SeqCst),
        0,
        "an abort never reaches upstream"
    );
    let r = p.get("/", &[("end-user", "tester")]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.took >= Duration::from_millis(300),
        "delayed: {:?}",
        r.took
    );
    let r = p.get("/never", &[]).await;
    assert_eq!(r.status, 200, "an abort without percentage is 0 %");
}

/// Route `timeout` (Istio's VirtualService `timeout`): a slower answer is cut off with
/// Envoy's 504 `upstream request timeout`.
#[tokio::test]
async fn route_timeout_answers_504() {
    let slow = backend("v2", Arc::new(|_| (200, Duration::from_secs(2)))).await;
    let p = proxy().await;
    let mut a = to_cluster(V2);
    a.timeout = Some(secs(0.3));
    p.set(
        vec![(V2, upstream(&[slow.addr], Limits::default()))],
        one(vec![route("/", a)]),
    );
    let r = p.get("/", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    assert!(r.took >= Duration::from_millis(300) && r.took < Duration::from_secs(1));
}

/// `retry_on: 5xx`: a 503 is retried up to `num_retries`; without a retry policy Envoy
/// does not retry and the 503 is the answer.
#[tokio::test]
async fn retries_on_5xx_and_none_without_a_policy() {
    let flaky = backend(
        "v1",
        Arc::new(|n| (if n % 2 == 0 { 503 } else { 200 }, Duration::ZERO)),
    )
    .await;
    let p = proxy().await;
    let mut a = to_cluster(HW);
    a.retry_policy = Some(retry_policy("5xx", 2, None));
    let clusters = || vec![(HW, upstream(&[flaky.addr], Limits::default()))];
    p.set(clusters(), one(vec![route("/", a)]));
    for _ in 0..3 {
        assert_eq!(p.get("/", &[]).await.status, 200);
    }
    p.set(clusters(), one(vec![route("/", to_cluster(HW))]));
    let statuses: Vec<u16> = [p.get("/", &[]).await.status, p.get("/", &[]).await.status].into();
    assert!(statuses.contains(&503), "no retries: {statuses:?}");
}

/// `per_try_timeout` with `retry_on: 5xx`: a try that takes too long is abandoned (a 504 for
/// the retry policy) and retried on another host.
#[tokio::test]
async fn per_try_timeout_is_retried() {
    let slow = backend("slow", Arc::new(|_| (200, Duration::from_secs(2)))).await;
    let fast = backend("fast", ok()).await;
    let p = proxy().await;
    let mut a = to_cluster(HW);
    a.retry_policy = Some(retry_policy("5xx", 1, Some(0.2)));
    p.set(
        vec![(HW, upstream(&[slow.addr, fast.addr], Limits::default()))],
        one(vec![route("/", a)]),
    );
    for _ in 0..2 {
        let r = p.get("/", &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "fast"));
        assert!(r.took < Duration::from_secs(1));
    }
}

/// `retry_on: connect-failure` (Istio's default policy): a host that refuses connections
/// is passed over for another.
#[tokio::test]
async fn connect_failures_are_retried_on_another_host() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let live = backend("live", ok()).await;
    let p = proxy().await;
    let mut a = to_cluster(HW);
    a.retry_policy = Some(retry_policy("connect-failure", 2, None));
    p.set(
        vec![(HW, upstream(&[dead, live.addr], Limits::default()))],
        one(vec![route("/", a)]),
    );
    for _ in 0..4 {
        assert_eq!(p.get("/", &[]).await.body, "live");
    }
}

/// VirtualService `headers`: request set/remove reach the backend, a response add reaches
/// the client.
#[tokio::test]
async fn header_edits_reach_backend_and_client() {
    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction as A;
    let v1 = backend("v1", ok()).await;
    let p = proxy().await;
    let mut r = route("/", to_cluster(HW));
    r.request_headers_to_add = vec![add("x-set", "new", A::OverwriteIfExistsOrAdd as i32)];
    r.request_headers_to_remove = vec!["x-drop".into()];
    r.response_headers_to_add = vec![add("x-answer", "added", A::AppendIfExistsOrAdd as i32)];
    r.response_headers_to_remove = vec!["x-backend".into()];
    p.set(
        vec![(HW, upstream(&[v1.addr], Limits::default()))],
        one(vec![r]),
    );
    let reply = p.get("/", &[("x-set", "old"), ("x-drop", "1")]).await;
    assert!(reply.head.contains("x-answer: added"), "{}", reply.head);
    assert!(!reply.head.contains("x-backend"), "{}", reply.head);
    let head = v1.heads.lock().expect("heads")[0].to_ascii_lowercase();
    assert!(
        head.contains("x-set: new") && !head.contains("x-set: old"),
        "{head}"
    );
    assert!(!head.contains("x-drop"), "{head}");
}

/// Istio `mirror`: a copy goes to the mirror cluster with `-shadow` on the Host and its
/// answer is ignored; the client sees the primary's.
#[tokio::test]
async fn mirrors_get_a_shadow_copy() {
    let (v1, v2) = (
        backend("v1", ok()).await,
        backend("v2", Arc::new(|_| (500, Duration::ZERO))).await,
    );
    let p = proxy().await;
    let mut a = to_cluster(V1);
    a.request_mirror_policies = vec![rt::route_action::RequestMirrorPolicy {
        cluster: V2.into(),
        ..Default::default()
    }];
    p.set(
        vec![
            (V1, upstream(&[v1.addr], Limits::default())),
            (V2, upstream(&[v2.addr], Limits::default())),
        ],
        one(vec![route("/", a)]),
    );
    let r = p.get("/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "v1"));
    // The copy is fire-and-forget: await its arrival at the mirror.
    tokio::time::timeout(Duration::from_secs(5), v2.arrived.notified())
        .await
        .expect("the mirror got a copy");
    let arrived = v2.heads.lock().expect("heads").clone();
    assert!(
        arrived
            .first()
            .is_some_and(|h| h.contains("host: helloworld-shadow:5000")),
        "{arrived:?}"
    );
}

/// Circuit breaking (DestinationRule `http2MaxRequests: 1` → `max_requests: 1`): while one
/// request is in flight the next overflows with 503 and `x-envoy-overloaded: true`.
#[tokio::test]
async fn max_requests_overflow_with_x_envoy_overloaded() {
    let held = backend("v1", Arc::new(|_| (200, Duration::from_millis(500)))).await;
    let p = proxy().await;
    let limits = Limits {
        max_requests: 1,
        ..Limits::default()
    };
    p.set(
        vec![(HW, upstream(&[held.addr], limits))],
        one(vec![route("/", to_cluster(HW))]),
    );
    let first = p.get("/", &[]);
    let second = async {
        // Start once the first is at the backend.
        held.arrived.notified().await;
        p.get("/", &[]).await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 503);
    assert!(b.head.contains("x-envoy-overloaded: true"), "{}", b.head);
    assert_eq!(held.count.load(Ordering::SeqCst), 1);
}

/// Istio's agent metadata for this sidecar: `HTTP_PROXY_PORT`, `INTERCEPTION_MODE: NONE` and
/// `LABELS` as a struct, next to what the Identity says.
#[test]
fn node_carries_istios_http_proxy_metadata() {
    let id = Identity {
        kind: "sidecar".into(),
        namespace: "sample".into(),
        cluster_id: "c1".into(),
        ..Default::default()
    };
    let labels = [("app".to_string(), "sleep".to_string())].into();
    let n = node(&id, 15001, &labels);
    let m = n.metadata.expect("metadata").fields;
    let s = |k: &str| match m.get(k).and_then(|v| v.kind.clone()) {
        Some(value::Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("HTTP_PROXY_PORT"), "15001");
    assert_eq!(s("INTERCEPTION_MODE"), "NONE");
    assert_eq!(s("CLUSTER_ID"), "c1");
    match m.get("LABELS").and_then(|v| v.kind.clone()) {
        Some(value::Kind::StructValue(st)) => assert_eq!(
            st.fields.get("app").and_then(|v| v.kind.clone()),
            Some(value::Kind::StringValue("sleep".into()))
        ),
        other => panic!("LABELS: {other:?}"),
    }
}
