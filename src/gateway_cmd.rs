//! `meshfed gateway`: the east-west gateway.

use crate::Dur;
use anyhow::Result;
use clap::Args;
use meshfed_gateway::balance::Policy;
use meshfed_gateway::copy::CopyMode;
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::{
    DEFAULT_ADMIN, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_EJECT_FOR,
    DEFAULT_HELLO_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PENDING_HELLOS, DEFAULT_STATUS, Gateway, GatewayConfig, source,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(
    after_help = "The route file (reloaded when it changes; a bad edit keeps the previous routes):

  services:
  - host: helloworld.sample.svc.cluster.local
    port: 5000
    endpoints:
    - {address: \"10.1.0.5:5000\", labels: {version: v1}, locality: region1/zone1}
    subsets:
    - {name: v1, labels: {version: v1}}

Examples:
  meshfed gateway --endpoints routes.yaml
  meshfed gateway --listen 0.0.0.0:15443 --status 0.0.0.0:15021 --admin 127.0.0.1:15000 --endpoints routes.yaml --balance least-connections
  meshfed gateway --endpoints routes.yaml --hello-timeout 5s --idle-timeout 1h --connect-timeout 2s --eject-for 30s
  meshfed gateway --endpoints routes.yaml --max-connections 50000 --max-pending-hellos 2048 --drain-timeout 20s --copy buffered --threads 2
  meshfed gateway --xds meshfed-federation.istio-system:15010 --cluster-id cluster2 --network network2

With --xds the node id is router~$INSTANCE_IP~$POD_NAME.$POD_NAMESPACE~$POD_NAMESPACE.svc.cluster.local,
as Istio's gateways announce themselves."
)]
pub struct GatewayArgs {
    /// Address to accept TLS connections on (routed by SNI, never terminated).
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Public status port: /healthz/ready only (what the LoadBalancer and probes may see).
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_STATUS)]
    status: SocketAddr,
    /// Admin address: /healthz/ready, /metrics, /debug/routes (lists every endpoint: keep it
    /// off public addresses).
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Static route file (YAML, format above).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "xds",
        conflicts_with = "xds"
    )]
    endpoints: Option<PathBuf>,
    /// Take routes from meshfed federation's xDS server (host:port) as an Istio router:
    /// one route per SNI name, endpoints of this gateway's network only.
    #[arg(long, value_name = "ADDR", requires = "network")]
    xds: Option<String>,
    /// This gateway's cluster id (with --xds).
    #[arg(long, value_name = "ID", env = "CLUSTER_ID", default_value = "")]
    cluster_id: String,
    /// This gateway's network: the endpoints it routes to (with --xds).
    #[arg(long, value_name = "NET", env = "NETWORK")]
    network: Option<String>,
    /// How to pick among healthy endpoints: round-robin or least-connections.
    #[arg(long, value_name = "POLICY", default_value_t = Policy::default())]
    balance: Policy,
    /// How to copy bytes: splice (zero-copy, Linux) or buffered.
    #[arg(long, value_name = "MODE")]
    copy: Option<CopyMode>,
    /// The ClientHello must arrive within this.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_HELLO_TIMEOUT))]
    hello_timeout: Dur,
    /// Close routed connections idle this long.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_IDLE_TIMEOUT))]
    idle_timeout: Dur,
    /// Give up on an upstream connect after this and try the next endpoint.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_CONNECT_TIMEOUT))]
    connect_timeout: Dur,
    /// Skip an endpoint that failed to connect for this long.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_EJECT_FOR))]
    eject_for: Dur,
    /// Stop accepting beyond this many open connections (they wait in the backlog).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Stop accepting while this many connections hold a ClientHello not yet replayed
    /// upstream (up to ~19 KiB each; new ones wait in the backlog).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PENDING_HELLOS)]
    max_pending_hellos: usize,
    /// Worker threads (default: one per core this process may run on; one means a
    /// single-threaded runtime, the cheapest per connection).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// On SIGTERM, wait this long for open connections before exiting.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_DRAIN_TIMEOUT))]
    drain_timeout: Dur,
}

pub fn run(args: GatewayArgs) -> Result<ExitCode> {
    let mut config = GatewayConfig::new(args.listen, args.status, args.admin);
    config.balance = args.balance;
    config.copy = args.copy.unwrap_or_default();
    config.hello_timeout = args.hello_timeout.0;
    config.idle_timeout = args.idle_timeout.0;
    config.connect_timeout = args.connect_timeout.0;
    config.eject_for = args.eject_for.0;
    config.max_connections = args.max_connections.max(1);
    config.max_pending_hellos = args.max_pending_hellos.max(1);
    config.drain_timeout = args.drain_timeout.0;
    crate::runtime(args.threads)?.block_on(async move {
        let routes = RouteHandle::default();
        let metrics = meshfed_gateway::metrics::global();
        let _source = match (args.endpoints, args.xds) {
            (Some(file), _) => source::start(file, routes.clone(), metrics, Duration::from_secs(1))
                .map_err(anyhow::Error::msg)?,
            (None, Some(server)) => {
                let id = identity(args.cluster_id, args.network.unwrap_or_default());
                let url = crate::xds_url(&server);
                tokio::spawn(meshfed_gateway::xds::run(url, id, routes.clone(), metrics))
            }
            (None, None) => anyhow::bail!("--endpoints or --xds is required"),
        };
        let gateway = Gateway::bind(config, routes).await?;
        let shutdown = crate::shutdown_signal();
        println!(
            "gateway listening on {} (status {}, admin {})",
            show(gateway.local_addr()),
            show(gateway.status_addr()),
            show(gateway.admin_addr())
        );
        gateway.run(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Istio's downward-API variables, with stand-ins outside a pod.
fn identity(cluster_id: String, network: String) -> meshfed_proto::ads::Identity {
    let env = crate::pod_env;
    meshfed_proto::ads::Identity {
        kind: "router".into(),
        cluster_id,
        network,
        ip: env("INSTANCE_IP", "127.0.0.1"),
        pod: env("POD_NAME", "meshfed-gateway"),
        namespace: env("POD_NAMESPACE", "istio-system"),
        locality: Default::default(),
    }
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}
