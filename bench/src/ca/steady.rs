//! Steady issuance: K callers, each with its own ServiceAccount token (reviewed once, then
//! answered from the CA's cache), each asking for certificates one after another with a
//! fresh CSR every time. Either every caller keeps one TLS connection, or every request
//! opens its own, as an agent does once per rotation.

use super::setup::Account;
use super::{Issued, TTL_S};
use meshfed_agent::ca::CaClient;
use meshfed_certs::WorkloadCsr;
use meshfed_proto::ca::IstioCertificateRequest;
use meshfed_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// What one caller brings: who it is and the CSRs it will send (made before timing).
pub struct Caller {
    pub account: Account,
    pub csrs: Arc<Vec<WorkloadCsr>>,
}

/// `CreateCertificate` with the token as `authorization: Bearer`.
pub async fn create(
    channel: Channel,
    token: &str,
    csr: &WorkloadCsr,
) -> Result<Vec<String>, String> {
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.csr_pem.clone(),
        validity_duration: TTL_S,
        metadata: None,
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not a header value".to_string())?;
    request.metadata_mut().insert("authorization", bearer);
    IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map(|r| r.into_inner().cert_chain)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Each caller on its own kept connection; returns every request's latency.
pub async fn kept(channels: Vec<Channel>, callers: Vec<Caller>) -> Result<Issued, String> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (channel, caller) in channels.into_iter().zip(callers) {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(caller.csrs.len());
            for csr in caller.csrs.iter() {
                let t0 = Instant::now();
                let chain = create(channel.clone(), &caller.account.token, csr).await?;
                latencies.push(t0.elapsed());
                leaf_matches(&chain, csr)?;
            }
            Ok::<_, String>(latencies)
        });
    }
    collect(tasks, start).await
}

/// Each request on a new TLS connection, through the agent's own CA client.
pub async fn fresh(
    clients: Vec<Arc<CaClient>>,
    callers: Vec<Caller>,
    roots: Arc<Vec<CertificateDer<'static>>>,
) -> Result<Issued, String> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, caller) in clients.into_iter().zip(callers) {
        let roots = roots.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(caller.csrs.len());
            for csr in caller.csrs.iter() {
                let t0 = Instant::now();
                let chain = client
                    .create_certificate(&csr.csr_pem, Duration::from_secs(TTL_S as u64), &roots)
                    .await
                    .map_err(|f| f.to_string())?;
                latencies.push(t0.elapsed());
                leaf_matches(&chain, csr)?;
            }
            Ok::<_, String>(latencies)
        });
    }
    collect(tasks, start).await
}

async fn collect(
    mut tasks: tokio::task::JoinSet<Result<Vec<Duration>, String>>,
    start: Instant,
) -> Result<Issued, String> {
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(|e| e.to_string())??);
    }
    Ok(Issued {
        wall: start.elapsed(),
        latencies,
    })
}

/// The cheap check made on every answer (the full one, path and all, is made on the
/// first answer of every caller and on every cold-start agent's): leaf, intermediate and
/// root, and the leaf carries the key of the request.
pub fn leaf_matches(chain: &[String], csr: &WorkloadCsr) -> Result<(), String> {
    if chain.len() != 3 {
        return Err(format!("{} certificates in the answer, not 3", chain.len()));
    }
    same_key(&chain[0], &csr.public_key)
}

/// The first certificate of `pem` carries `public_key`.
pub fn same_key(pem: &str, public_key: &[u8]) -> Result<(), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| e.to_string())?;
    if leaf.public_key().subject_public_key.data.as_ref() != public_key {
        return Err("the leaf does not carry the request's key".into());
    }
    Ok(())
}
