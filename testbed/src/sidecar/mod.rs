//! The test bed's sidecar: a small client-side proxy for workloads on the local test bed.
//! Envoy is the production sidecar; this one exists so the test bed runs without containers.
//! It consumes meshfed's xDS as an Istio sidecar node (CDS, EDS, LDS and RDS over delta ADS,
//! with the node metadata Istio's agent sends for an HTTP proxy without traffic capture),
//! routes as Envoy does by the HTTP proxy listener's routes ([`routes`], [`proxy`]: virtual
//! hosts, matches, weights, faults, timeouts, retries, mirrors, header edits, circuit
//! breakers), picks hosts by priority and weight ([`pick`]), ejects failing ones (outlier
//! detection from CDS) and originates mTLS with its workload certificate and the `outbound_`
//! SNI.

pub mod breaker;
mod forward;
pub mod pick;
pub mod proxy;
pub mod routes;
pub mod sds;
pub mod xds;

use crate::mesh_tls::Credentials;
use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use meshfed_model::Locality;
use meshfed_proto::ads::{Identity, XdsServer};
use routes::{HttpProxyListener, RouteTable};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every cluster the sidecar knows, by Istio cluster name (`outbound|port|subset|fqdn`),
/// and the routes of its listeners.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub clusters: BTreeMap<String, Upstream>,
    /// Listeners with an HTTP connection manager, by name (`127.0.0.1_15001`).
    pub listeners: BTreeMap<String, HttpProxyListener>,
    /// RouteConfigurations by RDS name (`http_proxy`).
    pub routes: BTreeMap<String, Arc<RouteTable>>,
}

impl Table {
    /// Istio's name for the HTTP proxy listener on `port` (`buildHTTPProxy`).
    pub fn http_proxy_name(port: u16) -> String {
        format!("127.0.0.1_{port}")
    }

    /// The HTTP proxy listener on `port` and its routes, once both have arrived.
    pub fn http_proxy(&self, port: u16) -> Option<(&HttpProxyListener, &RouteTable)> {
        let l = self.listeners.get(&Table::http_proxy_name(port))?;
        Some((l, self.routes.get(&l.rds)?))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub connect_timeout: Duration,
    /// CDS asked for locality-weighted balancing (a `distribute` rule).
    pub locality_weighted: bool,
    pub outlier: Option<OutlierPolicy>,
    /// How hosts marked `tlsMode: istio` are reached; others get plain TCP.
    pub tls: Option<TlsPolicy>,
    /// The cluster's DEFAULT-priority circuit breaker thresholds.
    pub limits: Limits,
    pub endpoints: Vec<Host>,
}

/// Circuit breaker thresholds (Envoy's defaults when CDS sets none: 1024, 1024, 1024, 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsPolicy {
    pub sni: String,
    /// SPIFFE ids the server may have (any under the root when empty).
    pub sans: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub addr: SocketAddr,
    pub priority: u32,
    pub locality: Locality,
    pub locality_weight: u32,
    pub weight: u32,
    pub healthy: bool,
    pub tls: bool,
}

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// meshfed federation's xDS server, `http://host:port`, reached in plaintext by
    /// [`Sidecar::start`]; [`Sidecar::start_with_xds`] reaches it as an [`XdsServer`] says.
    pub xds: String,
    /// Who the sidecar says it is; its namespace is where short names resolve.
    pub identity: Identity,
    /// The workload's pod labels, sent as Istio's `LABELS` (`app`, `version`, ...).
    pub labels: BTreeMap<String, String>,
    /// The outbound HTTP proxy listener.
    pub listen: SocketAddr,
    pub domain: String,
    pub credentials: Credentials,
}

pub(crate) struct Shared {
    table: watch::Receiver<Arc<Table>>,
    balancer: Mutex<pick::Balancer>,
    breakers: breaker::Breakers,
    /// The port the proxy listens on: its listener is `127.0.0.1_<port>`.
    port: u16,
    credentials: Credentials,
    namespace: String,
    domain: String,
}

impl Shared {
    fn lock_balancer(&self) -> MutexGuard<'_, pick::Balancer> {
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running sidecar; dropping it stops it.
pub struct Sidecar {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sidecar {
    /// Binds the listener and starts the xDS client (plaintext to `cfg.xds`), on the
    /// current runtime.
    pub async fn start(cfg: SidecarConfig) -> anyhow::Result<Sidecar> {
        let xds = XdsServer::plaintext(cfg.xds.clone());
        Sidecar::start_with_xds(cfg, xds).await
    }

    /// As [`start`](Self::start), reaching the federation as `server` says (the secure
    /// port: TLS checked against the mesh root, the workload's ServiceAccount token) instead
    /// of `cfg.xds` in plaintext.
    pub async fn start_with_xds(cfg: SidecarConfig, server: XdsServer) -> anyhow::Result<Sidecar> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let (tx, table) = watch::channel(Arc::new(Table::default()));
        let shared = Arc::new(Shared {
            table,
            balancer: Mutex::new(pick::Balancer::default()),
            breakers: breaker::Breakers::default(),
            port: addr.port(),
            credentials: cfg.credentials,
            namespace: cfg.identity.namespace.clone(),
            domain: cfg.domain,
        });
        let identity = Identity {
            kind: "sidecar".into(),
            ..cfg.identity
        };
        let node = node(&identity, addr.port(), &cfg.labels);
        let xds = tokio::spawn(async move {
            let mut state = xds::State::new(tx);
            meshfed_proto::ads::run_node(server, node, &mut state).await
        });
        let sync = tokio::spawn(forget_gone_hosts(shared.clone()));
        let serve = tokio::spawn(proxy::serve(listener, shared.clone()));
        Ok(Sidecar {
            addr,
            shared,
            tasks: vec![xds, sync, serve],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The table as xDS last set it; `changed()` on it awaits the next push.
    pub fn table(&self) -> watch::Receiver<Arc<Table>> {
        self.shared.table.clone()
    }

    /// Hosts of `cluster` outlier detection has ejected now.
    pub fn ejected(&self, cluster: &str) -> Vec<SocketAddr> {
        self.shared.lock_balancer().ejected(cluster, Instant::now())
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The node as Istio's agent describes a sidecar that serves an HTTP proxy port and
/// captures no traffic: `HTTP_PROXY_PORT`, `INTERCEPTION_MODE: NONE` and the pod's `LABELS`.
pub fn node(identity: &Identity, port: u16, labels: &BTreeMap<String, String>) -> Node {
    let s = |v: String| Value {
        kind: Some(value::Kind::StringValue(v)),
    };
    let mut node = identity.node();
    let labels = Struct {
        fields: labels
            .iter()
            .map(|(k, v)| (k.clone(), s(v.clone())))
            .collect(),
    };
    let meta = node.metadata.get_or_insert_with(Struct::default);
    meta.fields
        .insert("HTTP_PROXY_PORT".into(), s(port.to_string()));
    meta.fields
        .insert("INTERCEPTION_MODE".into(), s("NONE".into()));
    meta.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(value::Kind::StructValue(labels)),
        },
    );
    node
}

async fn forget_gone_hosts(shared: Arc<Shared>) {
    let mut table = shared.table.clone();
    while table.changed().await.is_ok() {
        let current = table.borrow_and_update().clone();
        shared.lock_balancer().sync(&current.clusters);
    }
}

#[cfg(test)]
mod tests;
