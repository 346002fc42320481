//! VirtualService routing over proxyless RDS, judged by gRPC's own xDS clients (grpcio and
//! @grpc/grpc-js-xds): two test bed clusters, helloworld v1 in cluster1 and v2 in cluster2
//! (gRPC backends whose delay and failures can be turned on while they serve), the subsets
//! v1/v2 from a DestinationRule, and VirtualServices applied with kubectl. Each test names
//! the gRFC the client implements the field by: A28 (routing: matches, weighted clusters),
//! A31 (timeouts), A33 (fault injection), A44 (retries).
//!
//! Every VirtualService applied here starts with a marker route: calls carrying
//! `x-step: <marker>` are aborted with DATA_LOSS. A RouteConfiguration is taken whole by the
//! client, so once a marker call fails that way every route of that rule is in effect; the
//! tests wait for that instead of sleeping. No client may NACK any of it
//! (`meshfed_xds_nacks_total` stays where it was).

use meshfed_e2e::federation;
use meshfed_e2e::judges::{self, ChannelCreds, Judge};
use meshfed_e2e::kubectl;
use meshfed_e2e::metrics::{self, nacks};
use meshfed_e2e::proxyless::{self, Client, calls, ms, total};
use meshfed_e2e::workloads;
use meshfed_federation::Controllers;
use meshfed_federation::xds::virtual_service::status;
use meshfed_testbed::ApiServer;
use meshfed_testbed::seed;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const HOST: &str = "helloworld.sample.svc.cluster.local";

/// The subsets the routes name: v1 runs in cluster1, v2 in cluster2.
const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: sample}
spec:
  host: helloworld
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// The NACK counter is process-wide and the latency checks want the cores: beds take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Bed {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _servers: (ApiServer, ApiServer),
    fed: Controllers,
    kubeconfig: tempfile::NamedTempFile,
    bootstrap: tempfile::NamedTempFile,
    /// The v1 backend (cluster1), whose knobs the timeout and retry tests turn.
    v1: Judge,
    _v2: Judge,
    client: Judge,
    /// The NACK count when the bed was made.
    nacks: u64,
    which: Client,
}

/// Two clusters, both backends in the registry, the subsets applied and seen, an xDS
/// server, and `which` client ready (its first call answered).
async fn bed(which: Client) -> Bed {
    let serial = SERIAL.lock().await;
    meshfed_model::telemetry::prometheus();
    let (s1, c1) = seed::cluster("cluster1").await.unwrap();
    let (s2, c2) = seed::cluster("cluster2").await.unwrap();
    let (v1, p1) = judges::backend("127.0.0.41", "v1").await.unwrap();
    let (v2, p2) = judges::backend("127.0.0.42", "v2").await.unwrap();
    seed::helloworld(&c1, &workloads::helloworld(1, "127.0.0.41", p1))
        .await
        .unwrap();
    seed::helloworld(&c2, &workloads::helloworld(2, "127.0.0.42", p2))
        .await
        .unwrap();
    let fed = federation::start(&c1, &s2).await.unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    s1.write_kubeconfig(kubeconfig.path()).unwrap();
    kubectl::apply(kubeconfig.path(), SUBSETS).unwrap();
    let mut changes = fed.registry.subscribe();
    let ready = |fed: &Controllers| {
        federation::endpoints(fed, HOST) >= 2 && !fed.registry.destination_rules().is_empty()
    };
    tokio::time::timeout(T, async {
        while !ready(&fed) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("both clusters' endpoints and the subsets in the registry");
    let addr = federation::serve_xds(&fed).await.unwrap().to_string();
    let mut boot =
        proxyless::sleep_bootstrap(&addr, &ChannelCreds::Insecure, "127.0.0.1", "sample");
    // The sleep pod's labels, as Istio's agent sends them (a struct).
    boot["node"]["metadata"]["LABELS"] = serde_json::json!({"app": "sleep", "version": "v1"});
    let bootstrap = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bootstrap.path(), boot.to_string()).unwrap();
    let nacks = nacks();
    let mut client = proxyless::spawn(which, &format!("{HOST}:5000"), bootstrap.path()).unwrap();
    let first = client.json(T).await.unwrap();
    assert!(first["ready"] == "v1" || first["ready"] == "v2", "{first}");
    Bed {
        _serial: serial,
        _servers: (s1, s2),
        fed,
        kubeconfig,
        bootstrap,
        v1,
        _v2: v2,
        client,
        nacks,
        which,
    }
}

/// The VirtualService `helloworld` with the marker route first, then `http` (YAML list
/// items indented by two spaces, as under `http:`).
fn virtual_service(marker: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: helloworld, namespace: sample}}
spec:
  hosts: [helloworld]
  http:
  - name: marker
    match: [{{headers: {{x-step: {{exact: \"{marker}\"}}}}}}]
    fault: {{abort: {{grpcStatus: DATA_LOSS, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: helloworld, subset: v1}}}}]
{http}"
    )
}

impl Bed {
    /// Applies `yaml` with kubectl and waits until the client routes by it: its marker
    /// call fails with DATA_LOSS.
    async fn apply(&mut self, marker: &str, yaml: &str) {
        kubectl::apply(self.kubeconfig.path(), yaml).unwrap();
        let r = self
            .ask(&format!("until error:DATA_LOSS 1 30 x-step={marker}"))
            .await;
        if r["ok"] != true {
            let rules = status::configz(&self.fed.registry);
            panic!(
                "{}: rule {marker} not in effect: {r}\nNACKs: {}\nconfigz: {}",
                self.name(),
                nacks() - self.nacks,
                serde_json::to_string(&rules).unwrap_or_default()
            );
        }
    }

    /// Applies the VirtualService made of the marker route and `http`.
    async fn route(&mut self, marker: &str, http: &str) {
        self.apply(marker, &virtual_service(marker, http)).await;
    }

    async fn ask(&mut self, command: &str) -> Value {
        self.client.ask(command, T).await.unwrap()
    }

    /// Sets the v1 backend's knobs (`grpc_backend.py` `set`).
    async fn v1_knobs(&mut self, knobs: &str) {
        let r = self.v1.ask(&format!("set {knobs}"), T).await.unwrap();
        assert_eq!(r["ok"], true, "{r}");
    }

    fn name(&self) -> &'static str {
        self.which.name()
    }

    /// The end of a scenario: the client never NACKed anything it was sent.
    async fn done(mut self) {
        assert_eq!(
            nacks(),
            self.nacks,
            "{} NACKed a resource (see the federation's log)",
            self.name()
        );
        self.client.kill().await;
    }
}

/// `count` for `n` calls with `meta` (k=v words), asserting every call was answered or
/// failed one of the expected ways, and returning the reply.
async fn count(b: &mut Bed, n: u64, meta: &str) -> Value {
    let r = b.ask(&format!("count {n} {meta}")).await;
    assert_eq!(total(&r), n, "{}: {r}", b.name());
    r
}

/// Share of `outcome` among a reply's calls.
fn share(r: &Value, outcome: &str) -> f64 {
    calls(r, outcome) as f64 / total(r) as f64
}

// --- weights -------------------------------------------------------------------------------

/// gRFC A28 weighted clusters, from Istio's `route[].weight` (`weighted_clusters` with each
/// weight in its wrapper, 0 weights dropped): v1 in cluster1 and v2 in cluster2 share 400
/// calls 50/50 and 80/20 within 10 points, and 0/100 sends everything to v2.
async fn weights(which: Client) {
    let mut b = bed(which).await;
    let split = |w1: u32, w2: u32| {
        format!(
            "  - route:
    - {{destination: {{host: helloworld, subset: v1}}, weight: {w1}}}
    - {{destination: {{host: helloworld, subset: v2}}, weight: {w2}}}
"
        )
    };
    for (w1, w2) in [(50, 50), (80, 20)] {
        b.route(&format!("w{w1}"), &split(w1, w2)).await;
        let r = count(&mut b, 400, "").await;
        let v1 = share(&r, "v1");
        let want = f64::from(w1) / 100.0;
        assert!(
            (v1 - want).abs() <= 0.10 && calls(&r, "v2") + calls(&r, "v1") == 400,
            "{}: {w1}/{w2} gave {r}",
            b.name()
        );
        eprintln!("{} weights {w1}/{w2}: {}", b.name(), r["counts"]);
    }
    b.route("w0", &split(0, 100)).await;
    let r = count(&mut b, 100, "").await;
    assert_eq!(calls(&r, "v2"), 100, "{}: 0/100 gave {r}", b.name());
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_splits_traffic_by_route_weights() {
    weights(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_splits_traffic_by_route_weights() {
    weights(Client::GrpcJs).await;
}

// --- header matches ----------------------------------------------------------------------

/// `match.headers` to v2, everything else to v1.
fn header_to_v2(matcher: &str) -> String {
    format!(
        "  - match: [{{{matcher}}}]
    route: [{{destination: {{host: helloworld, subset: v2}}}}]
  - route: [{{destination: {{host: helloworld, subset: v1}}}}]
"
    )
}

/// gRFC A28 header matchers from Istio's `match.headers` (`string_match`): the seed's
/// `end-user: {exact: jason}` sends jason to v2 across clusters and everyone else to v1;
/// `prefix: jas`; `regex: "jas.*n"`, which is RE2 matched against the whole value (so
/// `xjason` and `jasonx` do not match); `withoutHeaders` (Istio: `invert_match` with
/// `treat_missing_header_as_empty`, so that a call without the header matches too, as it
/// does in Envoy and grpc-js). grpcio 1.85 does not read `treat_missing_header_as_empty`:
/// a call without the header does not match the inverted matcher and goes on to v1.
async fn headers(which: Client) {
    let mut b = bed(which).await;
    let cases: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "exact",
            "headers: {end-user: {exact: jason}}",
            &["jason"],
            &["jasonx", "Jason", ""],
        ),
        (
            "prefix",
            "headers: {end-user: {prefix: jas}}",
            &["jason", "jas"],
            &["ajason"],
        ),
        (
            "regex",
            "headers: {end-user: {regex: \"jas.*n\"}}",
            &["jason", "jasn"],
            &["xjason", "jasonx"],
        ),
        (
            "without",
            "withoutHeaders: {end-user: {exact: jason}}",
            &["bob"],
            &["jason"],
        ),
    ];
    for (marker, matcher, to_v2, to_v1) in cases {
        b.route(marker, &header_to_v2(matcher)).await;
        for (user, want) in to_v2
            .iter()
            .map(|u| (u, "v2"))
            .chain(to_v1.iter().map(|u| (u, "v1")))
        {
            let meta = if user.is_empty() {
                String::new()
            } else {
                format!("end-user={user}")
            };
            let r = count(&mut b, 20, &meta).await;
            assert_eq!(
                calls(&r, want),
                20,
                "{}: {matcher} with end-user={user:?} should reach {want}: {r}",
                b.name()
            );
        }
    }
    // Still the withoutHeaders rule: a call without the header at all.
    let missing = if which == Client::Grpcio { "v1" } else { "v2" };
    let r = count(&mut b, 20, "").await;
    assert_eq!(
        calls(&r, missing),
        20,
        "{}: withoutHeaders, header missing: {r}",
        b.name()
    );
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_routes_by_header_exact_prefix_and_regex() {
    headers(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_routes_by_header_exact_prefix_and_regex() {
    headers(Client::GrpcJs).await;
}

// --- uri matches -----------------------------------------------------------------------------

/// gRFC A28 path matchers from Istio's `match.uri` (a gRPC call's path is
/// `/package.Service/Method`): prefix `/helloworld.Greeter/` and exact
/// `/helloworld.Greeter/SayHello` route the call to v2; a prefix or an exact path of another
/// service or method does not; `regex` is RE2 over the whole path; `ignoreUriCase` makes
/// the prefix case-insensitive.
async fn uris(which: Client) {
    let mut b = bed(which).await;
    let cases = [
        ("prefix", "{prefix: /helloworld.Greeter/}", "v2"),
        ("prefix-other", "{prefix: /helloworld.Other/}", "v1"),
        ("exact", "{exact: /helloworld.Greeter/SayHello}", "v2"),
        ("exact-other", "{exact: /helloworld.Greeter/SayBye}", "v1"),
        ("regex", "{regex: \"/helloworld[.]Greeter/Say.*\"}", "v2"),
        ("regex-part", "{regex: \"/helloworld[.]Greeter\"}", "v1"),
    ];
    for (marker, uri, want) in cases {
        let http = format!(
            "  - match: [{{uri: {uri}}}]
    route: [{{destination: {{host: helloworld, subset: v2}}}}]
  - route: [{{destination: {{host: helloworld, subset: v1}}}}]
"
        );
        b.route(marker, &http).await;
        let r = count(&mut b, 20, "").await;
        assert_eq!(calls(&r, want), 20, "{}: uri {uri}: {r}", b.name());
    }
    let http = "  - match: [{uri: {prefix: /HELLOWORLD.greeter/}, ignoreUriCase: true}]
    route: [{destination: {host: helloworld, subset: v2}}]
  - route: [{destination: {host: helloworld, subset: v1}}]
";
    b.route("ignore-case", http).await;
    let r = count(&mut b, 20, "").await;
    assert_eq!(calls(&r, "v2"), 20, "{}: ignoreUriCase: {r}", b.name());
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_routes_by_uri_prefix_exact_and_regex() {
    uris(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_routes_by_uri_prefix_exact_and_regex() {
    uris(Client::GrpcJs).await;
}

// --- which matches apply to this client ------------------------------------------------

/// Istio's `TranslateRoute` decides on the server which matches apply to the client (gRPC
/// never sees them): `match.port` must be the service port the client dialled,
/// `sourceLabels` a subset of its node's `LABELS`, `sourceNamespace` its namespace. A
/// match that does not apply is left out, so calls fall through to the next route.
async fn applicability(which: Client) {
    let mut b = bed(which).await;
    let cases = [
        ("port", "port: 5000", "v2"),
        ("port-other", "port: 5001", "v1"),
        ("labels", "sourceLabels: {app: sleep}", "v2"),
        (
            "labels-other",
            "sourceLabels: {app: sleep, version: v9}",
            "v1",
        ),
        ("namespace", "sourceNamespace: sample", "v2"),
        ("namespace-other", "sourceNamespace: other", "v1"),
    ];
    for (marker, matcher, want) in cases {
        b.route(marker, &header_to_v2(matcher)).await;
        let r = count(&mut b, 20, "").await;
        assert_eq!(calls(&r, want), 20, "{}: {matcher}: {r}", b.name());
    }
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_gets_only_the_matches_for_its_port_labels_and_namespace() {
    applicability(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_gets_only_the_matches_for_its_port_labels_and_namespace() {
    applicability(Client::GrpcJs).await;
}

// --- the name forms a client may dial ----------------------------------------------------

/// gRPC picks the virtual host by the authority it dialled, so Istio's vhost domains
/// (`generateVirtualHostDomains` with ports, for proxyless) must hold every short form a
/// client in the service's namespace may use: `helloworld:5000`, `helloworld.sample:5000`,
/// `helloworld.sample.svc:5000` (and the FQDN the bed's client uses). Each form's client
/// gets the VirtualService's header route. Then [`other_namespace`].
async fn name_forms(which: Client) {
    let mut b = bed(which).await;
    b.route(
        "names",
        &header_to_v2("headers: {end-user: {exact: jason}}"),
    )
    .await;
    for name in ["helloworld", "helloworld.sample", "helloworld.sample.svc"] {
        let target = format!("{name}:5000");
        let mut c = proxyless::spawn(which, &target, b.bootstrap.path()).unwrap();
        let first = c.json(T).await.unwrap();
        assert_eq!(first["ready"], "v1", "{}: {target}: {first}", b.name());
        for (meta, want) in [("end-user=jason", "v2"), ("", "v1")] {
            let r = c.ask(&format!("count 20 {meta}"), T).await.unwrap();
            assert_eq!(calls(&r, want), 20, "{}: {target} {meta}: {r}", b.name());
        }
        c.kill().await;
    }
    other_namespace(&mut b).await;
    b.done().await;
}

/// A client in namespace `other` dialling `helloworld.sample:5000` gets the rule of
/// namespace `sample` (Istio: VirtualService hosts resolve in the rule's namespace, the
/// client's short names in its own; no `exportTo` means every namespace), until the rule
/// says `exportTo: ["."]`: then that client gets the default route again (both
/// localities), while the bed's client in `sample` keeps the rule.
async fn other_namespace(b: &mut Bed) {
    let text = std::fs::read_to_string(b.bootstrap.path()).unwrap();
    let mut boot: Value = serde_json::from_str(&text).unwrap();
    boot["node"]["id"] = "sidecar~127.0.0.1~sleep-1.other~other.svc.cluster.local".into();
    boot["node"]["metadata"]["NAMESPACE"] = "other".into();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), boot.to_string()).unwrap();
    let mut c = proxyless::spawn(b.which, "helloworld.sample:5000", file.path()).unwrap();
    let first = c.json(T).await.unwrap();
    assert_eq!(
        first["ready"],
        "v1",
        "{}: other namespace: {first}",
        b.name()
    );
    let r = c.ask("count 20 end-user=jason", T).await.unwrap();
    assert_eq!(calls(&r, "v2"), 20, "{}: other namespace: {r}", b.name());

    let own = virtual_service("own", &header_to_v2("headers: {end-user: {exact: jason}}")).replace(
        "  hosts: [helloworld]",
        "  hosts: [helloworld]\n  exportTo: [\".\"]",
    );
    b.apply("own", &own).await;
    let r = c.ask("until v1 1 30 end-user=jason", T).await.unwrap();
    assert_eq!(r["ok"], true, "{}: exportTo . still seen: {r}", b.name());
    let r = c.ask("count 40 end-user=jason", T).await.unwrap();
    assert!(
        calls(&r, "v1") > 0 && calls(&r, "v2") > 0 && r["errors"] == 0,
        "{}: other namespace, default route: {r}",
        b.name()
    );
    c.kill().await;
    let r = count(b, 20, "end-user=jason").await;
    assert_eq!(
        calls(&r, "v2"),
        20,
        "{}: own namespace keeps it: {r}",
        b.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_routes_every_short_name_of_the_service() {
    name_forms(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_routes_every_short_name_of_the_service() {
    name_forms(Client::GrpcJs).await;
}

// --- faults ----------------------------------------------------------------------------------

/// A route for calls with `x-fault: {value}` carrying `fault`, then the rest to v1.
fn fault_route(value: &str, fault: &str) -> String {
    format!(
        "  - match: [{{headers: {{x-fault: {{exact: \"{value}\"}}}}}}]
    fault: {fault}
    route: [{{destination: {{host: helloworld, subset: v2}}}}]
  - route: [{{destination: {{host: helloworld, subset: v1}}}}]
"
    )
}

/// gRFC A33 fault injection from Istio's `fault` (the route's
/// `typed_per_filter_config["envoy.filters.http.fault"]`): `abort.grpcStatus: UNAVAILABLE`
/// fails every call with it; `abort.httpStatus: 503` becomes UNAVAILABLE, 404
/// UNIMPLEMENTED and 500 (the seed's) UNKNOWN (gRPC's HTTP-to-gRPC status mapping); no
/// `percentage` aborts nothing (0 %, as Envoy reads Istio's unset one); `percentage: 50`
/// aborts about half (the fault is decided once per call, before retries, although the
/// route has Istio's default retry policy on UNAVAILABLE); `delay.fixedDelay: 1s` holds each
/// call a second, also with the seed's deprecated `percent: 100`; calls without the header
/// are untouched.
async fn faults(which: Client) {
    let mut b = bed(which).await;
    let aborts = [
        (
            "grpc",
            "{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}",
            "UNAVAILABLE",
        ),
        (
            "http503",
            "{abort: {httpStatus: 503, percentage: {value: 100}}}",
            "UNAVAILABLE",
        ),
        (
            "http404",
            "{abort: {httpStatus: 404, percentage: {value: 100}}}",
            "UNIMPLEMENTED",
        ),
        (
            "http500",
            "{abort: {httpStatus: 500, percentage: {value: 100.0}}}",
            "UNKNOWN",
        ),
    ];
    for (marker, fault, code) in aborts {
        b.route(marker, &fault_route("yes", fault)).await;
        let r = count(&mut b, 20, "x-fault=yes").await;
        assert_eq!(
            calls(&r, &format!("error:{code}")),
            20,
            "{}: {fault}: {r}",
            b.name()
        );
        let r = count(&mut b, 20, "").await;
        assert_eq!(
            calls(&r, "v1"),
            20,
            "{}: no header, no fault: {r}",
            b.name()
        );
    }

    // No percentage: Istio leaves it unset, which Envoy reads as 0 %; nothing is aborted.
    let unset = "{abort: {grpcStatus: UNAVAILABLE}}";
    b.route("unset", &fault_route("yes", unset)).await;
    let r = count(&mut b, 20, "x-fault=yes").await;
    assert_eq!(calls(&r, "v2"), 20, "{}: {unset}: {r}", b.name());

    let half = "{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}";
    b.route("half", &fault_route("yes", half)).await;
    let r = count(&mut b, 400, "x-fault=yes").await;
    let failed = share(&r, "error:UNAVAILABLE");
    assert!(
        (0.35..=0.65).contains(&failed) && calls(&r, "v2") + calls(&r, "error:UNAVAILABLE") == 400,
        "{}: 50 % abort gave {r}",
        b.name()
    );
    eprintln!("{} abort 50 %: {}", b.name(), r["counts"]);

    let delay = "{delay: {fixedDelay: 1s, percentage: {value: 100}}}";
    b.route("delay", &fault_route("yes", delay)).await;
    let r = count(&mut b, 3, "x-fault=yes").await;
    let min = ms(&r, None, "min").unwrap_or(0.0);
    assert!(
        calls(&r, "v2") == 3 && min >= 950.0,
        "{}: fixedDelay 1s: {r}",
        b.name()
    );
    // The seed's deprecated integer `percent: 100` (a FractionalPercent out of a hundred).
    let percent = "{delay: {percent: 100, fixedDelay: 1s}}";
    b.route("percent", &fault_route("yes", percent)).await;
    let r = count(&mut b, 2, "x-fault=yes").await;
    let min = ms(&r, None, "min").unwrap_or(0.0);
    assert!(
        calls(&r, "v2") == 2 && min >= 950.0,
        "{}: {percent}: {r}",
        b.name()
    );
    let r = count(&mut b, 20, "").await;
    let max = ms(&r, None, "max").unwrap_or(f64::MAX);
    assert!(
        calls(&r, "v1") == 20 && max < 500.0,
        "{}: no header, no delay: {r}",
        b.name()
    );
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_injects_aborts_and_delays() {
    faults(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_injects_aborts_and_delays() {
    faults(Client::GrpcJs).await;
}

// --- timeouts --------------------------------------------------------------------------------

/// gRFC A31 timeouts from Istio's `timeout` (proxyless: `max_stream_duration`, which the
/// client applies as min(its own deadline, the route's)): with v1 holding each call 4 s
/// and the application's deadline 6 s, `timeout: 3s` ends calls with DEADLINE_EXCEEDED
/// before either; without `timeout` (Istio sends 0s: none) the same call succeeds after 4 s.
///
/// grpc-js cuts at 3 s. grpcio 1.85 cuts a service-config timeout, and so a route timeout,
/// about 1.3-1.6 s early (grpc/grpc#34547, #40633; reproduced without xDS), so a timeout
/// below that fails its calls at once: only "cut by the route, before 3.6 s" is asserted
/// for it.
async fn timeouts(which: Client) {
    let mut b = bed(which).await;
    let to_v1 = |timeout: &str| {
        format!(
            "  - route: [{{destination: {{host: helloworld, subset: v1}}}}]
{timeout}"
        )
    };
    b.route("timeout", &to_v1("    timeout: 3s\n")).await;
    b.v1_knobs("delay_ms=4000").await;
    let r = count(&mut b, 2, "deadline=6").await;
    let (min, max) = (ms(&r, None, "min"), ms(&r, None, "max"));
    let (min, max) = (min.unwrap_or(0.0), max.unwrap_or(f64::MAX));
    assert!(
        calls(&r, "error:DEADLINE_EXCEEDED") == 2 && max < 3600.0,
        "{}: timeout 3s against a 4 s backend: {r}",
        b.name()
    );
    if which == Client::GrpcJs {
        assert!(min >= 2900.0, "{}: cut before the timeout: {r}", b.name());
    }
    eprintln!("{} timeout 3s: cut after {min:.0}..{max:.0} ms", b.name());

    b.v1_knobs("delay_ms=0").await;
    b.route("no-timeout", &to_v1("")).await;
    b.v1_knobs("delay_ms=4000").await;
    let r = count(&mut b, 1, "deadline=6").await;
    assert_eq!(calls(&r, "v1"), 1, "{}: no timeout: {r}", b.name());
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_cuts_calls_at_the_route_timeout() {
    timeouts(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_cuts_calls_at_the_route_timeout() {
    timeouts(Client::GrpcJs).await;
}

// --- retries ---------------------------------------------------------------------------------

/// gRFC A44 retries from Istio's `retries` (`retry_policy`): with v1 failing every 2nd call
/// with UNAVAILABLE, Istio's default policy (no `retries` in the rule: 2 retries on
/// `unavailable,cancelled,...`) hides every failure, and the backend sees the retries;
/// `attempts: 0` (no policy) shows half the calls failing; `retryOn: unavailable` retries;
/// `retryOn: 5xx` names no gRPC status, so gRPC does not retry.
async fn retries(which: Client) {
    let mut b = bed(which).await;
    let to_v1 = |retries: &str| {
        format!(
            "  - route: [{{destination: {{host: helloworld, subset: v1}}}}]
{retries}"
        )
    };
    let cases = [
        ("default", "", 0..=0),
        ("attempts0", "    retries: {attempts: 0}\n", 18..=22),
        (
            "unavailable",
            "    retries: {attempts: 2, retryOn: unavailable}\n",
            0..=0,
        ),
        ("5xx", "    retries: {attempts: 2, retryOn: 5xx}\n", 18..=22),
    ];
    for (marker, retries, failures) in cases {
        b.v1_knobs("fail_every=0").await;
        b.route(marker, &to_v1(retries)).await;
        b.v1_knobs("fail_every=2 code=UNAVAILABLE").await;
        let r = count(&mut b, 40, "").await;
        let failed = calls(&r, "error:UNAVAILABLE");
        assert!(
            failures.contains(&failed) && calls(&r, "v1") + failed == 40,
            "{}: {marker}: {failed} of 40 failed: {r}",
            b.name()
        );
        let seen = b.v1.ask("stats", T).await.unwrap();
        let backend_calls = seen["calls"].as_u64().unwrap_or(0);
        // Without retries the backend sees each call once; with them, one more per failure.
        let retried = failures.contains(&0);
        assert!(
            if retried {
                backend_calls >= 55
            } else {
                backend_calls == 40
            },
            "{}: {marker}: the backend saw {seen}",
            b.name()
        );
        eprintln!(
            "{} retries {marker}: {} backend {seen}",
            b.name(),
            r["counts"]
        );
    }
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_retries_as_the_route_policy_says() {
    retries(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_retries_as_the_route_policy_says() {
    retries(Client::GrpcJs).await;
}

// --- a bad rule next to a good one -----------------------------------------------------------

/// A VirtualService Istio refuses (a header regex with look-ahead, not RE2), for the same host.
const BAD: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: helloworld-bad, namespace: sample}
spec:
  hosts: [helloworld]
  http:
  - match: [{headers: {end-user: {regex: \"(?=jason)\"}}}]
    route: [{destination: {host: helloworld, subset: v1}}]
";

/// Istio's validation and gRPC's NACK rules side by side: a VirtualService that does not
/// validate (a look-ahead regex) is refused and reported (`meshfed_config_errors`) while
/// the good one for the same host applies; the good one also carries fields Istio accepts
/// that gRPC does not read or would refuse if sent as they are (a `redirect` route,
/// `mirror`, `headers`, `corsPolicy`, `perTryTimeout`, an exact path that is not
/// `/service/method`), and neither client NACKs anything.
async fn bad_rule(which: Client) {
    let mut b = bed(which).await;
    let refused = r#"meshfed_config_errors{kind="VirtualService",reason="invalid_regex"}"#;
    kubectl::apply(b.kubeconfig.path(), BAD).unwrap();
    let http = "  - name: redirected
    match: [{headers: {end-user: {exact: redirect-me}}}]
    redirect: {uri: /elsewhere}
  - name: plain-path
    match: [{uri: {exact: /hello}}]
    route: [{destination: {host: helloworld, subset: v1}}]
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: helloworld, subset: v2}}]
    mirror: {host: helloworld, subset: v1}
    mirrorPercentage: {value: 50}
    headers: {request: {set: {x-by: meshfed}}, response: {remove: [x-secret]}}
    corsPolicy: {allowOrigins: [{exact: \"https://example.com\"}]}
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: unavailable}
  - route: [{destination: {host: helloworld, subset: v1}}]
";
    b.route("good", http).await;
    let r = count(&mut b, 20, "end-user=jason").await;
    assert_eq!(
        calls(&r, "v2"),
        20,
        "{}: the good rule applies: {r}",
        b.name()
    );
    let r = count(&mut b, 20, "").await;
    assert_eq!(calls(&r, "v1"), 20, "{}: {r}", b.name());
    assert!(metrics::sum(refused) >= 1, "the bad rule is reported");
    b.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_takes_the_good_rule_next_to_a_bad_one_without_nacks() {
    bad_rule(Client::Grpcio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_xds_takes_the_good_rule_next_to_a_bad_one_without_nacks() {
    bad_rule(Client::GrpcJs).await;
}
