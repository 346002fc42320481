//! The DNS proxy: answers mesh names from the NameTable the federation controller pushes
//! (NDS), forwards everything else to the upstream resolvers, over UDP and TCP.

pub mod access;
pub mod cache;
pub mod metrics;
pub mod mmsg;
pub mod names;
pub mod nds;
pub mod respond;
pub mod selfloop;
pub mod serve;
pub mod table;
pub mod upstream;

use access::Access;
use meshfed_model::admin::Reply;
use meshfed_proto::ads::Identity;
pub use meshfed_proto::channel::{XdsFlags, XdsServer};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use table::Table;
use tokio::net::{TcpListener, UdpSocket};
use upstream::Upstreams;

/// Off the standard port, so the proxy can run beside the node's resolver.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15053));
/// Metrics and `/debug/names` tell what the mesh has: loopback only, unless asked otherwise.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15054));
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
pub use upstream::DEFAULT_UPSTREAM_TIMEOUT;
/// Forwarded queries waiting on upstreams at once, UDP and TCP together: what a resolver
/// busy for a few seconds would hold (dnsmasq allows 150, unbound 1024 per thread).
pub const DEFAULT_MAX_FORWARDS_IN_FLIGHT: usize = 1024;
/// Open TCP connections at once (TCP is for the few answers too big for UDP).
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TCP client that does not take its answer within this is disconnected.
pub const DEFAULT_TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// With an `https://` xDS address and no CA root given: where Istio mounts the mesh root.
pub const DEFAULT_XDS_CA_ROOT: &str = meshfed_proto::channel::DEFAULT_CA_ROOT;

/// What one proxy lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Past this many forwarded queries in flight, a query to forward is answered SERVFAIL.
    pub max_forwards_in_flight: usize,
    /// Past this many open TCP connections, new ones wait in the kernel's backlog.
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_forwards_in_flight: DEFAULT_MAX_FORWARDS_IN_FLIGHT,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            tcp_write_timeout: DEFAULT_TCP_WRITE_TIMEOUT,
        }
    }
}

/// Everything the proxy needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP, same address.
    pub listen: SocketAddr,
    /// `/healthz/ready`, `/metrics`, `/debug/names`.
    pub admin: Option<SocketAddr>,
    /// `/healthz/ready` only: a port that may be public (probes) without showing the rest.
    pub status: Option<SocketAddr>,
    /// The federation's xDS server (plaintext, or TLS with a token: see
    /// [`XdsFlags`](meshfed_proto::channel::XdsFlags)); None serves only what [`Table::set`]
    /// is given (tests, benchmarks).
    pub xds: Option<XdsServer>,
    pub identity: Identity,
    pub upstreams: Upstreams,
    pub scope: names::Scope,
    pub access: Access,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

pub struct DnsProxy {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    admin: Option<TcpListener>,
    status: Option<TcpListener>,
    config: Config,
    table: Table,
}

impl DnsProxy {
    /// Binds every socket, so a port in use fails here and not later.
    pub async fn bind(config: Config) -> Result<DnsProxy, Error> {
        let udp = UdpSocket::bind(config.listen)
            .await
            .map_err(|e| Error::Bind(config.listen, e))?;
        // Port 0 asks for any port: UDP and TCP then share the one UDP was given.
        let at = udp
            .local_addr()
            .map_err(|e| Error::Bind(config.listen, e))?;
        let tcp = TcpListener::bind(at)
            .await
            .map_err(|e| Error::Bind(at, e))?;
        Ok(DnsProxy {
            udp: Arc::new(udp),
            tcp,
            admin: bind_http(config.admin).await?,
            status: bind_http(config.status).await?,
            table: Table::new(config.scope.clone()),
            config,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The names served; set by the NDS client when `xds` is configured.
    pub fn table(&self) -> Table {
        self.table.clone()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cx = serve::Context::new(
            self.table.clone(),
            self.config.upstreams.clone(),
            self.config.access.clone(),
            self.config.limits,
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(serve::udp(self.udp, cx.clone()));
        tasks.spawn(serve::tcp(self.tcp, cx));
        if let Some(server) = self.config.xds.clone() {
            tasks.spawn(nds::run(
                server,
                self.config.identity.clone(),
                self.table.clone(),
            ));
        }
        let table = self.table.clone();
        let route = move |path: &str| respond_admin(path, &table);
        if let Some(status) = self.status {
            let health = meshfed_model::admin::health_only(route.clone());
            tasks.spawn(meshfed_model::admin::serve(status, health));
        }
        if let Some(admin) = self.admin {
            tasks.spawn(meshfed_model::admin::serve(admin, route));
        }
        shutdown.await;
        tasks.abort_all();
    }
}

async fn bind_http(at: Option<SocketAddr>) -> Result<Option<TcpListener>, Error> {
    match at {
        Some(a) => Ok(Some(
            TcpListener::bind(a).await.map_err(|e| Error::Bind(a, e))?,
        )),
        None => Ok(None),
    }
}

fn respond_admin(path: &str, table: &Table) -> Reply {
    match path {
        "/healthz/ready" => Reply::readiness(table.generation() > 0, "no NameTable yet"),
        "/metrics" => Reply::metrics(),
        "/debug/names" => {
            let names = table.get().map(|n| n.dump()).unwrap_or_default();
            let doc = serde_json::json!({ "generation": table.generation(), "names": names });
            Reply::json(doc.to_string())
        }
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests;
