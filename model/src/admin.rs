//! The admin port every component serves (`/healthz/ready`, `/metrics`, `/debug/...`): a
//! small HTTP server whose routes are a plain function of the path.

pub mod client;

pub use client::{AdminClient, Answer, ClientError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// What one admin server allows: it answers operators and probes, never bulk traffic.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request head within this (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this, kept alive or not, so no client holds a slot for good.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Only `/healthz/ready` of `route`: what a component's public status port serves, so that
/// metrics and debug pages stay on the admin address.
pub fn health_only<F>(route: F) -> impl Fn(&str) -> Reply + Clone + Send + Sync + 'static
where
    F: Fn(&str) -> Reply + Clone + Send + Sync + 'static,
{
    move |path: &str| match path {
        "/healthz/ready" => route(path),
        _ => Reply::not_found(),
    }
}

/// Serves `route(path)` on every connection accepted from `listener`, until aborted. At
/// [`MAX_CONNECTIONS`] open connections it stops accepting (new ones wait in the backlog).
pub async fn serve<F>(listener: TcpListener, route: F)
where
    F: Fn(&str) -> Reply + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // EMFILE and friends: pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let reply = route(req.uri().path());
                async move { Ok::<_, Infallible>(response(reply)) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder.http2().max_concurrent_streams(8);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let route = |path: &str| match path {
            "/healthz/ready" => Reply::readiness(true, ""),
            "/metrics" => Reply::text(200, "secret_series 1\n"),
            _ => Reply::not_found(),
        };
        tokio::spawn(serve(listener, health_only(route)));
        addr
    }

    #[tokio::test]
    async fn the_status_port_serves_health_and_nothing_else() {
        let client = AdminClient::new(server().await);
        assert!(client.ready().await.unwrap());
        assert_eq!(client.get("/metrics").await.unwrap().status, 404);
        assert_eq!(client.get("/debug/routes").await.unwrap().status, 404);
    }

    /// A client that never finishes its request head is cut off, and while the server is at
    /// its connection cap a further client waits instead of being served (time is paused:
    /// the timeouts pass as soon as nothing else can happen).
    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_cut_off_and_connections_are_capped() {
        let addr = server().await;
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz/ready HTTP/1.1\r\n")
                .await
                .unwrap();
            silent.push(s);
        }
        let waiting = AdminClient::new(addr);
        let early = tokio::time::timeout(HEADER_READ_TIMEOUT / 2, waiting.get("/healthz/ready"));
        assert!(early.await.is_err(), "answered past the connection cap");
        assert!(
            waiting.ready().await.unwrap(),
            "served once the silent ones are gone"
        );
        for mut s in silent {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            assert!(
                !String::from_utf8_lossy(&buf).contains("ready"),
                "a silent client was served"
            );
        }
    }
}
