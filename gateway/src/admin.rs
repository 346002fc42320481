//! The gateway's two HTTP ports. The admin address serves `/healthz/ready`, `/metrics`
//! (Prometheus) and `/debug/routes` (every endpoint address: never for the public); the status
//! port, which the LoadBalancer exposes for health checks, serves `/healthz/ready` only.

use crate::routes::RouteHandle;
use meshfed_model::admin::{Reply, health_only};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Admin {
    pub routes: RouteHandle,
    /// Cleared while draining, so load balancers stop sending new connections.
    pub ready: Arc<AtomicBool>,
}

/// The admin address: health, metrics and debug pages.
pub async fn serve(listener: TcpListener, admin: Admin) {
    meshfed_model::admin::serve(listener, move |path: &str| respond(path, &admin)).await
}

/// The public status port: `/healthz/ready` and nothing else.
pub async fn serve_status(listener: TcpListener, admin: Admin) {
    let route = move |path: &str| respond(path, &admin);
    meshfed_model::admin::serve(listener, health_only(route)).await
}

fn respond(path: &str, admin: &Admin) -> Reply {
    match path {
        // Ready once a source delivered a first table (xDS may take a moment) and not draining.
        "/healthz/ready" => Reply::readiness(
            admin.ready.load(Ordering::Relaxed) && admin.routes.generation() > 0,
            "not ready",
        ),
        "/metrics" => Reply::metrics(),
        "/debug/routes" => {
            let mut doc = admin.routes.get().debug_json();
            doc["generation"] = admin.routes.generation().into();
            Reply::json(doc.to_string())
        }
        _ => Reply::not_found(),
    }
}
