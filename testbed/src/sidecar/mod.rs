//! The test bed's sidecar: a small client-side proxy for workloads on the local test bed.
//! Envoy is the production sidecar; this one exists so the test bed runs without containers.
//! It consumes meshfed's xDS as an Istio sidecar node (CDS and EDS over delta ADS), picks
//! hosts by priority and weight ([`pick`]), ejects failing ones (outlier detection from CDS)
//! and originates mTLS with its workload certificate and the `outbound_` SNI ([`proxy`]).

pub mod pick;
pub mod proxy;
pub mod sds;
pub mod xds;

use crate::mesh_tls::Credentials;
use anyhow::Context;
use meshfed_model::Locality;
use meshfed_proto::ads::{Identity, XdsServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every cluster the sidecar knows, by Istio cluster name (`outbound|port|subset|fqdn`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub clusters: BTreeMap<String, Upstream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub connect_timeout: Duration,
    /// CDS asked for locality-weighted balancing (a `distribute` rule).
    pub locality_weighted: bool,
    pub outlier: Option<OutlierPolicy>,
    /// How hosts marked `tlsMode: istio` are reached; others get plain TCP.
    pub tls: Option<TlsPolicy>,
    pub endpoints: Vec<Host>,
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
    /// The outbound HTTP proxy listener.
    pub listen: SocketAddr,
    pub domain: String,
    pub credentials: Credentials,
}

pub(crate) struct Shared {
    table: watch::Receiver<Arc<Table>>,
    balancer: Mutex<pick::Balancer>,
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
            credentials: cfg.credentials,
            namespace: cfg.identity.namespace.clone(),
            domain: cfg.domain,
        });
        let identity = Identity {
            kind: "sidecar".into(),
            ..cfg.identity
        };
        let xds = tokio::spawn(async move {
            let mut state = xds::State::new(tx);
            meshfed_proto::ads::run(server, identity, &mut state).await
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

async fn forget_gone_hosts(shared: Arc<Shared>) {
    let mut table = shared.table.clone();
    while table.changed().await.is_ok() {
        let current = table.borrow_and_update().clone();
        shared.lock_balancer().sync(&current.clusters);
    }
}
