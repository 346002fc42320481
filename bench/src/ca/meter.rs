//! What a phase cost: CPU seconds (utime+stime) of the server process, of this process's
//! API server threads and of the rest of this process (the load generator), read from /proc
//! before and after, and what other processes took of the cores meanwhile (/proc/stat).

use super::setup;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

/// CPU seconds of the server (federation or peer), of the API server's threads and of the
/// rest of this process (the load generator), both cores' busy time, and the wall clock, at
/// one moment.
#[derive(Clone, Copy)]
pub struct Meter {
    at: Instant,
    server: f64,
    api: f64,
    load: f64,
    cores: f64,
}

impl Meter {
    pub fn now(server_pid: u32) -> Meter {
        let api = api_cpu();
        Meter {
            at: Instant::now(),
            server: crate::peers::cpu_seconds(server_pid),
            api,
            load: crate::peers::cpu_seconds(std::process::id()) - api,
            cores: cores_busy(),
        }
    }

    /// The spending since `self`, per unit of work where `units` is given.
    pub fn since(self, server_pid: u32, units: usize) -> Value {
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
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
