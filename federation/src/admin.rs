//! The admin port (`/healthz/ready`, `/metrics`, `/debug/clusterz`, `/debug/registryz`,
//! `/debug/configz`; local by default) and the public status port (`/healthz/ready` only, for probes).

use crate::registry::Registry;
use meshfed_model::admin::Reply;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    meshfed_model::admin::serve(listener, move |path: &str| respond(path, &registry)).await
}

/// Health only: what the kubelet probes on the pod's address.
pub async fn serve_status(listener: TcpListener, registry: Arc<Registry>) {
    let route = move |path: &str| respond(path, &registry);
    meshfed_model::admin::serve(listener, meshfed_model::admin::health_only(route)).await
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
        "/debug/configz" => {
            let status = crate::xds::virtual_service::status::configz(registry);
            Reply::json(serde_json::to_string(&status).unwrap_or_default())
        }
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryConfig;
    use meshfed_model::admin::AdminClient;

    #[tokio::test]
    async fn the_status_port_serves_readiness_and_no_debug_data() {
        let registry = Arc::new(Registry::new(RegistryConfig {
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout: std::time::Duration::from_secs(30),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status = AdminClient::new(listener.local_addr().unwrap());
        tokio::spawn(serve_status(listener, registry));
        assert_eq!(status.get("/healthz/ready").await.unwrap().status, 503);
        for path in [
            "/metrics",
            "/debug/clusterz",
            "/debug/registryz",
            "/debug/configz",
        ] {
            assert_eq!(status.get(path).await.unwrap().status, 404, "{path}");
        }
    }
}
