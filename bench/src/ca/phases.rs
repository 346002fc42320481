//! The phases against the federation, on the load generator's runtime: wait for the CA,
//! the cold start, the steady load over kept connections, then with a connection per request.

use super::meter::{Meter, round};
use super::setup::{self, Account, SERVER_NAME};
use super::{callers_again, cold, steady, steady_figures, tls};
use meshfed_agent::ca::{CaClient, CaConfig};
use meshfed_model::admin::AdminClient;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The phases against the federation, on the load generator's runtime.
pub struct Phases<'a> {
    pub fed: &'a setup::Federation,
    pub dir: &'a Path,
    pub root_pem: &'a str,
}

impl Phases<'_> {
    pub async fn run(
        &self,
        load: Vec<steady::Caller>,
        fresh: Vec<steady::Caller>,
        agents: Vec<steady::Caller>,
        warm: Vec<steady::Caller>,
    ) -> Result<Value, String> {
        let config = tls::client_config(self.root_pem, b"h2")?;
        let roots = Arc::new(tls::roots_of(self.root_pem)?);
        self.ready(&warm, &config).await?;
        let cold = self.cold(agents, &roots).await?;
        let kept = self.kept(&load, &config, &roots).await?;
        let fresh = self.fresh(fresh, &roots).await?;
        Ok(json!({"kept": kept, "fresh": fresh, "cold": cold}))
    }

    /// Waits (up to 30 s) until the CA signs for the warm-up account.
    async fn ready(
        &self,
        warm: &[steady::Caller],
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<(), String> {
        let c = warm.first().ok_or("no warm-up account")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tried = match tls::channel(self.fed.secure, SERVER_NAME, config.clone()).await {
                Ok(ch) => steady::create(ch, &c.account.token, &c.csrs[0]).await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the CA did not answer within 30 s: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn agent_client(&self, account: &Account) -> Result<CaClient, String> {
        let token_file = self
            .dir
            .join(format!("{}.token", account.identity.service_account));
        std::fs::write(&token_file, &account.token).map_err(|e| e.to_string())?;
        let root_file = self.dir.join("root-cert.pem");
        if !root_file.exists() {
            std::fs::write(&root_file, self.root_pem).map_err(|e| e.to_string())?;
        }
        let mut config = CaConfig::new(self.fed.secure.to_string(), token_file);
        config.root_file = root_file;
        config.server_name = Some(SERVER_NAME.into());
        config.request_timeout = Duration::from_secs(60);
        CaClient::new(&config).map_err(|e| e.to_string())
    }

    async fn reviews(&self) -> (f64, f64) {
        let text = AdminClient::new(self.fed.admin)
            .metrics()
            .await
            .unwrap_or_default();
        let count = |method: &str| {
            let series = format!("meshfed_ca_authentications_total{{method=\"{method}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (count("token"), count("cached_token"))
    }

    async fn cold(
        &self,
        agents: Vec<steady::Caller>,
        roots: &Arc<Vec<CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let n = agents.len();
        let mut ready = Vec::with_capacity(n);
        for mut a in agents {
            let client = self.agent_client(&a.account)?;
            let csr = Arc::get_mut(&mut a.csrs)
                .and_then(|v| v.pop())
                .ok_or("an agent without a CSR")?;
            ready.push(cold::Agent {
                client,
                account: a.account,
                csr,
            });
        }
        let (reviews0, _) = self.reviews().await;
        let pid = self.fed.pid();
        let meter = Meter::now(pid);
        let done = cold::start_all(ready, roots.clone()).await?;
        let cpu = meter.since(pid, n);
        let (reviews1, _) = self.reviews().await;
        let at = |p: f64| round(done[((n - 1) as f64 * p).round() as usize].as_secs_f64(), 3);
        let mut v = json!({"agents": n, "all_s": at(1.0), "p50_s": at(0.5), "p99_s": at(0.99),
            "token_reviews": reviews1 - reviews0});
        if let (Some(v), Some(cpu)) = (v.as_object_mut(), cpu.as_object()) {
            v.extend(cpu.clone());
        }
        Ok(v)
    }

    async fn kept(
        &self,
        load: &[steady::Caller],
        config: &Arc<rustls::ClientConfig>,
        roots: &Arc<Vec<CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let mut channels = Vec::with_capacity(load.len());
        for _ in load {
            channels.push(tls::channel(self.fed.secure, SERVER_NAME, config.clone()).await?);
        }
        // One request each first: its token is reviewed and cached, and every caller's
        // first answer gets the agent's full check.
        let warm = callers_again(load, 1)?;
        for (ch, c) in channels.iter().zip(&warm) {
            let chain = steady::create(ch.clone(), &c.account.token, &c.csrs[0]).await?;
            let now = time::OffsetDateTime::now_utc();
            meshfed_agent::ca::check::check(&chain, &c.csrs[0], &c.account.identity, roots, now)?;
        }
        let callers = load
            .iter()
            .map(|c| steady::Caller {
                account: c.account.clone(),
                csrs: c.csrs.clone(),
            })
            .collect();
        let pid = self.fed.pid();
        let (r0, c0) = self.reviews().await;
        let meter = Meter::now(pid);
        let issued = steady::kept(channels, callers).await?;
        let cpu = meter.since(pid, issued.latencies.len());
        let (r1, c1) = self.reviews().await;
        let mut v = steady_figures(&issued, cpu);
        v["token_reviews"] = json!(r1 - r0);
        v["cache_hits"] = json!(c1 - c0);
        Ok(v)
    }

    async fn fresh(
        &self,
        fresh: Vec<steady::Caller>,
        roots: &Arc<Vec<CertificateDer<'static>>>,
    ) -> Result<Value, String> {
        let clients: Result<Vec<_>, String> = fresh
            .iter()
            .map(|c| self.agent_client(&c.account).map(Arc::new))
            .collect();
        let pid = self.fed.pid();
        let (r0, c0) = self.reviews().await;
        let meter = Meter::now(pid);
        let issued = steady::fresh(clients?, fresh, roots.clone()).await?;
        let cpu = meter.since(pid, issued.latencies.len());
        let (r1, c1) = self.reviews().await;
        let mut v = steady_figures(&issued, cpu);
        v["token_reviews"] = json!(r1 - r0);
        v["cache_hits"] = json!(c1 - c0);
        Ok(v)
    }
}
