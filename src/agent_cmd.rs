//! `meshfed agent`: the workload certificate mounted in the pod, served to Envoy over SDS.

use crate::Dur;
use anyhow::Result;
use clap::Args;
use meshfed_agent::{Agent, AgentConfig, DEFAULT_CERT_DIR, DEFAULT_POLL, DEFAULT_SOCKET};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
#[command(
    after_help = "Envoy's bootstrap points its `sds-grpc` cluster at --socket (Istio's path by default); meshfed's
CDS asks it for `default` (the workload's certificate chain and key) and `ROOTCA` (the root peers
are checked against). The files are those Istio's agent uses: cert-chain.pem (the leaf first), key.pem
and root-cert.pem. They must pass the checks of `meshfed certs verify` (key matches the leaf, chain
leads to the root, nothing expired) or the agent does not start; a rotation that fails them is refused
and the last good credentials stay served. The socket is owner-only: run the agent as Envoy's user.

Examples:
  meshfed agent --cert-dir /etc/certs
  meshfed agent --cert-dir ./sleep --socket ./sds.sock --poll 1s"
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
}

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    crate::runtime(Some(1))?.block_on(async move {
        let mut config = AgentConfig::new(&args.cert_dir, args.socket);
        config.poll = args.poll.0;
        let agent = Agent::bind(config)?;
        let m = agent.material();
        let shutdown = crate::shutdown_signal();
        println!(
            "meshfed agent: SDS on unix:{} serving {} (default, ROOTCA) from {}, valid until {}",
            agent.socket().display(),
            if m.identity.is_empty() {
                "a certificate without SPIFFE id"
            } else {
                &m.identity
            },
            args.cert_dir.display(),
            m.not_after,
        );
        agent.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
