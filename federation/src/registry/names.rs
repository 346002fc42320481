//! Gateway hostnames resolved in the control plane, as istiod does with
//! `RESOLVE_HOSTNAME_GATEWAYS` (pilot/pkg/model/network.go, `networkGatewayNameCache`): a
//! LoadBalancer that publishes a hostname (an AWS NLB) is reached on its A and AAAA addresses,
//! looked up again when the answer's TTL runs out (clamped to 30 s .. 1 h, so a tiny TTL cannot
//! cause a push storm). A lookup that fails keeps the last addresses (DNS being down must not
//! withdraw a gateway); a name with no records has no address, and its gateway is dropped.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Istio's `MinGatewayTTL` and `MaxGatewayTTL`.
pub const MIN_TTL: Duration = Duration::from_secs(30);
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// At most this many hostnames are resolved at once: Service status comes from remote
/// clusters, and each name costs a task and a lookup per TTL.
pub const MAX_NAMES: usize = 256;

/// What a gateway hostname stands for right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The first lookup has not answered yet.
    Pending,
    Addresses(Vec<String>),
    /// Why the name has no address (it never resolved, or has no records).
    Failed(String),
}

/// Where lookups go: the system's resolv.conf, or given servers (tests, a test bed).
#[derive(Debug, Clone)]
pub enum Servers {
    System,
    Udp(Vec<SocketAddr>),
}

struct Entry {
    state: Resolution,
    task: Option<AbortHandle>,
}

/// The names wanted by the current gateways, each with its own refresh task.
pub struct GatewayNames {
    entries: Mutex<HashMap<String, Entry>>,
    servers: Servers,
    min_ttl: Duration,
    resolver: OnceLock<Result<TokioResolver, String>>,
    /// The registry's change channel: a changed answer is a registry change.
    changed: watch::Sender<u64>,
}

impl GatewayNames {
    pub fn new(changed: watch::Sender<u64>, servers: Servers, min_ttl: Duration) -> Arc<Self> {
        Arc::new(GatewayNames {
            entries: Mutex::new(HashMap::new()),
            servers,
            min_ttl,
            resolver: OnceLock::new(),
            changed,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `name` resolves to now. A name not seen before starts its refresh task (which
    /// notifies the registry when the answer comes and whenever it changes).
    pub fn lookup(self: &Arc<Self>, name: &str) -> Resolution {
        let mut entries = self.lock();
        if let Some(e) = entries.get(name) {
            return e.state.clone();
        }
        if entries.len() >= MAX_NAMES {
            return Resolution::Failed(format!(
                "over {MAX_NAMES} gateway hostnames are being resolved already"
            ));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Resolution::Failed("no async runtime to resolve it in".into());
        };
        let task = runtime.spawn(refresh(Arc::downgrade(self), name.to_string()));
        let entry = Entry {
            state: Resolution::Pending,
            task: Some(task.abort_handle()),
        };
        entries.insert(name.to_string(), entry);
        Resolution::Pending
    }

    /// Stops resolving names no gateway uses any more (Istio's `cleanupWatches`).
    pub fn retain(&self, wanted: &HashSet<String>) {
        self.lock().retain(|name, e| {
            let keep = wanted.contains(name);
            if let (false, Some(task)) = (keep, &e.task) {
                task.abort();
            }
            keep
        });
    }

    fn resolver(&self) -> Result<&TokioResolver, String> {
        let built = self.resolver.get_or_init(|| build_resolver(&self.servers));
        built.as_ref().map_err(Clone::clone)
    }

    /// One lookup of A and AAAA records: the answer and when to look again.
    async fn resolve(&self, name: &str) -> (Result<Vec<String>, String>, Duration) {
        let resolver = match self.resolver() {
            Ok(r) => r,
            Err(e) => return (Err(e), self.min_ttl),
        };
        // Fully qualified, as Istio asks (dns.Fqdn): no search domains.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match resolver.lookup_ip(fqdn.as_str()).await {
            Ok(answer) => {
                let mut addresses: Vec<String> = answer.iter().map(|ip| ip.to_string()).collect();
                addresses.sort();
                addresses.dedup();
                let ttl = answer
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                (
                    Ok(addresses),
                    ttl.clamp(self.min_ttl, MAX_TTL.max(self.min_ttl)),
                )
            }
            Err(e) if e.is_no_records_found() => (Ok(Vec::new()), self.min_ttl),
            Err(e) => (Err(e.to_string()), self.min_ttl),
        }
    }

    /// Records an answer; true when what the name stands for changed.
    fn store(&self, name: &str, answer: Result<Vec<String>, String>) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else {
            return false;
        };
        let next = match answer {
            Ok(a) if a.is_empty() => Resolution::Failed("it has no A or AAAA records".into()),
            Ok(a) => Resolution::Addresses(a),
            // DNS unavailable: keep what it resolved to last.
            Err(_) if matches!(entry.state, Resolution::Addresses(_)) => return false,
            Err(e) => Resolution::Failed(e),
        };
        let changed = entry.state != next;
        entry.state = next;
        changed
    }
}

impl Drop for GatewayNames {
    fn drop(&mut self) {
        for e in self.lock().values() {
            if let Some(task) = &e.task {
                task.abort();
            }
        }
    }
}

/// Resolves `name` until aborted or the names are dropped, again each time its TTL runs out.
async fn refresh(names: Weak<GatewayNames>, name: String) {
    loop {
        let Some(this) = names.upgrade() else {
            return;
        };
        let (answer, ttl) = this.resolve(&name).await;
        if let Err(e) = &answer {
            tracing::warn!(gateway = %name, error = %e, "could not resolve a gateway hostname");
        }
        if this.store(&name, answer) {
            this.changed.send_modify(|v| *v += 1);
        }
        drop(this);
        tokio::time::sleep(ttl).await;
    }
}

fn build_resolver(servers: &Servers) -> Result<TokioResolver, String> {
    let mut builder = match servers {
        Servers::System => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
        Servers::Udp(addrs) => {
            let servers = addrs
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp])
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
    };
    let options = builder.options_mut();
    // Both families, as Istio asks for A and AAAA.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // The refresh task is the cache: each refresh must ask the server.
    options.cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
