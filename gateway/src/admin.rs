//! The admin port: `/healthz/ready`, `/metrics` (Prometheus) and `/debug/routes`.

use crate::routes::RouteHandle;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Admin {
    pub routes: RouteHandle,
    pub prometheus: PrometheusHandle,
    /// Cleared while draining, so load balancers stop sending new connections.
    pub ready: Arc<AtomicBool>,
}

pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(respond(&req, &admin)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    match req.uri().path() {
        // Ready once a source delivered a first table (xDS may take a moment) and not draining.
        "/healthz/ready"
            if admin.ready.load(Ordering::Relaxed) && admin.routes.generation() > 0 =>
        {
            text(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/healthz/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        "/metrics" => {
            admin.prometheus.run_upkeep();
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                admin.prometheus.render(),
            )
        }
        "/debug/routes" => {
            let mut doc = admin.routes.get().debug_json();
            doc["generation"] = admin.routes.generation().into();
            text(StatusCode::OK, "application/json", doc.to_string())
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}
