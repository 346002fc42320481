//! `meshfed testbed`: the local test bed.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use meshfed_e2e::{ApiServer, ApiServerConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct TestbedArgs {
    #[command(subcommand)]
    command: TestbedCommand,
}

#[derive(Subcommand)]
enum TestbedCommand {
    /// Run a small in-memory Kubernetes API server that kubectl and kube-rs accept.
    #[command(
        after_help = "Stores objects in memory; RBAC objects are stored but not enforced; no admission;
no controllers but the service-account token one (no kubelet, scheduler or endpoints controller).

Examples:
  meshfed testbed apiserver --listen 127.0.0.1:6443 --kubeconfig-out /tmp/cluster1.kubeconfig
  meshfed testbed apiserver --listen 127.0.0.1:0 --kubeconfig-out kc2 --cluster-name cluster2 --service-cidr 10.97.0.0/16
  KUBECONFIG=/tmp/cluster1.kubeconfig kubectl get namespaces"
    )]
    Apiserver {
        /// Address to serve HTTPS on (port 0 picks a free one; the kubeconfig has the real one).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Where to write a kubeconfig with the server's CA and an admin token (mode 0600).
        #[arg(long, value_name = "FILE")]
        kubeconfig_out: PathBuf,
        /// Cluster name, used for the kubeconfig's cluster, context and user.
        #[arg(long, value_name = "NAME", default_value = "testbed")]
        cluster_name: String,
        /// Range ClusterIPs are allocated from.
        #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/16", value_parser = parse_cidr)]
        service_cidr: (Ipv4Addr, u8),
    },
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or("expected ADDRESS/PREFIX, e.g. 10.96.0.0/16")?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (8..=30).contains(l))
        .ok_or("prefix must be 8 to 30")?;
    Ok((ip, len))
}

pub fn run(args: TestbedArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match args.command {
            TestbedCommand::Apiserver {
                listen,
                kubeconfig_out,
                cluster_name,
                service_cidr,
            } => {
                let mut cfg = ApiServerConfig::new(listen, &cluster_name);
                cfg.service_cidr = service_cidr;
                let mut server = ApiServer::start(cfg).await?;
                server.write_kubeconfig(&kubeconfig_out)?;
                println!(
                    "serving {} for {cluster_name}; kubeconfig: {}",
                    server.url(),
                    kubeconfig_out.display()
                );
                tokio::select! {
                    _ = server.wait() => {}
                    _ = crate::shutdown_signal() => tracing::info!("shutting down"),
                }
                server.shutdown().await;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
