//! `bench gateway|federation|xds|ca --json FILE`: meshfed measured, side by side with its peers
//! where it has them. Every figure is also printed as JSON on stdout.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "meshfed's benchmarks (bench/run.sh writes their figures into BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The gateway beside HAProxy, nginx and sniproxy: throughput, conn/s, latency, idle memory.
    Gateway(GatewayArgs),
    /// Federation: propagation of endpoint changes and first sync at scale.
    Federation(FederationArgs),
    /// The xDS server: pushes to many clients, delta and state of the world, and a
    /// VirtualService change to proxyless clients.
    Xds(XdsArgs),
    /// The federation's CA: steady issuance rate, 1,000 agents at once, CFSSL as the peer.
    Ca(CaArgs),
}

#[derive(Args)]
struct Common {
    /// Where the JSON report goes.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The meshfed binary to measure.
    #[arg(long, default_value = "target/release/meshfed")]
    meshfed: PathBuf,
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds per figure and round.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Rounds; each figure is the median over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle connections held open to measure memory per connection.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// New connections per second while measuring latency.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Concurrent clients while measuring the connection rate.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Only the connection-rate figure (for quick A/B runs).
    #[arg(long, conflicts_with = "bulk_only")]
    conn_only: bool,
    /// Only the bulk throughput figures (for quick A/B runs).
    #[arg(long)]
    bulk_only: bool,
    /// Only these proxies (meshfed, meshfed-buffered, haproxy, nginx, sniproxy); all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["meshfed", "meshfed-buffered", "haproxy", "nginx", "sniproxy"])]
    peers: Vec<String>,
}

#[derive(Args)]
struct FederationArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1000)]
    changes: usize,
    #[arg(long, default_value_t = 3)]
    clusters: usize,
    #[arg(long, default_value_t = 2000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Endpoint changes timed with the registry holding the whole clusters x services x
    /// endpoints state (mode `registry`).
    #[arg(long, default_value_t = 100)]
    registry_changes: usize,
    /// Seconds a first full sync may take before the run fails.
    #[arg(long, default_value_t = 600)]
    sync_timeout: u64,
    /// Which to measure: propagation (a change, small state), scale (first sync of a
    /// `meshfed federation` process), registry (a change, registry holding the scale state).
    #[arg(long, value_delimiter = ',', default_value = "propagation,scale,registry", value_parser = ["propagation", "scale", "registry"])]
    modes: Vec<String>,
}

#[derive(Args)]
struct XdsArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Clusters: cluster1 holds the clients, the others are remote (each on its own network
    /// behind its east-west gateway); an endpoint change rewrites svc0's slice in cluster2.
    #[arg(long, default_value_t = 2)]
    clusters: usize,
    /// Services per cluster (svc0..; the same names in every cluster).
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Endpoints (pods) per service and cluster.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// What the endpoint-change clients subscribe to: every cluster and assignment
    /// (wildcard), or only svc0's (named, as proxyless gRPC or a sidecar scoped by a
    /// Sidecar resource).
    #[arg(long, default_value = "wildcard", value_parser = ["wildcard", "named"])]
    subscribe: String,
    /// Which to measure: delta and sotw (an endpoint change), vs (a VirtualService change
    /// reaching proxyless delta clients).
    #[arg(long, value_delimiter = ',', default_value = "delta,sotw,vs", value_parser = ["delta", "sotw", "vs"])]
    modes: Vec<String>,
}

#[derive(Args)]
struct CaArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent callers in the steady phases, each its own connection and token.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Certificates in the steady phase over kept connections (and against the peer).
    #[arg(long, default_value_t = 16_384)]
    requests: usize,
    /// Certificates in the steady phase with a new TLS connection per request.
    #[arg(long, default_value_t = 2048)]
    fresh_requests: usize,
    /// Agents starting at once in the cold start, each with its own token.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Skip the peer (CFSSL).
    #[arg(long)]
    no_peer: bool,
}

fn main() -> ExitCode {
    use meshfed_bench as bench;
    let result = match Cli::parse().command {
        Command::Gateway(a) => bench::gateway(&bench::GatewayOptions {
            json: a.common.json.unwrap_or_else(|| "bench-gateway.json".into()),
            meshfed: a.common.meshfed,
            secs: a.secs,
            rounds: a.rounds,
            idle: a.idle,
            rate: a.rate,
            workers: a.workers,
            conn_only: a.conn_only,
            bulk_only: a.bulk_only,
            peers: a.peers,
        }),
        Command::Federation(a) => bench::federation::run(&bench::federation::FederationOptions {
            json: a
                .common
                .json
                .unwrap_or_else(|| "bench-federation.json".into()),
            meshfed: a.common.meshfed,
            changes: a.changes,
            clusters: a.clusters,
            services: a.services,
            endpoints: a.endpoints,
            registry_changes: a.registry_changes,
            sync_timeout: std::time::Duration::from_secs(a.sync_timeout),
            modes: a.modes,
        }),
        Command::Xds(a) => bench::xds::run(&bench::xds::XdsOptions {
            json: a.common.json.unwrap_or_else(|| "bench-xds.json".into()),
            meshfed: a.common.meshfed,
            clients: a.clients,
            changes: a.changes,
            clusters: a.clusters,
            services: a.services,
            endpoints: a.endpoints,
            subscribe: if a.subscribe == "named" {
                bench::xds::Subscribe::Named
            } else {
                bench::xds::Subscribe::Wildcard
            },
            modes: a.modes,
        }),
        Command::Ca(a) => bench::ca::run(&bench::ca::CaOptions {
            json: a.common.json.unwrap_or_else(|| "bench-ca.json".into()),
            meshfed: a.common.meshfed,
            connections: a.connections,
            requests: a.requests,
            fresh_requests: a.fresh_requests,
            agents: a.agents,
            peer: !a.no_peer,
        }),
    };
    report(result)
}

fn report(result: Result<serde_json::Value, String>) -> ExitCode {
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
