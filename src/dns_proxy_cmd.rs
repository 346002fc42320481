//! `meshfed dns-proxy`: mesh names from the federation's NameTable, everything else upstream.

use crate::Dur;
use crate::gateway_cmd::XdsTlsArgs;
use anyhow::{Context, Result, anyhow};
use clap::Args;
use meshfed_dns_proxy::access::{Access, Cidr};
use meshfed_dns_proxy::names::Scope;
use meshfed_dns_proxy::selfloop::without_self;
use meshfed_dns_proxy::upstream::{ResolvConf, Upstreams};
use meshfed_dns_proxy::{
    Config, DEFAULT_ADMIN, DEFAULT_LISTEN, DEFAULT_MAX_FORWARDS_IN_FLIGHT,
    DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_RESOLV_CONF, DEFAULT_TCP_IDLE_TIMEOUT,
    DEFAULT_TCP_WRITE_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, DnsProxy, Limits,
};
use meshfed_proto::ads::Identity;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(
    after_help = "Mesh names are answered as Istio's DNS proxy answers them: the fqdn
(svc.ns.svc.cluster.local), svc.ns.svc, svc.ns, svc (in --namespace), svc.ns.svc.clusterset.local,
and each of those with a search domain appended (a CNAME to the fqdn). A service of this cluster
answers its ClusterIP; one that exists only in other clusters answers a VIP from 240.240.0.0/16
(AAAA: 2001:2::/48) that every cluster derives alike from the hostname. Until the first NameTable
arrives, every query is forwarded. An upstream that is this proxy itself (its --listen address,
or on a wildcard --listen any address of this host on the same port) is dropped at start.

Examples:
  meshfed dns-proxy --xds meshfed-federation.istio-system:15010 --cluster-id cluster1
  meshfed dns-proxy --listen 127.0.0.1:15053 --xds 127.0.0.1:15010 --upstream 10.96.0.10 --namespace sample
  meshfed dns-proxy --xds 127.0.0.1:15010 --resolv-conf /etc/resolv.conf --admin 127.0.0.1:15054 --upstream-timeout 2s
  meshfed dns-proxy --listen 0.0.0.0:53 --xds 127.0.0.1:15010 --allow-from 10.244.0.0/16 --domain cluster.local --threads 1
  meshfed dns-proxy --xds 127.0.0.1:15010 --status 0.0.0.0:15021 --admin 127.0.0.1:15054
  meshfed dns-proxy --xds 127.0.0.1:15010 --max-forwards-in-flight 1024 --max-tcp-connections 256 \\
      --tcp-idle-timeout 10s --tcp-write-timeout 5s
  meshfed dns-proxy --xds meshfed-federation.istio-system.svc:15012 --xds-ca-root /var/run/secrets/istio/root-cert.pem \\
      --xds-token-file /var/run/secrets/tokens/istio-token
  meshfed dns-proxy --xds https://10.96.0.20:15012 --xds-server-name istiod.istio-system.svc \\
      --xds-token-file /var/run/secrets/tokens/istio-token

Port 15010 is plaintext; the secure port 15012 takes TLS (--xds-ca-root or https://) and the
ServiceAccount token (--xds-token-file), as istiod does."
)]
pub struct DnsProxyArgs {
    /// Address to answer on, UDP and TCP.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// meshfed federation's xDS server (host:port, or https://host:port): the NameTable
    /// comes from there (NDS).
    #[arg(long, value_name = "ADDR")]
    xds: String,
    #[command(flatten)]
    xds_tls: XdsTlsArgs,
    /// Upstream resolver (IP or IP:port; repeat for more, tried in order). Default: the
    /// name servers of --resolv-conf.
    #[arg(long, value_name = "ADDR", conflicts_with = "resolv_conf")]
    upstream: Vec<String>,
    /// Where upstream resolvers and search domains are read from.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_RESOLV_CONF)]
    resolv_conf: PathBuf,
    /// Give up on an upstream after this and try the next; SERVFAIL when all failed.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_UPSTREAM_TIMEOUT))]
    upstream_timeout: Dur,
    /// The namespace bare service names resolve in.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// This cluster's id: the federation answers its services with their ClusterIPs; unset
    /// means the federation's own cluster.
    #[arg(
        long,
        value_name = "ID",
        env = "CLUSTER_ID",
        default_value = "",
        hide_default_value = true
    )]
    cluster_id: String,
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = meshfed_model::DEFAULT_DOMAIN)]
    domain: String,
    /// Also answer clients in this network (CIDR; repeatable). Loopback is always allowed;
    /// anyone else is REFUSED, so the proxy is never an open resolver.
    #[arg(long, value_name = "CIDR", value_parser = cidr)]
    allow_from: Vec<Cidr>,
    /// Admin address: /healthz/ready (after the first NameTable), /metrics, /debug/names.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Status address (off unless given): /healthz/ready only, for probes on a public port.
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// Queries relayed upstream at once (UDP and TCP together); past this, SERVFAIL at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FORWARDS_IN_FLIGHT, value_parser = at_least_one)]
    max_forwards_in_flight: usize,
    /// Open TCP connections at once; past this, new ones wait in the kernel's backlog.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TCP_CONNECTIONS, value_parser = at_least_one)]
    max_tcp_connections: usize,
    /// Close a TCP connection whose client sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_TCP_IDLE_TIMEOUT))]
    tcp_idle_timeout: Dur,
    /// Drop a TCP client that does not take its answer within this.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_TCP_WRITE_TIMEOUT))]
    tcp_write_timeout: Dur,
    /// Worker threads (default: one per core this process may run on).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn cidr(s: &str) -> Result<Cidr, String> {
    s.parse()
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: must be a whole number, at least 1")),
    }
}

/// `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`; port 53 when none is given.
fn upstream_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .parse()
        .with_context(|| format!("--upstream {s:?}: not an IP or IP:port"))?;
    Ok(SocketAddr::new(ip, 53))
}

fn upstreams_and_search(args: &DnsProxyArgs) -> Result<(Vec<SocketAddr>, Vec<String>)> {
    if !args.upstream.is_empty() {
        let servers = args
            .upstream
            .iter()
            .map(|s| upstream_addr(s))
            .collect::<Result<_>>()?;
        return Ok((servers, vec![]));
    }
    let text = std::fs::read_to_string(&args.resolv_conf)
        .with_context(|| format!("reading {}", args.resolv_conf.display()))?;
    let rc = ResolvConf::parse(&text);
    Ok((rc.nameservers, rc.search))
}

pub fn run(args: DnsProxyArgs) -> Result<ExitCode> {
    let xds = args.xds_tls.clone().resolve(args.xds.clone())?;
    let (servers, search) = upstreams_and_search(&args)?;
    // Installed as the node's resolver, resolv.conf may name us: forwarding there would loop.
    let servers = without_self(&servers, args.listen).map_err(|e| {
        anyhow!("{e}: give --upstream, or a --resolv-conf with a nameserver other than this proxy")
    })?;
    let env = crate::pod_env;
    let identity = Identity {
        kind: "sidecar".into(),
        cluster_id: args.cluster_id.clone(),
        ip: env("INSTANCE_IP", "127.0.0.1"),
        pod: env("POD_NAME", "meshfed-dns-proxy"),
        namespace: args.namespace.clone(),
        ..Default::default()
    };
    let config = Config {
        listen: args.listen,
        admin: Some(args.admin),
        status: args.status,
        xds: Some(xds),
        identity,
        upstreams: Upstreams::new(servers, args.upstream_timeout.0),
        scope: Scope::kubernetes(&args.namespace, &args.domain, &search),
        access: Access {
            allow: args.allow_from.clone(),
        },
        limits: Limits {
            max_forwards_in_flight: args.max_forwards_in_flight,
            max_tcp_connections: args.max_tcp_connections,
            tcp_idle_timeout: args.tcp_idle_timeout.0,
            tcp_write_timeout: args.tcp_write_timeout.0,
        },
    };
    crate::runtime(args.threads)?.block_on(async move {
        let proxy = DnsProxy::bind(config).await?;
        let shutdown = crate::shutdown_signal();
        println!(
            "dns-proxy listening on {} udp+tcp (admin {}, status {}, upstream {})",
            show(proxy.local_addr()),
            show(proxy.admin_addr()),
            show(proxy.status_addr()),
            args_upstreams(&args.upstream, &args.resolv_conf),
        );
        proxy.run(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}

fn args_upstreams(upstream: &[String], resolv_conf: &std::path::Path) -> String {
    if upstream.is_empty() {
        resolv_conf.display().to_string()
    } else {
        upstream.join(",")
    }
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "none".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DnsProxyArgs,
    }

    fn parse(args: &[&str]) -> DnsProxyArgs {
        let argv = std::iter::once("dns-proxy").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    /// An https:// address turns TLS on; the token file goes with it.
    #[test]
    fn the_tls_flags_reach_the_xds_client() {
        let (root, _) = crate::test_root_file("dns-proxy");
        let root_s = root.display().to_string();
        let args = parse(&[
            "--xds",
            "https://meshfed-federation.istio-system.svc:15012",
            "--xds-ca-root",
            &root_s,
            "--xds-token-file",
            "/t",
        ]);
        let server = args.xds_tls.resolve(args.xds);
        let _ = std::fs::remove_file(&root);
        let server = server.expect("resolves");
        assert_eq!(
            server.address,
            "https://meshfed-federation.istio-system.svc:15012"
        );
        assert_eq!(server.tls.expect("TLS").server_name, None);
        assert_eq!(server.token_file, Some(PathBuf::from("/t")));
    }

    /// A token over plaintext, or a root file that is not there, stops the start with one line.
    #[test]
    fn mistakes_are_one_line_errors_before_anything_starts() {
        let token = [
            "--xds",
            "127.0.0.1:15010",
            "--xds-token-file",
            "/t",
            "--upstream",
            "10.0.0.1",
        ];
        let text = format!("{:#}", run(parse(&token)).expect_err("refused"));
        assert!(
            text.starts_with("--xds-token-file: a token is only ever sent over TLS"),
            "{text}"
        );
        let root = [
            "--xds",
            "127.0.0.1:15012",
            "--xds-ca-root",
            "/nonexistent/root.pem",
            "--upstream",
            "10.0.0.1",
        ];
        let text = format!("{:#}", run(parse(&root)).expect_err("refused"));
        assert!(
            text.starts_with("--xds-ca-root /nonexistent/root.pem: "),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains(meshfed_dns_proxy::DEFAULT_XDS_CA_ROOT),
            "{help}"
        );
    }
}
