//! The admin port: `/healthz/ready`, `/metrics`, `/debug/clusterz`, `/debug/registryz`.

use crate::registry::Registry;
use meshfed_model::admin::Reply;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    meshfed_model::admin::serve(listener, move |path: &str| respond(path, &registry)).await
}

fn respond(path: &str, registry: &Registry) -> Reply {
    match path {
        "/healthz/ready" => Reply::readiness(registry.ready(), "syncing"),
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: crate::metrics::render(registry),
        },
        "/debug/clusterz" => {
            Reply::json(serde_json::to_string(&registry.clusters()).unwrap_or_default())
        }
        "/debug/registryz" => {
            Reply::json(serde_json::to_string(&registry.snapshot()).unwrap_or_default())
        }
        _ => Reply::not_found(),
    }
}
