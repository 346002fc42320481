//! The sidecar's outbound listener: an HTTP/1.1 forward proxy (`curl -x`), one request per
//! connection. The Host (or absolute URI) names a mesh service in any of Kubernetes' short
//! forms; the request goes to a host picked by [`super::pick`] over plain TCP or, for hosts
//! marked `tlsMode: istio`, over mTLS with the cluster's `outbound_` SNI. Connect and
//! handshake failures are retried on other hosts (Istio's default: two retries on
//! connect-failure) and feed outlier detection, as 5xx answers do. The answer carries
//! `x-meshfed-upstream: ADDR`, the host that served it.

use super::{Host, Shared, Upstream};
use anyhow::{Context, anyhow, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 16 * 1024;
const ATTEMPTS: usize = 3;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &shared).await {
                tracing::debug!(error = format!("{e:#}"), "sidecar request failed");
            }
        });
    }
}

/// A parsed request head: what to forward and where.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: String,
    pub port: u16,
    /// Header lines to pass on (without Host, Connection, Proxy-Connection).
    pub headers: Vec<String>,
}

pub fn parse_head(head: &str) -> anyhow::Result<Request> {
    let mut lines = head.split("\r\n");
    let line = lines.next().context("empty request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("bad request line {line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("unsupported version {version:?}");
    }
    let mut host_header = None;
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l
            .split_once(':')
            .with_context(|| format!("bad header {l:?}"))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => host_header = Some(value.trim().to_string()),
            "connection" | "proxy-connection" => {}
            _ => headers.push(l.to_string()),
        }
    }
    let (authority, path) = match target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.to_string(), "/".to_string()),
        },
        None => (host_header.context("no Host header")?, target.to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse()
                .map_err(|_| anyhow!("bad port in {authority:?}"))?,
        ),
        None => (authority, 80),
    };
    Ok(Request {
        method: method.to_string(),
        path,
        host,
        port,
        headers,
    })
}

/// Kubernetes' short names as a pod in `namespace` resolves them: `svc`, `svc.ns`,
/// `svc.ns.svc`, or the full name.
pub fn fqdn(host: &str, namespace: &str, domain: &str) -> String {
    let host = host.trim_end_matches('.');
    if host.ends_with(&format!(".svc.{domain}")) {
        return host.to_string();
    }
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [svc] => format!("{svc}.{namespace}.svc.{domain}"),
        [svc, ns] => format!("{svc}.{ns}.svc.{domain}"),
        [svc, ns, "svc"] => format!("{svc}.{ns}.svc.{domain}"),
        _ => host.to_string(),
    }
}

async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD {
            bail!("request head too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn reply(stream: &mut TcpStream, status: &str, body: &str) -> anyhow::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Ok(stream.write_all(msg.as_bytes()).await?)
}

async fn handle(mut client: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let (head, body_start) = read_head(&mut client).await?;
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(e) => return reply(&mut client, "400 Bad Request", &format!("{e:#}\n")).await,
    };
    let host = fqdn(&req.host, &shared.namespace, &shared.domain);
    let cluster = format!("outbound|{}||{host}", req.port);
    let Some(up) = shared.table.borrow().clusters.get(&cluster).cloned() else {
        let msg = format!("no mesh service {}:{}\n", req.host, req.port);
        return reply(&mut client, "404 Not Found", &msg).await;
    };
    let Some((mut upstream, chosen)) = connect_with_retries(shared, &cluster, &up).await else {
        return reply(
            &mut client,
            "503 Service Unavailable",
            "no healthy upstream\n",
        )
        .await;
    };
    let mut out = format!(
        "{} {} HTTP/1.1\r\nhost: {}:{}\r\n",
        req.method, req.path, req.host, req.port
    );
    for h in &req.headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&body_start).await?;
    relay_answer(&mut upstream, &mut client, shared, &cluster, &up, chosen).await
}

/// Copies the answer back with the upstream header added after the status line, and counts
/// a 5xx (or no answer) against the host.
async fn relay_answer(
    upstream: &mut Box<dyn Io>,
    client: &mut TcpStream,
    shared: &Shared,
    cluster: &str,
    up: &Upstream,
    chosen: SocketAddr,
) -> anyhow::Result<()> {
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\r\n") && first.len() < MAX_HEAD {
        match upstream.read(&mut byte).await {
            Ok(0) | Err(_) => break,
            Ok(_) => first.push(byte[0]),
        }
    }
    let status = String::from_utf8_lossy(&first);
    let code: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    {
        let mut balancer = shared.lock_balancer();
        if (200..500).contains(&code) {
            balancer.succeeded(cluster, chosen);
        } else {
            balancer.failed(cluster, up, chosen, Instant::now());
        }
    }
    if code == 0 {
        return reply(
            client,
            "503 Service Unavailable",
            "upstream closed without an answer\n",
        )
        .await;
    }
    client.write_all(&first).await?;
    client
        .write_all(format!("x-meshfed-upstream: {chosen}\r\n").as_bytes())
        .await?;
    tokio::io::copy(upstream, client).await?;
    Ok(client.shutdown().await?)
}

async fn connect_with_retries(
    shared: &Shared,
    cluster: &str,
    up: &Upstream,
) -> Option<(Box<dyn Io>, SocketAddr)> {
    let mut tried = Vec::new();
    for _ in 0..ATTEMPTS {
        let host = shared
            .lock_balancer()
            .pick(cluster, up, &tried, Instant::now())?;
        match connect(shared, up, &host).await {
            Ok(stream) => return Some((stream, host.addr)),
            Err(e) => {
                tracing::debug!(%cluster, host = %host.addr, error = format!("{e:#}"), "upstream connect failed");
                tried.push(host.addr);
                let ejected = shared
                    .lock_balancer()
                    .failed(cluster, up, host.addr, Instant::now());
                if ejected {
                    tracing::info!(%cluster, host = %host.addr, "ejected by outlier detection");
                }
            }
        }
    }
    None
}

async fn connect(shared: &Shared, up: &Upstream, host: &Host) -> anyhow::Result<Box<dyn Io>> {
    let tcp = tokio::time::timeout(up.connect_timeout, TcpStream::connect(host.addr))
        .await
        .map_err(|_| anyhow!("connect timeout"))??;
    let _ = tcp.set_nodelay(true);
    let tls = match (&up.tls, host.tls) {
        (Some(tls), true) => tls,
        _ => return Ok(Box::new(tcp)),
    };
    let config = shared.credentials.client_config(&tls.sans)?;
    let name = rustls::pki_types::ServerName::try_from(tls.sni.clone())?;
    let stream = tokio::time::timeout(
        up.connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake timeout"))?
    .context("TLS handshake")?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_in_proxy_and_origin_form() {
        let r = parse_head("GET http://helloworld.sample:5000/hello HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\nProxy-Connection: keep-alive").unwrap();
        assert_eq!(
            r,
            Request {
                method: "GET".into(),
                path: "/hello".into(),
                host: "helloworld.sample".into(),
                port: 5000,
                headers: vec!["User-Agent: curl".into()],
            }
        );
        let r = parse_head("GET /hello HTTP/1.1\r\nhost: helloworld").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str()),
            ("helloworld", 80, "/hello")
        );
        assert!(parse_head("GET /hello HTTP/1.1").is_err(), "no host");
        assert!(parse_head("GET /hello SPDY/3").is_err());
        assert!(parse_head("GET http://h:x/ HTTP/1.1").is_err());
        assert!(parse_head("garbage").is_err());
    }

    #[test]
    fn short_names_expand_like_a_pods_resolver() {
        let f = |h| fqdn(h, "sample", "cluster.local");
        assert_eq!(f("helloworld"), "helloworld.sample.svc.cluster.local");
        assert_eq!(f("helloworld.other"), "helloworld.other.svc.cluster.local");
        assert_eq!(
            f("helloworld.other.svc"),
            "helloworld.other.svc.cluster.local"
        );
        assert_eq!(
            f("helloworld.other.svc.cluster.local."),
            "helloworld.other.svc.cluster.local"
        );
        assert_eq!(f("example.com.x.y"), "example.com.x.y");
    }
}
