//! `bench ca`: end-to-end issuance by the federation's CA (issue 18): TLS, the token check
//! (TokenReview at the API server, then its cache), the CSR check and signing, measured on a
//! `meshfed federation` process pinned to one core while the load generator and the test
//! bed API server share the other. Three figures: the steady rate over kept connections
//! (and with a new connection per request, as agents connect once per rotation), the cold
//! start of many agents at once, and the same steady load against CFSSL as the peer.

mod cfssl;
mod cold;
mod setup;
mod steady;
mod tls;

use meshfed_agent::ca::{CaClient, CaConfig};
use meshfed_certs::{WorkloadCsr, workload_csr};
use meshfed_model::admin::AdminClient;
use serde_json::{Value, json};
use setup::{Account, SERVER_NAME};
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
    let phases = Phases {
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
fn callers_again(of: &[steady::Caller], per: usize) -> Result<Vec<steady::Caller>, String> {
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

/// CPU seconds of the server (federation or peer), of the API server's threads and of the
/// rest of this process (the load generator), both cores' busy time, and the wall clock, at
/// one moment.
#[derive(Clone, Copy)]
struct Meter {
    at: Instant,
    server: f64,
    api: f64,
    load: f64,
    cores: f64,
}

impl Meter {
    fn now(server_pid: u32) -> Meter {
        let api = api_cpu();
        Meter {
            at: Instant::now(),
            server: super::peers::cpu_seconds(server_pid),
            api,
            load: super::peers::cpu_seconds(std::process::id()) - api,
            cores: cores_busy(),
        }
    }

    /// The spending since `self`, per unit of work where `units` is given.
    fn since(self, server_pid: u32, units: usize) -> Value {
        let now = Meter::now(server_pid);
        let wall = (now.at - self.at).as_secs_f64();
        let per = |cpu: f64| round(cpu * 1e6 / units.max(1) as f64, 1);
        let ours = (now.server - self.server) + (now.api - self.api) + (now.load - self.load);
        // Anything else that ran on the two cores meanwhile (a build, say) slows the wall
        // clock figures but not the CPU per certificate: reported so a reader can tell.
        let others = (now.cores - self.cores - ours).max(0.0);
        json!({
            "wall_s": round(wall, 3),
            "server_cpu_us_per_cert": per(now.server - self.server),
            "api_cpu_us_per_cert": per(now.api - self.api),
            "load_cpu_us_per_cert": per(now.load - self.load),
            "server_core_busy": round((now.server - self.server) / wall, 2),
            "load_core_busy": round((now.api - self.api + now.load - self.load) / wall, 2),
            "other_cpu_share": round(others / wall / 2.0, 3),
        })
    }
}

/// utime+stime of this process's API server threads (named [`setup::API_THREAD`]).
fn api_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(setup::API_THREAD))
        })
        .map(|t| stat_seconds(&t.path().join("stat")))
        .sum()
}

/// Busy seconds of all cores (/proc/stat: user, nice, system, irq, softirq, steal).
fn cores_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<f64>()
        / 100.0
}

fn stat_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks: f64 = fields
        .iter()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Threads of a process (the federation's runtime sizes itself from its CPU affinity).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Rate, latencies and CPU of a steady phase of `issued` certificates.
fn steady_figures(issued: &Issued, cpu: Value) -> Value {
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

/// The phases against the federation, on the load generator's runtime.
struct Phases<'a> {
    fed: &'a setup::Federation,
    dir: &'a Path,
    root_pem: &'a str,
}

impl Phases<'_> {
    async fn run(
        &self,
        load: Vec<steady::Caller>,
        fresh: Vec<steady::Caller>,
        agents: Vec<steady::Caller>,
        warm: Vec<steady::Caller>,
    ) -> Result<Value, String> {
        let config = tls::client_config(self.root_pem, b"h2")?;
        let roots = Arc::new(tls::roots_of(self.root_pem)?);
        self.ready(&warm, &config).await?;
        let cold = self.cold(agents, &roots).await?;
        let kept = self.kept(&load, &config, &roots).await?;
        let fresh = self.fresh(fresh, &roots).await?;
        Ok(json!({"kept": kept, "fresh": fresh, "cold": cold}))
    }

    /// Waits (up to 30 s) until the CA signs for the warm-up account.
    async fn ready(
        &self,
        warm: &[steady::Caller],
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<(), String> {
        let c = warm.first().ok_or("no warm-up account")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tried = match tls::channel(self.fed.secure, SERVER_NAME, config.clone()).await {
                Ok(ch) => steady::create(ch, &c.account.token, &c.csrs[0]).await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the CA did not answer within 30 s: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn agent_client(&self, account: &Account) -> Result<CaClient, String> {
        let token_file = self
            .dir
            .join(format!("{}.token", account.identity.service_account));
        std::fs::write(&token_file, &account.token).map_err(|e| e.to_string())?;
        let root_file = self.dir.join("root-cert.pem");
        if !root_file.exists() {
            std::fs::write(&root_file, self.root_pem).map_err(|e| e.to_string())?;
        }
        let mut config = CaConfig::new(self.fed.secure.to_string(), token_file);
        config.root_file = root_file;
        config.server_name = Some(SERVER_NAME.into());
        config.request_timeout = Duration::from_secs(60);
        CaClient::new(&config).map_err(|e| e.to_string())
    }

    async fn reviews(&self) -> (f64, f64) {
        let text = AdminClient::new(self.fed.admin)
            .metrics()
            .await
            .unwrap_or_default();
        let count = |method: &str| {
            let series = format!("meshfed_ca_authentications_total{{method=\"{method}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (count("token"), count("cached_token"))
    }

    async fn cold(
        &self,
        agents: Vec<steady::Caller>,
        roots: &Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let n = agents.len();
        let mut ready = Vec::with_capacity(n);
        for mut a in agents {
            let client = self.agent_client(&a.account)?;
            let csr = Arc::get_mut(&mut a.csrs)
                .and_then(|v| v.pop())
                .ok_or("an agent without a CSR")?;
            ready.push(cold::Agent {
                client,
                account: a.account,
                csr,
            });
        }
        let (reviews0, _) = self.reviews().await;
        let pid = self.fed.pid();
        let meter = Meter::now(pid);
        let done = cold::start_all(ready, roots.clone()).await?;
        let cpu = meter.since(pid, n);
        let (reviews1, _) = self.reviews().await;
        let at = |p: f64| round(done[((n - 1) as f64 * p).round() as usize].as_secs_f64(), 3);
        let mut v = json!({"agents": n, "all_s": at(1.0), "p50_s": at(0.5), "p99_s": at(0.99),
            "token_reviews": reviews1 - reviews0});
        if let (Some(v), Some(cpu)) = (v.as_object_mut(), cpu.as_object()) {
            v.extend(cpu.clone());
        }
        Ok(v)
    }

    async fn kept(
        &self,
        load: &[steady::Caller],
        config: &Arc<rustls::ClientConfig>,
        roots: &Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let mut channels = Vec::with_capacity(load.len());
        for _ in load {
            channels.push(tls::channel(self.fed.secure, SERVER_NAME, config.clone()).await?);
        }
        // One request each first: its token is reviewed and cached, and every caller's
        // first answer gets the agent's full check.
        let warm = callers_again(load, 1)?;
        for (ch, c) in channels.iter().zip(&warm) {
            let chain = steady::create(ch.clone(), &c.account.token, &c.csrs[0]).await?;
            let now = time::OffsetDateTime::now_utc();
            meshfed_agent::ca::check::check(&chain, &c.csrs[0], &c.account.identity, roots, now)?;
        }
        let callers = load
            .iter()
            .map(|c| steady::Caller {
                account: c.account.clone(),
                csrs: c.csrs.clone(),
            })
            .collect();
        let pid = self.fed.pid();
        let (r0, c0) = self.reviews().await;
        let meter = Meter::now(pid);
        let issued = steady::kept(channels, callers).await?;
        let cpu = meter.since(pid, issued.latencies.len());
        let (r1, c1) = self.reviews().await;
        let mut v = steady_figures(&issued, cpu);
        v["token_reviews"] = json!(r1 - r0);
        v["cache_hits"] = json!(c1 - c0);
        Ok(v)
    }

    async fn fresh(
        &self,
        fresh: Vec<steady::Caller>,
        roots: &Arc<Vec<rustls::pki_types::CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let clients: Result<Vec<_>, String> = fresh
            .iter()
            .map(|c| self.agent_client(&c.account).map(Arc::new))
            .collect();
        let pid = self.fed.pid();
        let (r0, c0) = self.reviews().await;
        let meter = Meter::now(pid);
        let issued = steady::fresh(clients?, fresh, roots.clone()).await?;
        let cpu = meter.since(pid, issued.latencies.len());
        let (r1, c1) = self.reviews().await;
        let mut v = steady_figures(&issued, cpu);
        v["token_reviews"] = json!(r1 - r0);
        v["cache_hits"] = json!(c1 - c0);
        Ok(v)
    }
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
