//! Who is calling the CA (and, on the secure port, xDS): a workload certificate presented
//! in the TLS handshake (a renewal over mTLS, Istio's `ClientCertAuthenticator`), else a
//! ServiceAccount token in `authorization: Bearer …` (Istio's `KubeJWTAuthenticator`).
//! Either way the answer is a SPIFFE identity in our trust domain.

use super::review::{Account, CachedReviewer, ReviewError, Source};
use crate::xds::listen::ConnInfo;
use meshfed_certs::SpiffeId;
use rustls::pki_types::CertificateDer;
use tonic::Status;
use tonic::metadata::MetadataMap;
use x509_parser::extensions::GeneralName;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Certificate,
    Token,
    CachedToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: SpiffeId,
    pub method: Method,
}

/// Why a caller is not authenticated; each maps to a gRPC status and a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no client certificate and no bearer token")]
    Missing,
    #[error("{0}")]
    BadCertificate(String),
    #[error("malformed authorization header")]
    BadHeader,
    #[error("{0}")]
    Token(ReviewError),
}

impl AuthError {
    /// UNAUTHENTICATED for anything the caller got wrong; UNAVAILABLE when the API server
    /// could not be asked (the caller may retry).
    pub fn status(&self) -> Status {
        match self {
            AuthError::Token(ReviewError::Unavailable(_)) => {
                Status::unavailable("authentication is unavailable; try again")
            }
            other => Status::unauthenticated(format!("authentication failed: {other}")),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::BadCertificate(_) => "bad_certificate",
            AuthError::BadHeader => "bad_header",
            AuthError::Token(ReviewError::Refused(_)) => "token_refused",
            AuthError::Token(ReviewError::Unavailable(_)) => "review_unavailable",
        }
    }
}

pub struct Authenticator {
    reviewer: CachedReviewer,
    audience: String,
    trust_domain: String,
}

impl Authenticator {
    pub fn new(reviewer: CachedReviewer, audience: &str, trust_domain: &str) -> Self {
        Authenticator {
            reviewer,
            audience: audience.to_string(),
            trust_domain: trust_domain.to_string(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The caller of a request that came over [`crate::xds::listen`]: a verified client
    /// certificate wins (rustls already checked it chains to our root); else the token.
    pub async fn authenticate(
        &self,
        conn: Option<&ConnInfo>,
        metadata: &MetadataMap,
    ) -> Result<Caller, AuthError> {
        if let Some(leaf) = conn
            .and_then(|c| c.peer_certs.as_ref())
            .and_then(|c| c.first())
        {
            let identity = identity_of(leaf, &self.trust_domain)?;
            return Ok(Caller {
                identity,
                method: Method::Certificate,
            });
        }
        let token = bearer(metadata)?.ok_or(AuthError::Missing)?;
        let (account, source) = self
            .reviewer
            .review(token, &self.audience)
            .await
            .map_err(AuthError::Token)?;
        let identity = self.spiffe(&account)?;
        let method = match source {
            Source::Cache => Method::CachedToken,
            Source::Review => Method::Token,
        };
        Ok(Caller { identity, method })
    }

    fn spiffe(&self, account: &Account) -> Result<SpiffeId, AuthError> {
        SpiffeId::new(&self.trust_domain, &account.namespace, &account.name).map_err(|e| {
            AuthError::Token(ReviewError::Refused(format!(
                "the account makes no SPIFFE id: {e}"
            )))
        })
    }
}

/// The token of `authorization: Bearer <token>`, if the header is there.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthError::BadHeader)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::BadHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::BadHeader);
    }
    Ok(Some(token.trim()))
}

/// The one SPIFFE URI SAN of a workload certificate, which must be in `trust_domain`.
pub fn identity_of(leaf: &CertificateDer<'_>, trust_domain: &str) -> Result<SpiffeId, AuthError> {
    let bad = |why: &str| AuthError::BadCertificate(why.to_string());
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|_| bad("unparsable certificate"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| bad("malformed subjectAltName"))?
        .ok_or_else(|| bad("the certificate has no subjectAltName"))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let [uri] = uris[..] else {
        return Err(bad("the certificate must carry exactly one URI SAN"));
    };
    let id: SpiffeId = uri
        .parse()
        .map_err(|_| bad("the URI SAN is not a SPIFFE id"))?;
    if id.trust_domain != trust_domain {
        return Err(bad("the certificate is of another trust domain"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests;
