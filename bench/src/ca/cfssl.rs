//! The peer: CFSSL's `cfssl serve` (Debian's golang-cfssl, 1.2) signing with the same
//! intermediate, its JSON `POST /api/v1/cfssl/sign` over HTTPS (its `-tls-cert`/`-tls-key`),
//! HTTP/1.1 with keep-alive, K connections each sending fresh CSRs one after another. It
//! authenticates no caller on this endpoint: the figure is TLS, JSON, the CSR check and
//! signing, without the token check our CA makes.

use super::Issued;
use super::steady::same_key;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meshfed_certs::{CertificateAuthority, WorkloadCsr};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PROGRAM: &str = "/usr/bin/cfssl";
const SERVER_NAME: &str = "cfssl.bench.local";

/// A running `cfssl serve`; killed when dropped.
pub struct Cfssl {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Cfssl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cfssl {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `cfssl serve` on `core` with `ca`'s certificate and key, a serving certificate
/// issued by `ca` for [`SERVER_NAME`], a 24 h default profile and warnings-only logging
/// (its default logs a line per request; our CA logs issued certificates at debug only).
pub fn start(ca: &CertificateAuthority, core: usize, dir: &Path) -> Result<Cfssl, String> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<_, String>(path)
    };
    let serving = ca
        .issue_server(&[SERVER_NAME.to_string()], Duration::from_secs(24 * 3600))
        .map_err(|e| e.to_string())?;
    let ca_cert = write("cfssl-ca.pem", ca.cert_pem())?;
    let ca_key = write("cfssl-ca-key.pem", &ca.key_pem())?;
    let tls_cert = write("cfssl-tls.pem", &serving.chain_pem())?;
    let tls_key = write("cfssl-tls-key.pem", &serving.key_pem)?;
    let config = json!({"signing": {"default": {"expiry": "24h",
        "usages": ["digital signature", "key encipherment", "server auth", "client auth"]}}});
    let config = write("cfssl-config.json", &config.to_string())?;
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("cfssl.log")).map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .args(["-c", &core.to_string(), PROGRAM, "serve"])
        .args(["-address", "127.0.0.1", "-port", &addr.port().to_string()])
        .arg("-ca")
        .arg(&ca_cert)
        .arg("-ca-key")
        .arg(&ca_key)
        .arg("-config")
        .arg(&config)
        .arg("-tls-cert")
        .arg(&tls_cert)
        .arg("-tls-key")
        .arg(&tls_key)
        .args(["-loglevel", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {PROGRAM}: {e}"))?;
    let cfssl = Cfssl { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("cfssl.log")).unwrap_or_default();
            return Err(format!(
                "cfssl serve did not listen on {addr} within 10 s: {log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(cfssl)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One kept HTTPS/1.1 connection.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Sender, String> {
    let tls = super::tls::connect(addr, SERVER_NAME, config)
        .await
        .map_err(|e| format!("connecting to cfssl: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One `sign` call; returns the certificate (PEM).
pub async fn sign(
    sender: &mut Sender,
    addr: SocketAddr,
    csr: &WorkloadCsr,
) -> Result<String, String> {
    let body = json!({"certificate_request": csr.csr_pem}).to_string();
    let request = hyper::Request::post("/api/v1/cfssl/sign")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("cfssl answered {status} with no JSON: {e}"))?;
    match v["result"]["certificate"].as_str() {
        Some(pem) if v["success"] == true => Ok(pem.to_string()),
        _ => Err(format!("cfssl refused: {status} {}", v["errors"])),
    }
}

/// Each connection sends its CSRs one after another; every answer must carry the
/// request's key.
pub async fn load(
    addr: SocketAddr,
    senders: Vec<Sender>,
    csrs: Vec<Arc<Vec<WorkloadCsr>>>,
) -> Result<Issued, String> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut sender, csrs) in senders.into_iter().zip(csrs) {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(csrs.len());
            for csr in csrs.iter() {
                let t0 = Instant::now();
                let pem = sign(&mut sender, addr, csr).await?;
                latencies.push(t0.elapsed());
                same_key(&pem, &csr.public_key)?;
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(|e| e.to_string())??);
    }
    Ok(Issued {
        wall: start.elapsed(),
        latencies,
    })
}
