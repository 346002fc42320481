//! `meshfed testbed up`: the seed scenario on one machine. N clusters, each with its own
//! network namespace (or loopback addresses without root), test bed API server, shared-root
//! intermediate CA and `cacerts`, `meshfed federation` (the cluster's CA), east-west gateway
//! (on the shared network) and DNS proxy as real processes, remote secrets between every
//! pair, helloworld v<i> and a sleep client whose sidecar is [`crate::sidecar`]. Workloads
//! get their certificates from the federation through `meshfed agent` ([`agents`]), and
//! everything that talks to the federation does so on its secure port with a projected
//! ServiceAccount token ([`tokens`]).

pub mod agents;
pub mod demo;
pub mod faults;
pub mod helloworld;
pub mod http;
pub mod objects;
pub mod procs;
pub mod secure;
pub mod tokens;

use crate::OneLine;
use crate::mesh_tls::{Credentials, Material};
use crate::netns::{ClusterNet, Mode, Network, NsRuntime};
use crate::seed::ClusterSpec;
use crate::sidecar::{Sidecar, SidecarConfig, Table};
use crate::{ApiServer, ApiServerConfig};
use agents::{AgentSpec, WorkloadAgent};
use anyhow::{Context, anyhow, bail};
use helloworld::Helloworld;
use meshfed_certs::{
    CertificateAuthority, IntermediateOptions, KeyAlgorithm, RootOptions, SpiffeId, WorkloadOptions,
};
use meshfed_model::admin::AdminClient;
use objects::SamplePod;
use procs::{Proc, Spec};
use secure::{DNS_ACCOUNT, GATEWAY_ACCOUNT, Secure};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokens::Kubelet;
use tokio::sync::Mutex;

/// How long the whole bed may take to come up and settle.
pub const READY: Duration = Duration::from_secs(90);
pub const HOST: &str = "helloworld.sample.svc.cluster.local";
pub const HELLO_URL: &str = "http://helloworld.sample:5000/hello";

/// Pod numbers on each cluster's pod network.
const POD_FEDERATION: u8 = 1;
const POD_GATEWAY: u8 = 2;
const POD_DNS: u8 = 3;
const POD_HELLOWORLD: u8 = 4;
const POD_SLEEP: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Netns,
    Loopback,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Netns => "netns",
            Backend::Loopback => "loopback",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BedConfig {
    /// The `meshfed` binary the components run as.
    pub exe: PathBuf,
    pub clusters: usize,
    /// None: netns when root, else loopback.
    pub backend: Option<Backend>,
    /// Kubeconfigs, certificates and logs go here.
    pub state_dir: PathBuf,
}

/// Where one cluster's parts listen.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub apiserver: SocketAddr,
    /// The federation's secure port (TLS): its CA, and xDS for token-bearing clients.
    pub secure: SocketAddr,
    pub federation_admin: SocketAddr,
    pub gateway: SocketAddr,
    /// The gateway's status port: `/healthz/ready` only.
    pub gateway_status: SocketAddr,
    /// The gateway's admin address: metrics and `/debug/routes`.
    pub gateway_admin: SocketAddr,
    pub dns: SocketAddr,
    pub dns_admin: SocketAddr,
    pub helloworld: SocketAddr,
    /// helloworld's agent: `/healthz/ready` and `/metrics`.
    pub helloworld_agent: SocketAddr,
    pub sleep_proxy: SocketAddr,
    /// sleep's agent: `/healthz/ready` and `/metrics`.
    pub sleep_agent: SocketAddr,
}

pub struct ClusterBed {
    /// Name, network, locality and helloworld version ([`ClusterSpec::numbered`]).
    pub spec: ClusterSpec,
    pub addrs: Addresses,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub api: Arc<Mutex<ApiServer>>,
    pub federation: Mutex<Proc>,
    pub gateway: Mutex<Proc>,
    pub dns: Mutex<Proc>,
    pub helloworld: Mutex<Option<Helloworld>>,
    pub sleep: Sidecar,
    pub hello_pod: SamplePod,
    /// The intermediate, kept in memory only to make the expired certificates of the
    /// `cert-expire` fault (a clock that jumped past notAfter); workloads get theirs from
    /// the federation.
    ca: CertificateAuthority,
    /// `meshfed agent` asking the federation for sleep's certificate and serving it to its
    /// sidecar over SDS, as it serves Envoy in a pod (it also writes the files Istio's
    /// `OUTPUT_CERTS` does, for a look with openssl).
    pub sleep_agent: WorkloadAgent,
    /// The same for helloworld, which follows its agent's SDS.
    pub hello_agent: WorkloadAgent,
    /// Keeps the projected tokens of this cluster's workloads and components fresh.
    _kubelet: Kubelet,
    /// Last: everything above runs on it (tasks) or in its namespace.
    pub rt: NsRuntime,
}

pub struct Bed {
    /// Before `net`: processes and runtimes stop before their namespaces go.
    pub clusters: Vec<ClusterBed>,
    pub backend: Backend,
    pub state_dir: PathBuf,
    exe: PathBuf,
    net: Network,
}

impl Bed {
    pub async fn up(cfg: BedConfig) -> anyhow::Result<Bed> {
        if !(2..=8).contains(&cfg.clusters) {
            bail!("--clusters must be 2 to 8");
        }
        let specs: Vec<ClusterSpec> = (1..=cfg.clusters).map(ClusterSpec::numbered).collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let mode = match cfg.backend {
            Some(Backend::Loopback) => Mode::Loopback,
            _ => Mode::Isolated,
        };
        let net = Network::create_with(&names, mode).one_line()?;
        let backend = match net.mode() {
            Mode::Isolated => Backend::Netns,
            Mode::Loopback => Backend::Loopback,
        };
        if cfg.backend == Some(Backend::Netns) && backend != Backend::Netns {
            let why = net.fallback_reason().unwrap_or("unknown");
            bail!("the netns backend is not available here: {why}");
        }
        crate::state::private_dir(&cfg.state_dir)?;
        for dir in ["logs", "certs"] {
            crate::state::private_dir(&cfg.state_dir.join(dir))?;
        }
        let root = CertificateAuthority::new_root(&RootOptions {
            org: "meshfed testbed".into(),
            days: 30,
            key: KeyAlgorithm::EcdsaP256,
        })
        .one_line()?;
        write_certs(&cfg.state_dir.join("certs/root"), &root.root_files())?;
        let mut clusters = Vec::new();
        for (spec, c) in specs.into_iter().zip(net.clusters()) {
            clusters.push(start_cluster(&cfg, spec, c, &root).await?);
        }
        let bed = Bed {
            clusters,
            backend,
            state_dir: cfg.state_dir.clone(),
            exe: cfg.exe.clone(),
            net,
        };
        bed.remote_secrets().await?;
        bed.wait_ready().await?;
        Ok(bed)
    }

    pub fn cluster(&self, name: &str) -> anyhow::Result<&ClusterBed> {
        self.clusters
            .iter()
            .find(|c| c.spec.name == name)
            .with_context(|| format!("no cluster {name} (clusters: {})", self.names().join(", ")))
    }

    pub fn names(&self) -> Vec<String> {
        self.clusters.iter().map(|c| c.spec.name.clone()).collect()
    }

    fn net(&self, name: &str) -> anyhow::Result<&ClusterNet> {
        self.net
            .cluster(name)
            .with_context(|| format!("no network for {name}"))
    }

    /// Every cluster gets a remote secret for every other (as `istioctl create-remote-secret`).
    async fn remote_secrets(&self) -> anyhow::Result<()> {
        for c in &self.clusters {
            for other in self.clusters.iter().filter(|o| o.spec.name != c.spec.name) {
                let kubeconfig = other.api.lock().await.kubeconfig();
                let remote = other.spec.name.clone();
                c.kube(move |client| async move {
                    crate::seed::remote_secret(&client, &remote, &kubeconfig).await
                })
                .await
                .with_context(|| {
                    format!("remote secret for {} in {}", other.spec.name, c.spec.name)
                })?;
            }
        }
        Ok(())
    }

    /// Until every sleep sidecar has helloworld with a healthy host per cluster (its own pod
    /// and every other network's gateway) and every gateway and DNS proxy is ready.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let n = self.clusters.len();
        for c in &self.clusters {
            let cluster = format!("outbound|5000||{HOST}");
            wait_table(&c.sleep, READY, |t| {
                t.clusters
                    .get(&cluster)
                    .is_some_and(|u| u.endpoints.iter().filter(|h| h.healthy).count() == n)
            })
            .await
            .with_context(|| format!("{}'s sidecar", c.spec.name))?;
            for (what, addr) in [
                ("gateway", c.addrs.gateway_status),
                ("DNS proxy", c.addrs.dns_admin),
            ] {
                c.until_ready(addr)
                    .await
                    .with_context(|| format!("{}'s {what}", c.spec.name))?;
            }
        }
        Ok(())
    }

    /// How to reach everything, for `testbed up`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "meshfed test bed: {} clusters, {} backend; state in {}\n",
            self.clusters.len(),
            self.backend.as_str(),
            self.state_dir.display()
        );
        if self.backend == Backend::Loopback {
            out.push_str("  (loopback: no network isolation; run as root for one network namespace per cluster)\n");
        }
        for c in &self.clusters {
            let exec = match self.net(&c.spec.name).ok().and_then(|n| n.netns()) {
                Some(ns) => format!("ip netns exec {ns} "),
                None => String::new(),
            };
            let a = &c.addrs;
            out.push_str(&format!(
                "\n{name} ({network}, {region}/{zone})\n\
                 \x20 kubectl     {exec}kubectl --kubeconfig {kc} get pods,svc,endpointslices -n sample\n\
                 \x20 federation  CA and xDS on {secure} (TLS; a ServiceAccount token or workload certificate); {exec}curl http://{fa}/debug/clusterz\n\
                 \x20 gateway     {gw} (SNI passthrough); {exec}curl http://{ga}/debug/routes\n\
                 \x20 dns proxy   {exec}dig @{dip} -p {dport} helloworld.sample.svc.cluster.local\n\
                 \x20 helloworld  {version} at {hw} (mTLS)\n\
                 \x20 sleep       {exec}curl -x http://{sp} {HELLO_URL}\n\
                 \x20 agents      sleep's and helloworld's certificates from the CA ({ttl} s, renewed at half life); {exec}curl http://{sa}/metrics; files in {certs}\n\
                 \x20 logs        {logs}/{name}-*.log\n",
                name = c.spec.name,
                network = c.spec.network,
                region = c.spec.region,
                zone = c.spec.zone,
                kc = c.kubeconfig.display(),
                secure = a.secure,
                fa = a.federation_admin,
                gw = a.gateway,
                ga = a.gateway_admin,
                dip = a.dns.ip(),
                dport = a.dns.port(),
                version = c.spec.version,
                hw = a.helloworld,
                sp = a.sleep_proxy,
                ttl = agents::WORKLOAD_CERT_TTL.as_secs(),
                sa = a.sleep_agent,
                certs = c
                    .sleep_agent
                    .output_dir
                    .as_deref()
                    .map_or("-".into(), |d| d.display().to_string()),
                logs = self.state_dir.join("logs").display(),
            ));
        }
        out.push_str("\nfaults: meshfed testbed fault partition|apiserver-down|gateway-down|ca-down|cert-expire CLUSTER [--heal]\n");
        out
    }
}

impl ClusterBed {
    /// Runs `f` with this cluster's API client inside the cluster's network, where the API
    /// server is reachable (the client connects from the task that makes the call).
    pub async fn kube<F, Fut, T>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.rt.spawn(f(self.client.clone())).await?.one_line()
    }

    /// `GET /healthz/ready` from inside the cluster until it answers 200.
    async fn until_ready(&self, admin: SocketAddr) -> anyhow::Result<()> {
        let poll = async move {
            loop {
                let client = AdminClient::new(admin);
                if let Ok(Ok(true)) = self.rt.spawn(async move { client.ready().await }).await {
                    return;
                }
                // An HTTP endpoint has nothing to await: poll it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(READY, poll)
            .await
            .map_err(|_| anyhow!("http://{admin}/healthz/ready not 200 within {READY:?}"))
    }

    /// One request from sleep through its sidecar, made inside the cluster.
    pub async fn curl(&self, url: &str) -> anyhow::Result<http::Answer> {
        let (proxy, url) = (self.addrs.sleep_proxy, url.to_string());
        self.rt
            .spawn(async move { http::via_proxy(proxy, &url).await })
            .await?
    }

    /// helloworld's current credentials, as its agent last pushed them.
    pub fn hello_credentials(&self) -> &Credentials {
        &self.hello_agent.sds.credentials
    }

    /// An already expired certificate for `sa`, from this cluster's intermediate in memory:
    /// what a workload holds once its clock passed notAfter (the `cert-expire` fault).
    fn expired(&self, sa: &str) -> anyhow::Result<Material> {
        let id = SpiffeId::new("cluster.local", "sample", sa).one_line()?;
        let mut opts = WorkloadOptions::new(id);
        opts.ttl = Duration::ZERO;
        Ok(Material::from_workload(
            &self.ca.issue_workload(&opts).one_line()?,
        )?)
    }
}

fn write_certs(dir: &Path, files: &[meshfed_certs::OutputFile]) -> anyhow::Result<()> {
    meshfed_certs::write_outputs(dir, files, true)
        .map(|_| ())
        .one_line()
        .with_context(|| format!("writing {}", dir.display()))
}

/// Waits until `ok(table)` holds for `sidecar`'s table.
pub async fn wait_table(
    sidecar: &Sidecar,
    timeout: Duration,
    ok: impl Fn(&Table) -> bool,
) -> anyhow::Result<()> {
    let mut table = sidecar.table();
    let wait = async {
        loop {
            if ok(&table.borrow_and_update()) {
                return Ok(());
            }
            table
                .changed()
                .await
                .map_err(|_| anyhow!("the sidecar stopped"))?;
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow!("not in the expected state within {timeout:?}"))?
}

fn addresses(c: &ClusterNet) -> anyhow::Result<Addresses> {
    let pod = |n: u8, port: u16| -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::new(c.pod_ip(n).one_line()?, port))
    };
    let gw = c.gateway_ip();
    Ok(Addresses {
        apiserver: SocketAddr::new(gw, 6443),
        secure: pod(POD_FEDERATION, 15012)?,
        federation_admin: pod(POD_FEDERATION, 15014)?,
        gateway: SocketAddr::new(gw, 15443),
        gateway_status: pod(POD_GATEWAY, 15021)?,
        gateway_admin: pod(POD_GATEWAY, 15000)?,
        dns: pod(POD_DNS, 15053)?,
        dns_admin: pod(POD_DNS, 15020)?,
        helloworld: pod(POD_HELLOWORLD, 5000)?,
        helloworld_agent: pod(POD_HELLOWORLD, 15020)?,
        sleep_proxy: pod(POD_SLEEP, 15001)?,
        sleep_agent: pod(POD_SLEEP, 15020)?,
    })
}

/// The upstream resolvers for the DNS proxy: the host's, though an isolated cluster may
/// not reach them (only mesh names matter to the test bed).
fn upstreams() -> Vec<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53).to_string())
        .collect();
    if servers.is_empty() {
        vec!["127.0.0.53:53".into()]
    } else {
        servers
    }
}

async fn start_cluster(
    cfg: &BedConfig,
    spec: ClusterSpec,
    net: &ClusterNet,
    root: &CertificateAuthority,
) -> anyhow::Result<ClusterBed> {
    let addrs = addresses(net)?;
    let rt = net.runtime().one_line()?;
    let (ca, cacerts, mesh_root) = intermediate(cfg, &spec, root)?;
    let (api, kubeconfig, client) = start_api(cfg, &spec, &addrs, &rt).await?;
    let hello_pod = hello_pod(&spec, addrs.helloworld);
    seed(&rt, &client, &spec, &addrs, &hello_pod, cacerts).await?;
    let api = Arc::new(Mutex::new(api));
    let dir = cfg.state_dir.join(&spec.name);
    let secure = Secure::new(&dir, mesh_root)?;
    let kubelet = Kubelet::start(api.clone(), secure.token_files(&hello_pod.name)).await?;
    let [federation, gateway, dns] =
        components(cfg, net, &spec, &addrs, &kubeconfig, &secure).await?;

    let sleep_certs = dir.join("sleep-certs");
    crate::state::private_dir(&sleep_certs)?;
    let agent_spec = |workload, token, admin, output_dir| AgentSpec {
        workload,
        namespace: "sample",
        token,
        ca: addrs.secure,
        root: &secure.root,
        admin,
        output_dir,
    };
    let logs = cfg.state_dir.join("logs");
    let start_agent =
        |agent| WorkloadAgent::start(&cfg.exe, net, &rt, &spec.name, &dir, &logs, agent);
    let sleep_agent = start_agent(agent_spec(
        "sleep",
        &secure.sleep_token,
        addrs.sleep_agent,
        Some(&sleep_certs),
    ))
    .await?;
    let hello_agent = start_agent(agent_spec(
        "helloworld",
        &secure.hello_token,
        addrs.helloworld_agent,
        None,
    ))
    .await?;
    let hw = rt
        .spawn(Helloworld::start(
            addrs.helloworld,
            spec.version.clone(),
            hello_agent.sds.credentials.clone(),
        ))
        .await??;
    let sidecar_cfg = sidecar_config(&spec, &addrs, &sleep_agent.sds.credentials);
    let xds = secure.xds_server(addrs.secure, &secure.sleep_token)?;
    let sleep = rt
        .spawn(Sidecar::start_with_xds(sidecar_cfg, xds))
        .await??;
    Ok(ClusterBed {
        spec,
        addrs,
        kubeconfig,
        client,
        api,
        federation: Mutex::new(federation),
        gateway: Mutex::new(gateway),
        dns: Mutex::new(dns),
        helloworld: Mutex::new(Some(hw)),
        sleep,
        hello_pod,
        ca,
        sleep_agent,
        hello_agent,
        _kubelet: kubelet,
        rt,
    })
}

/// The cluster's intermediate CA under `root`, its files in `certs/<name>`, the `cacerts`
/// Secret made from them (the federation's CA reads it), and the path of the root there
/// (what workloads check the CA and each other against).
fn intermediate(
    cfg: &BedConfig,
    spec: &ClusterSpec,
    root: &CertificateAuthority,
) -> anyhow::Result<(CertificateAuthority, String, PathBuf)> {
    let ca = root
        .issue_intermediate(&IntermediateOptions {
            cluster: spec.name.clone(),
            days: 30,
            key: KeyAlgorithm::EcdsaP256,
        })
        .one_line()?;
    let ca_dir = cfg.state_dir.join("certs").join(&spec.name);
    write_certs(&ca_dir, &ca.cacerts_files())?;
    let cacerts = meshfed_certs::cacerts_secret_yaml(&ca_dir, "istio-system").one_line()?;
    Ok((ca, cacerts, ca_dir.join("root-cert.pem")))
}

/// The cluster's API server (started on its runtime), its kubeconfig under the state
/// directory, and a client of it.
async fn start_api(
    cfg: &BedConfig,
    spec: &ClusterSpec,
    addrs: &Addresses,
    rt: &NsRuntime,
) -> anyhow::Result<(ApiServer, PathBuf, kube::Client)> {
    let name = &spec.name;
    let mut api_cfg = ApiServerConfig::new(addrs.apiserver, name);
    api_cfg.service_cidr = service_cidr(spec);
    let api = rt
        .spawn(ApiServer::start(api_cfg))
        .await?
        .one_line()
        .with_context(|| format!("{name}'s API server"))?;
    let kubeconfig = cfg.state_dir.join(name).join("kubeconfig");
    crate::state::private_dir(&cfg.state_dir.join(name))?;
    api.write_kubeconfig(&kubeconfig).one_line()?;
    let kc = api.kubeconfig();
    let client = rt
        .spawn(async move { crate::kubeconfig::client(&kc).await })
        .await?
        .with_context(|| format!("{name}'s client"))?;
    Ok((api, kubeconfig, client))
}

/// cluster1 gets 10.96.0.0/16 (the API server's default), cluster2 10.97.0.0/16, ...: no
/// two clusters hand out the same ClusterIP.
fn service_cidr(spec: &ClusterSpec) -> (Ipv4Addr, u8) {
    let second = u8::try_from(95 + spec.index).unwrap_or(u8::MAX);
    (Ipv4Addr::new(10, second, 0, 0), 16)
}

/// helloworld v<i>'s pod, on its pod address.
fn hello_pod(spec: &ClusterSpec, addr: SocketAddr) -> SamplePod {
    SamplePod {
        name: spec.helloworld(),
        app: "helloworld".into(),
        version: Some(spec.version.clone()),
        service_account: "helloworld".into(),
        ip: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// The seed objects and the `cacerts` Secret, created from inside the cluster's network.
async fn seed(
    rt: &NsRuntime,
    client: &kube::Client,
    spec: &ClusterSpec,
    addrs: &Addresses,
    hello: &SamplePod,
    cacerts: String,
) -> anyhow::Result<()> {
    let (c, spec, addrs, hello) = (client.clone(), spec.clone(), addrs.clone(), hello.clone());
    rt.spawn(async move {
        seed_objects(&c, &spec, &addrs, &hello).await?;
        objects::cacerts(&c, &cacerts)
            .await
            .one_line()
            .with_context(|| format!("{}: cacerts", spec.name))
    })
    .await?
}

/// sleep's sidecar: a `sidecar` node of this cluster's network and locality (its namespace
/// is its token's, as the secure port requires), with the credentials its agent serves
/// over SDS.
fn sidecar_config(
    spec: &ClusterSpec,
    addrs: &Addresses,
    credentials: &Credentials,
) -> SidecarConfig {
    SidecarConfig {
        xds: format!("https://{}", addrs.secure),
        identity: meshfed_proto::ads::Identity {
            kind: "sidecar".into(),
            cluster_id: spec.name.clone(),
            network: spec.network.clone(),
            ip: addrs.sleep_proxy.ip().to_string(),
            pod: "sleep".into(),
            namespace: "sample".into(),
            locality: envoy_types::pb::envoy::config::core::v3::Locality {
                region: spec.region.clone(),
                zone: spec.zone.clone(),
                sub_zone: String::new(),
            },
        },
        labels: [("app".to_string(), "sleep".to_string())].into(),
        listen: addrs.sleep_proxy,
        domain: "cluster.local".into(),
        credentials: credentials.clone(),
    }
}

/// Namespaces, the node, Services helloworld, helloworld-v<i> (this cluster only: remote
/// everywhere else) and sleep, their pods, and the east-west gateway's Service.
async fn seed_objects(
    c: &kube::Client,
    spec: &ClusterSpec,
    addrs: &Addresses,
    hello: &SamplePod,
) -> anyhow::Result<()> {
    let (name, node) = (&spec.name, spec.node());
    let ctx = |what: &'static str| move |e: kube::Error| anyhow!("{name}: {what}: {e}");
    objects::namespaces(c, spec)
        .await
        .map_err(ctx("namespaces"))?;
    objects::node(c, spec).await.map_err(ctx("node"))?;
    for (ns, account) in [
        ("sample", "sleep"),
        ("sample", "helloworld"),
        DNS_ACCOUNT,
        GATEWAY_ACCOUNT,
    ] {
        objects::service_account(c, ns, account)
            .await
            .map_err(ctx("ServiceAccounts"))?;
    }
    let own = spec.helloworld();
    objects::service(c, "helloworld", json!({"app": "helloworld"}), 5000)
        .await
        .map_err(ctx("helloworld Service"))?;
    objects::service(
        c,
        &own,
        json!({"app": "helloworld", "version": spec.version}),
        5000,
    )
    .await
    .map_err(ctx("per-version Service"))?;
    objects::pod(c, hello, &node, &["helloworld", &own])
        .await
        .map_err(ctx("helloworld pod"))?;
    let sleep = SamplePod {
        name: "sleep".into(),
        app: "sleep".into(),
        version: None,
        service_account: "sleep".into(),
        ip: addrs.sleep_proxy.ip().to_string(),
        port: 80,
    };
    objects::service(c, "sleep", json!({"app": "sleep"}), 80)
        .await
        .map_err(ctx("sleep Service"))?;
    objects::pod(c, &sleep, &node, &["sleep"])
        .await
        .map_err(ctx("sleep pod"))?;
    crate::seed::gateway_service(c, &spec.network, &addrs.gateway.ip().to_string())
        .await
        .map_err(ctx("gateway Service"))
}

/// The /16 of this cluster's pod network, which the DNS proxy answers (as a node-local
/// resolver would); a loopback-only proxy would refuse the pods.
fn pod_cidr(pod: IpAddr) -> String {
    match pod {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            format!("{a}.{b}.0.0/16")
        }
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The component processes: federation first (the others connect to it).
async fn components(
    cfg: &BedConfig,
    net: &ClusterNet,
    spec: &ClusterSpec,
    a: &Addresses,
    kubeconfig: &Path,
    secure: &Secure,
) -> anyhow::Result<[Proc; 3]> {
    let name = &spec.name;
    let proc_spec = |what: &str, title: &str, args: Vec<String>| Spec {
        name: format!("{name} {title}"),
        args,
        log: cfg
            .state_dir
            .join("logs")
            .join(format!("{name}-{what}.log")),
    };
    let federation = proc_spec(
        "federation",
        "federation",
        federation_args(spec, a, kubeconfig),
    );
    let gateway_xds = secure.xds_args(a.secure, &secure.gateway_token);
    let gateway = proc_spec("gateway", "gateway", gateway_args(spec, a, gateway_xds));
    let dns_xds = secure.xds_args(a.secure, &secure.dns_token);
    let dns = proc_spec("dns", "DNS proxy", dns_args(spec, a, dns_xds));
    let federation = Proc::start(&cfg.exe, net, federation).await?;
    let gateway = Proc::start(&cfg.exe, net, gateway).await?;
    let dns = Proc::start(&cfg.exe, net, dns).await?;
    Ok([federation, gateway, dns])
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn federation_args(spec: &ClusterSpec, a: &Addresses, kubeconfig: &Path) -> Vec<String> {
    strings(&[
        "federation",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--cluster-id",
        &spec.name,
        "--network",
        &spec.network,
        "--secure-listen",
        &a.secure.to_string(),
        "--admin",
        &a.federation_admin.to_string(),
    ])
}

fn gateway_args(spec: &ClusterSpec, a: &Addresses, xds: Vec<String>) -> Vec<String> {
    let mut args = strings(&[
        "gateway",
        "--listen",
        &a.gateway.to_string(),
        "--status",
        &a.gateway_status.to_string(),
        "--admin",
        &a.gateway_admin.to_string(),
        "--cluster-id",
        &spec.name,
        "--network",
        &spec.network,
        "--threads",
        "1",
    ]);
    args.extend(xds);
    args
}

/// `--namespace` is where bare names resolve and also the namespace its xDS node claims,
/// which must be its token's.
fn dns_args(spec: &ClusterSpec, a: &Addresses, xds: Vec<String>) -> Vec<String> {
    let mut args = strings(&[
        "dns-proxy",
        "--listen",
        &a.dns.to_string(),
        "--admin",
        &a.dns_admin.to_string(),
        "--cluster-id",
        &spec.name,
        "--namespace",
        DNS_ACCOUNT.0,
        "--threads",
        "1",
        "--upstream-timeout",
        "1s",
        "--allow-from",
        &pod_cidr(a.dns.ip()),
    ]);
    for u in upstreams() {
        args.extend(["--upstream".to_string(), u]);
    }
    args.extend(xds);
    args
}
