//! `meshfed`: one binary, a subcommand per component. Each subcommand only parses
//! arguments and calls the component's library crate.

mod agent_cmd;
mod certs_cmd;
mod dns_proxy_cmd;
mod federation_cmd;
mod gateway_cmd;
#[cfg(feature = "testbed")]
mod testbed_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meshfed",
    version,
    about = "Multi-cluster east-west gateway and federation for Kubernetes service meshes",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make, check and package the shared-root CA material (root, per-cluster intermediates, workloads).
    Certs(certs_cmd::CertsArgs),
    /// East-west gateway: routes mesh TLS by SNI (AUTO_PASSTHROUGH) on port 15443.
    Gateway(gateway_cmd::GatewayArgs),
    /// DNS proxy: mesh names (even services only other clusters have) from the federation's NameTable.
    DnsProxy(dns_proxy_cmd::DnsProxyArgs),
    /// Per-pod agent: the workload certificate (asked of the CA with a key made in the pod, or
    /// mounted) served to Envoy over SDS and as files for proxyless gRPC, rotated.
    Agent(agent_cmd::AgentArgs),
    /// Federation controller: remote secrets, every cluster's services and endpoints, one registry.
    Federation(federation_cmd::FederationArgs),
    /// Print a remote secret (Istio's format) that lets another cluster read this one.
    CreateRemoteSecret(federation_cmd::CreateRemoteSecretArgs),
    /// Show the federation controller's clusters; exit 1 if any is not synced.
    RemoteClusters(federation_cmd::RemoteClustersArgs),
    /// The local test bed: the seed scenario on this machine, its API server and its faults.
    #[cfg(feature = "testbed")]
    Testbed(testbed_cmd::TestbedArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(args) => certs_cmd::run(args),
        #[cfg(feature = "testbed")]
        Command::Testbed(args) => testbed_cmd::run(args),
        Command::Gateway(args) => gateway_cmd::run(args),
        Command::DnsProxy(args) => dns_proxy_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Federation(args) => federation_cmd::federation(args),
        Command::CreateRemoteSecret(args) => federation_cmd::create_remote_secret(args),
        Command::RemoteClusters(args) => federation_cmd::remote_clusters(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime with `threads` workers (default: one per core this process may run on);
/// one means a single-threaded runtime, the cheapest per request.
pub(crate) fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    anyhow::Context::context(runtime, "starting the async runtime")
}

/// A `--flag 5s` duration (ms, s, m, h or d). A type of its own so that clap can show a
/// library's `DEFAULT_*` duration as the flag's default (`default_value_t = Dur(...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dur(pub std::time::Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        meshfed_certs::parse_duration(s)
            .map(Dur)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&meshfed_certs::format_duration(self.0))
    }
}

/// A downward-API variable (`INSTANCE_IP`, `POD_NAME`...), or `default` outside a pod.
pub(crate) fn pod_env(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// An xDS server given as `host:port` (or already as a URL), as a gRPC URL.
pub(crate) fn xds_url(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: call it before printing the banner, so that a signal sent by
/// whoever read the banner is never the default (killing) action.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// A fresh mesh root written to a file of its own (no tempfile: it is a dependency of the
/// test bed feature only), for the CLI's xDS TLS flag tests: its path and PEM.
#[cfg(test)]
fn test_root_file(tag: &str) -> (std::path::PathBuf, String) {
    let root = std::env::temp_dir().join(format!("meshfed-{}-{tag}-root.pem", std::process::id()));
    let opts = meshfed_certs::RootOptions {
        org: "t".into(),
        days: 1,
        key: meshfed_certs::KeyAlgorithm::EcdsaP256,
    };
    let pem = meshfed_certs::CertificateAuthority::new_root(&opts)
        .expect("root")
        .root_pem()
        .to_string();
    std::fs::write(&root, &pem).expect("write");
    (root, pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every subcommand has help text, and the subcommand's examples use it.
    #[test]
    fn every_flag_is_documented_with_an_example() {
        let cli = Cli::command();
        let mut checked = 0;
        let names: &[&str] = if cfg!(feature = "testbed") {
            &["certs", "testbed"]
        } else {
            &["certs"]
        };
        let groups: Vec<_> = names
            .iter()
            .map(|name| cli.find_subcommand(name).expect("subcommand"))
            .collect();
        let leaves = ["gateway", "dns-proxy"].map(|name| cli.find_subcommand(name).expect(name));
        for sub in groups
            .iter()
            .flat_map(|c| c.get_subcommands())
            .chain(leaves)
        {
            let examples = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                examples.contains("Examples:"),
                "{} has no examples",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} {id} has no help",
                    sub.get_name()
                );
                let used = match arg.get_long() {
                    Some(long) => examples.contains(&format!("--{long}")),
                    None => examples.contains(&format!(" {} ", sub.get_name())),
                };
                assert!(used, "{} --{id} has no example", sub.get_name());
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} flags found");
    }
}
