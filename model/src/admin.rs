//! The admin port every component serves (`/healthz/ready`, `/metrics`, `/debug/...`): a
//! small HTTP server whose routes are a plain function of the path.

pub mod client;

pub use client::{AdminClient, Answer, ClientError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use tokio::net::TcpListener;

/// One answer of the admin port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }

    pub fn json(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body,
        }
    }

    /// `/healthz/ready`: 200 when ready, else 503 saying why not.
    pub fn readiness(ready: bool, not_ready: &str) -> Reply {
        if ready {
            Reply::text(200, "ready\n")
        } else {
            Reply::text(503, format!("{not_ready}\n"))
        }
    }

    /// `/metrics`: the process's Prometheus recorder, rendered.
    pub fn metrics() -> Reply {
        let prometheus = crate::telemetry::prometheus();
        prometheus.run_upkeep();
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: prometheus.render(),
        }
    }

    pub fn not_found() -> Reply {
        Reply::text(404, "not found\n")
    }
}

/// Serves `route(path)` on every connection accepted from `listener`, until aborted.
pub async fn serve<F>(listener: TcpListener, route: F)
where
    F: Fn(&str) -> Reply + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let reply = route(req.uri().path());
                async move { Ok::<_, Infallible>(response(reply)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", reply.content_type)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_default()
}
