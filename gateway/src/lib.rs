//! The east-west gateway: reads the SNI of each TLS connection, routes it to a local
//! endpoint of that mesh service and copies bytes both ways. It never terminates TLS and
//! never routes a name that is not in its route table.

pub mod admin;
pub mod balance;
mod budget;
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
/// Connections holding a ClientHello at once: about 19 KiB each at worst, so ~80 MiB in all.
pub const DEFAULT_MAX_PENDING_HELLOS: usize = 4096;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// With an `https://` xDS address and no CA root given: where Istio mounts the mesh root.
pub const DEFAULT_XDS_CA_ROOT: &str = meshfed_proto::channel::DEFAULT_CA_ROOT;

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
    /// Beyond this many connections holding a ClientHello buffer (not yet replayed upstream)
    /// the gateway stops accepting until one is done with it.
    pub max_pending_hellos: usize,
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
            max_pending_hellos: DEFAULT_MAX_PENDING_HELLOS,
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
    hellos: budget::HelloBudget,
}

impl Gateway {
    pub async fn bind(config: GatewayConfig, routes: RouteHandle) -> Result<Self, Error> {
        let listener = listen(config.listen)?;
        let status_listener = bind_http(config.status).await?;
        let admin_listener = bind_http(config.admin).await?;
        let hellos = budget::HelloBudget::new(config.max_pending_hellos, metrics::global());
        Ok(Gateway {
            listener,
            status_listener,
            admin_listener,
            config,
            routes,
            hellos,
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
        let accept = accept_loop(self.listener, ctx, slots.clone(), self.hellos);
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

/// Backpressure: a connection slot and a ClientHello slot are taken before accepting, so at
/// either cap new connections wait in the kernel's backlog instead of being accepted and
/// dropped.
async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<proxy::Context>,
    slots: Arc<Semaphore>,
    hellos: budget::HelloBudget,
) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(hello) = hellos.take().await else {
            return;
        };
        match listener.accept().await {
            Ok((tcp, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    proxy::handle(tcp, ctx, hello.hold()).await;
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

    async fn until(what: &str, done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(waited.await.is_ok(), "never: {what}");
    }

    /// A gateway with a budget of 2 ClientHellos, routing `echo` to `backend`.
    async fn gateway_with_budget(backend: SocketAddr) -> (SocketAddr, budget::HelloBudget) {
        let routes = RouteHandle::default();
        routes.update(&[routes::ServiceRoutes {
            host: "echo.sample.svc.cluster.local".into(),
            port: 7,
            endpoints: vec![routes::StaticEndpoint {
                address: backend,
                labels: Default::default(),
                locality: Default::default(),
            }],
            subsets: vec![],
        }]);
        let any = "127.0.0.1:0".parse().unwrap();
        let mut cfg = GatewayConfig::new(any, any, any);
        cfg.max_pending_hellos = 2;
        cfg.hello_timeout = Duration::from_secs(600);
        let gw = Gateway::bind(cfg, routes).await.unwrap();
        let (addr, hellos) = (gw.local_addr().unwrap(), gw.hellos.clone());
        tokio::spawn(gw.run(std::future::pending()));
        (addr, hellos)
    }

    /// Budget + 1 connections that hold a ClientHello slot: the extra one is not accepted
    /// (it waits in the backlog, nothing is read or sent upstream) until a silent one closes;
    /// then it is routed, and every slot comes back once the connections are gone (but the
    /// one the accept loop takes for the next connection).
    #[tokio::test]
    async fn past_the_hello_budget_connections_wait_and_slots_come_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, hellos) = gateway_with_budget(backend.local_addr().unwrap()).await;
        let in_use = || 2 - hellos.available();
        let mut silent = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[22, 3, 1]).await.unwrap(); // a record header that never completes
            silent.push(s);
        }
        until("two silent clients hold the budget", || in_use() == 2).await;

        let hello = clienthello::build::records(
            &clienthello::build::client_hello(
                Some("outbound_.7_._.echo.sample.svc.cluster.local"),
                &[],
            ),
            16_384,
        );
        let mut extra = TcpStream::connect(addr).await.unwrap();
        extra.write_all(&hello).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), backend.accept()).await;
        assert!(early.is_err(), "routed past the ClientHello budget");
        assert_eq!(in_use(), 2);

        drop(silent.pop());
        let accepted = tokio::time::timeout(Duration::from_secs(10), backend.accept()).await;
        let (mut up, _) = accepted.expect("routed once a slot came back").unwrap();
        let mut got = vec![0; hello.len()];
        up.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello);
        drop(silent);
        // The routed connection's slot (its hello was replayed) and the silent ones' (they
        // closed) are back; only the accept loop's, taken for the next connection, is not.
        until("every connection's slot is back", || in_use() == 1).await;
    }
}
