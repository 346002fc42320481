//! Isolated networks for test clusters, built like istio/ztunnel's namespaced tests: one
//! network namespace per cluster, joined by veth pairs to a bridge in a shared "internet"
//! namespace. Everything lives in namespaces created here; the host's own namespace is never
//! changed.
//!
//! Topology of a [`Network`] whose clusters are numbered i = 1, 2, ...:
//!
//! ```text
//!  internet ns (<tag>i): br0 ── c1, c2, ...      (bridge ports; no addresses)
//!  cluster ns (<tag>c<i>): lo
//!                          eth0  172.31.<net>.<10+i>/24   (veth peer of c<i>)   = gateway_ip()
//!                          pods0 10.<10+i>.0.<x>/16       (added by pod_ip(x))
//! ```
//!
//! A cluster has routes only to the bridge subnet and its own pod subnet, so another
//! cluster's pod address fails with ENETUNREACH while its gateway address answers.
//!
//! Without root, or where `ip netns add` fails, [`Network::create`] falls back to
//! [`Mode::Loopback`]: loopback addresses in the current namespace and no isolation at all.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::Duration;

use crate::Error;

/// Where `ip netns` keeps its namespace handles (iproute2's NETNS_RUN_DIR).
const NETNS_DIR: &str = "/var/run/netns";
/// Every namespace name starts with this, followed by the owner's pid in 6 hex digits.
const PREFIX: &str = "mf";
const BRIDGE: &str = "br0";
const POD_IF: &str = "pods0";
/// Keeps `10 + i` a valid octet for every address family we hand out.
const MAX_CLUSTERS: usize = 200;

/// Whether clusters really are apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per cluster: pod addresses are private to their cluster.
    Isolated,
    /// No privileges for namespaces: every cluster shares the current namespace and uses
    /// loopback addresses, so nothing is isolated.
    Loopback,
}

/// A set of cluster networks. Dropping it deletes every namespace it made (also while a
/// test unwinds from a panic).
#[derive(Debug)]
pub struct Network {
    mode: Mode,
    /// Why isolation was not possible, in Loopback mode.
    fallback_reason: Option<String>,
    /// Namespaces created so far, in creation order; a half-built Network cleans up too.
    namespaces: Vec<String>,
    clusters: Vec<ClusterNet>,
}

/// One cluster's view of a [`Network`].
#[derive(Debug)]
pub struct ClusterNet {
    name: String,
    /// `None` in Loopback mode.
    netns: Option<String>,
    gateway: Ipv4Addr,
    /// First three octets of the pod addresses; the fourth is the pod number.
    pod_prefix: [u8; 3],
    /// Pod numbers whose address is already on `pods0`.
    pods: Mutex<BTreeSet<u8>>,
}

/// A task running on its own thread inside a cluster's namespace, from [`ClusterNet::spawn`].
#[derive(Debug)]
pub struct NsTask<T> {
    cluster: String,
    result: mpsc::Receiver<Result<T, Error>>,
    thread: io::Result<thread::JoinHandle<()>>,
}

impl Network {
    /// Creates one network namespace per cluster name, or falls back to [`Mode::Loopback`]
    /// (with a warning) when namespaces cannot be made here. Errors if names are empty or
    /// repeated, or if isolation starts but a later step fails.
    pub fn create(clusters: &[&str]) -> Result<Network, Error> {
        Network::create_with(clusters, Mode::Isolated)
    }

    /// Like [`Network::create`]; `Mode::Loopback` skips isolation even where it is possible.
    pub fn create_with(clusters: &[&str], mode: Mode) -> Result<Network, Error> {
        validate(clusters)?;
        let tag = Tag::next();
        if mode == Mode::Loopback {
            return Ok(Network::loopback(clusters, &tag, "loopback asked for"));
        }
        if let Err(reason) = can_isolate() {
            return Ok(Network::loopback(clusters, &tag, reason));
        }
        remove_stale_namespaces(&tag);
        let internet = tag.internet_ns();
        if let Err(e) = ip(&["netns", "add", &internet]) {
            return Ok(Network::loopback(clusters, &tag, &e.to_string()));
        }
        let mut net = Network {
            mode: Mode::Isolated,
            fallback_reason: None,
            namespaces: vec![internet.clone()],
            clusters: Vec::new(),
        };
        net.build_isolated(clusters, &tag, &internet)?;
        Ok(net)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why this Network fell back to Loopback mode; `None` when isolated.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterNet> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &ClusterNet> {
        self.clusters.iter()
    }

    /// Names of the namespaces this Network owns (internet first); empty in Loopback mode.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    fn loopback(clusters: &[&str], tag: &Tag, reason: &str) -> Network {
        tracing::warn!(
            "network isolation unavailable ({reason}); clusters share this network namespace \
             on loopback addresses, so pod addresses are reachable from every cluster"
        );
        let clusters = clusters.iter().enumerate();
        let clusters = clusters.map(|(i, name)| ClusterNet::loopback(name, i + 1, tag.netid));
        Network {
            mode: Mode::Loopback,
            fallback_reason: Some(reason.to_string()),
            namespaces: Vec::new(),
            clusters: clusters.collect(),
        }
    }

    fn build_isolated(
        &mut self,
        clusters: &[&str],
        tag: &Tag,
        internet: &str,
    ) -> Result<(), Error> {
        setup_internet(internet)?;
        for (i, name) in clusters.iter().enumerate() {
            let index = i + 1;
            let netns = tag.cluster_ns(index);
            ip(&["netns", "add", &netns])?;
            // Recorded before configuring, so a failure below still deletes it.
            self.namespaces.push(netns.clone());
            let cluster = ClusterNet::isolated(name, index, tag.netid, netns);
            cluster.setup(internet, index)?;
            self.clusters.push(cluster);
        }
        tracing::debug!(namespaces = ?self.namespaces, "isolated cluster networks ready");
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Clusters first: deleting a cluster namespace also removes its veth pair.
        for netns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", netns]) {
                tracing::warn!("cleaning up network namespace: {e}");
            }
        }
    }
}

impl ClusterNet {
    fn isolated(name: &str, index: usize, netid: u8, netns: String) -> ClusterNet {
        let host = octet(10 + index);
        ClusterNet {
            name: name.to_string(),
            netns: Some(netns),
            gateway: Ipv4Addr::new(172, 31, netid, host),
            pod_prefix: [10, host, 0],
            pods: Mutex::new(BTreeSet::new()),
        }
    }

    /// The network id goes into the addresses so that two Networks alive at once (parallel
    /// tests) rarely collide on the same loopback address and port.
    fn loopback(name: &str, index: usize, netid: u8) -> ClusterNet {
        let host = octet(10 + index);
        ClusterNet {
            name: name.to_string(),
            netns: None,
            gateway: Ipv4Addr::new(127, 0, host, netid),
            pod_prefix: [127, host, netid],
            pods: Mutex::new(BTreeSet::new()),
        }
    }

    /// Wires this (fresh, empty) namespace to the internet bridge and makes its pod interface.
    fn setup(&self, internet: &str, index: usize) -> Result<(), Error> {
        let Some(netns) = self.netns.as_deref() else {
            return Ok(());
        };
        let port = format!("c{index}");
        let gateway = format!("{}/24", self.gateway);
        ip_in(netns, &["link", "set", "lo", "up"])?;
        // Created from inside the cluster namespace so no interface ever appears on the host.
        let veth = ["link", "add", "eth0", "type", "veth", "peer", "name", &port];
        ip_in(netns, &[&veth[..], &["netns", internet]].concat())?;
        ip_in(internet, &["link", "set", &port, "master", BRIDGE, "up"])?;
        ip_in(netns, &["addr", "add", &gateway, "dev", "eth0"])?;
        ip_in(netns, &["link", "set", "eth0", "up"])?;
        // A port-less bridge, like a CNI's cni0; not a dummy, which some CI kernels lack.
        ip_in(netns, &["link", "add", POD_IF, "type", "bridge"])?;
        ip_in(netns, &["link", "set", POD_IF, "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts (false) or restores (true) this cluster's link to the shared network: a network
    /// partition. Only isolated clusters have a link to cut.
    pub fn set_connected(&self, connected: bool) -> Result<(), Error> {
        let Some(netns) = self.netns.as_deref() else {
            return Err(Error::Network(
                "a partition needs isolated networks (the netns backend, as root)".into(),
            ));
        };
        let state = if connected { "up" } else { "down" };
        ip_in(netns, &["link", "set", "eth0", state]).map(|_| ())
    }

    /// The namespace this cluster lives in; `None` in Loopback mode.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Address on the shared "internet" bridge: reachable from every cluster (API server,
    /// east-west gateway bind here).
    pub fn gateway_ip(&self) -> IpAddr {
        IpAddr::V4(self.gateway)
    }

    /// The i-th pod address (i >= 1) in this cluster's private pod network; only reachable
    /// from inside this cluster in Isolated mode. The address is added on first use.
    pub fn pod_ip(&self, i: u8) -> Result<IpAddr, Error> {
        if i == 0 {
            return Err(Error::Network("pod numbers start at 1".into()));
        }
        let [a, b, c] = self.pod_prefix;
        let addr = Ipv4Addr::new(a, b, c, i);
        if let Some(netns) = self.netns.as_deref() {
            // Held across `ip` so two threads asking for the same pod add it once.
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            if !pods.contains(&i) {
                ip_in(
                    netns,
                    &["addr", "add", &format!("{addr}/16"), "dev", POD_IF],
                )?;
                pods.insert(i);
            }
        }
        Ok(IpAddr::V4(addr))
    }

    /// A command that runs `program` inside this cluster's namespace: `ip netns exec NS
    /// program` in Isolated mode (so `get_program()` is `ip`), `program` itself in Loopback mode.
    pub fn command(&self, program: &str) -> Command {
        match self.netns.as_deref() {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Runs `f()` to completion on a new OS thread that has entered this cluster's namespace,
    /// on a current-thread tokio runtime of its own: sockets it opens live in the namespace.
    /// Tasks it `tokio::spawn`s are dropped with that runtime when `f()`'s future finishes.
    pub fn spawn<F, Fut, T>(&self, f: F) -> NsTask<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let (tx, result) = mpsc::sync_channel(1);
        let netns = self.netns.clone();
        let thread = thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                // The receiver may be gone (task not joined); nothing is waiting then.
                let _ = tx.send(run_in_netns(netns.as_deref(), f));
            });
        NsTask {
            cluster: self.name.clone(),
            result,
            thread,
        }
    }
}

/// A tokio runtime whose one thread lives in a cluster's namespace, for components that run
/// for a long time: every task spawned on it (and every socket those tasks open) belongs to
/// the cluster. Dropping it stops the runtime and its tasks.
#[derive(Debug)]
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// In a lock only so that the runtime can be shared between threads (the receiver
    /// inside is not Sync); it is touched once, on drop.
    task: Mutex<Option<NsTask<()>>>,
}

impl ClusterNet {
    /// Starts an [`NsRuntime`] in this cluster's namespace.
    pub fn runtime(&self) -> Result<NsRuntime, Error> {
        let (handle_tx, handle_rx) = mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = self.spawn(move || async move {
            // The receiver waits below; if it is gone there is nobody to serve.
            let _ = handle_tx.send(tokio::runtime::Handle::current());
            let _ = stopped.await;
        });
        match handle_rx.recv() {
            Ok(handle) => Ok(NsRuntime {
                handle,
                stop: Some(stop),
                task: Mutex::new(Some(task)),
            }),
            // The thread ended before handing out its runtime: its error says why.
            Err(_) => Err(task.join().err().unwrap_or_else(|| {
                Error::Network(format!("runtime for cluster {} did not start", self.name))
            })),
        }
    }
}

impl NsRuntime {
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` on the cluster's thread; await the handle from any runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.join_timeout(Duration::from_secs(10))
        {
            tracing::warn!("stopping a cluster runtime: {e}");
        }
    }
}

impl<T> NsTask<T> {
    /// Waits for the task's output. A panic in the task is resumed here, so a failing
    /// assertion inside a namespace fails the test with its own message.
    pub fn join(self) -> Result<T, Error> {
        self.wait(None)
    }

    /// Like [`NsTask::join`], but gives up after `timeout`; the thread is then left running.
    pub fn join_timeout(self, timeout: Duration) -> Result<T, Error> {
        self.wait(Some(timeout))
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }

    fn wait(self, timeout: Option<Duration>) -> Result<T, Error> {
        let context = format!("starting a thread for cluster {}", self.cluster);
        let thread = self.thread.map_err(|e| Error::io(context, e))?;
        let received = match timeout {
            Some(timeout) => self.result.recv_timeout(timeout),
            None => self
                .result
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(output) => output,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Network(format!(
                "task in cluster {} still running after {timeout:?}",
                self.cluster
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => Err(Error::Network(format!(
                    "task in cluster {} ended without a result",
                    self.cluster
                ))),
            },
        }
    }
}

/// Names for one Network: `mf` + owner pid (6 hex digits, enough for Linux's pid_max of
/// 2^22) + a per-process sequence number (4 hex digits), so stale ones can be traced to a pid.
struct Tag {
    prefix: String,
    netid: u8,
}

impl Tag {
    fn next() -> Tag {
        static SEQ: AtomicU16 = AtomicU16::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Random start, then consecutive: distinct for Networks alive in one process.
        static FIRST_NETID: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
        let first = *FIRST_NETID.get_or_init(rand::random::<u8>);
        Tag {
            prefix: format!("{PREFIX}{:06x}{seq:04x}", std::process::id()),
            netid: octet(1 + (usize::from(first) + usize::from(seq)) % 254),
        }
    }

    fn internet_ns(&self) -> String {
        format!("{}i", self.prefix)
    }

    fn cluster_ns(&self, index: usize) -> String {
        format!("{}c{index}", self.prefix)
    }
}

/// The pid that created namespace `name`, if the name is one of ours.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_at_checked(6)?;
    let (seq, role) = rest.split_at_checked(4)?;
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_index = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let role_ok = role == "i" || role.strip_prefix('c').is_some_and(is_index);
    if !(is_hex(pid) && is_hex(seq) && role_ok) {
        return None;
    }
    i32::from_str_radix(pid, 16).ok().filter(|&pid| pid > 0)
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to someone else.
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Deletes namespaces left by runs that were killed before their Drop ran: those whose owner
/// pid is gone, and those under our own fresh tag (an earlier process had our pid).
fn remove_stale_namespaces(tag: &Tag) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    let own_pid = i32::try_from(std::process::id()).ok();
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = owner_pid(name) else { continue };
        let stale = name.starts_with(&tag.prefix) || (Some(pid) != own_pid && !process_alive(pid));
        if stale {
            tracing::info!("removing stale network namespace {name} (pid {pid} is gone)");
            // Another run may be removing it at the same time; either way it is gone.
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn validate(clusters: &[&str]) -> Result<(), Error> {
    if clusters.len() > MAX_CLUSTERS {
        return Err(Error::Network(format!(
            "at most {MAX_CLUSTERS} clusters per network"
        )));
    }
    for (i, name) in clusters.iter().enumerate() {
        if name.is_empty() || clusters[..i].contains(name) {
            return Err(Error::Network(format!(
                "cluster names must be unique and non-empty: {name:?}"
            )));
        }
    }
    Ok(())
}

/// Why namespaces cannot be made here, checked before trying so non-root runs stay quiet.
fn can_isolate() -> Result<(), &'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root");
    }
    Ok(())
}

fn setup_internet(internet: &str) -> Result<(), Error> {
    ip_in(internet, &["link", "set", "lo", "up"])?;
    ip_in(internet, &["link", "add", BRIDGE, "type", "bridge"])?;
    ip_in(internet, &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

fn run_in_netns<F, Fut, T>(netns: Option<&str>, f: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    if let Some(netns) = netns {
        enter_netns(netns)?;
    }
    // Built after setns: its I/O driver and any blocking-pool threads it starts (which
    // inherit this thread's namespace) all belong to the cluster.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("building a runtime for a namespace task", e))?;
    Ok(runtime.block_on(f()))
}

/// Moves the calling thread (only) into namespace `netns`.
fn enter_netns(netns: &str) -> Result<(), Error> {
    let path = format!("{NETNS_DIR}/{netns}");
    let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
    // SAFETY: `file` keeps the descriptor open for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let context = format!("entering network namespace {path}");
        return Err(Error::io(context, io::Error::last_os_error()));
    }
    Ok(())
}

fn ip_in(netns: &str, args: &[&str]) -> Result<String, Error> {
    ip(&[&["-n", netns], args].concat())
}

/// Runs `ip ARGS`, returning its stdout, or an error carrying its stderr.
fn ip(args: &[&str]) -> Result<String, Error> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io("running ip (iproute2)", e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Network(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `n` as an address octet; callers keep it in range (see MAX_CLUSTERS).
fn octet(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_only_matches_our_names() {
        assert_eq!(owner_pid("mf00a3f1002ai"), Some(0xa3f1));
        assert_eq!(owner_pid("mf00a3f1002ac12"), Some(0xa3f1));
        assert_eq!(owner_pid("mf00a3f1002a"), None);
        assert_eq!(owner_pid("mf00a3f1002ac"), None);
        assert_eq!(owner_pid("mf00a3f1002ax1"), None);
        assert_eq!(owner_pid("mfzza3f1002ai"), None);
        assert_eq!(owner_pid("mf000000002ai"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn validate_rejects_empty_and_repeated_names() {
        assert!(validate(&["a", "b"]).is_ok());
        assert!(validate(&["a", ""]).is_err());
        assert!(validate(&["a", "a"]).is_err());
    }
}
