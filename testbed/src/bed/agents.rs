//! Workload certificates in the test bed come from the federation's CA, as Istio's agent gets
//! them in a pod: `meshfed agent` in CA mode makes the key, asks the cluster's federation on
//! its secure port with the pod's projected token, renews at half life and serves the
//! certificate over SDS. The workload (sleep's sidecar, helloworld) follows its agent's SDS
//! and takes every new certificate for new connections. The bed writes no certificate.

use super::procs::{Proc, Spec};
use crate::netns::{ClusterNet, NsRuntime};
use crate::sidecar::sds::SdsCredentials;
use anyhow::{Context, anyhow};
use meshfed_model::admin::AdminClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name the federation's secure port is checked against: its Service's, which its
/// serving certificate carries (beside `istiod.istio-system.svc`).
pub const FEDERATION_NAME: &str = "meshfed-federation.istio-system.svc";
/// How long the workloads' certificates live. Short on purpose: every run of the bed sees
/// agents renew at half life (every 5 s), and a CA outage of more than that shows.
pub const WORKLOAD_CERT_TTL: Duration = Duration::from_secs(10);
/// How long an agent may take to hold its first certificate.
const FIRST_CERTIFICATE: Duration = Duration::from_secs(30);

/// What one workload's agent is given, as its pod's spec would give it.
pub struct AgentSpec<'a> {
    /// The workload (sleep, helloworld); its ServiceAccount has the same name.
    pub workload: &'a str,
    pub namespace: &'a str,
    /// Its projected `istio-ca` token.
    pub token: &'a Path,
    /// The federation's secure port.
    pub ca: SocketAddr,
    /// The mesh root the CA's certificate and the issued chains must lead to.
    pub root: &'a Path,
    /// `/healthz/ready` and `/metrics`, on the workload's pod address.
    pub admin: SocketAddr,
    /// Where the agent also writes the files (Istio's `OUTPUT_CERTS`), if anywhere.
    pub output_dir: Option<&'a Path>,
}

/// A running agent and the credentials its workload follows over SDS.
pub struct WorkloadAgent {
    pub workload: String,
    pub admin: SocketAddr,
    pub sds: SdsCredentials,
    pub output_dir: Option<PathBuf>,
    _proc: Proc,
}

/// What an agent's `/metrics` says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Certificates that replaced a served one.
    pub rotations: u64,
    /// Certificate requests that gave nothing to serve, for any reason.
    pub failures: u64,
    /// The served certificate's notAfter, as Unix time.
    pub expiry: i64,
}

impl WorkloadAgent {
    /// Starts the agent in `net` and waits until the workload holds its first certificate.
    /// Its SDS socket goes in `dir` (the cluster's state directory), its log in `logs`.
    pub async fn start(
        exe: &Path,
        net: &ClusterNet,
        rt: &NsRuntime,
        cluster: &str,
        dir: &Path,
        logs: &Path,
        spec: AgentSpec<'_>,
    ) -> anyhow::Result<WorkloadAgent> {
        let socket = dir.join(format!("{}-sds.sock", spec.workload));
        let log = logs.join(format!("{cluster}-{}-agent.log", spec.workload));
        let proc_spec = Spec {
            name: format!("{cluster} {} agent", spec.workload),
            args: args(&spec, &socket),
            log: log.clone(),
        };
        let proc = Proc::start(exe, net, proc_spec).await?;
        let follow = rt.spawn(SdsCredentials::follow(socket));
        let sds = tokio::time::timeout(FIRST_CERTIFICATE, follow)
            .await
            .map_err(|_| {
                anyhow!(
                    "{cluster}'s {} agent had no certificate from the CA at {} within {FIRST_CERTIFICATE:?}; see {}",
                    spec.workload,
                    spec.ca,
                    log.display()
                )
            })??
            .with_context(|| format!("{cluster}'s {} agent", spec.workload))?;
        Ok(WorkloadAgent {
            workload: spec.workload.to_string(),
            admin: spec.admin,
            sds,
            output_dir: spec.output_dir.map(Path::to_path_buf),
            _proc: proc,
        })
    }

    /// Its counters, read from inside its cluster.
    pub async fn counters(&self, rt: &NsRuntime) -> anyhow::Result<Counters> {
        let admin = AdminClient::new(self.admin);
        let page = rt
            .spawn(async move { admin.page("/metrics").await })
            .await?
            .map_err(|e| anyhow!("{}'s agent /metrics: {e}", self.workload))?;
        Ok(counters(&page))
    }
}

fn args(spec: &AgentSpec<'_>, socket: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = [
        "agent",
        "--ca-address",
        &spec.ca.to_string(),
        "--ca-server-name",
        FEDERATION_NAME,
        "--ca-root",
        &path(spec.root),
        "--token-file",
        &path(spec.token),
        "--cert-ttl",
        &format!("{}s", WORKLOAD_CERT_TTL.as_secs()),
        "--namespace",
        spec.namespace,
        "--service-account",
        spec.workload,
        "--socket",
        &path(socket),
        "--admin",
        &spec.admin.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(dir) = spec.output_dir {
        args.extend(["--output-dir".to_string(), path(dir)]);
    }
    args
}

/// The agent's series on a Prometheus text page (a counter with labels is summed).
fn counters(page: &str) -> Counters {
    let sum = |name: &str| -> f64 {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let base = series.split('{').next()?;
                (base == name).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    };
    Counters {
        rotations: sum("meshfed_agent_cert_rotations_total") as u64,
        failures: sum("meshfed_agent_csr_failures_total") as u64,
        expiry: sum("meshfed_agent_cert_expiry_timestamp_seconds") as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's /metrics as Prometheus renders it: failures are one counter per reason,
    /// summed; help and type lines are not samples.
    #[test]
    fn counters_read_the_agents_series() {
        let page = "# HELP meshfed_agent_cert_rotations_total Workload certificates...\n\
            # TYPE meshfed_agent_cert_rotations_total counter\n\
            meshfed_agent_cert_rotations_total 3\n\
            meshfed_agent_csr_failures_total{reason=\"unavailable\"} 2\n\
            meshfed_agent_csr_failures_total{reason=\"token\"} 1\n\
            meshfed_agent_cert_expiry_timestamp_seconds 1796454523\n\
            meshfed_agent_cert_rotations_total_other 9\n";
        assert_eq!(
            counters(page),
            Counters {
                rotations: 3,
                failures: 3,
                expiry: 1_796_454_523
            }
        );
        assert_eq!(counters(""), Counters::default());
    }
}
