//! The admin port: `/healthz/ready`, `/metrics`, `/debug/clusterz`, `/debug/registryz`.

use crate::registry::{Registry, Status};
use meshfed_model::admin::Reply;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    meshfed_model::admin::serve(listener, move |path: &str| respond(path, &registry)).await
}

fn respond(path: &str, registry: &Registry) -> Reply {
    match path {
        "/healthz/ready" => Reply::readiness(registry.ready(), "syncing"),
        "/metrics" => {
            record_gauges(registry);
            Reply::metrics()
        }
        "/debug/clusterz" => {
            Reply::json(serde_json::to_string(&registry.clusters()).unwrap_or_default())
        }
        "/debug/registryz" => {
            Reply::json(serde_json::to_string(&registry.snapshot()).unwrap_or_default())
        }
        _ => Reply::not_found(),
    }
}

/// Gauges are set from the registry at scrape time, so they are never stale.
fn record_gauges(registry: &Registry) {
    for c in registry.clusters() {
        for status in [
            Status::Syncing,
            Status::Synced,
            Status::Timeout,
            Status::Unreachable,
            Status::Error,
        ] {
            let label = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let on = if c.status == status { 1.0 } else { 0.0 };
            metrics::gauge!("meshfed_remote_cluster_sync_status", "cluster" => c.id.clone(), "status" => label).set(on);
        }
        if let Some(age) = c.last_sync_age_s {
            metrics::gauge!("meshfed_remote_cluster_last_sync_age_seconds", "cluster" => c.id.clone()).set(age);
        }
    }
    let snap = registry.snapshot();
    metrics::gauge!("meshfed_registry_services").set(snap.services.len() as f64);
    metrics::gauge!("meshfed_registry_endpoints").set(
        snap.services
            .iter()
            .map(|s| s.endpoints.len())
            .sum::<usize>() as f64,
    );
    metrics::gauge!("meshfed_registry_gateways").set(snap.gateways.len() as f64);
}
