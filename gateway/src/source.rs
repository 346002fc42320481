//! The static route file: YAML in the documented format, reloaded when it changes.

use crate::metrics::Metrics;
use crate::routes::{RouteHandle, ServiceRoutes};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default)]
    services: Vec<ServiceRoutes>,
}

/// Parses and validates the file; the error is one line naming the file.
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<ServiceRoutes>, String> {
    let file: RouteFile =
        serde_yaml::from_slice(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    for svc in &file.services {
        meshfed_model::ClusterName::parse_cluster(&format!("outbound|{}||{}", svc.port, svc.host))
            .map_err(|e| format!("{}: service {}:{}: {e}", path.display(), svc.host, svc.port))?;
    }
    Ok(file.services)
}

/// Loads the file into `routes` now (an error here is fatal to the caller), then polls it
/// and swaps the table when its contents change. Later parse errors keep the last good
/// table (and are counted), so a bad edit never drops all routes.
pub fn start(
    path: PathBuf,
    routes: RouteHandle,
    metrics: &'static Metrics,
    every: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let services = parse(&path, &bytes)?;
    publish(&routes, &services, metrics, &path);
    Ok(tokio::spawn(watch(path, routes, metrics, every, bytes)))
}

fn publish(routes: &RouteHandle, services: &[ServiceRoutes], metrics: &Metrics, path: &Path) {
    routes.update(services);
    metrics.route_reloads_ok.increment(1);
    metrics.routes.set(routes.get().len() as f64);
    tracing::info!(file = %path.display(), routes = routes.get().len(), "routes loaded");
}

async fn watch(
    path: PathBuf,
    routes: RouteHandle,
    metrics: &'static Metrics,
    every: Duration,
    mut last: Vec<u8>,
) {
    loop {
        tokio::time::sleep(every).await;
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes == last {
            continue;
        }
        match parse(&path, &bytes) {
            Ok(services) => publish(&routes, &services, metrics, &path),
            Err(e) => {
                metrics.route_reloads_failed.increment(1);
                tracing::warn!(error = %e, "route file rejected; keeping the previous routes");
            }
        }
        last = bytes;
    }
}
