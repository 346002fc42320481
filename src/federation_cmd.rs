//! `meshfed federation`, `meshfed create-remote-secret` and `meshfed remote-clusters`.

use crate::Dur;
use anyhow::{Context, Result};
use clap::Args;
use meshfed_federation::registry::{ClusterStatus, Status};
use meshfed_federation::remote_secret::{self, RemoteSecretOptions};
use meshfed_federation::{
    DEFAULT_ADMIN, DEFAULT_DOMAIN, DEFAULT_MAX_WORKLOAD_CERT_TTL, DEFAULT_PUSH_DEBOUNCE,
    DEFAULT_SECURE_LISTEN, DEFAULT_SYNC_TIMEOUT, DEFAULT_SYSTEM_NAMESPACE, DEFAULT_TOKEN_AUDIENCE,
    Federation, FederationConfig, xds,
};
use meshfed_model::admin::AdminClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(
    after_help = "Remote clusters come from Secrets labelled istio/multiCluster=true in the system namespace
(made by `meshfed create-remote-secret` or `istioctl create-remote-secret`).

The CA signs workload certificates with the cluster's intermediate from --cacerts DIR, else from
the `cacerts` Secret of the system namespace (as istiod reads it); with neither, the CA and the
secure port are off. Callers authenticate with a ServiceAccount token (TokenReview, audience
--token-audience) or, to renew, with their workload certificate over mTLS; the CSR must ask for
exactly spiffe://<trust-domain>/ns/<ns>/sa/<sa> of the caller.

Examples:
  meshfed federation --kubeconfig cluster1.kubeconfig --cluster-id cluster1 --network network1
  meshfed federation --cluster-id cluster2 --network network2 --system-namespace istio-system --admin 0.0.0.0:15014
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --stale-endpoint-ttl 10m --sync-timeout 30s
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --xds-listen 0.0.0.0:15010 --push-debounce 20ms --push-debounce-max 2s
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --status 0.0.0.0:15021 --allow-insecure-kubeconfig-options
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --cacerts certs/cluster1 --secure-listen 0.0.0.0:15012 --max-workload-cert-ttl 12h
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --xds-max-connections 5000 --xds-max-streams-per-connection 4 --xds-max-subscriptions 20000 --xds-send-timeout 15s"
)]
pub struct FederationArgs {
    /// Kubeconfig of the local cluster (default: in-cluster config, else $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// This cluster's id; a remote secret key equal to it is ignored.
    #[arg(long, value_name = "ID")]
    cluster_id: String,
    /// This cluster's network (used where pods and the system namespace carry no label).
    #[arg(long, value_name = "NET")]
    network: String,
    /// Namespace of the remote secrets and of the network label.
    #[arg(long, value_name = "NS", default_value = DEFAULT_SYSTEM_NAMESPACE)]
    system_namespace: String,
    /// Plaintext ADS (xDS) for anyone who can connect, as istiod's 15010: off unless given
    /// (tests, trusted flat networks). Clients otherwise use the secure port.
    #[arg(long, value_name = "ADDR")]
    xds_listen: Option<SocketAddr>,
    /// TLS address of the CA (Istio's IstioCertificateService) and of authenticated ADS,
    /// as istiod's 15012.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_SECURE_LISTEN)]
    secure_listen: SocketAddr,
    /// The cluster's CA material in Istio's cacerts layout (ca-cert.pem, ca-key.pem,
    /// cert-chain.pem, root-cert.pem); default: the cacerts Secret of --system-namespace.
    #[arg(long, value_name = "DIR")]
    cacerts: Option<PathBuf>,
    /// More names or IP addresses for the secure port's certificate, besides
    /// meshfed-federation.<ns>.svc and istiod.<ns>.svc (as istiod's ISTIOD_CUSTOM_HOST).
    #[arg(long = "secure-hosts", value_name = "NAME", value_delimiter = ',')]
    secure_hosts: Vec<String>,
    /// SPIFFE trust domain of workload identities (the CA's and CDS's SANs).
    #[arg(long, value_name = "TD", default_value = DEFAULT_DOMAIN)]
    trust_domain: String,
    /// Audience a caller's ServiceAccount token must carry.
    #[arg(long, value_name = "AUD", default_value = DEFAULT_TOKEN_AUDIENCE)]
    token_audience: String,
    /// Longest workload certificate the CA signs (requests for longer are shortened).
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_MAX_WORKLOAD_CERT_TTL))]
    max_workload_cert_ttl: Dur,
    /// ServiceAccounts (NS/SA or a SPIFFE id) that may subscribe to xDS as routers on the
    /// secure port (default: <system namespace>/meshfed-gateway). Repeat for several.
    #[arg(long = "gateway-identities", value_name = "ID", value_delimiter = ',')]
    gateway_identities: Vec<xds::auth::Account>,
    /// Wait this long without further registry changes before pushing (at most 10x this).
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_PUSH_DEBOUNCE))]
    push_debounce: Dur,
    /// Push at the latest this long after the first change of a burst (default: ten times
    /// --push-debounce; Istio's are 100ms and 10s).
    #[arg(long, value_name = "DURATION")]
    push_debounce_max: Option<Dur>,
    /// Admin address: /healthz/ready, /metrics, /debug/clusterz, /debug/registryz (keep it
    /// local, or reachable by Prometheus only: debug pages list every endpoint).
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_ADMIN)]
    admin: SocketAddr,
    /// Public status address for probes: /healthz/ready and nothing else (off unless given).
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// xDS connections at once (past it, new ones wait in the backlog).
    #[arg(long, value_name = "N", default_value_t = xds::DEFAULT_MAX_CONNECTIONS)]
    xds_max_connections: usize,
    /// HTTP/2 streams per xDS connection (Envoy and gRPC open one ADS stream each).
    #[arg(long, value_name = "N", default_value_t = xds::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    xds_max_streams_per_connection: u32,
    /// Names one xDS stream may subscribe to, per type; past it the stream ends.
    #[arg(long, value_name = "N", default_value_t = xds::DEFAULT_MAX_SUBSCRIPTIONS)]
    xds_max_subscriptions: usize,
    /// Disconnect an xDS client that takes no response for this long.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(xds::DEFAULT_SEND_TIMEOUT))]
    xds_send_timeout: Dur,
    /// Accept remote secrets whose kubeconfig runs a command (exec, auth-provider), reads a
    /// local file (tokenFile, certificate or key paths) or skips TLS verification. Refused by
    /// default, as Istio refuses them.
    #[arg(long)]
    allow_insecure_kubeconfig_options: bool,
    /// Drop the endpoints of a cluster unreachable this long (default: keep them, as Istio does).
    #[arg(long, value_name = "DURATION")]
    stale_endpoint_ttl: Option<Dur>,
    /// A cluster still syncing after this stops holding readiness back.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_SYNC_TIMEOUT))]
    sync_timeout: Dur,
}

pub fn federation(args: FederationArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = meshfed_federation::local_client(args.kubeconfig.as_deref()).await?;
        let mut cfg = FederationConfig::new(&args.cluster_id, &args.network);
        cfg.system_namespace = args.system_namespace;
        cfg.stale_endpoint_ttl = args.stale_endpoint_ttl.map(|d| d.0);
        cfg.sync_timeout = args.sync_timeout.0;
        cfg.xds_listen = args.xds_listen;
        cfg.secure_listen = args.secure_listen;
        cfg.ca.cacerts = args.cacerts;
        cfg.ca.trust_domain = args.trust_domain;
        cfg.ca.extra_hosts = args.secure_hosts;
        cfg.ca.token_audience = args.token_audience;
        cfg.ca.max_workload_cert_ttl = args.max_workload_cert_ttl.0;
        cfg.gateway_identities = args.gateway_identities;
        cfg.admin = args.admin;
        cfg.status = args.status;
        cfg.allow_insecure_kubeconfig_options = args.allow_insecure_kubeconfig_options;
        cfg.xds_limits = xds::Limits {
            max_connections: args.xds_max_connections.max(1),
            max_streams_per_connection: args.xds_max_streams_per_connection.max(1),
            max_subscriptions: args.xds_max_subscriptions,
            send_timeout: args.xds_send_timeout.0,
        };
        cfg.debounce = xds::Debounce::after(args.push_debounce.0);
        if let Some(max) = args.push_debounce_max {
            cfg.debounce.max = max.0.max(cfg.debounce.quiet);
        }
        let (id, network) = (cfg.cluster_id.clone(), cfg.network.clone());
        let fed = Federation::bind(cfg, client).await?;
        let shutdown = crate::shutdown_signal();
        let ca = match (fed.secure_addr(), fed.ca_origin()) {
            (Some(addr), Some(origin)) => {
                format!("secure port {addr}: CA signing with {origin}, authenticated xDS")
            }
            _ => "CA and secure port off: no --cacerts and no cacerts Secret".into(),
        };
        println!(
            "federation for {id} on {network} (plaintext xds {}, admin {}{}); {ca}",
            fed.xds_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into()),
            show(fed.admin_addr()),
            fed.status_addr()
                .map(|s| format!(", status {s}"))
                .unwrap_or_default()
        );
        fed.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

#[derive(Args)]
#[command(after_help = "Examples:
  meshfed create-remote-secret --kubeconfig cluster2.kubeconfig --name cluster2 | kubectl --context cluster1 apply -f -
  meshfed create-remote-secret --kubeconfig kc --context kind-cluster2 --name cluster2 --server https://172.18.0.3:6443
  meshfed create-remote-secret --kubeconfig kc --name cluster2 --server https://203.0.113.7:6443 --tls-server-name kubernetes.default.svc
  meshfed create-remote-secret --kubeconfig kc --name cluster2 --namespace istio-system --service-account istio-reader-service-account --token-duration 24h")]
pub struct CreateRemoteSecretArgs {
    /// Kubeconfig of the cluster to export.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// Context in that kubeconfig (default: its current context).
    #[arg(long, value_name = "C")]
    context: Option<String>,
    /// The exported cluster's id (the secret's data key).
    #[arg(long, value_name = "ID")]
    name: String,
    /// API server URL the other cluster should use (default: the kubeconfig's). A loopback
    /// server is warned about: other clusters cannot reach it.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Name to check the API server's certificate against, written as the kubeconfig's
    /// tls-server-name (when the server address is not in the certificate).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Namespace of the reader service account and of the secret.
    #[arg(long, value_name = "NS", default_value = DEFAULT_SYSTEM_NAMESPACE)]
    namespace: String,
    /// The reader service account.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "istio-reader-service-account"
    )]
    service_account: String,
    /// Use a bound token from the TokenRequest API with this lifetime instead of a
    /// long-lived token Secret.
    #[arg(long, value_name = "DURATION")]
    token_duration: Option<Dur>,
}

pub fn create_remote_secret(args: CreateRemoteSecretArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut opts = RemoteSecretOptions::new(args.name);
    opts.server = args.server;
    opts.tls_server_name = args.tls_server_name;
    opts.namespace = args.namespace;
    opts.service_account = args.service_account;
    opts.token_duration = args.token_duration.map(|d| d.0);
    let secret = runtime.block_on(remote_secret::from_kubeconfig(
        &args.kubeconfig,
        args.context.as_deref(),
        &opts,
    ))?;
    for warning in &secret.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", secret.yaml);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(after_help = "Exits 1 if any cluster is not synced.

Examples:
  meshfed remote-clusters
  meshfed remote-clusters --admin 127.0.0.1:15014")]
pub struct RemoteClustersArgs {
    /// The federation controller's admin address.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_ADMIN)]
    admin: SocketAddr,
}

pub fn remote_clusters(args: RemoteClustersArgs) -> Result<ExitCode> {
    let admin = AdminClient::new(args.admin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (clusters, ready) = runtime.block_on(async {
        let clusters: Vec<ClusterStatus> = admin.json("/debug/clusterz").await?;
        // Before the remote secrets are listed, the table may lack clusters.
        anyhow::Ok((clusters, admin.ready().await.unwrap_or(false)))
    })?;
    println!(
        "{:<16} {:<36} {:<12} {:>9} {:>9} {:>10}  ERROR",
        "CLUSTER", "SECRET", "STATUS", "SERVICES", "ENDPOINTS", "SYNC AGE"
    );
    for c in &clusters {
        let age = c.last_sync_age_s.map(|a| format!("{a:.0}s"));
        let secret = if c.secret.is_empty() {
            "(local)"
        } else {
            &c.secret
        };
        println!(
            "{:<16} {:<36} {:<12} {:>9} {:>9} {:>10}  {}",
            c.id,
            secret,
            status_word(c.status),
            c.services,
            c.endpoints,
            age.as_deref().unwrap_or("-"),
            c.error.as_deref().unwrap_or("")
        );
    }
    if !ready {
        println!("(the controller is not ready yet: remote secrets or clusters still syncing)");
    }
    let all_synced = clusters.iter().all(|c| c.status == Status::Synced);
    Ok(if all_synced && ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status as `/debug/clusterz` spells it.
fn status_word(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
