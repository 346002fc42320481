//! Faults users can inject into a running test bed, and undo: cut a cluster off the shared
//! network, stop its API server, kill its east-west gateway, expire its workload
//! certificates. `meshfed testbed fault` reaches a running `testbed up` over a Unix socket in
//! its state directory (one line in, one line out).

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
    CertExpire,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::Partition,
        Fault::ApiserverDown,
        Fault::GatewayDown,
        Fault::CertExpire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::ApiserverDown => "apiserver-down",
            Fault::GatewayDown => "gateway-down",
            Fault::CertExpire => "cert-expire",
        }
    }
}

/// A fault name that is not one of [`Fault::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?} (partition, apiserver-down, gateway-down, cert-expire)")]
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
            (Fault::CertExpire, _) => cert_expire(c, heal).await,
        }
    }
}

/// Replaces `c`'s workload certificates with expired ones, or (`heal`) with fresh ones.
async fn cert_expire(c: &ClusterBed, heal: bool) -> anyhow::Result<String> {
    let cluster = &c.spec.name;
    let ttl = if heal {
        Duration::from_secs(86_400)
    } else {
        Duration::ZERO
    };
    if heal {
        // Sleep's comes back the way Envoy's does: new files, pushed by its agent.
        let seen = c.sleep_sds.version();
        c.renew_sleep_certificate()?;
        c.sleep_sds
            .changed_from(&seen, Duration::from_secs(10))
            .await?;
    } else {
        c.sleep_sds
            .credentials
            .replace(c.credentials("sleep", ttl)?);
    }
    c.hello_credentials
        .replace(c.credentials("helloworld", ttl)?);
    if !heal {
        // notAfter is the issue time in whole seconds: let that second pass.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    Ok(if heal {
        format!(
            "{cluster}'s workloads have fresh 24 h certificates (sleep's over SDS from meshfed agent, version {})",
            c.sleep_sds.version()
        )
    } else {
        format!("{cluster}'s workload certificates (sleep, helloworld) replaced by expired ones")
    })
}

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
