//! Cold start: N agents start at once, each with a token the CA has never seen (so each is
//! a TokenReview at the API server), each on its own TLS connection through the agent's own
//! CA client, each asking for one certificate and checking the answer as the agent does
//! (its key, exactly its SPIFFE id, the path to the root). Timed until the last one holds a
//! checked certificate.

use super::TTL_S;
use super::setup::Account;
use meshfed_agent::ca::CaClient;
use meshfed_certs::WorkloadCsr;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Agent {
    pub client: CaClient,
    pub account: Account,
    pub csr: WorkloadCsr,
}

/// When each agent held its checked certificate, counted from the common start.
pub async fn start_all(
    agents: Vec<Agent>,
    roots: Arc<Vec<CertificateDer<'static>>>,
) -> Result<Vec<Duration>, String> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        let roots = roots.clone();
        tasks.spawn(async move {
            let ttl = Duration::from_secs(TTL_S as u64);
            let chain = agent
                .client
                .create_certificate(&agent.csr.csr_pem, ttl, &roots)
                .await
                .map_err(|f| format!("{}: {f}", agent.account.identity))?;
            let now = time::OffsetDateTime::now_utc();
            meshfed_agent::ca::check::check(
                &chain,
                &agent.csr,
                &agent.account.identity,
                &roots,
                now,
            )
            .map_err(|e| format!("{}: {e}", agent.account.identity))?;
            Ok::<_, String>(start.elapsed())
        });
    }
    let mut done = Vec::new();
    while let Some(agent) = tasks.join_next().await {
        done.push(agent.map_err(|e| e.to_string())??);
    }
    done.sort_unstable();
    Ok(done)
}
