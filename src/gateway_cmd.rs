//! `meshfed gateway`: the east-west gateway.

use crate::Dur;
use anyhow::Result;
use clap::Args;
use meshfed_gateway::balance::Policy;
use meshfed_gateway::copy::CopyMode;
use meshfed_gateway::routes::RouteHandle;
use meshfed_gateway::xds::{XdsFlags, XdsServer};
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
  meshfed gateway --xds meshfed-federation.istio-system.svc:15012 --network network2 \\
      --xds-ca-root /var/run/secrets/istio/root-cert.pem --xds-token-file /var/run/secrets/tokens/istio-token
  meshfed gateway --xds https://10.96.0.20:15012 --xds-server-name istiod.istio-system.svc \\
      --xds-token-file /var/run/secrets/tokens/istio-token --network network2

With --xds the node id is router~$INSTANCE_IP~$POD_NAME.$POD_NAMESPACE~$POD_NAMESPACE.svc.cluster.local,
as Istio's gateways announce themselves. Port 15010 is plaintext; the secure port 15012 takes TLS
(--xds-ca-root or https://) and the ServiceAccount token (--xds-token-file), as istiod does."
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
    #[command(flatten)]
    xds_tls: XdsTlsArgs,
    /// This gateway's cluster id (with --xds); unset means the federation's own cluster.
    #[arg(
        long,
        value_name = "ID",
        env = "CLUSTER_ID",
        default_value = "",
        hide_default_value = true
    )]
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

/// How --xds is reached: shared by `gateway` and `dns-proxy`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct XdsTlsArgs {
    /// PEM root certificate(s) the federation's serving certificate must chain to; giving it
    /// turns TLS on (the secure port, 15012). With an https:// --xds it defaults to
    /// /var/run/secrets/istio/root-cert.pem, where Istio mounts the mesh root.
    #[arg(long, value_name = "FILE", requires = "xds")]
    xds_ca_root: Option<PathBuf>,
    /// The name checked in the federation's certificate, which carries
    /// meshfed-federation.<ns>.svc and istiod.<ns>.svc (an IP is checked as an IP SAN).
    /// Default: the host of --xds. Only with TLS.
    #[arg(long, value_name = "NAME", requires = "xds")]
    xds_server_name: Option<String>,
    /// A projected ServiceAccount token, sent as `authorization: Bearer <token>` and read
    /// again at every (re)connect, as kubelet rotates it. Only with TLS: never sent in
    /// plaintext.
    #[arg(long, value_name = "FILE", requires = "xds")]
    xds_token_file: Option<PathBuf>,
}

impl XdsTlsArgs {
    /// The server at `address` as these flags say; a mistake (an unreadable or bad root, a
    /// token or a server name without TLS) is a one-line error before anything starts.
    pub(crate) fn resolve(self, address: String) -> Result<XdsServer> {
        let flags = XdsFlags {
            // A CA root turns TLS on whatever the scheme, so `http://` for a bare address
            // changes nothing; https:// stays as given.
            address: crate::xds_url(&address),
            ca_root: self.xds_ca_root,
            server_name: self.xds_server_name,
            token_file: self.xds_token_file,
        };
        Ok(flags.resolve()?)
    }
}

pub fn run(args: GatewayArgs) -> Result<ExitCode> {
    let xds = match args.xds.clone() {
        Some(address) => Some(args.xds_tls.clone().resolve(address)?),
        None => None,
    };
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
        let _source = match (args.endpoints, xds) {
            (Some(file), _) => source::start(file, routes.clone(), metrics, Duration::from_secs(1))
                .map_err(anyhow::Error::msg)?,
            (None, Some(server)) => {
                let id = identity(args.cluster_id, args.network.unwrap_or_default());
                tokio::spawn(meshfed_gateway::xds::run(
                    server,
                    id,
                    routes.clone(),
                    metrics,
                ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn parse(args: &[&str]) -> GatewayArgs {
        let argv = std::iter::once("gateway").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    /// Istio's gateway reaches istiod's 15012 with the mesh root and its token: the flags
    /// become the xDS client's TLS settings and token file.
    #[test]
    fn the_tls_flags_reach_the_xds_client() {
        let (root, pem) = crate::test_root_file("gateway");
        let (root_s, token) = (
            root.display().to_string(),
            "/var/run/secrets/tokens/istio-token",
        );
        let args = parse(&[
            "--xds",
            "10.96.0.20:15012",
            "--network",
            "network2",
            "--xds-ca-root",
            &root_s,
            "--xds-server-name",
            "istiod.istio-system.svc",
            "--xds-token-file",
            token,
        ]);
        let server = args.xds_tls.resolve(args.xds.expect("xds"));
        let _ = std::fs::remove_file(&root);
        let server = server.expect("resolves");
        assert_eq!(server.address, "https://10.96.0.20:15012");
        let tls = server.tls.expect("TLS on");
        assert_eq!(tls.roots_pem, pem.as_bytes());
        assert_eq!(tls.server_name.as_deref(), Some("istiod.istio-system.svc"));
        assert_eq!(server.token_file, Some(PathBuf::from(token)));

        let args = parse(&["--xds", "127.0.0.1:15010", "--network", "n"]);
        let server = args
            .xds_tls
            .resolve(args.xds.expect("xds"))
            .expect("resolves");
        assert_eq!(server.address, "http://127.0.0.1:15010");
        assert!(server.tls.is_none() && server.token_file.is_none());
    }

    /// A ServiceAccount token is never sent in plaintext: refused before anything starts.
    #[test]
    fn a_token_over_plaintext_is_refused_with_a_clear_error() {
        let args = parse(&[
            "--xds",
            "127.0.0.1:15010",
            "--network",
            "n",
            "--xds-token-file",
            "/var/run/secrets/tokens/istio-token",
        ]);
        let err = run(args).expect_err("refused");
        let text = format!("{err:#}");
        assert!(
            text.starts_with("--xds-token-file: a token is only ever sent over TLS"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn the_tls_flags_need_xds_and_the_help_names_the_default_root() {
        let file = ["--endpoints", "r.yaml", "--xds-ca-root", "/r.pem"];
        assert!(Cli::try_parse_from(std::iter::once("gateway").chain(file)).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains(meshfed_gateway::DEFAULT_XDS_CA_ROOT),
            "{help}"
        );
    }
}
