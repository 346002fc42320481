//! The renewal loop: ask at start, then at half of each certificate's lifetime; after a
//! failure, retry with backoff while the certificate held stays served (past its expiry
//! too: there is nothing better to serve, and the loop keeps asking). Every request has a new
//! key, made here; only its CSR is sent.

use super::check::{Checked, check};
use super::client::{CaClient, Failure};
use super::schedule::{Backoff, Retry, renew_at, until};
use super::{CaConfig, Error};
use crate::material::Material;
use crate::status::{FailureReason, Status};
use meshfed_certs::SpiffeId;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

pub struct Renewer {
    client: CaClient,
    identity: SpiffeId,
    ttl: Duration,
    output_dir: Option<PathBuf>,
    backoff: Backoff,
    material: watch::Sender<Arc<Material>>,
    status: watch::Sender<Status>,
}

impl Renewer {
    /// Checks the configuration and settles the identity; asks nothing yet.
    pub fn new(config: &CaConfig) -> Result<Renewer, Error> {
        let identity = super::identity::resolve(
            &config.trust_domain,
            config.namespace.as_deref(),
            config.service_account.as_deref(),
            &config.token_file,
        )?;
        Ok(Renewer {
            client: CaClient::new(config)?,
            identity,
            ttl: config.cert_ttl,
            output_dir: config.output_dir.clone(),
            backoff: config.backoff,
            material: watch::Sender::new(Arc::new(Material::pending())),
            status: watch::Sender::new(Status::default()),
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub fn address(&self) -> &str {
        self.client.address()
    }

    pub fn material(&self) -> watch::Receiver<Arc<Material>> {
        self.material.subscribe()
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Renews until every receiver of the material is gone.
    pub async fn run(self) {
        let mut retry = Retry::new(self.backoff);
        loop {
            let wait = match self.attempt().await {
                Ok((material, not_before)) => {
                    retry.reset();
                    let received = OffsetDateTime::now_utc();
                    let at = renew_at(not_before, material.not_after, received, rand::random());
                    self.publish(material);
                    tracing::info!(renew_at = %at, "next certificate request");
                    // Never sooner than a first retry: a CA handing out near-expired
                    // certificates must not turn this into a busy loop.
                    until(at, received).max(self.backoff.initial)
                }
                Err(failure) => {
                    let delay = retry.delay(rand::random());
                    self.fail(&failure, delay);
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.material.closed() => return,
            }
        }
    }

    /// One request with a new key; the answer checked against it. Returns what to serve
    /// next and the leaf's notBefore.
    async fn attempt(&self) -> Result<(Material, OffsetDateTime), Failure> {
        let csr = meshfed_certs::workload_csr(&self.identity)
            .map_err(|e| Failure::new(FailureReason::Other, format!("making the CSR: {e}")))?;
        let roots = self.client.roots()?;
        self.status.send_modify(|s| s.requests += 1);
        let chain = self
            .client
            .create_certificate(&csr.csr_pem, self.ttl, &roots)
            .await?;
        let invalid = |e: String| Failure::new(FailureReason::InvalidResponse, e);
        let now = OffsetDateTime::now_utc();
        let Checked {
            files, not_before, ..
        } = check(&chain, &csr, &self.identity, &roots, now).map_err(invalid)?;
        let generation = self.material.borrow().generation + 1;
        let material = Material::new(files, generation).map_err(|e| invalid(e.to_string()))?;
        Ok((material, not_before))
    }

    /// Files first, then SDS: a proxyless client and Envoy get the new certificate together.
    fn publish(&self, material: Material) {
        if let Some(dir) = &self.output_dir
            && let Err(e) = crate::output::write(dir, &material.files)
        {
            tracing::error!(error = %e,
                "could not write --output-dir; SDS still serves the new certificate");
            self.status
                .send_modify(|s| s.last_error = Some(e.to_string()));
        }
        let replaced = material.generation > 1;
        tracing::info!(identity = %material.identity, not_after = %material.not_after,
            generation = material.generation, "serving a certificate from the CA");
        crate::metrics::global().served(&material, replaced);
        self.material.send_replace(Arc::new(material));
        if replaced {
            self.status.send_modify(|s| s.reloads += 1);
        }
    }

    fn fail(&self, failure: &Failure, retry_in: Duration) {
        let held = self.material.borrow().clone();
        let serving = if held.is_pending() {
            "nothing yet"
        } else if held.not_after <= OffsetDateTime::now_utc() {
            "an expired certificate"
        } else {
            "the last certificate"
        };
        tracing::warn!(ca = %self.client.address(), reason = %failure.reason,
            error = %failure.message, ?retry_in, serving, "certificate request failed");
        crate::metrics::global().failure(failure.reason);
        self.status.send_modify(|s| {
            s.failures += 1;
            s.last_error = Some(failure.to_string());
            s.last_reason = Some(failure.reason);
        });
    }
}
