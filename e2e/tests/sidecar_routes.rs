//! The test bed sidecar reads the federation's own Envoy LDS/RDS (issue 20 point 5: "the
//! same resources"), so the two cannot drift: the federation builds the listeners and route
//! configurations for the sidecar's own node (its `HTTP_PROXY_PORT`, `INTERCEPTION_MODE`,
//! `LABELS`), and the sidecar's decoder takes every one without a NACK and routes the demo's
//! VirtualServices as Envoy would. (Here and not in the testbed crate: the federation
//! dev-depends on the testbed, so the testbed cannot dev-depend on it.)

use meshfed_federation::registry::{PortView, ServiceView, Snapshot};
use meshfed_federation::xds::node::Proxy;
use meshfed_federation::xds::rds::Sources;
use meshfed_federation::xds::virtual_service::{VirtualService, parse};
use meshfed_federation::xds::{lds, rds};
use meshfed_proto::ads::Identity;
use meshfed_testbed::sidecar::routes::decode::{listener, route_configuration};
use meshfed_testbed::sidecar::routes::{Abort, Action, Forward, RequestView, RouteTable};
use meshfed_testbed::sidecar::{Table, node};
use std::path::Path;
use std::time::Duration;

const PORT: u16 = 15001;
const V1: &str = "outbound|5000|v1|helloworld.sample.svc.cluster.local";
const V2: &str = "outbound|5000|v2|helloworld.sample.svc.cluster.local";

fn service(host: &str, ns: &str, port: u16) -> ServiceView {
    ServiceView {
        hostname: format!("{host}.{ns}.svc.cluster.local"),
        namespace: ns.into(),
        ports: vec![PortView {
            name: "http".into(),
            port,
            ..Default::default()
        }],
        cluster_ips: [("c1".to_string(), "10.96.0.5".to_string())].into(),
        ..Default::default()
    }
}

fn snapshot() -> Snapshot {
    let mut services = vec![service("helloworld", "sample", 5000)];
    for s in ["productpage", "reviews", "ratings", "details"] {
        services.push(service(s, "default", 9080));
    }
    services.push(service("httpbin", "default", 8000));
    Snapshot {
        services: services.into_iter().map(std::sync::Arc::new).collect(),
        gateways: vec![],
    }
}

/// The sleep sidecar's node as the test bed sends it, read as the federation reads nodes.
fn sleep_proxy() -> Proxy {
    let id = Identity {
        kind: "sidecar".into(),
        cluster_id: "c1".into(),
        network: "network1".into(),
        ip: "10.10.0.9".into(),
        pod: "sleep".into(),
        namespace: "sample".into(),
        ..Default::default()
    };
    let labels = [("app".to_string(), "sleep".to_string())].into();
    Proxy::from_node(&node(&id, PORT, &labels)).expect("a sidecar node")
}

/// Every VirtualService document of a YAML file (others skipped), in its namespace.
fn virtual_services(path: &Path) -> Vec<VirtualService> {
    let text = std::fs::read_to_string(path).expect("sample");
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("---") {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.iter()
        .filter_map(|d| serde_yaml::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["kind"] == "VirtualService")
        .map(|v| {
            let ns = v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            parse(&ns, &name, &v, "cluster.local").expect("the sample parses")
        })
        .collect()
}

/// The federation's LDS and RDS for the sleep sidecar, through the sidecar's decoder; any
/// NACK fails. Returns the table the sidecar would route by.
fn sidecar_table(vs: &[VirtualService]) -> Table {
    let snap = snapshot();
    let src = Sources {
        snapshot: &snap,
        virtual_services: vs,
        domain: "cluster.local",
    };
    let proxy = sleep_proxy();
    let mut t = Table::default();
    for l in lds::sidecar::listeners(&proxy, &src, "cluster.local") {
        if let Some(decoded) = listener(&l).unwrap_or_else(|e| panic!("NACK {}: {e:#}", l.name)) {
            t.listeners.insert(l.name.clone(), decoded);
        }
    }
    let names: Vec<String> = t.listeners.values().map(|l| l.rds.clone()).collect();
    for name in names {
        let rc = rds::envoy::by_name(&name, &proxy, &src).expect("the named routes exist");
        let decoded = route_configuration(&rc).unwrap_or_else(|e| panic!("NACK {name}: {e:#}"));
        t.routes.insert(name, decoded.into());
    }
    t
}

fn http_proxy(t: &Table) -> &RouteTable {
    t.http_proxy(PORT)
        .expect("Istio's HTTP proxy listener and its routes")
        .1
}

/// The forward action for a request to helloworld:5000 with these headers.
fn forward<'a>(rt: &'a RouteTable, headers: &[(&str, &str)]) -> &'a Forward {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = RequestView {
        method: "GET",
        path: "/hello",
        authority: "helloworld:5000",
        headers: &headers,
    };
    let vhost = rt
        .vhost("helloworld:5000")
        .expect("a vhost for helloworld:5000");
    match &vhost.route(&req).expect("a route").action {
        Action::Forward(f) => f,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn sample(name: &str) -> Vec<VirtualService> {
    virtual_services(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples")
            .join(name),
    )
}

/// Istio `buildHTTPProxy` for `HTTP_PROXY_PORT=15001`: the listener `127.0.0.1_15001` names
/// RDS `http_proxy`; without a VirtualService helloworld's default route goes to
/// `outbound|5000||fqdn` with no timeout and Istio's default retries, by every name form the
/// sleep pod may use.
#[test]
fn the_sidecar_takes_the_federations_http_proxy_routes() {
    let t = sidecar_table(&[]);
    assert_eq!(t.listeners[&Table::http_proxy_name(PORT)].rds, "http_proxy");
    let rt = http_proxy(&t);
    for host in [
        "helloworld:5000",
        "helloworld.sample:5000",
        "helloworld.sample.svc.cluster.local:5000",
    ] {
        assert!(rt.vhost(host).is_some(), "{host}");
    }
    let f = forward(rt, &[]);
    assert_eq!(
        f.clusters[0].name,
        "outbound|5000||helloworld.sample.svc.cluster.local"
    );
    assert_eq!(f.timeout, None);
    let retry = f.retry.as_ref().expect("Istio's default retry policy");
    assert_eq!(retry.num_retries, 2);
    assert!(retry.on.connect_failure);
}

/// The demo's VirtualServices as the sidecar reads them from the federation:
/// `traffic_shift` (v1/v2 50/50), `header_route` (`end-user: jason` to v2), `fault` (abort
/// 500 for jason, 1 s delay for tester) and `timeout` (0.5 s to v2).
#[test]
fn the_demo_virtual_services_route_as_envoy_would() {
    let t = sidecar_table(&sample("vs-traffic-shift.yaml"));
    let f = forward(http_proxy(&t), &[]);
    let split: Vec<(&str, u32)> = f
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(split, [(V1, 50), (V2, 50)]);

    let t = sidecar_table(&sample("vs-header-route.yaml"));
    assert_eq!(
        forward(http_proxy(&t), &[("end-user", "jason")]).clusters[0].name,
        V2
    );
    assert_eq!(
        forward(http_proxy(&t), &[("end-user", "bob")]).clusters[0].name,
        V1
    );

    let t = sidecar_table(&sample("vs-fault.yaml"));
    let rt = http_proxy(&t);
    let vhost = rt.vhost("helloworld:5000").expect("vhost");
    let fault_for = |user: &str| {
        let headers = vec![("end-user".to_string(), user.to_string())];
        let req = RequestView {
            method: "GET",
            path: "/hello",
            authority: "helloworld:5000",
            headers: &headers,
        };
        vhost.route(&req).and_then(|r| r.fault.clone())
    };
    let jason = fault_for("jason").expect("jason's fault");
    assert_eq!(jason.abort, Some((Abort::Http(500), 1_000_000)));
    let tester = fault_for("tester").expect("tester's fault");
    assert_eq!(tester.delay, Some((Duration::from_secs(1), 1_000_000)));
    assert!(fault_for("bob").is_none());

    let t = sidecar_table(&sample("vs-timeout.yaml"));
    let f = forward(http_proxy(&t), &[]);
    assert_eq!(
        (f.clusters[0].name.as_str(), f.timeout),
        (V2, Some(Duration::from_millis(500)))
    );
}

/// Every seed VirtualService (`samples/seed-vs`, the examples), one file at a time,
/// reaches the sidecar without a NACK.
#[test]
fn the_seed_virtual_services_decode_without_a_nack() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/seed-vs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("seed dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for f in files {
        let vs = virtual_services(&f);
        let t = sidecar_table(&vs);
        assert!(t.http_proxy(PORT).is_some(), "{}", f.display());
    }
}
