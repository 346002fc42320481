//! One request's trip upstream, as Envoy's router makes it: admitted by the cluster's
//! circuit breaker, attempts on hosts [`super::pick`] chooses, each bounded by the per-try
//! timeout and all by the route timeout, retried as the retry policy's `retry_on` says (with
//! Envoy's jittered 25 ms back-off), and the answer relayed with the response header edits.
//! Failures answer as Envoy's local replies do (`upstream request timeout`, `no healthy
//! upstream`, overflow with `x-envoy-overloaded`).

use super::routes::{HeaderEdit, Retry, RetryOn};
use super::{Host, Shared, Upstream};
use anyhow::{Context, anyhow};
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) const MAX_HEAD: usize = 16 * 1024;
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a request goes and how it is tried.
pub(crate) struct Plan<'a> {
    pub cluster: &'a str,
    pub up: &'a Upstream,
    /// The request as it goes upstream (head and body).
    pub request: &'a [u8],
    pub retry: Option<&'a Retry>,
    pub timeout: Option<Duration>,
    /// Response edits, most specific first (Envoy's default order).
    pub response_edits: Vec<&'a HeaderEdit>,
}

/// An answer's head, read whole so it can be judged (retry) and edited.
struct Answer {
    stream: Box<dyn Io>,
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
    host: SocketAddr,
}

/// Why an attempt gave no answer.
enum Failure {
    NoHost,
    Connect(SocketAddr),
    Reset(SocketAddr),
    Timeout,
}

/// A local reply: status line, extra headers, body.
pub(crate) struct Local {
    pub status: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Local {
    pub fn new(status: &str, body: &str) -> Local {
        Local {
            status: status.to_string(),
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

pub(crate) async fn local_reply(
    stream: &mut (impl AsyncWrite + Unpin),
    l: &Local,
) -> anyhow::Result<()> {
    let mut msg = format!("HTTP/1.1 {}\r\n", l.status);
    for (k, v) in &l.headers {
        msg.push_str(&format!("{k}: {v}\r\n"));
    }
    if !l.headers.iter().any(|(k, _)| k == "content-type") {
        msg.push_str("content-type: text/plain\r\n");
    }
    msg.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{}",
        l.body.len(),
        l.body
    ));
    Ok(stream.write_all(msg.as_bytes()).await?)
}

/// Forwards `plan` and writes the answer (or Envoy's local reply) to `client`.
pub(crate) async fn exchange(
    shared: &Shared,
    plan: &Plan<'_>,
    client: &mut TcpStream,
) -> anyhow::Result<()> {
    let deadline = plan.timeout.map(|t| Instant::now() + t);
    let breaker = shared.breakers.get(plan.cluster, plan.up.limits);
    let Some(_admitted) = breaker.admit().await else {
        return local_reply(client, &overflow()).await;
    };
    let (retries, per_try) = plan
        .retry
        .map_or((0, None), |r| (r.num_retries, r.per_try_timeout));
    let mut tried = Vec::new();
    let mut attempt = 0;
    let outcome = loop {
        let bound = [per_try.map(|p| Instant::now() + p), deadline]
            .into_iter()
            .flatten()
            .min();
        let result = match bound {
            Some(at) => tokio::time::timeout_at(at, try_once(shared, plan, &tried))
                .await
                .unwrap_or(Err(Failure::Timeout)),
            None => try_once(shared, plan, &tried).await,
        };
        if let Err(Failure::Connect(a) | Failure::Reset(a)) = &result {
            tried.push(*a);
        }
        if let Ok(a) = &result {
            tried.push(a.host);
        }
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        let wants = plan.retry.is_some_and(|r| retriable(r, &result));
        if expired || !wants || attempt >= retries {
            break result;
        }
        let Some(_slot) = breaker.retry() else {
            break result;
        };
        attempt += 1;
        let backoff = backoff(attempt);
        if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
            break Err(Failure::Timeout);
        }
        tokio::time::sleep(backoff).await;
    };
    match outcome {
        Ok(answer) => relay(answer, plan, deadline, client).await,
        Err(f) => local_reply(client, &failure_reply(&f)).await,
    }
}

/// Envoy's answer for a request the circuit breaker refused.
pub(crate) fn overflow() -> Local {
    Local {
        status: "503 Service Unavailable".into(),
        headers: vec![("x-envoy-overloaded".into(), "true".into())],
        body: "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            .into(),
    }
}

fn failure_reply(f: &Failure) -> Local {
    match f {
        Failure::Timeout => Local::new("504 Gateway Timeout", "upstream request timeout"),
        Failure::NoHost => Local::new("503 Service Unavailable", "no healthy upstream"),
        Failure::Connect(_) => Local::new(
            "503 Service Unavailable",
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Failure::Reset(_) => Local::new(
            "503 Service Unavailable",
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
    }
}

/// Whether `retry_on` asks to retry this outcome (Envoy's `RetryStateImpl`).
fn retriable(r: &Retry, result: &Result<Answer, Failure>) -> bool {
    let on: RetryOn = r.on;
    match result {
        Err(Failure::NoHost) => false,
        Err(Failure::Connect(_)) => {
            on.connect_failure || on.reset || on.five_xx || on.gateway_error
        }
        Err(Failure::Reset(_)) => on.reset || on.five_xx || on.gateway_error,
        // A per-try timeout counts as a 504 from upstream.
        Err(Failure::Timeout) => on.five_xx || on.gateway_error,
        Ok(a) => retriable_answer(r, a.status, grpc_status(&a.headers)),
    }
}

pub(crate) fn retriable_answer(r: &Retry, status: u16, grpc: Option<u32>) -> bool {
    let on = r.on;
    (on.five_xx && status >= 500)
        || (on.gateway_error && matches!(status, 502..=504))
        || (on.retriable_4xx && status == 409)
        || (on.retriable_status_codes && r.retriable_status_codes.contains(&status))
        || grpc.is_some_and(|g| {
            (on.grpc.cancelled && g == 1)
                || (on.grpc.deadline_exceeded && g == 4)
                || (on.grpc.resource_exhausted && g == 8)
                || (on.grpc.internal && g == 13)
                || (on.grpc.unavailable && g == 14)
        })
}

fn grpc_status(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("grpc-status"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Envoy's default retry back-off: full jitter over 25 ms doubling per retry, at most 250 ms.
fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << retry.min(8))
        .min(BACKOFF_MAX);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(250).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(0..ms))
}

/// One attempt: a host, a connection, the request, the answer's head.
async fn try_once(
    shared: &Shared,
    plan: &Plan<'_>,
    tried: &[SocketAddr],
) -> Result<Answer, Failure> {
    let avoid = plan.retry.is_some_and(|r| r.other_hosts);
    let host = {
        let mut b = shared.lock_balancer();
        let now = std::time::Instant::now();
        let first = b.pick(plan.cluster, plan.up, if avoid { tried } else { &[] }, now);
        // Envoy gives up on the previous-hosts predicate after a few tries.
        first.or_else(|| b.pick(plan.cluster, plan.up, &[], now))
    };
    let host = host.ok_or(Failure::NoHost)?;
    let mut stream = match connect(shared, plan.up, &host).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(cluster = plan.cluster, host = %host.addr, error = format!("{e:#}"), "upstream connect failed");
            record(shared, plan, host.addr, false);
            return Err(Failure::Connect(host.addr));
        }
    };
    let answer = async {
        stream.write_all(plan.request).await?;
        read_answer_head(&mut stream).await
    }
    .await;
    let Ok((status_line, headers, rest)) = answer else {
        record(shared, plan, host.addr, false);
        return Err(Failure::Reset(host.addr));
    };
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status == 0 {
        record(shared, plan, host.addr, false);
        return Err(Failure::Reset(host.addr));
    }
    record(shared, plan, host.addr, (200..500).contains(&status));
    Ok(Answer {
        stream,
        status,
        status_line,
        headers,
        rest,
        host: host.addr,
    })
}

/// Feeds outlier detection: a 5xx or no answer counts against the host.
fn record(shared: &Shared, plan: &Plan<'_>, addr: SocketAddr, ok: bool) {
    let mut b = shared.lock_balancer();
    if ok {
        b.succeeded(plan.cluster, addr);
    } else if b.failed(plan.cluster, plan.up, addr, std::time::Instant::now()) {
        tracing::info!(cluster = plan.cluster, host = %addr, "ejected by outlier detection");
    }
}

type Head = (String, Vec<(String, String)>, Vec<u8>);

async fn read_answer_head(stream: &mut Box<dyn Io>) -> anyhow::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(anyhow!("answer head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(anyhow!("closed before the answer head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty answer")?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status_line, headers, buf[end + 4..].to_vec()))
}

/// Writes the answer with the response edits and `x-meshfed-upstream`, then copies the body
/// until the route timeout.
async fn relay(
    mut a: Answer,
    plan: &Plan<'_>,
    deadline: Option<Instant>,
    client: &mut TcpStream,
) -> anyhow::Result<()> {
    for edit in &plan.response_edits {
        edit.apply(&mut a.headers);
    }
    let mut head = format!("{}\r\n", a.status_line);
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("x-meshfed-upstream: {}\r\n\r\n", a.host));
    client.write_all(head.as_bytes()).await?;
    client.write_all(&a.rest).await?;
    let copy = tokio::io::copy(&mut a.stream, client);
    match deadline {
        Some(d) => {
            let _ = tokio::time::timeout_at(d, copy).await;
        }
        None => {
            copy.await?;
        }
    }
    Ok(client.shutdown().await?)
}

/// Sends a copy of the request to `cluster` and drops the answer (Envoy's shadowing).
pub(crate) async fn mirror(shared: &Shared, cluster: &str, request: &[u8]) {
    let Some(up) = shared.table.borrow().clusters.get(cluster).cloned() else {
        return;
    };
    let host = shared
        .lock_balancer()
        .pick(cluster, &up, &[], std::time::Instant::now());
    let Some(host) = host else {
        return;
    };
    let sent = async {
        let mut s = connect(shared, &up, &host).await?;
        s.write_all(request).await?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await?;
        anyhow::Ok(())
    };
    if let Err(e) = sent.await {
        tracing::debug!(cluster, error = format!("{e:#}"), "mirror failed");
    }
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
    use crate::sidecar::routes::decode::retry_on;

    fn policy(on: &str, codes: &[u16]) -> Retry {
        Retry {
            on: retry_on(on).expect("retry_on"),
            num_retries: 2,
            per_try_timeout: None,
            retriable_status_codes: codes.to_vec(),
            other_hosts: true,
        }
    }

    /// Envoy's `retry_on` conditions for answers: `5xx` takes every 5xx, `gateway-error`
    /// only 502/503/504, `retriable-status-codes` the listed codes, `retriable-4xx` 409, and
    /// the gRPC names read `grpc-status` (Istio's default `unavailable,cancelled`).
    #[test]
    fn retry_on_answers_as_envoy() {
        assert!(retriable_answer(&policy("5xx", &[]), 500, None));
        assert!(!retriable_answer(&policy("5xx", &[]), 404, None));
        assert!(!retriable_answer(&policy("gateway-error", &[]), 500, None));
        assert!(retriable_answer(&policy("gateway-error", &[]), 503, None));
        let codes = policy("retriable-status-codes", &[404]);
        assert!(retriable_answer(&codes, 404, None));
        assert!(!retriable_answer(&codes, 503, None));
        assert!(retriable_answer(&policy("retriable-4xx", &[]), 409, None));
        let grpc = policy(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            &[],
        );
        assert!(retriable_answer(&grpc, 200, Some(14)));
        assert!(!retriable_answer(&grpc, 200, Some(2)));
        assert!(!retriable_answer(&grpc, 503, None), "no 5xx in the default");
    }

    /// Connect failures are retried under `connect-failure`, `reset`, `5xx` and
    /// `gateway-error`; a reset after connecting is not a connect failure; a per-try timeout
    /// is a 504; no healthy host is never retried.
    #[test]
    fn retry_on_failures_as_envoy() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let cf = policy("connect-failure", &[]);
        assert!(retriable(&cf, &Err(Failure::Connect(a))));
        assert!(!retriable(&cf, &Err(Failure::Reset(a))));
        assert!(!retriable(&cf, &Err(Failure::Timeout)));
        assert!(retriable(&policy("reset", &[]), &Err(Failure::Reset(a))));
        assert!(retriable(&policy("5xx", &[]), &Err(Failure::Timeout)));
        assert!(!retriable(&policy("5xx", &[]), &Err(Failure::NoHost)));
    }

    /// Envoy's back-off: jittered, never above 250 ms.
    #[test]
    fn backoff_stays_under_envoys_cap() {
        for n in 1..20 {
            assert!(backoff(n) < BACKOFF_MAX);
        }
    }
}
