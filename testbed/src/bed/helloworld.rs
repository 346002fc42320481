//! helloworld for the test bed: an HTTP/1.1 server behind workload mTLS (it plays the app and
//! its inbound sidecar). It answers like Istio's sample, plus who called: the caller's SPIFFE
//! id, the issuer of its certificate, and that certificate's serial number and notAfter, as
//! the mTLS handshake proved them (so a rotation of the caller's certificate shows here).

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
    let (serial, not_after) = serial_and_expiry(&leaf)?;
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
        "{banner}\npeer: {}\npeer issuer: {}\npeer serial: {serial}\npeer not after: {not_after}\n",
        peer.spiffe, peer.issuer
    );
    let msg = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(msg.as_bytes()).await?;
    Ok(tls.shutdown().await?)
}

/// The certificate's serial number (hex) and notAfter (Unix time).
fn serial_and_expiry(leaf: &[u8]) -> anyhow::Result<(String, i64)> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow!("peer certificate: {e}"))?;
    Ok((
        cert.raw_serial_as_string().replace(':', ""),
        cert.validity().not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// The serial and notAfter are the certificate's own (as `openssl x509 -serial -enddate`
    /// prints them), so two certificates of one identity tell apart.
    #[test]
    fn serial_and_expiry_are_the_certificates() {
        let root = meshfed_certs::CertificateAuthority::new_root(&meshfed_certs::RootOptions {
            org: "t".into(),
            days: 1,
            key: meshfed_certs::KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
        let id = meshfed_certs::SpiffeId::new("cluster.local", "sample", "sleep").unwrap();
        let mut opts = meshfed_certs::WorkloadOptions::new(id);
        opts.ttl = Duration::from_secs(10);
        let issue = || {
            let w = root.issue_workload(&opts).unwrap();
            let pem = w.chain_pem();
            let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            (serial_and_expiry(&der).unwrap(), der)
        };
        let before = time::OffsetDateTime::now_utc().unix_timestamp();
        let ((one, expiry), der) = issue();
        let ((two, _), _) = issue();
        assert_ne!(one, two);
        assert!(one.chars().all(|c| c.is_ascii_hexdigit()), "{one}");
        assert!(
            (before + 9..=before + 11).contains(&expiry),
            "{expiry} vs {before}"
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(parsed.serial.to_str_radix(16), one.trim_start_matches('0'));
    }
}
