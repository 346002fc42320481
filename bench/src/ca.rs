//! `bench ca`: end-to-end issuance by the federation's CA (issue 18): TLS, the token check
//! (TokenReview at the API server, then its cache), the CSR check and signing, measured on a
//! `meshfed federation` process pinned to one core while the load generator and the test
//! bed API server share the other. Three figures: the steady rate over kept connections
//! (and with a new connection per request, as agents connect once per rotation), the cold
//! start of many agents at once, and the same steady load against CFSSL as the peer.

mod cfssl;
mod cold;
mod meter;
mod phases;
mod setup;
mod steady;
mod tls;

use meshfed_certs::{WorkloadCsr, workload_csr};
use meter::{Meter, round, threads};
use serde_json::{Value, json};
use setup::Account;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct CaOptions {
    pub json: PathBuf,
    pub meshfed: PathBuf,
    /// Concurrent callers in the steady phases (each its own connection and token).
    pub connections: usize,
    /// Certificates in the steady phase over kept connections (and against the peer).
    pub requests: usize,
    /// Certificates in the steady phase with a new connection per request.
    pub fresh_requests: usize,
    /// Agents in the cold start.
    pub agents: usize,
    /// Also run the peer (CFSSL) if it is installed.
    pub peer: bool,
}

/// Validity asked for: Istio's default.
pub(crate) const TTL_S: i64 = 24 * 3600;

/// What a load phase measured.
pub struct Issued {
    pub wall: Duration,
    pub latencies: Vec<Duration>,
}

pub fn run(o: &CaOptions) -> Result<Value, String> {
    if !o.meshfed.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first",
            o.meshfed.display()
        ));
    }
    super::pin_self(super::LOAD_CORE)?;
    super::raise_fd_limit();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let api = setup::api_server()?;
    let material = setup::material(dir.path())?;
    let k = o.connections.max(1);
    let t0 = Instant::now();
    let load = callers(&api.server, "load", k, o.requests.div_ceil(k))?;
    let fresh = callers_again(&load, o.fresh_requests.div_ceil(k))?;
    let agents = callers(&api.server, "agent", o.agents, 1)?;
    let warm = callers(&api.server, "warm", 1, 1)?;
    eprintln!(
        "ca: {} accounts and {} CSRs made in {:.1} s",
        k + o.agents + 1,
        k * (o.requests.div_ceil(k) + o.fresh_requests.div_ceil(k)) + o.agents + 1,
        t0.elapsed().as_secs_f64()
    );
    let fed = setup::federation(
        &o.meshfed,
        super::PROXY_CORE,
        &api.server,
        &material.dir,
        dir.path(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let phases = phases::Phases {
        fed: &fed,
        dir: dir.path(),
        root_pem: material.root_pem(),
    };
    let mut report = runtime
        .block_on(phases.run(load, fresh, agents, warm))
        .map_err(|e| format!("{e}\nfederation log:\n{}", fed.log_tail()))?;
    report["peer"] = if !o.peer {
        json!({"skipped": "not asked for (--no-peer)"})
    } else if !Path::new(cfssl::PROGRAM).exists() {
        json!({"skipped": "cfssl is not installed (apt-get install golang-cfssl)"})
    } else {
        runtime.block_on(peer(o, &material, dir.path()))?
    };
    report["_meta"] = json!({"connections": k, "federation_threads": threads(fed.pid())});
    drop(fed);
    std::fs::write(
        &o.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", o.json.display()))?;
    Ok(report)
}

/// `n` accounts named `{prefix}-{i}`, each with `per` CSRs for its identity.
fn callers(
    api: &meshfed_testbed::ApiServer,
    prefix: &str,
    n: usize,
    per: usize,
) -> Result<Vec<steady::Caller>, String> {
    (0..n)
        .map(|i| {
            let account = setup::account(api, &format!("{prefix}-{i}"))?;
            let csrs = csrs(&account, per)?;
            Ok(steady::Caller { account, csrs })
        })
        .collect()
}

/// The same accounts with `per` new CSRs each.
pub(crate) fn callers_again(
    of: &[steady::Caller],
    per: usize,
) -> Result<Vec<steady::Caller>, String> {
    of.iter()
        .map(|c| {
            Ok(steady::Caller {
                account: c.account.clone(),
                csrs: csrs(&c.account, per)?,
            })
        })
        .collect()
}

fn csrs(account: &Account, n: usize) -> Result<Arc<Vec<WorkloadCsr>>, String> {
    let made: Result<Vec<_>, _> = (0..n).map(|_| workload_csr(&account.identity)).collect();
    made.map(Arc::new).map_err(|e| e.to_string())
}

/// Rate, latencies and CPU of a steady phase of `issued` certificates.
pub(crate) fn steady_figures(issued: &Issued, cpu: Value) -> Value {
    let mut l: Vec<f64> = issued
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| round(l[((l.len() - 1) as f64 * p).round() as usize], 2);
    let mut v = json!({
        "certs": l.len(),
        "certs_per_s": round(l.len() as f64 / issued.wall.as_secs_f64(), 0),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    });
    if let (Some(v), Some(cpu)) = (v.as_object_mut(), cpu.as_object()) {
        v.extend(cpu.clone());
    }
    v
}

/// The kept-connection load against CFSSL with the same intermediate, on the same core.
async fn peer(o: &CaOptions, material: &setup::Material, dir: &Path) -> Result<Value, String> {
    let k = o.connections.max(1);
    let peer = cfssl::start(&material.intermediate, super::PROXY_CORE, dir)?;
    let config = tls::client_config(material.root_pem(), b"http/1.1")?;
    let id = meshfed_certs::SpiffeId::new(setup::TRUST_DOMAIN, setup::NAMESPACE, "load-0")
        .map_err(|e| e.to_string())?;
    let account = Account {
        token: String::new(),
        identity: id,
    };
    let mut senders = Vec::with_capacity(k);
    let mut csrs = Vec::with_capacity(k);
    for _ in 0..k {
        let mut sender = cfssl::connect(peer.addr, config.clone()).await?;
        let warm = workload_csr(&account.identity).map_err(|e| e.to_string())?;
        cfssl::sign(&mut sender, peer.addr, &warm).await?;
        senders.push(sender);
        csrs.push(Arc::new(
            (0..o.requests.div_ceil(k))
                .map(|_| workload_csr(&account.identity))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?,
        ));
    }
    let pid = peer.pid();
    let meter = Meter::now(pid);
    let issued = cfssl::load(peer.addr, senders, csrs).await?;
    let cpu = meter.since(pid, issued.latencies.len());
    let mut v = steady_figures(&issued, cpu);
    v["name"] = json!("cfssl serve 1.2 (HTTPS/1.1, /api/v1/cfssl/sign)");
    v["threads"] = json!(threads(pid));
    Ok(v)
}
