//! The admin port: `/healthz/ready`, `/metrics`, `/debug/clusterz`, `/debug/registryz`.

use crate::registry::{Registry, Status};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz/ready" if registry.ready() => {
            reply(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/healthz/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "syncing\n".into(),
        ),
        "/metrics" => {
            record_gauges(registry);
            let prometheus = meshfed_model::telemetry::prometheus();
            prometheus.run_upkeep();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                prometheus.render(),
            )
        }
        "/debug/clusterz" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&registry.clusters()).unwrap_or_default(),
        ),
        "/debug/registryz" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&registry.snapshot()).unwrap_or_default(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
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

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
