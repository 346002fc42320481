//! One `CreateCertificate` call, as Istio's agent makes it (its citadel client): TLS to the
//! CA, checked against `--ca-root` and the CA's server name; the ServiceAccount token as
//! `authorization: Bearer` metadata, read from its file for every request (kubelet rotates
//! projected tokens); the CSR and the validity asked for, nothing else. A fresh connection
//! per call: calls come twice a lifetime, and each then sees the current roots.

use super::{CaConfig, Error};
use crate::status::FailureReason;
use meshfed_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshfed_proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Endpoint, Uri};

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
    endpoint: Endpoint,
    server_name: ServerName<'static>,
    root_file: PathBuf,
    token_file: PathBuf,
    timeout: Duration,
}

impl CaClient {
    /// Checks the address, the server name and that `--ca-root` holds certificates: a
    /// configuration mistake stops the agent at start, not at every retry.
    pub fn new(config: &CaConfig) -> Result<CaClient, Error> {
        let host =
            host_of(&config.address).ok_or_else(|| Error::Address(config.address.clone()))?;
        let name = config.server_name.clone().unwrap_or(host);
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| Error::ServerName(name.clone()))?
            .to_owned();
        // tonic is built without its TLS features: the connector below does TLS, and
        // `https` only names the scheme in the requests.
        let endpoint = Endpoint::from_shared(format!("https://{}", config.address))
            .map_err(|_| Error::Address(config.address.clone()))?
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout);
        let client = CaClient {
            address: config.address.clone(),
            endpoint,
            server_name,
            root_file: config.root_file.clone(),
            token_file: config.token_file.clone(),
            timeout: config.request_timeout,
        };
        client.roots().map_err(|f| Error::Roots {
            path: client.root_file.clone(),
            reason: f.message,
        })?;
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
    /// serving certificate chains to `roots`. Returns the answer's `cert_chain` unchecked.
    pub async fn create_certificate(
        &self,
        csr: &str,
        ttl: Duration,
        roots: &[CertificateDer<'static>],
    ) -> Result<Vec<String>, Failure> {
        let bearer = self.bearer()?;
        let tls = tls_config(roots)?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        request.metadata_mut().insert("authorization", bearer);
        let call = async {
            let channel = self
                .endpoint
                .connect_with_connector(connector(
                    self.address.clone(),
                    self.server_name.clone(),
                    tls,
                ))
                .await
                .map_err(|e| Failure::new(FailureReason::Unavailable, causes(&e)))?;
            IstioCertificateServiceClient::new(channel)
                .create_certificate(request)
                .await
                .map_err(|s| status_failure(&s))
        };
        let answer: IstioCertificateResponse = tokio::time::timeout(self.timeout, call)
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

    /// `Bearer <token>` from the token file as it is now.
    fn bearer(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, Failure> {
        let path = self.token_file.display();
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| Failure::new(FailureReason::Token, format!("{path}: {e}")))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(Failure::new(FailureReason::Token, format!("{path}: empty")));
        }
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Failure::new(
                FailureReason::Token,
                format!("{path}: not a token (bad characters)"),
            )
        })
    }
}

/// The host part of `HOST:PORT` (brackets taken off an IPv6 address), if it is that shape.
fn host_of(address: &str) -> Option<String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Some(addr.ip().to_string());
    }
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let bare = !host.is_empty() && !host.contains(':') && host.parse::<IpAddr>().is_err();
    bare.then(|| host.to_string())
}

fn tls_config(roots: &[CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let other = |e: String| Failure::new(FailureReason::Other, e);
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| other(format!("--ca-root: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// TCP to `address`, then TLS checked against the roots and `name`.
fn connector(
    address: String,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = Io,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<Io>> + Send,
> + Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let (address, name, tls) = (address.clone(), name.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(address.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        }
    })
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

/// An error and its sources, one line (tonic's transport error alone says only "transport
/// error"); a source whose text is already there (some errors repeat theirs) is left out.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_address() {
        assert_eq!(
            host_of("meshfed-federation.istio-system.svc:15012").as_deref(),
            Some("meshfed-federation.istio-system.svc")
        );
        assert_eq!(host_of("10.0.0.1:15012").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of("[fd00::1]:15012").as_deref(), Some("fd00::1"));
        for bad in [
            "istiod",
            "istiod:",
            "istiod:port",
            ":15012",
            "fd00::1:15012",
        ] {
            assert_eq!(host_of(bad), None, "{bad}");
        }
    }

    /// An IP address is checked as an IP SAN (rustls's IpAddress name), a name as a DNS SAN.
    #[test]
    fn an_ip_host_is_checked_as_an_ip_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root.pem");
        std::fs::write(&root, crate::material::tests::ca("c1").root_pem()).expect("write");
        let mut config = CaConfig::new("127.0.0.1:15012", dir.path().join("token"));
        config.root_file = root.clone();
        let client = CaClient::new(&config).expect("client");
        assert!(matches!(client.server_name, ServerName::IpAddress(_)));
        config.server_name = Some("istiod.istio-system.svc".into());
        let client = CaClient::new(&config).expect("client");
        assert!(matches!(client.server_name, ServerName::DnsName(_)));
        config.root_file = dir.path().join("missing.pem");
        let err = CaClient::new(&config).err().expect("no roots");
        assert!(matches!(err, Error::Roots { .. }), "{err}");
        config.address = "istiod".into();
        assert!(matches!(CaClient::new(&config), Err(Error::Address(_))));
    }

    #[test]
    fn causes_are_chained_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Repeats(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Terse(#[source] std::io::Error);
        let io = || std::io::Error::other("refused");
        assert_eq!(causes(&Repeats(io())), "outer: refused");
        assert_eq!(causes(&Terse(io())), "transport error: refused");
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
