//! `meshfed testbed demo`: the seed walkthrough (seed 003) on a two-cluster test bed, as
//! numbered steps, each judged by what the workloads saw: which version answered, through
//! which address, with which peer identity and which of its certificates. The
//! VirtualService steps are in [`traffic`].

mod traffic;

use super::agents::{Counters, WORKLOAD_CERT_TTL};
use super::faults::Fault;
use super::{Backend, Bed, ClusterBed, HELLO_URL, HOST, READY, wait_table};
use crate::OneLine;
use crate::sidecar::Table;
use anyhow::{Context, anyhow, bail};
use meshfed_model::admin::AdminClient;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const WEIGHT_RULE: &str = include_str!("../../../samples/locality-lb-weight.yaml");
const FAILOVER_RULE: &str = include_str!("../../../samples/locality-lb-failover.yaml");
const STEPS: [&str; 12] = [
    "isolation",
    "cross_network",
    "mtls_identity",
    "rotation",
    "dns",
    "distribute",
    "failover",
    "traffic_shift",
    "header_route",
    "fault",
    "timeout",
    "remote_secret_removal",
];

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backend: String,
    pub steps: Vec<Step>,
    /// What the mesh did under each fault `meshfed testbed fault` can inject.
    pub faults: Vec<Step>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.steps.len() == STEPS.len()
            && self.steps.iter().all(|s| s.ok)
            && self.faults.len() == Fault::ALL.len()
            && self.faults.iter().all(|s| s.ok)
    }
}

fn cluster_name(host: &str) -> String {
    format!("outbound|5000||{host}")
}

/// Runs every step in order on `bed` (two clusters), then every fault; `on_step` sees each
/// result as it lands.
pub async fn run(bed: &Bed, mut on_step: impl FnMut(usize, &Step)) -> Report {
    let mut steps = Vec::new();
    for (i, name) in STEPS.iter().enumerate() {
        let result = match *name {
            "isolation" => isolation(bed).await,
            "cross_network" => cross_network(bed).await,
            "mtls_identity" => mtls_identity(bed).await,
            "rotation" => rotation(bed).await,
            "dns" => dns(bed).await,
            "distribute" => distribute(bed).await,
            "failover" => failover(bed).await,
            "traffic_shift" => traffic::traffic_shift(bed).await,
            "header_route" => traffic::header_route(bed).await,
            "fault" => traffic::fault(bed).await,
            "timeout" => traffic::timeout(bed).await,
            _ => remote_secret_removal(bed).await,
        };
        let step = match result {
            Ok((ok, detail)) => Step {
                name: name.to_string(),
                ok,
                detail,
            },
            Err(e) => Step {
                name: name.to_string(),
                ok: false,
                detail: format!("{e:#}"),
            },
        };
        on_step(i + 1, &step);
        steps.push(step);
    }
    let mut faults = Vec::new();
    let prepared = prepare_faults(bed).await;
    for (i, fault) in Fault::ALL.into_iter().enumerate() {
        let result = match &prepared {
            Ok(()) => fault_step(bed, fault).await,
            Err(e) => Err(anyhow!("preparing the faults: {e:#}")),
        };
        let (ok, detail) = result.unwrap_or_else(|e| (false, format!("{e:#}")));
        let step = Step {
            name: fault.as_str().into(),
            ok,
            detail,
        };
        on_step(STEPS.len() + i + 1, &step);
        faults.push(step);
    }
    Report {
        backend: bed.backend.as_str().into(),
        steps,
        faults,
    }
}

/// Whether the step passed and what was seen; an error when it could not be judged.
type Outcome = anyhow::Result<(bool, String)>;

fn pair(bed: &Bed) -> anyhow::Result<(&ClusterBed, &ClusterBed)> {
    match bed.clusters.as_slice() {
        [c1, c2, ..] => Ok((c1, c2)),
        _ => bail!("the demo needs two clusters"),
    }
}

/// `n` requests from `c`'s sleep: answers per version, and the failures.
async fn tally(c: &ClusterBed, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut versions = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..n {
        match c.curl(HELLO_URL).await {
            Ok(a) if a.status == 200 => {
                *versions
                    .entry(a.version().unwrap_or("?").to_string())
                    .or_insert(0) += 1
            }
            Ok(a) => failures.push(format!("{} {}", a.status, a.body.trim())),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    (versions, failures)
}

fn show(versions: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = versions.iter().map(|(v, n)| format!("{v} x{n}")).collect();
    if parts.is_empty() {
        "no answers".into()
    } else {
        parts.join(", ")
    }
}

async fn isolation(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let theirs: Vec<IpAddr> = [
        c2.addrs.helloworld,
        c2.addrs.sleep_proxy,
        c2.addrs.secure,
        c2.addrs.dns,
    ]
    .iter()
    .map(SocketAddr::ip)
    .collect();
    let table = c1.sleep.table().borrow().clone();
    let leaked: Vec<String> = table
        .clusters
        .values()
        .flat_map(|u| u.endpoints.iter())
        .filter(|h| theirs.contains(&h.addr.ip()))
        .map(|h| h.addr.to_string())
        .collect();
    let eds = if leaked.is_empty() {
        format!(
            "{}'s sidecar holds no {} pod address (they are behind {}'s gateway {})",
            c1.spec.name, c2.spec.name, c2.spec.name, c2.addrs.gateway
        )
    } else {
        format!(
            "{}'s sidecar was given {} pod addresses {leaked:?}",
            c1.spec.name, c2.spec.name
        )
    };
    if bed.backend == Backend::Loopback {
        let detail = format!(
            "loopback backend: pod networks are not isolated (run as root for netns); {eds}"
        );
        return Ok((leaked.is_empty(), detail));
    }
    let target = c2.addrs.helloworld;
    let attempt = c1
        .rt
        .spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(3),
                tokio::net::TcpStream::connect(target),
            )
            .await
        })
        .await?;
    let (blocked, how) = match attempt {
        Ok(Ok(_)) => (false, "connected".to_string()),
        Ok(Err(e)) => (true, e.to_string()),
        Err(_) => (true, "timed out".to_string()),
    };
    let detail = format!(
        "{} -> {}'s helloworld pod {target}: {how}; {eds}",
        c1.spec.name, c2.spec.name
    );
    Ok((blocked && leaked.is_empty(), detail))
}

async fn cross_network(bed: &Bed) -> Outcome {
    let want: Vec<String> = bed
        .clusters
        .iter()
        .map(|c| c.spec.version.clone())
        .collect();
    let mut ok = true;
    let mut details = Vec::new();
    for c in &bed.clusters {
        let (versions, failures) = tally(c, 20).await;
        let all = want.iter().all(|v| versions.contains_key(v));
        ok &= all && failures.is_empty();
        let mut d = format!("sleep in {}: {}", c.spec.name, show(&versions));
        if !failures.is_empty() {
            d.push_str(&format!(" ({} failed: {})", failures.len(), failures[0]));
        }
        details.push(d);
    }
    Ok((ok, details.join("; ")))
}

async fn mtls_identity(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    for _ in 0..10 {
        let a = c1.curl(HELLO_URL).await?;
        if a.version() != Some(c2.spec.version.as_str()) {
            continue;
        }
        let peer = a.body_field("peer").unwrap_or("none").to_string();
        let issuer = a.body_field("peer issuer").unwrap_or("none").to_string();
        let via = a.upstream().unwrap_or("?").to_string();
        let ok = peer == "spiffe://cluster.local/ns/sample/sa/sleep"
            && issuer.contains(&format!("Intermediate CA {}", c1.spec.name))
            && via == c2.addrs.gateway.to_string();
        let detail = format!(
            "{} (in {}) saw caller {peer}, issued by \"{issuer}\", via {}'s gateway {via}",
            c2.spec.version, c2.spec.name, c2.spec.name
        );
        return Ok((ok, detail));
    }
    bail!(
        "{} never answered {}'s sleep",
        c2.spec.version,
        c1.spec.name
    )
}

/// The pace of requests in the steps that keep traffic flowing while something happens.
const PACE: Duration = Duration::from_millis(20);

/// Requests from one sleep, one after another: answers per version, the failures, and each
/// certificate of sleep's (serial, notAfter) that the answering helloworld saw, in order.
#[derive(Default)]
struct Traffic {
    requests: usize,
    versions: BTreeMap<String, usize>,
    failures: Vec<String>,
    certificates: Vec<(String, i64)>,
}

impl Traffic {
    async fn request(&mut self, c: &ClusterBed, url: &str) {
        self.requests += 1;
        match c.curl(url).await {
            Ok(a) if a.status == 200 => {
                let version = a.version().unwrap_or("?").to_string();
                *self.versions.entry(version).or_insert(0) += 1;
                let serial = a.body_field("peer serial").unwrap_or("?");
                let not_after = a
                    .body_field("peer not after")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if !self.certificates.iter().any(|(s, _)| s == serial) {
                    self.certificates.push((serial.to_string(), not_after));
                }
            }
            Ok(a) => self
                .failures
                .push(format!("{} {}", a.status, a.body.trim())),
            Err(e) => self.failures.push(format!("{e:#}")),
        }
    }

    fn summary(&self) -> String {
        let mut out = format!(
            "{} requests, {} failed ({})",
            self.requests,
            self.failures.len(),
            show(&self.versions)
        );
        if let Some(first) = self.failures.first() {
            out.push_str(&format!("; first failure: {first}"));
        }
        out
    }

    /// The certificates seen, as `serial… (notAfter HH:MM:SS)` in order.
    fn certificates(&self) -> String {
        let shown: Vec<String> = self
            .certificates
            .iter()
            .map(|(serial, not_after)| {
                let short: String = serial.chars().take(12).collect();
                format!("{short}… (notAfter {})", clock(*not_after))
            })
            .collect();
        shown.join(" then ")
    }
}

/// A Unix time as its UTC time of day.
fn clock(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        Err(_) => unix.to_string(),
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// sleep's agent renews its certificate from the federation at half life while requests
/// flow from sleep in cluster1 to v2 across the network (mTLS from sleep's sidecar to v2,
/// through cluster2's gateway). As with Envoy and istio-agent, the new certificate is taken
/// for new connections without a failed request, and v2 sees it.
async fn rotation(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let url = format!("http://{}.sample:5000/hello", c2.spec.helloworld());
    let agent = &c1.sleep_agent;
    let before = agent.counters(&c1.rt).await?;
    let version = agent.sds.version();
    // Half the lifetime at the latest, and a margin.
    let deadline = Instant::now() + WORKLOAD_CERT_TTL;
    let mut traffic = Traffic::default();
    while (traffic.certificates.len() < 2 || traffic.requests < 20) && Instant::now() < deadline {
        traffic.request(c1, &url).await;
        // A steady rate of requests, not a wait for an event.
        tokio::time::sleep(PACE).await;
    }
    let after = agent.counters(&c1.rt).await?;
    let rotations = after.rotations.saturating_sub(before.rotations);
    let new_version = agent.sds.version();
    let only_v2 = traffic.versions.keys().all(|v| *v == c2.spec.version);
    let ok = traffic.failures.is_empty()
        && only_v2
        && traffic.certificates.len() >= 2
        && rotations >= 1
        && new_version != version;
    let detail = format!(
        "sleep in {} -> {} in {} (via its gateway): {}; sleep's agent rotated {rotations} time(s) \
         (certificates of {} s from {}'s CA, renewed at half life; SDS version {version} -> {new_version}); \
         {} saw sleep's certificate {}",
        c1.spec.name,
        c2.spec.version,
        c2.spec.name,
        traffic.summary(),
        WORKLOAD_CERT_TTL.as_secs(),
        c1.spec.name,
        c2.spec.version,
        traffic.certificates(),
    );
    Ok((ok, detail))
}

async fn dns(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let remote = format!("{}.sample.svc.cluster.local", c2.spec.helloworld());
    let server = c1.addrs.dns;
    let deadline = Instant::now() + READY;
    // The NameTable follows the registry over NDS; ask until the remote name is in it.
    let (vip, v6) = loop {
        let (r, q) = (remote.clone(), remote.clone());
        let a = c1
            .rt
            .spawn(async move { query(server, &r, hickory_proto::rr::RecordType::A).await })
            .await;
        let aaaa = c1
            .rt
            .spawn(async move { query(server, &q, hickory_proto::rr::RecordType::AAAA).await })
            .await;
        if let (Ok(Ok(a)), Ok(Ok(aaaa))) = (a, aaaa)
            && !a.is_empty()
        {
            break (a, aaaa);
        }
        if Instant::now() > deadline {
            bail!(
                "{remote} never resolved through {}'s DNS proxy",
                c1.spec.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let local = c1
        .rt
        .spawn(async move { query(server, HOST, hickory_proto::rr::RecordType::A).await })
        .await??;
    let in_vip_range = vip
        .iter()
        .all(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [240, 240]));
    let v6_ok = v6
        .iter()
        .all(|ip| matches!(ip, IpAddr::V6(v6) if v6.segments()[..2] == [0x2001, 2]));
    let local_ok = local
        .iter()
        .all(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [10, 96]));
    let detail = format!(
        "{}'s DNS proxy: {remote} (only in {}) A {vip:?} AAAA {v6:?}; {HOST} (local) A {local:?}",
        c1.spec.name, c2.spec.name
    );
    Ok((
        in_vip_range && !v6.is_empty() && v6_ok && !local.is_empty() && local_ok,
        detail,
    ))
}

/// One UDP question; the addresses answered.
async fn query(
    server: SocketAddr,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
) -> anyhow::Result<Vec<IpAddr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData};
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).one_line()?,
        qtype,
    ));
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(server.ip(), 0)).await?;
    socket.send_to(&m.to_vec().one_line()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| anyhow!("{server}: no answer"))??;
    let answer = Message::from_vec(&buf[..n]).one_line()?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect())
}

/// Applies the Istio objects of `rule` in every cluster (each federation reads its own).
async fn apply_everywhere(bed: &Bed, rule: &str) -> anyhow::Result<()> {
    for c in &bed.clusters {
        let rule = rule.to_string();
        c.kube(move |client| async move { super::objects::apply_istio(&client, &rule).await })
            .await
            .with_context(|| format!("applying Istio rules in {}", c.spec.name))?;
    }
    Ok(())
}

fn helloworld(t: &Table) -> Option<&crate::sidecar::Upstream> {
    t.clusters.get(&cluster_name(HOST))
}

async fn distribute(bed: &Bed) -> Outcome {
    apply_everywhere(bed, WEIGHT_RULE).await?;
    let mut ok = true;
    let mut details = Vec::new();
    for c in &bed.clusters[..2] {
        wait_table(&c.sleep, READY, |t| {
            helloworld(t).is_some_and(|u| u.locality_weighted)
        })
        .await
        .with_context(|| format!("{}'s sidecar never got the distribute rule", c.spec.name))?;
        let (versions, failures) = tally(c, 100).await;
        let own = versions.get(&c.spec.version).copied().unwrap_or(0);
        let total: usize = versions.values().sum();
        let share = (own * 100).checked_div(total).unwrap_or(0);
        ok &= failures.is_empty() && total == 100 && (70..=90).contains(&share);
        details.push(format!(
            "sleep in {} ({}): {} -> {share}% local (want 80 +- 10)",
            c.spec.name,
            c.spec.region,
            show(&versions)
        ));
    }
    Ok((ok, details.join("; ")))
}

async fn failover(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    apply_everywhere(bed, FAILOVER_RULE).await?;
    let v1 = c1.addrs.helloworld;
    wait_table(&c1.sleep, READY, |t| {
        helloworld(t).is_some_and(|u| {
            // Istio weighs localities for failover too (with outlier detection), so the
            // failover rule shows in the priorities: the remote gateway is no longer priority 0.
            u.outlier.is_some()
                && u.endpoints.iter().any(|h| h.addr == v1 && h.priority == 0)
                && u.endpoints
                    .iter()
                    .any(|h| h.addr == c2.addrs.gateway && h.priority > 0)
        })
    })
    .await
    .with_context(|| format!("{}'s sidecar never got the failover rule", c1.spec.name))?;
    let (before, _) = tally(c1, 5).await;
    if before.get(&c1.spec.version) != Some(&5) {
        return Ok((
            false,
            format!(
                "before the kill {}'s sleep should stay in its region: {}",
                c1.spec.name,
                show(&before)
            ),
        ));
    }
    // Kill v1: its listener closes at once, as a crashed pod's port does.
    if let Some(hw) = c1.helloworld.lock().await.take() {
        hw.kill();
    }
    let (recovery, failed, via) = until_served_by(c1, &c2.spec.version, 20).await?;
    let ejected = c1.sleep.ejected(&cluster_name(HOST));
    let all_via_gateway = via.iter().all(|v| v == &c2.addrs.gateway.to_string());
    // The kubelet's readiness probe notices later; EDS then lists v1 unhealthy.
    set_ready(c1, false).await?;
    wait_table(&c1.sleep, READY, |t| {
        helloworld(t).is_some_and(|u| u.endpoints.iter().any(|h| h.addr == v1 && !h.healthy))
    })
    .await?;
    // v1 restarts and turns ready: traffic returns to its region.
    restart_helloworld(c1).await?;
    let (after, _) = tally(c1, 5).await;
    let back = after.get(&c1.spec.version) == Some(&5);
    let detail = format!(
        "{} killed: first answer from {} after {} ms ({failed} request(s) failed; outlier detection ejected {ejected:?}); \
         next 20/20 answered by {} via {}'s gateway {}; {} back and ready: {}",
        c1.spec.version,
        c2.spec.version,
        recovery.as_millis(),
        c2.spec.version,
        c2.spec.name,
        c2.addrs.gateway,
        c1.spec.version,
        show(&after),
    );
    Ok((all_via_gateway && back && !ejected.is_empty(), detail))
}

/// Starts `c`'s helloworld again and marks it ready, until its sidecar sees it healthy.
async fn restart_helloworld(c: &ClusterBed) -> anyhow::Result<()> {
    let addr = c.addrs.helloworld;
    let hw =
        c.rt.spawn(super::helloworld::Helloworld::start(
            addr,
            c.spec.version.clone(),
            c.hello_credentials().clone(),
        ))
        .await??;
    *c.helloworld.lock().await = Some(hw);
    set_ready(c, true).await?;
    wait_table(&c.sleep, READY, |t| {
        helloworld(t).is_some_and(|u| u.endpoints.iter().any(|h| h.addr == addr && h.healthy))
    })
    .await
}

/// Sets helloworld's endpoints in `c` ready or not, as the endpoint controller would.
async fn set_ready(c: &ClusterBed, ready: bool) -> anyhow::Result<()> {
    let (pod, node, own) = (c.hello_pod.clone(), c.spec.node(), c.spec.helloworld());
    c.kube(move |client| async move {
        super::objects::set_ready(&client, &pod, &node, &["helloworld", &own], ready).await
    })
    .await
}

/// Requests from `c`'s sleep until `n` answers in a row come from `version`: the time to the
/// first of them, the requests that failed meanwhile, and the upstream of each of the `n`.
async fn until_served_by(
    c: &ClusterBed,
    version: &str,
    n: usize,
) -> anyhow::Result<(Duration, usize, Vec<String>)> {
    let start = Instant::now();
    let mut first = None;
    let mut failed = 0;
    let mut run = Vec::new();
    while run.len() < n {
        if start.elapsed() > READY {
            bail!("{version} did not take over within {READY:?} ({failed} failed)");
        }
        match c.curl(HELLO_URL).await {
            Ok(a) if a.status == 200 && a.version() == Some(version) => {
                first.get_or_insert(start.elapsed());
                run.push(a.upstream().unwrap_or("?").to_string());
            }
            Ok(_) | Err(_) => {
                failed += 1;
                run.clear();
            }
        }
    }
    Ok((first.unwrap_or_default(), failed, run))
}

async fn remote_secret_removal(bed: &Bed) -> Outcome {
    let (c1, c2) = pair(bed)?;
    let removed = Instant::now();
    let remote = c2.spec.name.clone();
    c1.kube(
        move |client| async move { super::objects::delete_remote_secret(&client, &remote).await },
    )
    .await
    .with_context(|| {
        format!(
            "deleting {}'s remote secret in {}",
            c2.spec.name, c1.spec.name
        )
    })?;
    let remote_only = cluster_name(&format!(
        "{}.sample.svc.cluster.local",
        c2.spec.helloworld()
    ));
    let gw = c2.addrs.gateway;
    wait_table(&c1.sleep, READY, |t| {
        !t.clusters.contains_key(&remote_only)
            && helloworld(t).is_some_and(|u| u.endpoints.iter().all(|h| h.addr != gw))
    })
    .await
    .with_context(|| format!("{} kept {}'s services", c1.spec.name, c2.spec.name))?;
    let took = removed.elapsed();
    let (versions, failures) = tally(c1, 10).await;
    let only_own = versions.get(&c1.spec.version) == Some(&10) && failures.is_empty();
    let admin = AdminClient::new(c1.addrs.federation_admin);
    let status = c1
        .rt
        .spawn(async move { admin.page("/debug/clusterz").await })
        .await??;
    let forgotten = !status.contains(&format!("\"{}\"", c2.spec.name));
    let detail = format!(
        "{}'s remote secret deleted in {}: {} dropped it in {} ms ({} and {}'s gateway gone from its sidecar; \
         federation status {}); sleep in {}: {}",
        c2.spec.name,
        c1.spec.name,
        c1.spec.name,
        took.as_millis(),
        remote_only,
        c2.spec.name,
        if forgotten {
            "no longer lists it"
        } else {
            "still lists it"
        },
        c1.spec.name,
        show(&versions)
    );
    Ok((only_own && forgotten, detail))
}

/// The seed's 80/20 rule with a one-second ejection, so a healed host is back within seconds.
const FAULT_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: sample}
spec:
  host: helloworld.sample.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - {from: region1/*, to: {region1/*: 80, region2/*: 20}}
        - {from: region2/*, to: {region2/*: 80, region1/*: 20}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1s}
";

/// Gives cluster1 its remote secret for cluster2 back and the fault rule to both.
async fn prepare_faults(bed: &Bed) -> anyhow::Result<()> {
    let (c1, c2) = pair(bed)?;
    let (remote, kubeconfig) = (c2.spec.name.clone(), c2.api.lock().await.kubeconfig());
    c1.kube(move |client| async move {
        crate::seed::remote_secret(&client, &remote, &kubeconfig).await
    })
    .await?;
    apply_everywhere(bed, FAULT_RULE).await?;
    let gw = c2.addrs.gateway;
    wait_table(&c1.sleep, READY, |t| {
        helloworld(t).is_some_and(|u| {
            u.locality_weighted && u.endpoints.iter().any(|h| h.addr == gw && h.healthy)
        })
    })
    .await
    .with_context(|| format!("{} never saw {} again", c1.spec.name, c2.spec.name))
}

/// Until cluster1's sidecar has let `addr` back in after its ejection.
async fn until_readmitted(c: &ClusterBed, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY;
    while c.sleep.ejected(&cluster_name(HOST)).contains(&addr) {
        if Instant::now() > deadline {
            bail!("{addr} still ejected after {READY:?}");
        }
        // Ejection ends by the clock, not by an event.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Requests from `c` until `version` answers again (at most 50).
async fn until_answers(c: &ClusterBed, version: &str) -> anyhow::Result<usize> {
    for i in 1..=50 {
        if c.curl(HELLO_URL)
            .await
            .is_ok_and(|a| a.version() == Some(version))
        {
            return Ok(i);
        }
    }
    bail!("{version} never answered again")
}

/// Injects `fault`, reports what cluster1's sleep saw, heals it and checks traffic recovers.
async fn fault_step(bed: &Bed, fault: Fault) -> Outcome {
    let (c1, c2) = pair(bed)?;
    if fault == Fault::Partition && bed.backend == Backend::Loopback {
        return Ok((
            true,
            "not available on the loopback backend (no network to cut); run as root".into(),
        ));
    }
    // The CA faults hit sleep's own cluster: its agent is the one renewing.
    let target = match fault {
        Fault::CertExpire | Fault::CaDown => c1,
        _ => c2,
    };
    let gw = c2.addrs.gateway;
    let before = c1.sleep_agent.counters(&c1.rt).await?;
    let did = bed.fault(fault, &target.spec.name, false).await?;
    let (mut ok, what, down) = match fault {
        Fault::CaDown => {
            let (ok, what, counters) = while_ca_down(c1, before).await?;
            (ok, what, Some(counters))
        }
        _ => {
            let (ok, what) = during(bed, fault).await?;
            (ok, what, None)
        }
    };
    let healed = bed.fault(fault, &target.spec.name, true).await?;
    if fault == Fault::GatewayDown {
        c2.until_ready(c2.addrs.gateway_status).await?;
    }
    let mut renewed = String::new();
    if let Some(down) = down {
        // Issuance resumed: a certificate came after those the outage saw.
        let after = c1.sleep_agent.counters(&c1.rt).await?;
        ok &= after.rotations > down.rotations && after.expiry > now_unix();
        renewed = format!(
            " (sleep's agent: {} failed request(s) to the CA in all, a certificate valid until {} issued after the heal)",
            after.failures.saturating_sub(before.failures),
            clock(after.expiry)
        );
    }
    until_readmitted(c1, gw).await?;
    let tries = until_answers(c1, &c2.spec.version).await?;
    let detail = format!(
        "{did}: {what}; healed ({healed}){renewed}: {} answered again after {tries} request(s)",
        c2.spec.version
    );
    Ok((ok, detail))
}

/// What cluster1's sleep sees in 20 requests under `fault`, and whether that is right.
async fn during(bed: &Bed, fault: Fault) -> anyhow::Result<(bool, String)> {
    let (c1, c2) = pair(bed)?;
    let gw = c2.addrs.gateway;
    let (during, failures) = tally(c1, 20).await;
    let ejected = c1.sleep.ejected(&cluster_name(HOST));
    let seen = format!("{} ({} failed)", show(&during), failures.len());
    Ok(match fault {
        // Every request still answered: the dead or cut-off gateway is retried around and ejected.
        Fault::GatewayDown | Fault::Partition => (
            failures.is_empty()
                && during.get(&c1.spec.version) == Some(&20)
                && ejected.contains(&gw),
            format!(
                "sleep in {}: {seen}; {gw} ejected: {}",
                c1.spec.name,
                ejected.contains(&gw)
            ),
        ),
        // The last known endpoints stay (Istio's behaviour without --stale-endpoint-ttl).
        Fault::ApiserverDown => (
            failures.is_empty() && during.contains_key(&c2.spec.version),
            format!(
                "{} keeps {}'s last known endpoints; sleep in {}: {seen}",
                c1.spec.name, c2.spec.name, c1.spec.name
            ),
        ),
        // Nobody accepts an expired certificate: every handshake fails.
        Fault::CertExpire => (
            during.is_empty() && failures.len() == 20,
            format!(
                "sleep in {}: {seen}, every mTLS handshake refused",
                c1.spec.name
            ),
        ),
        Fault::CaDown => bail!("ca-down is judged by while_ca_down"),
    })
}

/// While cluster1's CA is down: requests from its sleep (at least 20) until sleep's agent
/// has tried to renew and failed. Every request must be answered, and the certificate
/// held must still be valid: Istio's agent keeps serving it and retries with backoff.
async fn while_ca_down(
    c: &ClusterBed,
    before: Counters,
) -> anyhow::Result<(bool, String, Counters)> {
    // The agent renews at half life at the latest; a margin.
    let deadline = Instant::now() + WORKLOAD_CERT_TTL;
    let mut traffic = Traffic::default();
    let counters = loop {
        traffic.request(c, HELLO_URL).await;
        let now = c.sleep_agent.counters(&c.rt).await?;
        if (now.failures > before.failures && traffic.requests >= 20) || Instant::now() > deadline {
            break now;
        }
        // A steady rate of requests, not a wait for an event.
        tokio::time::sleep(PACE).await;
    };
    let failed = counters.failures.saturating_sub(before.failures);
    let valid_for = counters.expiry - now_unix();
    let ok = traffic.failures.is_empty() && failed >= 1 && valid_for > 0;
    let detail = format!(
        "sleep in {}: {}; its agent failed to renew {failed} time(s) meanwhile and keeps serving its certificate (valid {valid_for} s more)",
        c.spec.name,
        traffic.summary()
    );
    Ok((ok, detail, counters))
}
