//! The process-wide Prometheus recorder. Metrics recorders are global, so every component
//! in a process (the gateway, the federation controller, tests running several) shares one.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Installs the recorder on first use and returns the handle that renders `/metrics`.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (a host program's); ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        if let Some(upkeep) = spawn_upkeep(handle.clone()) {
            let _ = UPKEEP.set(upkeep);
        }
        handle
    })
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The name of the thread that does it (seen in /proc/PID/task/*/comm).
pub const UPKEEP_THREAD: &str = "metrics-upkeep";
/// Kept so that a test (or a debugger) can see the thread is alive.
static UPKEEP: OnceLock<std::thread::JoinHandle<()>> = OnceLock::new();

/// The recorder keeps every histogram sample until upkeep folds it into the buckets: a
/// process nobody scrapes (a DNS proxy forwarding thousands of queries a second) would grow
/// without end. A thread rather than a task, because the recorder may be installed before
/// (or outside) any async runtime.
fn spawn_upkeep(handle: PrometheusHandle) -> Option<std::thread::JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name(UPKEEP_THREAD.into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    spawned
        .map_err(|e| {
            tracing::warn!(error = %e, "no metrics upkeep thread: histograms fold in only when scraped");
        })
        .ok()
}

/// The series of `page` (a `/metrics` render) named `prefix*` that carry no `# HELP` line,
/// and how many such series there are: what each component's test checks its `describe()`
/// against.
pub fn series_without_help(page: &str, prefix: &str) -> (usize, Vec<String>) {
    let names: std::collections::BTreeSet<&str> = page
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    let missing = names
        .iter()
        .filter(|n| !page.contains(&format!("# HELP {n} ")))
        .map(|n| n.to_string())
        .collect();
    (names.len(), missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_folded_in_without_a_scrape() {
        // Not /proc/self/task/*/comm: a new thread names itself once it runs, so right after
        // the spawn it may still carry the spawner's name (this flaked in CI).
        prometheus();
        let upkeep = UPKEEP.get().expect("the recorder started an upkeep thread");
        assert_eq!(upkeep.thread().name(), Some(UPKEEP_THREAD));
        assert!(!upkeep.is_finished(), "the upkeep loop never ends");
    }
}
