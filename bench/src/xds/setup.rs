//! The xds bench's mesh: `clusters` test bed API servers (in this process) seeded with
//! `services` x `endpoints` each, every remote cluster on its own network behind its own
//! east-west gateway, and the `meshfed federation` process of cluster1 (pinned to the proxy
//! core), waited for until it holds every endpoint. Times each phase and reads the
//! federation's memory, so that the setup of the million-endpoint case is reported too.

use super::super::federation::{populate, remote_secret, server};
use super::XdsOptions;
use meshfed_federation::registry::{ClusterStatus, Status};
use meshfed_model::admin::AdminClient;
use meshfed_testbed::ApiServer;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The seeded API servers: `local` is cluster1 (the clients' own), `remotes[0]` cluster2
/// (whose svc0 slice every endpoint change rewrites).
pub(super) struct Mesh {
    pub local: ApiServer,
    pub remotes: Vec<ApiServer>,
    pub seed_s: f64,
}

/// Seeds every cluster: its services, and for each remote its gateway and remote secret.
pub(super) async fn seed(o: &XdsOptions) -> Result<Mesh, String> {
    let started = Instant::now();
    let local = server("cluster1").await?;
    populate(&local, 1, o.services, o.endpoints)?;
    let mut remotes = Vec::with_capacity(o.clusters.saturating_sub(1));
    for c in 2..=o.clusters {
        let id = format!("cluster{c}");
        let remote = server(&id).await?;
        populate(&remote, c, o.services, o.endpoints)?;
        remote
            .insert("Service", "istio-system", gateway(c))
            .map_err(|e| e.message)?;
        remote_secret(&local, &remote, &id)?;
        remotes.push(remote);
    }
    super::routes::seed(&local)?;
    let seed_s = started.elapsed().as_secs_f64();
    Ok(Mesh {
        local,
        remotes,
        seed_s,
    })
}

/// Cluster `c`'s east-west gateway on network `c`: its endpoints reach cluster1's clients
/// through it (one weighted endpoint per cluster), as Istio's multi-network model has it.
fn gateway(c: usize) -> Value {
    json!({"metadata": {"name": "istio-eastwestgateway", "labels": {"topology.istio.io/network": format!("network{c}")}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "tls", "port": 15443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": format!("172.31.{}.{}", c / 250, c % 250)}]}}})
}

/// The `meshfed federation` process under test; killed when dropped.
pub(super) struct Federation {
    child: Child,
    pub pid: u32,
    /// Its ADS address as a gRPC URL.
    pub url: String,
    admin: AdminClient,
    _dir: tempfile::TempDir,
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the federation of cluster1 on the proxy core; returns once it listens.
pub(super) fn start(o: &XdsOptions, mesh: &Mesh) -> Result<Federation, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kc = dir.path().join("kubeconfig");
    mesh.local
        .write_kubeconfig(&kc)
        .map_err(|e| e.to_string())?;
    // Its default (10,000) already admits the 5,000-client case; past it, clients would
    // wait in the backlog, so the bench raises it with the client count.
    let max_connections = o
        .clients
        .max(meshfed_federation::xds::DEFAULT_MAX_CONNECTIONS);
    let mut child = Command::new("taskset")
        .args(["-c", &super::super::PROXY_CORE.to_string()])
        .arg(&o.meshfed)
        .args([
            "federation",
            "--cluster-id",
            "cluster1",
            "--network",
            "network1",
        ])
        .args(["--admin", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0"])
        .args(["--xds-max-connections", &max_connections.to_string()])
        .arg("--kubeconfig")
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", o.meshfed.display()))?;
    let pid = child.id();
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .ok_or("no stdout")
        .map(std::io::BufReader::new)
        .and_then(|mut r| {
            std::io::BufRead::read_line(&mut r, &mut line).map_err(|_| "reading its stdout")
        });
    let addrs = read.map_err(str::to_string).and_then(|_| addresses(&line));
    let (xds, admin) = match addrs {
        Ok(a) => a,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    Ok(Federation {
        child,
        pid,
        url: format!("http://{xds}"),
        admin: AdminClient::new(admin),
        _dir: dir,
    })
}

/// The xDS and admin addresses from the federation's first line
/// (`... (plaintext xds ADDR, admin ADDR); ...`).
fn addresses(line: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let after = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split([',', ')', ';']).next())
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("no {key}address in {line:?}"))
    };
    Ok((after("xds ")?, after("admin ")?))
}

impl Federation {
    /// Waits until every cluster is synced and the registry holds every endpoint.
    pub async fn synced(&self, o: &XdsOptions, limit: Duration) -> Result<u64, String> {
        let want = (o.clusters * o.services * o.endpoints) as u64;
        let deadline = Instant::now() + limit;
        loop {
            let status: Result<Vec<ClusterStatus>, _> = self.admin.json("/debug/clusterz").await;
            if let Ok(clusters) = status {
                let endpoints = clusters.iter().map(|c| c.endpoints as u64).sum::<u64>();
                if clusters.len() == o.clusters
                    && clusters.iter().all(|c| c.status == Status::Synced)
                    && endpoints >= want
                {
                    return Ok(endpoints);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the federation did not sync within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its resident memory now and at its peak (VmRSS, VmHWM), in MiB.
    pub fn memory_mib(&self) -> (f64, f64) {
        memory_mib(self.pid)
    }
}

/// VmRSS and VmHWM of `pid` in MiB (0 if unreadable).
pub(super) fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::addresses;

    /// The line `meshfed federation` prints first names both addresses the bench needs.
    #[test]
    fn both_addresses_come_from_the_first_line() {
        let line = "federation for cluster1 on network1 (plaintext xds 127.0.0.1:4001, admin 127.0.0.1:4002); CA and secure port off: no --cacerts and no cacerts Secret\n";
        let (xds, admin) = addresses(line).expect("addresses");
        assert_eq!(xds.port(), 4001);
        assert_eq!(admin.port(), 4002);
        assert!(addresses("federation for c1 (plaintext xds off, admin ?)").is_err());
    }
}
