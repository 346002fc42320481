//! Leaf certificates issued per second (ECDSA P-256) through the library, on one thread.
//! Prints Markdown table rows; `bench/run.sh certs` pins it to one core and records it.
//!
//! MESHFED_BENCH_ROUNDS (default 5) rounds of MESHFED_BENCH_CERTS (default 3000); the
//! median round is reported, with CPU time (utime+stime of this process) per certificate.

use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's CPU time so far (utime + stime from /proc/self/stat).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<u64> = after_comm
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    let ticks: u64 = fields.iter().sum();
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

struct Round {
    per_sec: f64,
    cpu_us: f64,
}

fn measure(rounds: usize, n: usize, mut op: impl FnMut()) -> Round {
    let mut results: Vec<Round> = (0..rounds)
        .map(|_| {
            let (t0, c0) = (Instant::now(), cpu_time());
            for _ in 0..n {
                op();
            }
            let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
            Round {
                per_sec: n as f64 / wall.as_secs_f64(),
                cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
            }
        })
        .collect();
    results.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    results.swap_remove(rounds / 2)
}

fn main() {
    let rounds = env("MESHFED_BENCH_ROUNDS", 5).max(1);
    let n = env("MESHFED_BENCH_CERTS", 3000).max(1);
    let root = CertificateAuthority::new_root(&RootOptions {
        org: "bench".into(),
        days: 3650,
        key: KeyAlgorithm::EcdsaP256,
    })
    .expect("root");
    let ca = root
        .issue_intermediate(&IntermediateOptions {
            cluster: "bench".into(),
            days: 365,
            key: KeyAlgorithm::EcdsaP256,
        })
        .expect("intermediate");
    let id: SpiffeId = "spiffe://cluster.local/ns/sample/sa/sleep"
        .parse()
        .expect("id");
    let opts = WorkloadOptions::new(id.clone());

    let issue = measure(rounds, n, || {
        ca.issue_workload(&opts).expect("issue");
    });
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let ttl = Duration::from_secs(86_400);
    let sign = measure(rounds, n, || {
        ca.sign_csr(&csr, &id, ttl).expect("sign");
    });
    println!(
        "| meshfed library: key + leaf (`issue_workload`) | {:.0} | {:.1} |",
        issue.per_sec, issue.cpu_us
    );
    println!(
        "| meshfed library: sign a CSR (`sign_csr`, CA service path) | {:.0} | {:.1} |",
        sign.per_sec, sign.cpu_us
    );
}
