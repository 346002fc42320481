//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, as istiod answers it: the caller
//! is authenticated ([`super::authn`]); the CSR must ask for exactly the caller's SPIFFE id
//! (the proto: the server must check the caller is authorized for every SAN requested);
//! validity is what was asked, at most `max_ttl` and never past the issuer; the answer is
//! the leaf, the intermediate(s), then the root.

use super::authn::{AuthError, Authenticator};
use crate::metrics;
use crate::xds::listen::ConnInfo;
use meshfed_certs::{CertificateAuthority, Csr, SpiffeId};
use meshfed_proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use meshfed_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A CSR is about 500 bytes of PEM; a request this large is not one.
pub const MAX_REQUEST: usize = 64 << 10;

pub struct CaService {
    ca: Arc<CertificateAuthority>,
    authn: Arc<Authenticator>,
    max_ttl: Duration,
}

impl CaService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        authn: Arc<Authenticator>,
        max_ttl: Duration,
    ) -> Self {
        CaService { ca, authn, max_ttl }
    }

    pub fn server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self).max_decoding_message_size(MAX_REQUEST)
    }

    /// Everything after authentication, so that tests can drive it with a known caller.
    pub fn sign(
        &self,
        who: &SpiffeId,
        request: &IstioCertificateRequest,
    ) -> Result<Vec<String>, Refusal> {
        // Parsed and its signature checked once, for the names and for signing.
        let csr = Csr::parse(&request.csr).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let names = csr.names();
        let want = format!("URI:{who}");
        if names != [want.as_str()] {
            return Err(Refusal::Denied(format!(
                "the CSR asks for {names:?}; {who} may only ask for [{want:?}]"
            )));
        }
        let ttl = ttl(request.validity_duration, self.max_ttl);
        self.ca
            .sign(&csr, who, ttl)
            .map_err(|e| Refusal::Internal(e.to_string()))
    }
}

/// The validity to sign for: what was asked (in seconds), capped by `max`; `max` when
/// nothing or nonsense was asked.
pub fn ttl(requested_s: i64, max: Duration) -> Duration {
    match u64::try_from(requested_s) {
        Ok(s) if s > 0 => Duration::from_secs(s).min(max),
        _ => max,
    }
}

/// Why a request was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    fn status(&self) -> Status {
        match self {
            Refusal::Invalid(m) => Status::invalid_argument(m.clone()),
            Refusal::Denied(m) => Status::permission_denied(m.clone()),
            Refusal::Internal(_) => Status::internal("signing failed"),
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid_argument",
            Refusal::Denied(_) => "permission_denied",
            Refusal::Internal(_) => "internal",
        }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let caller = match self
            .authn
            .authenticate(conn.as_ref(), request.metadata())
            .await
        {
            Ok(caller) => caller,
            Err(e) => return Err(refused_auth(&e)),
        };
        metrics::ca_authenticated(caller.method);
        match self.sign(&caller.identity, request.get_ref()) {
            Ok(cert_chain) => {
                metrics::ca_request("issued");
                tracing::debug!(identity = %caller.identity, "certificate issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(refusal) => {
                metrics::ca_request(refusal.outcome());
                tracing::info!(identity = %caller.identity, error = %refusal, "certificate refused");
                Err(refusal.status())
            }
        }
    }
}

fn refused_auth(e: &AuthError) -> Status {
    let status = e.status();
    let outcome = match status.code() {
        tonic::Code::Unavailable => "unavailable",
        _ => "unauthenticated",
    };
    metrics::ca_request(outcome);
    metrics::ca_auth_failure(e.reason());
    tracing::info!(reason = e.reason(), error = %e, "CA caller not authenticated");
    status
}

#[cfg(test)]
mod tests;
