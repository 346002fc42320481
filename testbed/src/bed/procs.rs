//! meshfed's own components (federation, gateway, DNS proxy) run in the test bed as real
//! `meshfed` processes inside their cluster's network namespace, as they would run in pods:
//! each has its own metrics, logs and exit. They die with the test bed (kill on drop, and
//! the parent-death signal if the test bed itself is killed).

use crate::netns::ClusterNet;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a component may take to print its first line.
const START: Duration = Duration::from_secs(30);

/// What is needed to (re)start one component.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub args: Vec<String>,
    pub log: PathBuf,
}

pub struct Proc {
    pub spec: Spec,
    child: Child,
    /// The line it printed when it started listening.
    pub banner: String,
}

impl Proc {
    /// Starts `exe ARGS` in `cluster`'s namespace and waits for its first line on stdout.
    pub async fn start(exe: &Path, cluster: &ClusterNet, spec: Spec) -> anyhow::Result<Proc> {
        let exe = exe.to_str().context("the meshfed path is not UTF-8")?;
        let mut std_cmd = cluster.command(exe);
        std_cmd.args(&spec.args);
        let log = crate::state::fresh_file(&spec.log, 0o600)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        std_cmd.stdout(Stdio::piped()).stderr(Stdio::from(log));
        std_cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let mut cmd = Command::from(std_cmd);
        cmd.kill_on_drop(true);
        // SAFETY: prctl only sets an attribute of the child; no allocation, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", spec.name))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = match tokio::time::timeout(START, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => {
                let status = child.try_wait().ok().flatten();
                let tail = log_tail(&spec.log);
                bail!(
                    "{} did not start (exit: {status:?}); its log {} ends:\n{tail}",
                    spec.name,
                    spec.log.display()
                );
            }
        };
        // Keep draining stdout so the component never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            spec,
            child,
            banner,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL and reap: a crash, not a drain.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
