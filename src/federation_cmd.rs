//! `meshfed federation`, `meshfed create-remote-secret` and `meshfed remote-clusters`.

use anyhow::{Context, Result, bail};
use clap::Args;
use meshfed_federation::remote_secret::{self, RemoteSecretOptions};
use meshfed_federation::{Federation, FederationConfig, admin, xds};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(
    after_help = "Remote clusters come from Secrets labelled istio/multiCluster=true in the system namespace
(made by `meshfed create-remote-secret` or `istioctl create-remote-secret`).

Examples:
  meshfed federation --kubeconfig cluster1.kubeconfig --cluster-id cluster1 --network network1
  meshfed federation --cluster-id cluster2 --network network2 --system-namespace istio-system --admin 0.0.0.0:15014
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --stale-endpoint-ttl 10m --sync-timeout 30s
  meshfed federation --kubeconfig kc --cluster-id c1 --network n1 --xds-listen 0.0.0.0:15010 --push-debounce 20ms"
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
    #[arg(long, value_name = "NS", default_value = "istio-system")]
    system_namespace: String,
    /// ADS (xDS) address for sidecars, proxyless gRPC clients, gateways and DNS proxies.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15010")]
    xds_listen: SocketAddr,
    /// Wait this long without further registry changes before pushing (at most 10x this).
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = crate::duration)]
    push_debounce: Duration,
    /// Admin address: /healthz/ready, /metrics, /debug/clusterz, /debug/registryz.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    admin: SocketAddr,
    /// Drop the endpoints of a cluster unreachable this long (default: keep them, as Istio does).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration)]
    stale_endpoint_ttl: Option<Duration>,
    /// A cluster still syncing after this stops holding readiness back.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration)]
    sync_timeout: Duration,
}

async fn local_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and none found (in-cluster or $KUBECONFIG)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

pub fn federation(args: FederationArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        // Metrics recorded before the recorder exists are lost: install it first.
        meshfed_model::telemetry::prometheus();
        let client = local_client(args.kubeconfig.as_ref()).await?;
        let mut cfg = FederationConfig::new(&args.cluster_id, &args.network);
        cfg.system_namespace = args.system_namespace;
        cfg.stale_endpoint_ttl = args.stale_endpoint_ttl;
        cfg.sync_timeout = args.sync_timeout;
        let listener = tokio::net::TcpListener::bind(args.admin)
            .await
            .with_context(|| format!("binding {}", args.admin))?;
        let admin_addr = listener.local_addr()?;
        let xds_listener = tokio::net::TcpListener::bind(args.xds_listen)
            .await
            .with_context(|| format!("binding {}", args.xds_listen))?;
        let xds_addr = xds_listener.local_addr()?;
        let fed = Federation::start(client, &cfg);
        let admin_task = tokio::spawn(admin::serve(listener, fed.registry.clone()));
        let debounce = xds::Debounce {
            quiet: args.push_debounce,
            max: args.push_debounce * 10,
        };
        let xds_task = tokio::spawn(xds::serve(xds_listener, fed.registry.clone(), debounce));
        let shutdown = crate::shutdown_signal();
        println!(
            "federation for {} on {} (xds {xds_addr}, admin {admin_addr})",
            cfg.cluster_id, cfg.network
        );
        tokio::select! {
            _ = shutdown => {}
            r = xds_task => match r {
                Ok(Err(e)) => bail!("xDS server: {e}"),
                _ => bail!("xDS server stopped"),
            },
        }
        admin_task.abort();
        drop(fed);
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Args)]
#[command(after_help = "Examples:
  meshfed create-remote-secret --kubeconfig cluster2.kubeconfig --name cluster2 | kubectl --context cluster1 apply -f -
  meshfed create-remote-secret --kubeconfig kc --context kind-cluster2 --name cluster2 --server https://172.18.0.3:6443
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
    /// API server URL the other cluster should use (default: the kubeconfig's).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Namespace of the reader service account and of the secret.
    #[arg(long, value_name = "NS", default_value = "istio-system")]
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
    #[arg(long, value_name = "DURATION", value_parser = crate::duration)]
    token_duration: Option<Duration>,
}

pub fn create_remote_secret(args: CreateRemoteSecretArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut opts = RemoteSecretOptions::new(args.name);
    opts.server = args.server;
    opts.namespace = args.namespace;
    opts.service_account = args.service_account;
    opts.token_duration = args.token_duration;
    let yaml = runtime.block_on(remote_secret::from_kubeconfig(
        &args.kubeconfig,
        args.context.as_deref(),
        &opts,
    ))?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(after_help = "Exits 1 if any cluster is not synced.

Examples:
  meshfed remote-clusters
  meshfed remote-clusters --admin 127.0.0.1:15014")]
pub struct RemoteClustersArgs {
    /// The federation controller's admin address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    admin: SocketAddr,
}

pub fn remote_clusters(args: RemoteClustersArgs) -> Result<ExitCode> {
    let body = http_get(args.admin, "/debug/clusterz")?;
    let clusters: Vec<serde_json::Value> =
        serde_json::from_str(&body).context("clusterz is not JSON")?;
    println!(
        "{:<16} {:<36} {:<12} {:>9} {:>9} {:>10}  ERROR",
        "CLUSTER", "SECRET", "STATUS", "SERVICES", "ENDPOINTS", "SYNC AGE"
    );
    let mut all_synced = true;
    for c in &clusters {
        let status = c["status"].as_str().unwrap_or("?");
        all_synced &= status == "synced";
        let age = c["last_sync_age_s"]
            .as_f64()
            .map(|a| format!("{a:.0}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<36} {:<12} {:>9} {:>9} {:>10}  {}",
            c["id"].as_str().unwrap_or("?"),
            c["secret"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("(local)"),
            status,
            c["services"],
            c["endpoints"],
            age,
            c["error"].as_str().unwrap_or("")
        );
    }
    // Before the remote secrets are listed, the table above may lack clusters.
    let ready = http_get(args.admin, "/healthz/ready").is_ok_and(|b| b.starts_with("ready"));
    if !ready {
        println!("(the controller is not ready yet: remote secrets or clusters still syncing)");
    }
    Ok(if all_synced && ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{addr}{path}: {}",
            head.lines().next().unwrap_or("no answer")
        );
    }
    Ok(body.to_string())
}
