//! The east-west gateway: reads the SNI of each TLS connection, routes it to a local
//! endpoint of that mesh service and copies bytes both ways. It never terminates TLS and
//! never routes a name that is not in its route table.

pub mod admin;
pub mod balance;
pub mod clienthello;
pub mod copy;
mod dial;
pub mod metrics;
mod proxy;
pub mod routes;
pub mod source;
pub mod xds;

pub use dial::{KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, blames_endpoint};
use routes::RouteHandle;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

/// Istio's east-west gateway port.
pub const DEFAULT_LISTEN: SocketAddr = addr(Ipv4Addr::UNSPECIFIED, 15443);
/// Istio's gateway status port: health only, safe to expose on the LoadBalancer.
pub const DEFAULT_STATUS: SocketAddr = addr(Ipv4Addr::UNSPECIFIED, 15021);
/// Metrics and debug pages (every endpoint address): loopback unless the operator says
/// otherwise (Envoy's admin port).
pub const DEFAULT_ADMIN: SocketAddr = addr(Ipv4Addr::LOCALHOST, 15000);
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// `/healthz/ready` only: what load balancers and probes may see.
    pub status: SocketAddr,
    /// `/healthz/ready`, `/metrics` and `/debug/routes`.
    pub admin: SocketAddr,
    /// A ClientHello must arrive within this (slowloris guard).
    pub hello_timeout: Duration,
    /// A routed connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// An endpoint that refused a connection is skipped for this long.
    pub eject_for: Duration,
    /// Beyond this many open connections the gateway stops accepting until one closes.
    pub max_connections: usize,
    /// On shutdown, open connections get this long to finish.
    pub drain_timeout: Duration,
    pub balance: balance::Policy,
    pub copy: copy::CopyMode,
}

impl GatewayConfig {
    /// Every address is the caller's choice: two gateways in one place (tests, the test bed)
    /// must not both take [`DEFAULT_STATUS`].
    pub fn new(listen: SocketAddr, status: SocketAddr, admin: SocketAddr) -> Self {
        GatewayConfig {
            listen,
            status,
            admin,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            eject_for: DEFAULT_EJECT_FOR,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            balance: balance::Policy::default(),
            copy: copy::CopyMode::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway whose sockets are bound; [`Gateway::run`] serves until `shutdown` completes.
pub struct Gateway {
    listener: TcpListener,
    status_listener: TcpListener,
    admin_listener: TcpListener,
    config: GatewayConfig,
    routes: RouteHandle,
}

impl Gateway {
    pub async fn bind(config: GatewayConfig, routes: RouteHandle) -> Result<Self, Error> {
        let listener = listen(config.listen)?;
        let status_listener = bind_http(config.status).await?;
        let admin_listener = bind_http(config.admin).await?;
        Ok(Gateway {
            listener,
            status_listener,
            admin_listener,
            config,
            routes,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_listener.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.local_addr().ok()
    }

    /// Accepts until `shutdown`, then stops accepting, reports not-ready and gives open
    /// connections `drain_timeout` to finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let metrics = metrics::global();
        let ready = Arc::new(AtomicBool::new(true));
        let admin = admin::Admin {
            routes: self.routes.clone(),
            ready: ready.clone(),
        };
        let status_task = tokio::spawn(admin::serve_status(self.status_listener, admin.clone()));
        let admin_task = tokio::spawn(admin::serve(self.admin_listener, admin));
        let on_bytes: copy::OnBytes = Arc::new(move |to_up, n| {
            if to_up {
                metrics.bytes_to_upstream.increment(n)
            } else {
                metrics.bytes_to_downstream.increment(n)
            }
        });
        let ctx = Arc::new(proxy::Context {
            config: self.config.clone(),
            routes: self.routes,
            metrics,
            on_bytes,
        });
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let accept = accept_loop(self.listener, ctx, slots.clone());
        tokio::select! {
            () = accept => {}
            () = shutdown => {}
        }
        ready.store(false, Ordering::Relaxed);
        drain(
            &slots,
            self.config.max_connections,
            self.config.drain_timeout,
        )
        .await;
        status_task.abort();
        admin_task.abort();
    }
}

async fn bind_http(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    // Accepted sockets inherit both on Linux: four setsockopts per connection fewer.
    socket.set_nodelay(true).map_err(bind_err)?;
    socket2::SockRef::from(&socket)
        .set_tcp_keepalive(&dial::keepalive())
        .map_err(bind_err)?;
    socket.bind(addr).map_err(bind_err)?;
    socket.listen(4096).map_err(bind_err)
}

/// Backpressure: a connection slot is taken before accepting, so at the cap new
/// connections wait in the kernel's backlog instead of being accepted and dropped.
async fn accept_loop(listener: TcpListener, ctx: Arc<proxy::Context>, slots: Arc<Semaphore>) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((tcp, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    proxy::handle(tcp, ctx).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: pause briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until every slot is free again (all connections closed) or the timeout passes.
async fn drain(slots: &Arc<Semaphore>, total: usize, timeout: Duration) {
    let all = u32::try_from(total).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(timeout, slots.acquire_many(all)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// The proxy sets neither TCP_NODELAY nor keepalive on accepted sockets because the
    /// listener passes them on.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.unwrap();
        let down = accepted.unwrap().0;
        assert!(down.nodelay().unwrap());
        let sock = socket2::SockRef::from(&down);
        assert!(sock.keepalive().unwrap(), "downstream keepalive");
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }
}
