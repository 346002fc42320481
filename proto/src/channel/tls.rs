//! TLS for tonic built without its TLS features: a rustls client configuration (ring, the
//! given roots, ALPN `h2` as gRPC requires) and a connector that dials TCP, then does the
//! handshake checked against the roots and the server name.

use super::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tonic::transport::Uri;

/// The name to check in the server's certificate: an IP address is checked as an IP SAN,
/// anything else as a DNS name.
pub(super) fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_string()).map_err(|_| Error::ServerName(name.to_string()))
}

/// A client configuration trusting the certificates of `roots_pem` (named `source` in
/// errors), offering ALPN `h2`, with no client certificate.
pub(super) fn client_config(
    roots_pem: &[u8],
    source: &str,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let bad = |reason: String| Error::Roots {
        path: source.to_string(),
        reason,
    };
    let roots = CertificateDer::pem_slice_iter(roots_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| bad(format!("not a usable certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

pub(super) type Io =
    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// TCP to `authority` (`host:port`), then TLS checked against `config`'s roots and `name`.
/// tonic calls it for each connection of the channel; the URI it passes is not read.
pub(super) fn connector(
    authority: String,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = Io,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<Io>> + Send,
> + Send
+ 'static {
    tower::service_fn(move |_: Uri| {
        let (authority, name, config) = (authority.clone(), name.clone(), config.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
            // gRPC's frames are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        }
    })
}
