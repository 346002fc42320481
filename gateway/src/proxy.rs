//! One downstream connection: read the ClientHello, route on its SNI, connect upstream
//! (trying the next endpoint on failure), replay the ClientHello and copy both ways.

use crate::GatewayConfig;
use crate::balance;
use crate::budget::PendingHello;
use crate::clienthello::{self, HelloError, Parsed};
use crate::copy::{self, OnBytes};
use crate::dial;
use crate::metrics::{Metrics, Outcome};
use crate::routes::{RouteEndpoint, RouteHandle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::TcpStream;

pub struct Context {
    pub config: GatewayConfig,
    pub routes: RouteHandle,
    pub metrics: &'static Metrics,
    pub on_bytes: OnBytes,
}

/// Serves one accepted connection; `pending` is its share of the ClientHello budget, given
/// back as soon as the buffered hello is no longer held.
pub(crate) async fn handle(down: TcpStream, ctx: Arc<Context>, pending: PendingHello) {
    // On Linux accepted sockets inherit TCP_NODELAY and keepalive from the listener.
    #[cfg(not(target_os = "linux"))]
    {
        let _ = down.set_nodelay(true);
        let _ = socket2::SockRef::from(&down).set_tcp_keepalive(&crate::dial::keepalive());
    }
    let outcome = serve(down, &ctx, pending).await;
    ctx.metrics.outcome(outcome);
}

async fn serve(mut down: TcpStream, ctx: &Context, pending: PendingHello) -> Outcome {
    let hello = match tokio::time::timeout(ctx.config.hello_timeout, read_hello(&mut down)).await {
        Err(_) => return Outcome::HelloTimeout,
        Ok(Err(e)) => {
            ctx.metrics.hello_failure(e.reason());
            return Outcome::BadHello;
        }
        Ok(Ok(h)) => h,
    };
    let Some(sni) = hello.sni else {
        return Outcome::NoSni;
    };
    let Some(cluster) = ctx.routes.get().lookup(&sni) else {
        tracing::debug!(%sni, "no route");
        return Outcome::NoRoute;
    };
    let candidates = balance::candidates(&cluster, ctx.config.balance);
    if candidates.is_empty() {
        return Outcome::NoEndpoint;
    }
    let Some((up, endpoint)) = connect_first(&candidates, &hello.bytes, ctx).await else {
        return Outcome::UpstreamFailed;
    };
    drop(hello.bytes);
    drop(pending);
    endpoint.health.active.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.active.increment(1.0);
    let result = copy::bidirectional(
        down,
        up,
        ctx.config.copy,
        ctx.config.idle_timeout,
        ctx.on_bytes.clone(),
    )
    .await;
    ctx.metrics.active.decrement(1.0);
    endpoint.health.active.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = result {
        tracing::debug!(%sni, error = %e, "connection ended with an error");
    }
    Outcome::Routed
}

struct Hello {
    sni: Option<String>,
    /// Everything read so far, replayed to the upstream unchanged.
    bytes: Vec<u8>,
}

#[derive(Debug)]
enum ReadError {
    Hello(HelloError),
    Closed,
}

impl ReadError {
    fn reason(&self) -> &'static str {
        match self {
            ReadError::Hello(e) => e.reason(),
            ReadError::Closed => "closed",
        }
    }
}

async fn read_hello(down: &mut TcpStream) -> Result<Hello, ReadError> {
    const STEP: usize = 2048;
    let mut bytes = Vec::with_capacity(STEP);
    loop {
        if bytes.len() >= clienthello::MAX_HELLO + 1024 {
            return Err(ReadError::Hello(HelloError::TooLarge));
        }
        down.readable().await.map_err(|_| ReadError::Closed)?;
        let start = bytes.len();
        // Exact growth: the buffer never exceeds the cap plus a step (the budget counts on it).
        bytes.reserve_exact(STEP);
        bytes.resize(start + STEP, 0);
        let n = match copy::read_draining(down, &mut bytes[start..]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return Err(ReadError::Closed),
        };
        bytes.truncate(start + n);
        if n == 0 {
            continue;
        }
        match clienthello::parse(&bytes).map_err(ReadError::Hello)? {
            Parsed::NeedMore => continue,
            Parsed::Done { sni, .. } => return Ok(Hello { sni, bytes }),
        }
    }
}

/// Tries endpoints in order; one that fails to connect is set aside (if the failure was its
/// fault) and the next is tried.
async fn connect_first(
    candidates: &[Arc<RouteEndpoint>],
    hello: &[u8],
    ctx: &Context,
) -> Option<(TcpStream, Arc<RouteEndpoint>)> {
    for endpoint in candidates {
        let addr = endpoint.endpoint.address;
        let started = Instant::now();
        let attempt =
            tokio::time::timeout(ctx.config.connect_timeout, dial::connect_with(addr, hello)).await;
        match attempt {
            Ok(Ok(up)) => {
                ctx.metrics
                    .connect_seconds
                    .record(started.elapsed().as_secs_f64());
                endpoint.health.restore();
                return Some((up, endpoint.clone()));
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "upstream connect failed");
                failed(endpoint, Some(&e), ctx);
            }
            Err(_) => {
                tracing::debug!(%addr, "upstream connect timed out");
                failed(endpoint, None, ctx);
            }
        }
    }
    None
}

/// A connect to `endpoint` failed with `error` (None: it timed out). Only a failure that is
/// the endpoint's fault sets it aside; a local one (EMFILE, ENOBUFS, EADDRNOTAVAIL, ...) is
/// counted apart and leaves it in rotation, since the next connection may well succeed.
fn failed(endpoint: &RouteEndpoint, error: Option<&std::io::Error>, ctx: &Context) {
    if error.is_some_and(|e| !dial::blames_endpoint(e)) {
        ctx.metrics.connect_local_errors.increment(1);
        return;
    }
    ctx.metrics.connect_failures.increment(1);
    endpoint.health.eject(ctx.config.eject_for);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn context() -> Context {
        let any = "127.0.0.1:0".parse().unwrap();
        Context {
            config: GatewayConfig::new(any, any, any),
            routes: RouteHandle::default(),
            metrics: crate::metrics::global(),
            on_bytes: Arc::new(|_, _| {}),
        }
    }

    fn endpoint() -> RouteEndpoint {
        RouteEndpoint {
            endpoint: meshfed_model::Endpoint {
                address: "10.0.0.1:5000".parse().unwrap(),
                labels: Default::default(),
                locality: Default::default(),
            },
            health: Default::default(),
        }
    }

    /// A local error leaves a healthy endpoint in rotation; refused, unreachable and timed
    /// out set it aside.
    #[test]
    fn only_failures_of_the_endpoint_set_it_aside() {
        let ctx = context();
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = endpoint();
            failed(&e, Some(&io::Error::from_raw_os_error(code)), &ctx);
            assert!(!e.health.is_ejected(), "ejected on {code}");
        }
        for error in [
            Some(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            Some(io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            None,
        ] {
            let e = endpoint();
            failed(&e, error.as_ref(), &ctx);
            assert!(e.health.is_ejected(), "not ejected on {error:?}");
        }
    }
}
