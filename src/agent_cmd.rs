//! `meshfed agent`: the workload certificate served to Envoy over SDS; mounted in the pod, or
//! (with `--ca-address`) requested from the federation's CA with a key made in the pod.

use crate::Dur;
use anyhow::Result;
use clap::Args;
use meshfed_agent::ca::{DEFAULT_CA_ROOT, DEFAULT_CERT_TTL, DEFAULT_TRUST_DOMAIN};
use meshfed_agent::{Agent, AgentConfig, CaConfig, DEFAULT_CERT_DIR, DEFAULT_POLL, DEFAULT_SOCKET};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(
    after_help = "Envoy's bootstrap points its `sds-grpc` cluster at --socket (Istio's path by default); meshfed's
CDS asks it for `default` (the workload's certificate chain and key) and `ROOTCA` (the root peers
are checked against). The socket is owner-only: run the agent as Envoy's user.

Mounted files (without --ca-address): the files are those Istio's agent uses: cert-chain.pem (the
leaf first), key.pem and root-cert.pem. They must pass the checks of `meshfed certs verify` (key
matches the leaf, chain leads to the root, nothing expired) or the agent does not start; a rotation
that fails them is refused and the last good credentials stay served.

CA mode (--ca-address), as Istio's pilot-agent: an ECDSA P-256 key is made in the pod (it never
leaves it) and a CSR for spiffe://<trust-domain>/ns/<ns>/sa/<sa> goes to the CA's
IstioCertificateService over TLS, with the ServiceAccount token (--token-file, re-read for every
request) as `authorization: Bearer`. The CA's certificate must chain to --ca-root and name
--ca-server-name. The answer (leaf, intermediates, root) is checked (our key, our identity, chain to
--ca-root, not expired) before it is served; renewal comes at half the lifetime, a little earlier at
random; while the CA is away or refuses, the held certificate stays served and requests are retried
with backoff (1 s doubling to 60 s). SDS answers only once the first certificate is held.
/healthz/ready and /metrics are served on --admin (127.0.0.1:15020 unless given; with mounted
files only when given).

Examples:
  meshfed agent --cert-dir /etc/certs
  meshfed agent --cert-dir ./sleep --socket ./sds.sock --poll 1s
  meshfed agent --ca-address meshfed-federation.istio-system.svc:15012 \\
      --token-file /var/run/secrets/tokens/istio-token --output-dir /var/lib/istio/data"
)]
pub struct AgentArgs {
    /// Directory holding cert-chain.pem, key.pem and root-cert.pem (a mounted Secret).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// Unix socket to serve SDS on.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// How often the files are checked for rotation.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(DEFAULT_POLL))]
    poll: Dur,
    /// The CA's TLS gRPC port (HOST:PORT): certificates come from the CA, not --cert-dir.
    #[arg(
        long,
        value_name = "HOST:PORT",
        requires = "token_file",
        conflicts_with_all = ["cert_dir", "poll"]
    )]
    ca_address: Option<String>,
    /// The pod's ServiceAccount token (audience istio-ca), sent as `authorization: Bearer`.
    #[arg(long, value_name = "FILE", requires = "ca_address")]
    token_file: Option<PathBuf>,
    /// PEM root(s) the CA's serving certificate and the issued chains must lead to
    /// [default: /var/run/secrets/istio/root-cert.pem].
    #[arg(long, value_name = "FILE", requires = "ca_address")]
    ca_root: Option<PathBuf>,
    /// The name checked in the CA's certificate [default: the host of --ca-address; an IP
    /// address is checked as an IP SAN].
    #[arg(long, value_name = "NAME", requires = "ca_address")]
    ca_server_name: Option<String>,
    /// Validity asked for (the CA may shorten it) [default: 24h].
    #[arg(long, value_name = "DURATION", requires = "ca_address")]
    cert_ttl: Option<Dur>,
    /// Also write cert-chain.pem, key.pem and root-cert.pem here (Istio's OUTPUT_CERTS), for
    /// proxyless gRPC's file_watcher certificate provider.
    #[arg(long, value_name = "DIR", requires = "ca_address")]
    output_dir: Option<PathBuf>,
    /// The identity's trust domain [default: cluster.local].
    #[arg(long, value_name = "TD", requires = "ca_address")]
    trust_domain: Option<String>,
    /// The identity's namespace [default: the token's].
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// The identity's service account [default: the token's].
    #[arg(long, value_name = "SA", env = "SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// /healthz/ready and /metrics [default: 127.0.0.1:15020 in CA mode].
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

impl AgentArgs {
    fn config(&self) -> AgentConfig {
        let Some(address) = &self.ca_address else {
            let mut config = AgentConfig::new(&self.cert_dir, &self.socket);
            config.poll = self.poll.0;
            config.admin = self.admin;
            return config;
        };
        let mut ca = CaConfig::new(address, self.token_file.clone().unwrap_or_default());
        ca.root_file = self
            .ca_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_ROOT));
        ca.server_name = self.ca_server_name.clone();
        ca.cert_ttl = self.cert_ttl.as_ref().map_or(DEFAULT_CERT_TTL, |d| d.0);
        ca.output_dir = self.output_dir.clone();
        ca.trust_domain = self
            .trust_domain
            .clone()
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
        ca.namespace = self.namespace.clone();
        ca.service_account = self.service_account.clone();
        let mut config = AgentConfig::with_ca(ca, &self.socket);
        config.admin = Some(self.admin.unwrap_or(meshfed_agent::admin::DEFAULT_ADDR));
        config
    }
}

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    crate::runtime(Some(1))?.block_on(async move {
        let agent = Agent::bind(args.config())?;
        let shutdown = crate::shutdown_signal();
        let admin = agent
            .admin_addr()
            .map(|a| format!(", admin on http://{a}"))
            .unwrap_or_default();
        match agent.ca_address() {
            Some(ca) => println!(
                "meshfed agent: SDS on unix:{} for {}, certificates from the CA at {ca}{admin}",
                agent.socket().display(),
                agent.identity(),
            ),
            None => println!(
                "meshfed agent: SDS on unix:{} serving {} (default, ROOTCA) from {}, valid until {}{admin}",
                agent.socket().display(),
                match agent.identity() {
                    id if id.is_empty() => "a certificate without SPIFFE id".to_string(),
                    id => id,
                },
                args.cert_dir.display(),
                agent.material().not_after,
            ),
        }
        agent.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
