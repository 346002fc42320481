//! TLS clients for the CA benchmark (rustls with ring; tonic has no TLS features here, so
//! the connector does the handshake): a gRPC channel to the federation's secure port that is
//! kept and reused, and a TLS stream for the HTTP/1.1 peer.

use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A client config trusting `root_pem` and offering `alpn`.
pub fn client_config(root_pem: &str, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in roots_of(root_pem)? {
        roots.add(der).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

pub fn roots_of(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    meshfed_agent::ca::check::pem_certs(pem.as_bytes())
}

/// TCP to `addr`, then TLS checked against the config's roots and `name`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One HTTP/2 connection to `addr` over TLS, made now and kept by the channel.
pub async fn channel(
    addr: SocketAddr,
    name: &'static str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, String> {
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        async move {
            connect(addr, name, config)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    });
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connecting to {addr}: {e:?}"))
}
