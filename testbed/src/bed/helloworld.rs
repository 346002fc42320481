//! helloworld for the test bed: an HTTP/1.1 server behind workload mTLS (it plays the app and
//! its inbound sidecar). It answers like Istio's sample, plus who called: the caller's SPIFFE
//! id and the issuer of its certificate, as the mTLS handshake proved them.

use crate::mesh_tls::{self, Credentials};
use anyhow::{Context, anyhow};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const HANDSHAKE: Duration = Duration::from_secs(10);

/// A running helloworld; dropping (or [`Helloworld::kill`]) closes its listener at once.
pub struct Helloworld {
    pub version: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Helloworld {
    /// Binds `addr` and serves, on the current runtime.
    pub async fn start(
        addr: SocketAddr,
        version: String,
        credentials: Credentials,
    ) -> anyhow::Result<Helloworld> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let instance = format!("helloworld-{version}");
        let banner = format!("Hello version: {version}, instance: {instance}");
        let task = tokio::spawn(serve(listener, banner, credentials));
        Ok(Helloworld {
            version,
            addr,
            task,
        })
    }

    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Helloworld {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, banner: String, credentials: Credentials) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (banner, credentials) = (banner.clone(), credentials.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(tcp, &banner, &credentials).await {
                tracing::debug!(error = format!("{e:#}"), "helloworld connection failed");
            }
        });
    }
}

async fn answer(
    tcp: tokio::net::TcpStream,
    banner: &str,
    credentials: &Credentials,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(credentials.server_config()?);
    let mut tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp))
        .await
        .map_err(|_| anyhow!("handshake timeout"))?
        .context("handshake")?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .context("no client certificate")?;
    let peer = mesh_tls::peer(&leaf)?;
    // The request itself does not matter; read its head so the client sees a clean close.
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let body = format!(
        "{banner}\npeer: {}\npeer issuer: {}\n",
        peer.spiffe, peer.issuer
    );
    let msg = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(msg.as_bytes()).await?;
    Ok(tls.shutdown().await?)
}
