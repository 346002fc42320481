//! helloworld for the test bed: an HTTP/1.1 server behind workload mTLS (it plays the app and
//! its inbound sidecar). It answers like Istio's sample, plus who called: the caller's SPIFFE
//! id, the issuer of its certificate, and that certificate's serial number and notAfter, as
//! the mTLS handshake proved them (so a rotation of the caller's certificate shows here).
//! It counts the requests it was sent (so a demo step can tell that an aborted request
//! never reached it) and can be made slow (an upstream for a route's timeout).

use crate::mesh_tls::{self, Credentials};
use anyhow::{Context, anyhow};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const HANDSHAKE: Duration = Duration::from_secs(10);

/// A running helloworld; dropping (or [`Helloworld::kill`]) closes its listener at once.
pub struct Helloworld {
    pub version: String,
    pub addr: SocketAddr,
    knobs: Arc<Knobs>,
    task: JoinHandle<()>,
}

/// Shared with every connection, read per request.
#[derive(Debug, Default)]
struct Knobs {
    /// Requests whose head was read.
    requests: AtomicU64,
    /// How long to wait before answering, in milliseconds.
    delay_ms: AtomicU64,
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
        // The port bound, when `addr` asked for any.
        let addr = listener.local_addr()?;
        let instance = format!("helloworld-{version}");
        let banner = format!("Hello version: {version}, instance: {instance}");
        let knobs = Arc::new(Knobs::default());
        let task = tokio::spawn(serve(listener, banner, credentials, knobs.clone()));
        Ok(Helloworld {
            version,
            addr,
            knobs,
            task,
        })
    }

    /// Requests that reached helloworld (their head was read) since it started.
    pub fn requests(&self) -> u64 {
        self.knobs.requests.load(Ordering::SeqCst)
    }

    /// From the next request on, wait `delay` after reading each request before answering:
    /// a slow app. `Duration::ZERO` makes it prompt again.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.knobs.delay_ms.store(ms, Ordering::SeqCst);
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

async fn serve(listener: TcpListener, banner: String, credentials: Credentials, knobs: Arc<Knobs>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (banner, credentials, knobs) = (banner.clone(), credentials.clone(), knobs.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(tcp, &banner, &credentials, &knobs).await {
                tracing::debug!(error = format!("{e:#}"), "helloworld connection failed");
            }
        });
    }
}

async fn answer(
    tcp: tokio::net::TcpStream,
    banner: &str,
    credentials: &Credentials,
    knobs: &Knobs,
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
    if seen.is_empty() {
        // A connection that sent nothing (a probe, or a proxy that gave up) is no request.
        return Ok(());
    }
    knobs.requests.fetch_add(1, Ordering::SeqCst);
    let delay = knobs.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        // The slow app itself: what the step measures, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(delay)).await;
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

    fn credentials(root: &meshfed_certs::CertificateAuthority, sa: &str) -> Credentials {
        let id = meshfed_certs::SpiffeId::new("cluster.local", "sample", sa).unwrap();
        let w = root
            .issue_workload(&meshfed_certs::WorkloadOptions::new(id))
            .unwrap();
        Credentials::new(crate::mesh_tls::Material::from_workload(&w).unwrap())
    }

    /// One mTLS request as sleep's sidecar makes it; the answer's status line and the time
    /// it took. `send` false: the handshake only, then close (a proxy that gave up).
    async fn request(hw: &Helloworld, client: &Credentials, send: bool) -> (String, Duration) {
        let start = std::time::Instant::now();
        let tcp = tokio::net::TcpStream::connect(hw.addr).await.unwrap();
        let config = client.client_config(&[]).unwrap();
        let sni = rustls::pki_types::ServerName::try_from("outbound_.5000_._.helloworld").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(sni, tcp)
            .await
            .unwrap();
        let mut raw = Vec::new();
        if send {
            tls.write_all(b"GET /hello HTTP/1.1\r\nhost: helloworld:5000\r\n\r\n")
                .await
                .unwrap();
            tls.read_to_end(&mut raw).await.unwrap();
        } else {
            tls.shutdown().await.unwrap();
            let _ = tls.read_to_end(&mut raw).await;
        }
        let text = String::from_utf8_lossy(&raw);
        (
            text.lines().next().unwrap_or("").to_string(),
            start.elapsed(),
        )
    }

    /// The request counter counts requests that reached the app (a connection that sent no
    /// request is none), and `set_delay` makes every later answer wait that long (the slow
    /// upstream a VirtualService `timeout` cuts off), until set back to zero.
    #[tokio::test]
    async fn counts_requests_and_answers_after_the_delay_set() {
        let root = meshfed_certs::CertificateAuthority::new_root(&meshfed_certs::RootOptions {
            org: "t".into(),
            days: 1,
            key: meshfed_certs::KeyAlgorithm::EcdsaP256,
        })
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let hw = Helloworld::start(addr, "v2".into(), credentials(&root, "helloworld"))
            .await
            .unwrap();
        let sleep = credentials(&root, "sleep");
        assert_eq!(hw.requests(), 0);
        let (status, fast) = request(&hw, &sleep, true).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(hw.requests(), 1);
        request(&hw, &sleep, false).await;
        assert_eq!(hw.requests(), 1, "no request was sent");
        hw.set_delay(Duration::from_millis(400));
        let (status, slow) = request(&hw, &sleep, true).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(slow >= Duration::from_millis(400), "{slow:?}");
        assert_eq!(hw.requests(), 2);
        hw.set_delay(Duration::ZERO);
        let (_, again) = request(&hw, &sleep, true).await;
        assert!(
            again < Duration::from_millis(400),
            "{again:?} (first {fast:?})"
        );
        assert_eq!(hw.requests(), 3);
    }
}
