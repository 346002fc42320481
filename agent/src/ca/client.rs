//! One `CreateCertificate` call, as Istio's agent makes it (its citadel client): TLS to the
//! CA, checked against `--ca-root` and the CA's server name; the ServiceAccount token as
//! `authorization: Bearer` metadata, read from its file for every request (kubelet rotates
//! projected tokens); the CSR and the validity asked for, nothing else. A fresh connection
//! per call: calls come twice a lifetime, and each then sees the current roots.
//!
//! The connection is the project's one gRPC-over-TLS client channel
//! ([`meshfed_proto::channel`], which the xDS clients use too); this module gives it the
//! CA's address, roots and token and puts its errors in the agent's words.

use super::{CaConfig, Error};
use crate::status::FailureReason;
use meshfed_proto::ca::IstioCertificateRequest;
use meshfed_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshfed_proto::channel::{self, ClientTls, XdsServer, causes};
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::time::Duration;

/// Why a call gave no answer, in the metric's words and a person's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

pub struct CaClient {
    address: String,
    server_name: Option<String>,
    root_file: PathBuf,
    token_file: PathBuf,
    timeout: Duration,
}

impl CaClient {
    /// Checks the address, the server name and that `--ca-root` holds usable certificates:
    /// a configuration mistake stops the agent at start, not at every retry.
    pub fn new(config: &CaConfig) -> Result<CaClient, Error> {
        let client = CaClient {
            address: config.address.clone(),
            server_name: config.server_name.clone(),
            root_file: config.root_file.clone(),
            token_file: config.token_file.clone(),
            timeout: config.request_timeout,
        };
        let roots = client.roots().map_err(|f| Error::Roots {
            path: client.root_file.clone(),
            reason: f.message,
        })?;
        client
            .server(&roots)
            .check()
            .map_err(|e| client.config_error(e))?;
        Ok(client)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The roots in `--ca-root`, read now (a mounted ConfigMap changes when roots rotate).
    pub fn roots(&self) -> Result<Vec<CertificateDer<'static>>, Failure> {
        let path = self.root_file.display();
        let bytes = std::fs::read(&self.root_file)
            .map_err(|e| Failure::new(FailureReason::Other, format!("{path}: {e}")))?;
        super::check::pem_certs(&bytes)
            .map_err(|e| Failure::new(FailureReason::Other, format!("{path}: {e}")))
    }

    /// Sends `csr` asking for `ttl`, with the token as it is in its file now, to a CA whose
    /// serving certificate chains to `roots`, on a connection of its own. Returns the
    /// answer's `cert_chain` unchecked.
    pub async fn create_certificate(
        &self,
        csr: &str,
        ttl: Duration,
        roots: &[CertificateDer<'static>],
    ) -> Result<Vec<String>, Failure> {
        let request = IstioCertificateRequest {
            csr: csr.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        };
        let call = async {
            // The channel reads the token file before it dials.
            let (channel, bearer) = self
                .server(roots)
                .connect_within(self.timeout)
                .await
                .map_err(|e| self.connect_failure(e))?;
            IstioCertificateServiceClient::with_interceptor(channel, bearer)
                .create_certificate(request)
                .await
                .map_err(|s| status_failure(&s))
        };
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                Failure::new(
                    FailureReason::Unavailable,
                    format!("no answer within {:?}", self.timeout),
                )
            })??
            .into_inner();
        Ok(answer.cert_chain)
    }

    /// The CA as the channel takes it: always TLS (trusting `roots`) and always the token.
    fn server(&self, roots: &[CertificateDer<'static>]) -> XdsServer {
        let roots_pem: String = roots.iter().map(super::check::pem).collect();
        XdsServer {
            address: format!("https://{}", self.address),
            tls: Some(ClientTls {
                roots_pem: roots_pem.into_bytes(),
                server_name: self.server_name.clone(),
            }),
            token_file: Some(self.token_file.clone()),
        }
    }

    /// A mistake [`XdsServer::check`] found, named by the agent's flags (the channel's
    /// texts name the xDS flags).
    fn config_error(&self, e: channel::Error) -> Error {
        match e {
            channel::Error::Address(_) | channel::Error::NoPort(_) => {
                Error::Address(self.address.clone())
            }
            channel::Error::ServerName(name) => Error::ServerName(name),
            channel::Error::Roots { reason, .. } => Error::Roots {
                path: self.root_file.clone(),
                reason,
            },
            other => Error::Channel(other),
        }
    }

    /// What stopped a connect, in the metric's words: the token (re-read for this request),
    /// the roots (re-read for this attempt), or the CA out of reach (TCP or TLS).
    fn connect_failure(&self, e: channel::Error) -> Failure {
        match e {
            channel::Error::Token { path, reason } => {
                Failure::new(FailureReason::Token, format!("{path}: {reason}"))
            }
            channel::Error::Roots { reason, .. } => Failure::new(
                FailureReason::Other,
                format!("{}: {reason}", self.root_file.display()),
            ),
            channel::Error::Connect(message) => Failure::new(FailureReason::Unavailable, message),
            // The address and the server name were checked at start.
            other => Failure::new(FailureReason::Other, other.to_string()),
        }
    }
}

/// gRPC's codes, in the metric's words. A call that could not reach the CA fails as
/// UNAVAILABLE, as gRPC reports it.
fn status_failure(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let reason = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => FailureReason::Unavailable,
        Code::Unauthenticated => FailureReason::Unauthenticated,
        Code::PermissionDenied => FailureReason::PermissionDenied,
        _ => FailureReason::Other,
    };
    let message = match std::error::Error::source(status) {
        Some(source) => format!(
            "{:?}: {} ({})",
            status.code(),
            status.message(),
            causes(source)
        ),
        None => format!("{:?}: {}", status.code(), status.message()),
    };
    Failure::new(reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root file for the tests, and a config reaching `address` that trusts it.
    fn config(dir: &std::path::Path, address: &str) -> CaConfig {
        let root = dir.join("root.pem");
        std::fs::write(&root, crate::material::tests::ca("c1").root_pem()).expect("write");
        let mut config = CaConfig::new(address, dir.join("token"));
        config.root_file = root;
        config
    }

    /// `--ca-address` is HOST:PORT (`[v6]:PORT`), `--ca-server-name` a DNS name or an IP
    /// address, `--ca-root` usable certificates: anything else stops the agent at start.
    #[test]
    fn the_address_server_name_and_roots_are_checked_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        for good in [
            "meshfed-federation.istio-system.svc:15012",
            "10.0.0.1:15012",
            "[fd00::1]:15012",
        ] {
            assert!(CaClient::new(&config(dir.path(), good)).is_ok(), "{good}");
        }
        for bad in [
            "istiod",
            "istiod:",
            "istiod:port",
            ":15012",
            "fd00::1:15012",
            "istiod:15012/path",
        ] {
            let err = CaClient::new(&config(dir.path(), bad)).err();
            assert!(matches!(err, Some(Error::Address(_))), "{bad}: {err:?}");
        }
        let mut c = config(dir.path(), "127.0.0.1:15012");
        c.server_name = Some("not a name!".into());
        assert!(matches!(CaClient::new(&c), Err(Error::ServerName(_))));
        c.server_name = None;
        c.root_file = dir.path().join("missing.pem");
        let err = CaClient::new(&c).err().expect("no roots");
        assert!(matches!(err, Error::Roots { .. }), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        c.root_file = garbage.clone();
        let err = CaClient::new(&c).err().expect("unusable root");
        assert!(
            err.to_string().starts_with(&garbage.display().to_string()),
            "{err}"
        );
    }

    /// Istio's agent dials the CA over TLS only, trusting the roots of this attempt, with the
    /// token; the server name defaults to the address's host (an IP address is then checked
    /// as an IP SAN: the channel's rule, tested there).
    #[test]
    fn the_ca_is_reached_over_tls_with_the_roots_and_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = CaClient::new(&config(dir.path(), "127.0.0.1:15012")).expect("client");
        let roots = client.roots().expect("roots");
        let server = client.server(&roots);
        assert_eq!(server.address, "https://127.0.0.1:15012");
        assert_eq!(server.token_file, Some(dir.path().join("token")));
        let tls = server.tls.expect("always TLS");
        assert_eq!(tls.server_name, None);
        let again = crate::ca::check::pem_certs(&tls.roots_pem).expect("PEM");
        assert_eq!(again, roots);
    }

    /// The metric's reasons for what stops a request before the CA answers: a token file
    /// that cannot be read (`token`, read anew for the request), a CA not listening
    /// (`unavailable`).
    #[tokio::test]
    async fn connect_failures_map_to_the_metric_reasons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client = CaClient::new(&config(dir.path(), &addr.to_string())).expect("client");
        let roots = client.roots().expect("roots");
        let ttl = Duration::from_secs(3600);
        let failure = client.create_certificate("csr", ttl, &roots).await;
        let failure = failure.expect_err("no token file");
        assert_eq!(failure.reason, FailureReason::Token, "{failure}");
        let token = dir.path().join("token").display().to_string();
        assert!(failure.message.starts_with(&token), "{failure}");

        std::fs::write(dir.path().join("token"), "eyJhbGciOi.abc.def\n").expect("token");
        let failure = client.create_certificate("csr", ttl, &roots).await;
        let failure = failure.expect_err("nobody listens");
        assert_eq!(failure.reason, FailureReason::Unavailable, "{failure}");
    }

    #[test]
    fn grpc_codes_map_to_the_metric_reasons() {
        use tonic::{Code, Status};
        let reason = |c| status_failure(&Status::new(c, "x")).reason;
        assert_eq!(reason(Code::Unavailable), FailureReason::Unavailable);
        assert_eq!(reason(Code::DeadlineExceeded), FailureReason::Unavailable);
        assert_eq!(
            reason(Code::Unauthenticated),
            FailureReason::Unauthenticated
        );
        assert_eq!(
            reason(Code::PermissionDenied),
            FailureReason::PermissionDenied
        );
        assert_eq!(reason(Code::InvalidArgument), FailureReason::Other);
    }
}
