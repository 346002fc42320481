//! Faults users can inject into a running test bed, and undo: cut a cluster off the shared
//! network, stop its API server, kill its east-west gateway, take its CA down (the federation
//! process, as istiod down), expire its workload certificates. Healing the last two goes
//! through the CA: the workloads' agents get new certificates from the federation.
//! `meshfed testbed fault` reaches a running `testbed up` over a Unix socket in its state
//! directory (one line in, one line out).

use super::procs::Proc;
use super::{Bed, ClusterBed};
use crate::OneLine;
use anyhow::{Context, anyhow, bail};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Partition,
    ApiserverDown,
    GatewayDown,
    CaDown,
    CertExpire,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Partition,
        Fault::ApiserverDown,
        Fault::GatewayDown,
        Fault::CaDown,
        Fault::CertExpire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::ApiserverDown => "apiserver-down",
            Fault::GatewayDown => "gateway-down",
            Fault::CaDown => "ca-down",
            Fault::CertExpire => "cert-expire",
        }
    }
}

/// A fault name that is not one of [`Fault::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?} (partition, apiserver-down, gateway-down, ca-down, cert-expire)")]
pub struct UnknownFault(pub String);

impl std::str::FromStr for Fault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Fault, UnknownFault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

impl Bed {
    /// Injects `fault` into `cluster` (or, with `heal`, undoes it); says what it did.
    pub async fn fault(&self, fault: Fault, cluster: &str, heal: bool) -> anyhow::Result<String> {
        let c = self.cluster(cluster)?;
        match (fault, heal) {
            (Fault::Partition, _) => {
                self.net(cluster)?.set_connected(heal).one_line()?;
                Ok(if heal {
                    format!("{cluster} is back on the shared network")
                } else {
                    format!(
                        "{cluster} cut off the shared network: its gateway and API server are unreachable from other clusters"
                    )
                })
            }
            (Fault::ApiserverDown, false) => {
                c.api.lock().await.stop().await;
                Ok(format!("{cluster}'s API server stopped (objects kept)"))
            }
            (Fault::ApiserverDown, true) => {
                let api = c.api.clone();
                c.rt.spawn(async move { api.lock().await.resume().await })
                    .await?
                    .one_line()?;
                Ok(format!(
                    "{cluster}'s API server serving again at {}",
                    c.addrs.apiserver
                ))
            }
            (Fault::GatewayDown, false) => {
                let mut gw = c.gateway.lock().await;
                let pid = gw.pid().map_or("?".to_string(), |p| p.to_string());
                gw.kill().await;
                Ok(format!("{cluster}'s gateway (pid {pid}) killed"))
            }
            (Fault::GatewayDown, true) => {
                let mut gw = c.gateway.lock().await;
                let spec = gw.spec.clone();
                *gw = Proc::start(&self.exe, self.net(cluster)?, spec).await?;
                let pid = gw.pid().map_or("?".to_string(), |p| p.to_string());
                Ok(format!("{cluster}'s gateway restarted (pid {pid})"))
            }
            (Fault::CaDown, false) => {
                let pid = self.stop_federation(c).await;
                Ok(format!(
                    "{cluster}'s federation (pid {pid}) killed: its CA and xDS on {} are down; \
                     workloads keep their certificates and their proxies their last configuration",
                    c.addrs.secure
                ))
            }
            (Fault::CaDown, true) => {
                let (pid, versions) = self.restart_ca(c).await?;
                Ok(format!(
                    "{cluster}'s federation restarted (pid {pid}): sleep's and helloworld's agents got new certificates from its CA ({versions})"
                ))
            }
            (Fault::CertExpire, false) => self.expire_certificates(c).await,
            (Fault::CertExpire, true) => {
                let (pid, versions) = self.restart_ca(c).await?;
                Ok(format!(
                    "{cluster}'s CA is back (federation pid {pid}): fresh certificates from it over SDS ({versions})"
                ))
            }
        }
    }

    /// Kills `c`'s federation, its CA; returns its pid.
    async fn stop_federation(&self, c: &ClusterBed) -> String {
        let mut federation = c.federation.lock().await;
        let pid = federation.pid().map_or("?".to_string(), |p| p.to_string());
        federation.kill().await;
        pid
    }

    /// Starts `c`'s federation again (killing any still running, so healing twice is
    /// harmless) and waits until it is ready; returns its pid.
    async fn restart_federation(&self, c: &ClusterBed) -> anyhow::Result<String> {
        {
            let mut federation = c.federation.lock().await;
            federation.kill().await;
            let spec = federation.spec.clone();
            *federation = Proc::start(&self.exe, self.net(&c.spec.name)?, spec).await?;
        }
        c.until_ready(c.addrs.federation_admin).await?;
        let federation = c.federation.lock().await;
        Ok(federation.pid().map_or("?".to_string(), |p| p.to_string()))
    }

    /// Stops `c`'s CA, so nothing renews its workloads' certificates, and gives sleep and
    /// helloworld expired ones, as if the CA had been down past their notAfter.
    async fn expire_certificates(&self, c: &ClusterBed) -> anyhow::Result<String> {
        let pid = self.stop_federation(c).await;
        c.sleep_agent.sds.credentials.replace(c.expired("sleep")?);
        c.hello_agent
            .sds
            .credentials
            .replace(c.expired("helloworld")?);
        // notAfter is the issue time in whole seconds: let that second pass.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        Ok(format!(
            "{}'s CA down (federation pid {pid} killed) and its workload certificates (sleep, helloworld) replaced by expired ones, as after an outage past their notAfter",
            c.spec.name
        ))
    }

    /// Brings `c`'s CA back and waits until sleep's and helloworld's agents got new
    /// certificates from it and pushed them over SDS, as istio-agent does after an outage
    /// (so no agent is left deep in its retry backoff). Returns the federation's pid and the
    /// SDS versions.
    async fn restart_ca(&self, c: &ClusterBed) -> anyhow::Result<(String, String)> {
        let agents = [&c.sleep_agent, &c.hello_agent];
        let seen = agents.map(|a| a.sds.version());
        let pid = self.restart_federation(c).await?;
        let mut versions = Vec::new();
        for (agent, seen) in agents.iter().zip(&seen) {
            let version = agent
                .sds
                .changed_from(seen, RENEWAL)
                .await
                .with_context(|| format!("{}'s agent", agent.workload))?;
            versions.push(format!("{} version {version}", agent.workload));
        }
        Ok((pid, versions.join(", ")))
    }
}

/// How long an agent may take to get a certificate once the CA is back: its retry backoff
/// grows to 60 s during a long outage.
const RENEWAL: Duration = Duration::from_secs(90);

/// Answers `inject|heal FAULT CLUSTER` lines on `path` until the task is dropped.
pub async fn serve_control(bed: Arc<Bed>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let bed = bed.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match command(&bed, &line).await {
                    Ok(done) => format!("ok {done}\n"),
                    Err(e) => format!("error {e:#}\n"),
                };
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn command(bed: &Bed, line: &str) -> anyhow::Result<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [verb, fault, cluster] = words.as_slice() else {
        bail!("expected `inject|heal FAULT CLUSTER`, got {line:?}");
    };
    let heal = match *verb {
        "inject" => false,
        "heal" => true,
        other => bail!("unknown verb {other:?}"),
    };
    bed.fault(fault.parse()?, cluster, heal).await
}

/// Sends one control line to the test bed whose socket is `path`; its answer.
pub async fn send(path: &Path, line: &str) -> anyhow::Result<String> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        anyhow!(
            "no test bed answers at {} ({e}); start one with `meshfed testbed up`",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let answer = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .context("the test bed closed the connection")?;
    match answer.split_once(' ') {
        Some(("ok", done)) => Ok(done.to_string()),
        // The bed's own message, as it was when it failed there.
        Some(("error", e)) => Err(anyhow!("{e}")),
        _ => bail!("unexpected answer {answer:?}"),
    }
}
