//! Benchmarks that run meshfed side by side with its peers in one run.
//!
//! The bench process (load generator and backend) pins itself to core 0; every proxy runs
//! pinned to core 1. Each figure is the median of several rounds, and each proxy's own CPU
//! time (utime+stime from /proc) is reported per connection and per GB: with two cores the
//! load generator caps connection rates for every proxy alike, so CPU cost is the fair figure.

pub mod ca;
pub mod federation;
mod load;
mod peers;
pub mod xds;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct GatewayOptions {
    pub json: PathBuf,
    pub meshfed: PathBuf,
    pub secs: f64,
    pub rounds: usize,
    pub idle: usize,
    pub rate: u32,
    pub workers: usize,
    /// Only the connection-rate figure (for quick A/B runs); no latency, bulk or idle.
    pub conn_only: bool,
    /// Only the bulk throughput figures; no connection rate, latency or idle.
    pub bulk_only: bool,
    /// Which proxies to measure (by report name); empty means all of them.
    pub peers: Vec<String>,
}

const SNI_HOST: &str = "bench.sample.svc.cluster.local";
const PORT: u16 = 5000;
const LOAD_CORE: usize = 0;
const PROXY_CORE: usize = 1;

/// Runs the gateway benchmark and writes the JSON report; returns it.
pub fn gateway(opts: &GatewayOptions) -> Result<Value, String> {
    if !opts.meshfed.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first",
            opts.meshfed.display()
        ));
    }
    ensure_peers()?;
    pin_self(LOAD_CORE)?;
    let fds = raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Each idle connection costs two descriptors in the proxy and two here (client and backend).
    let idle = opts.idle.min(fds.saturating_sub(1000) as usize / 2);
    if idle < opts.idle {
        eprintln!(
            "open files are capped at {fds} per process: measuring {idle} idle connections instead of {}",
            opts.idle
        );
    }
    let report = rt.block_on(run(opts, idle, fds))?;
    std::fs::write(
        &opts.json,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", opts.json.display()))?;
    Ok(report)
}

async fn run(opts: &GatewayOptions, idle: usize, fds: u64) -> Result<Value, String> {
    let sni = meshfed_model::ClusterName::new(PORT, None, SNI_HOST).sni();
    let hello = Arc::new(meshfed_gateway::clienthello::build::records(
        &meshfed_gateway::clienthello::build::client_hello(Some(&sni), &[]),
        16_384,
    ));
    let backend = load::backend(hello.len())
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let wanted = |name: &str| opts.peers.is_empty() || opts.peers.iter().any(|p| p == name);
    let mut proxies = Vec::new();
    for (name, copy) in [("meshfed", "splice"), ("meshfed-buffered", "buffered")] {
        if wanted(name) {
            let (bin, addr) = (&opts.meshfed, backend.addr);
            proxies.push(peers::meshfed(
                bin, d, PROXY_CORE, SNI_HOST, PORT, addr, copy,
            )?);
        }
    }
    if wanted("haproxy") {
        proxies.push(peers::haproxy(d, PROXY_CORE, &sni, backend.addr, fds)?);
    }
    if wanted("nginx") {
        proxies.push(peers::nginx(d, PROXY_CORE, &sni, backend.addr, fds)?);
    }
    if wanted("sniproxy") {
        proxies.push(peers::sniproxy(d, PROXY_CORE, &sni, backend.addr)?);
    }
    // Slot 0 is direct (no proxy). Each round starts one place further along: every phase
    // leaves tens of thousands of TIME_WAIT sockets towards the one backend, which the next
    // phase's connects must step over, so no proxy should always follow the same one.
    let n = proxies.len() + 1;
    let mut rounds: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for round in 0..opts.rounds {
        eprintln!("round {}/{}", round + 1, opts.rounds);
        for slot in (0..n).map(|i| (round + i) % n) {
            let (addr, p) = match slot.checked_sub(1) {
                None => (backend.addr, None),
                Some(i) => (proxies[i].addr, Some(&proxies[i])),
            };
            rounds[slot].push(measure(addr, p, &hello, opts).await);
        }
    }
    let mut report = serde_json::Map::new();
    report.insert("direct".into(), summarize(&rounds[0], false, None));
    for (i, p) in proxies.iter().enumerate() {
        let rss = if opts.conn_only || opts.bulk_only {
            None
        } else {
            eprintln!("{}: idle connections", p.name);
            Some(idle_rss(p, &backend, &hello, idle).await)
        };
        report.insert(p.name.into(), summarize(&rounds[i + 1], true, rss));
    }
    report.insert("_meta".into(), json!({"secs": opts.secs, "rounds": opts.rounds, "idle_connections": idle, "open_file_limit": fds, "latency_rate_per_s": opts.rate, "workers": opts.workers}));
    Ok(Value::Object(report))
}

#[derive(Clone, Default)]
struct Sample {
    conn_per_s: f64,
    cpu_us_per_conn: f64,
    p50_us: u64,
    p99_us: u64,
    gbps: f64,
    gbps_8: f64,
    cpu_s_per_gb: f64,
}

fn cpu(p: Option<&peers::Proxy>) -> f64 {
    p.map(|p| p.cpu_seconds()).unwrap_or(0.0)
}

async fn measure(
    addr: std::net::SocketAddr,
    p: Option<&peers::Proxy>,
    hello: &Arc<Vec<u8>>,
    o: &GatewayOptions,
) -> Sample {
    if o.bulk_only {
        return bulk(addr, p, hello, o).await;
    }
    let c0 = cpu(p);
    let conn_per_s = load::conn_rate(addr, hello.clone(), o.workers, o.secs).await;
    let cpu_us_per_conn = (cpu(p) - c0) * 1e6 / (conn_per_s * o.secs).max(1.0);
    if o.conn_only {
        return Sample {
            conn_per_s,
            cpu_us_per_conn,
            ..Sample::default()
        };
    }
    let lat = load::latencies(addr, hello.clone(), o.rate, o.secs).await;
    Sample {
        conn_per_s,
        cpu_us_per_conn,
        p50_us: load::percentile(&lat, 0.5),
        p99_us: load::percentile(&lat, 0.99),
        ..bulk(addr, p, hello, o).await
    }
}

/// The throughput figures: one stream, then eight (whose CPU gives the cost per GB).
async fn bulk(
    addr: std::net::SocketAddr,
    p: Option<&peers::Proxy>,
    hello: &Arc<Vec<u8>>,
    o: &GatewayOptions,
) -> Sample {
    let gbps = load::bulk(addr, hello.clone(), 1, o.secs).await;
    let c1 = cpu(p);
    let gbps_8 = load::bulk(addr, hello.clone(), 8, o.secs).await;
    let gb = gbps_8 * o.secs / 8.0;
    Sample {
        gbps,
        gbps_8,
        cpu_s_per_gb: (cpu(p) - c1) / gb.max(1e-9),
        ..Sample::default()
    }
}

async fn idle_rss(
    p: &peers::Proxy,
    backend: &load::Backend,
    hello: &Arc<Vec<u8>>,
    n: usize,
) -> f64 {
    let mut open = backend.open.clone();
    load::backend_holds(&mut open, 0).await;
    let before = p.rss_kib();
    let conns = load::idle(p.addr, hello.clone(), n, &mut open).await;
    let after = p.rss_kib();
    let per = after.saturating_sub(before) as f64 / conns.len().max(1) as f64;
    drop(conns);
    load::backend_holds(&mut open, 0).await;
    per
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The medians; a proxy's (not direct's) with its CPU cost, and its idle memory if measured.
fn summarize(samples: &[Sample], proxy: bool, rss: Option<f64>) -> Value {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    let mut v = json!({
        "gbps": round(m(|s| s.gbps), 2),
        "gbps_8": round(m(|s| s.gbps_8), 2),
        "conn_per_s": round(m(|s| s.conn_per_s), 0),
        "p50_us": m(|s| s.p50_us as f64),
        "p99_us": m(|s| s.p99_us as f64),
    });
    if proxy {
        v["cpu_us_per_conn"] = round(m(|s| s.cpu_us_per_conn), 1).into();
        v["cpu_s_per_gb"] = round(m(|s| s.cpu_s_per_gb), 3).into();
    }
    if let Some(rss) = rss {
        v["rss_kib_per_conn"] = round(rss, 2).into();
    }
    v
}

/// The peers come from Debian's packages; the bench installs what is missing.
fn ensure_peers() -> Result<(), String> {
    let have = |cmd: &str| {
        Path::new("/usr/sbin").join(cmd).exists() || Path::new("/usr/bin").join(cmd).exists()
    };
    let stream = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists();
    if have("haproxy") && have("nginx") && have("sniproxy") && stream && have("taskset") {
        return Ok(());
    }
    eprintln!("installing haproxy, nginx (stream), sniproxy from Debian's packages");
    let status = std::process::Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "haproxy",
            "nginx",
            "libnginx-mod-stream",
            "sniproxy",
            "util-linux",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("installing the peers failed (apt-get install haproxy nginx libnginx-mod-stream sniproxy)".into())
    }
}

pub(crate) fn pin_self(core: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the calling thread
    // (before the runtime starts, so every thread the bench makes inherits it).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning the bench to core {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (children inherit it); returns it.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}
