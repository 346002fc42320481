//! The sidecar's outbound listener: an HTTP/1.1 forward proxy (`curl -x`), one request per
//! connection, acting as Istio's HTTP proxy listener (`127.0.0.1_<HTTP_PROXY_PORT>`, RDS
//! `http_proxy`). Once its routes have arrived the Host (or absolute URI's authority) picks
//! a virtual host and the request the first matching route, with its fault, weighted
//! clusters, header edits, mirrors, timeout and retry policy. Before that, the Host names a
//! mesh service in any of Kubernetes' short forms, sent to `outbound|port||fqdn` with
//! Istio's default retry policy. Upstream, [`super::forward`] picks hosts, originates mTLS
//! for hosts marked `tlsMode: istio` and adds `x-meshfed-upstream: ADDR` to the answer.

use super::forward::{self, Local, MAX_HEAD, Plan, exchange, local_reply};
use super::routes::{
    Abort, Action, Fault, Forward, GrpcRetryOn, HttpProxyListener, RequestView, Retry, RetryOn,
    Route, RouteTable, VirtualHost, WeightedCluster, roll,
};
use super::{Shared, Table};
use anyhow::{Context, anyhow, bail};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests are buffered whole for retries and mirrors; larger ones are refused.
const MAX_BODY: usize = 1 << 20;

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
    /// The Host header (or the absolute URI's authority) as sent, matched against domains.
    pub authority: String,
    /// Headers to pass on (without Host, Connection, Proxy-Connection), names as sent.
    pub headers: Vec<(String, String)>,
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
            _ => headers.push((name.trim().to_string(), value.trim().to_string())),
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
        None => (authority.clone(), 80),
    };
    Ok(Request {
        method: method.to_string(),
        path,
        host,
        port,
        authority,
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

/// Reads the request body whole (so retries and mirrors can send it again): by
/// `content-length`, or up to the last chunk of a chunked body.
async fn read_body(
    stream: &mut (impl AsyncRead + Unpin),
    req: &Request,
    mut body: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: Option<usize> = match header("content-length") {
        Some(v) => Some(v.trim().parse().context("bad content-length")?),
        None => None,
    };
    let done = |b: &[u8]| match length {
        _ if chunked => b.ends_with(b"0\r\n\r\n"),
        Some(n) => b.len() >= n,
        None => true,
    };
    let mut chunk = [0u8; 4096];
    while !done(&body) {
        if body.len() > MAX_BODY {
            bail!("request body too large");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request body ended");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(n) = length.filter(|_| !chunked) {
        body.truncate(n);
    }
    Ok(body)
}

async fn reply(stream: &mut TcpStream, status: &str, body: &str) -> anyhow::Result<()> {
    local_reply(stream, &Local::new(status, body)).await
}

/// A request as it goes upstream.
fn request_bytes(req: &Request, host: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nhost: {host}\r\n", req.method, req.path);
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn handle(mut client: TcpStream, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let (head, body_start) = read_head(&mut client).await?;
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(e) => return reply(&mut client, "400 Bad Request", &format!("{e:#}\n")).await,
    };
    let body = match read_body(&mut client, &req, body_start).await {
        Ok(b) => b,
        Err(e) => return reply(&mut client, "400 Bad Request", &format!("{e:#}\n")).await,
    };
    let table = shared.table.borrow().clone();
    match table.http_proxy(shared.port) {
        Some((listener, routes)) => {
            routed(shared, &table, (listener, routes), &req, &body, &mut client).await
        }
        None => unrouted(shared, &table, &req, &body, &mut client).await,
    }
}

/// Before the first RDS: the Host names a service, routed to `outbound|port||fqdn` with
/// Istio's default retry policy and no timeout.
async fn unrouted(
    shared: &Shared,
    table: &Table,
    req: &Request,
    body: &[u8],
    client: &mut TcpStream,
) -> anyhow::Result<()> {
    let host = fqdn(&req.host, &shared.namespace, &shared.domain);
    let cluster = format!("outbound|{}||{host}", req.port);
    let Some(up) = table.clusters.get(&cluster) else {
        let msg = format!("no mesh service {}:{}\n", req.host, req.port);
        return reply(client, "404 Not Found", &msg).await;
    };
    let authority = format!("{}:{}", req.host, req.port);
    let request = request_bytes(req, &authority, &req.headers, body);
    let plan = Plan {
        cluster: &cluster,
        up,
        request: &request,
        retry: Some(&DEFAULT_RETRY),
        timeout: None,
        response_edits: Vec::new(),
    };
    exchange(shared, &plan, client).await
}

/// Istio's default retry policy (`cachedDefaultPolicy`), used until routes arrive.
static DEFAULT_RETRY: std::sync::LazyLock<Retry> = std::sync::LazyLock::new(|| Retry {
    on: RetryOn {
        connect_failure: true,
        retriable_status_codes: true,
        grpc: GrpcRetryOn {
            cancelled: true,
            unavailable: true,
            ..Default::default()
        },
        ..Default::default()
    },
    num_retries: 2,
    per_try_timeout: None,
    retriable_status_codes: Vec::new(),
    other_hosts: true,
});

/// As Envoy's HTTP connection manager with the fault filter and the router: a virtual host
/// by authority, the first matching route, its fault, a cluster by weight, header edits,
/// mirrors, then the upstream exchange.
async fn routed(
    shared: &Arc<Shared>,
    table: &Table,
    (listener, routes): (&HttpProxyListener, &RouteTable),
    req: &Request,
    body: &[u8],
    client: &mut TcpStream,
) -> anyhow::Result<()> {
    let Some((vhost, index, route)) = select(routes, req) else {
        return reply(client, "404 Not Found", "").await;
    };
    let fwd = match &route.action {
        Action::Direct { status, body } => {
            return local_reply(client, &Local::new(&status_line(*status), body)).await;
        }
        Action::Forward(f) => f,
    };
    let fault = (route.fault.as_ref())
        .or(vhost.fault.as_ref())
        .or(listener.fault.as_ref());
    if let Some(abort) = inject(fault).await {
        return local_reply(client, &abort).await;
    }
    let key = format!("{}|{}|{index}", routes.name, vhost.name);
    let chosen = choose(shared, &key, fwd);
    let Some(up) = table.clusters.get(&chosen.name) else {
        // Envoy: cluster not found, 503 (NC).
        return reply(client, "503 Service Unavailable", "").await;
    };
    let levels = [
        &chosen.headers,
        &route.headers_ops,
        &vhost.headers,
        &routes.headers,
    ];
    let mut headers = req.headers.clone();
    for level in levels {
        level.request.apply(&mut headers);
    }
    let host = (chosen.host_rewrite.as_ref())
        .or(fwd.host_rewrite.as_ref())
        .unwrap_or(&req.authority);
    mirror(shared, fwd, req, host, &headers, body);
    let request = request_bytes(req, host, &headers, body);
    let plan = Plan {
        cluster: &chosen.name,
        up,
        request: &request,
        retry: fwd.retry.as_ref(),
        timeout: fwd.timeout,
        response_edits: levels.iter().map(|l| &l.response).collect(),
    };
    exchange(shared, &plan, client).await
}

/// The virtual host for the authority and the first route of it that matches (with its
/// index, which keys the route's weighted choice).
fn select<'a>(
    routes: &'a RouteTable,
    req: &Request,
) -> Option<(&'a VirtualHost, usize, &'a Route)> {
    let view = RequestView {
        method: &req.method,
        path: &req.path,
        authority: &req.authority,
        headers: &req.headers,
    };
    let vhost = routes.vhost(&req.authority)?;
    let (index, route) = (vhost.routes.iter().enumerate()).find(|(_, r)| r.matches(&view))?;
    Some((vhost, index, route))
}

/// Envoy's shadowing: each mirror policy that rolls gets a copy (Host `-shadow`), sent in
/// the background; its answer is dropped.
fn mirror(
    shared: &Arc<Shared>,
    fwd: &Forward,
    req: &Request,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) {
    for m in fwd.mirrors.iter().filter(|m| roll(m.per_million)) {
        let copy = request_bytes(req, &shadow_host(host), headers, body);
        let (shared, cluster) = (shared.clone(), m.cluster.clone());
        tokio::spawn(async move { forward::mirror(&shared, &cluster, &copy).await });
    }
}

/// The route's cluster: the only one, or one by weight (smooth weighted round robin per
/// route, so the split is exact).
fn choose<'a>(shared: &Shared, key: &str, fwd: &'a Forward) -> &'a WeightedCluster {
    if fwd.clusters.len() > 1 {
        let items: Vec<(String, u32)> = (fwd.clusters.iter())
            .map(|c| (c.name.clone(), c.weight))
            .collect();
        if let Some(i) = shared.lock_balancer().weighted(key, &items) {
            return &fwd.clusters[i];
        }
    }
    &fwd.clusters[0]
}

/// The fault filter: the delay (slept), then the abort as Envoy answers it (`fault filter
/// abort`; a gRPC abort is a 200 with `grpc-status`), each rolled against its percentage.
async fn inject(fault: Option<&Fault>) -> Option<Local> {
    let fault = fault?;
    if let Some((delay, pct)) = fault.delay
        && roll(pct)
    {
        tokio::time::sleep(delay).await;
    }
    let (abort, pct) = fault.abort?;
    if !roll(pct) {
        return None;
    }
    Some(match abort {
        Abort::Http(status) => Local::new(&status_line(status), "fault filter abort"),
        Abort::Grpc(code) => Local {
            status: "200 OK".into(),
            headers: vec![
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), code.to_string()),
                ("grpc-message".into(), "fault filter abort".into()),
            ],
            body: String::new(),
        },
    })
}

fn status_line(status: u16) -> String {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    format!("{status} {reason}")
}

/// Envoy's shadow host: `-shadow` appended to the host, before any port.
pub fn shadow_host(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => format!("{h}-shadow:{p}"),
        _ => format!("{authority}-shadow"),
    }
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
                authority: "helloworld.sample:5000".into(),
                headers: vec![("User-Agent".into(), "curl".into())],
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
