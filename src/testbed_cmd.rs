//! `meshfed testbed`: the local test bed.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use meshfed_testbed::bed::{Backend, Bed, BedConfig, demo, faults};
use meshfed_testbed::{ApiServer, ApiServerConfig};
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
    /// Bring up the seed scenario locally and keep it running until Ctrl-C.
    #[command(
        after_help = "Each cluster gets a network namespace (as root; loopback addresses otherwise), a test bed
API server, an intermediate CA under one root and its cacerts Secret, meshfed federation (the
cluster's CA), an east-west gateway on the shared network and a DNS proxy (real meshfed
processes), remote secrets for every other cluster, helloworld v<i> and a sleep client with the
test bed's own sidecar (Envoy is the production sidecar). sleep and helloworld get their
certificates (10 s, renewed at half life) from the federation through meshfed agent with their
pods' projected tokens; the gateway, the DNS proxy and the sidecar reach the federation's secure
port with their ServiceAccount tokens. It prints how to reach each part; Ctrl-C cleans up.

Examples:
  meshfed testbed up
  meshfed testbed up --clusters 3 --backend loopback --state-dir /tmp/bed"
    )]
    Up {
        /// How many clusters (2 to 8).
        #[arg(long, value_name = "N", default_value_t = 2)]
        clusters: usize,
        #[command(flatten)]
        bed: BedArgs,
    },
    /// Bring up two clusters and run the seed walkthrough as numbered steps.
    #[command(
        after_help = "Steps: isolation, cross_network, mtls_identity, rotation, dns, distribute, failover,
remote_secret_removal; then the faults partition, apiserver-down, gateway-down, ca-down and
cert-expire. Exits 0 only if every step and fault passed.

Examples:
  meshfed testbed demo
  meshfed testbed demo --json --backend loopback --state-dir /tmp/demo"
    )]
    Demo {
        /// Print {\"backend\", \"steps\": [{\"name\", \"ok\", \"detail\"}], \"faults\": [...]} on stdout (progress goes to stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bed: BedArgs,
    },
    /// Inject a fault into (or, with --heal, restore) a cluster of a running `testbed up`.
    #[command(
        after_help = "partition: cut the cluster off the shared network (netns backend only)
apiserver-down: stop its API server (objects are kept)
gateway-down: kill its east-west gateway process
ca-down: kill its federation (its CA and xDS); workloads keep their certificates, agents retry;
  --heal restarts it and waits for sleep's and helloworld's agents to get new certificates
cert-expire: stop its CA and replace its workloads' certificates with expired ones; --heal
  restarts the CA and waits for sleep's and helloworld's agents to get fresh ones from it

Examples:
  meshfed testbed fault gateway-down cluster2
  meshfed testbed fault partition cluster2 --state-dir /tmp/bed
  meshfed testbed fault ca-down cluster1
  meshfed testbed fault cert-expire cluster1 --heal"
    )]
    Fault {
        /// partition, apiserver-down, gateway-down, ca-down or cert-expire.
        #[arg(value_name = "FAULT")]
        fault: FaultKind,
        /// The cluster, e.g. cluster2.
        #[arg(value_name = "CLUSTER")]
        cluster: String,
        /// Undo the fault instead.
        #[arg(long)]
        heal: bool,
        /// State directory of the running test bed.
        #[arg(long, value_name = "DIR", default_value_os_t = default_state_dir())]
        state_dir: PathBuf,
    },
}

#[derive(Args)]
struct BedArgs {
    /// netns (one network namespace per cluster, needs root) or loopback; default: netns as root.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<BackendArg>,
    /// Kubeconfigs, certificates, logs and the control socket go here (demo: a temporary directory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Netns,
    Loopback,
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    Partition,
    ApiserverDown,
    GatewayDown,
    CaDown,
    CertExpire,
}

impl FaultKind {
    fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::ApiserverDown => "apiserver-down",
            FaultKind::GatewayDown => "gateway-down",
            FaultKind::CaDown => "ca-down",
            FaultKind::CertExpire => "cert-expire",
        }
    }
}

fn default_state_dir() -> PathBuf {
    std::env::temp_dir().join("meshfed-testbed")
}

fn bed_config(clusters: usize, args: &BedArgs, state_dir: PathBuf) -> Result<BedConfig> {
    Ok(BedConfig {
        exe: std::env::current_exe().context("finding the meshfed binary")?,
        clusters,
        backend: args.backend.map(|b| match b {
            BackendArg::Netns => Backend::Netns,
            BackendArg::Loopback => Backend::Loopback,
        }),
        state_dir,
    })
}

async fn up(clusters: usize, args: BedArgs) -> Result<ExitCode> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let socket = state_dir.join("control.sock");
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "a test bed is already running with state in {}",
            state_dir.display()
        );
    }
    let _ = std::fs::remove_file(&socket);
    let bed = Bed::up(bed_config(clusters, &args, state_dir)?).await?;
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    let shutdown = crate::shutdown_signal();
    println!("{}", bed.describe());
    let bed = std::sync::Arc::new(bed);
    let control = tokio::spawn(faults::serve_control(bed.clone(), listener));
    shutdown.await;
    control.abort();
    let _ = control.await;
    let _ = std::fs::remove_file(&socket);
    eprintln!("cleaning up");
    drop(bed);
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(json: bool, args: BedArgs) -> Result<ExitCode> {
    let temp;
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().context("making a state directory")?;
            temp.path().to_path_buf()
        }
    };
    eprintln!("bringing up 2 clusters...");
    let started = std::time::Instant::now();
    let bed = Bed::up(bed_config(2, &args, state_dir)?).await?;
    eprintln!(
        "test bed up in {:.1} s ({} backend)",
        started.elapsed().as_secs_f64(),
        bed.backend.as_str()
    );
    let report = demo::run(&bed, |i, step| {
        let mark = if step.ok { "ok" } else { "FAILED" };
        let line = format!("{i}. {} {mark}: {}", step.name, step.detail);
        if json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    })
    .await;
    drop(bed);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let passed = report.steps.iter().filter(|s| s.ok).count();
        let faults = report.faults.iter().filter(|s| s.ok).count();
        println!(
            "{passed}/{} steps and {faults}/{} faults passed ({} backend)",
            report.steps.len(),
            report.faults.len(),
            report.backend
        );
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
                let shutdown = crate::shutdown_signal();
                println!(
                    "serving {} for {cluster_name}; kubeconfig: {}",
                    server.url(),
                    kubeconfig_out.display()
                );
                tokio::select! {
                    _ = server.wait() => {}
                    _ = shutdown => tracing::info!("shutting down"),
                }
                server.shutdown().await;
                Ok(ExitCode::SUCCESS)
            }
            TestbedCommand::Up { clusters, bed } => up(clusters, bed).await,
            TestbedCommand::Demo { json, bed } => run_demo(json, bed).await,
            TestbedCommand::Fault {
                fault,
                cluster,
                heal,
                state_dir,
            } => {
                let verb = if heal { "heal" } else { "inject" };
                let line = format!("{verb} {} {cluster}", fault.as_str());
                let done = faults::send(&state_dir.join("control.sock"), &line).await?;
                println!("{done}");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
