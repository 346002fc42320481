//! Plain HTTP/1.1 as the test bed's sleep client speaks it: `curl -x SIDECAR URL`, one request
//! per connection. (Admin endpoints are read with `meshfed_model::admin::AdminClient`.)

use anyhow::{Context, anyhow, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Answer {
    /// The version helloworld answered with (`Hello version: v2, ...`).
    pub fn version(&self) -> Option<&str> {
        let rest = self.body.split("Hello version: ").nth(1)?;
        rest.split(',').next()
    }

    /// A `name: value` line of the body.
    pub fn body_field(&self, name: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    pub fn upstream(&self) -> Option<&str> {
        self.headers.get("x-meshfed-upstream").map(String::as_str)
    }
}

/// `GET url` through the HTTP proxy at `proxy` (the sleep pod's sidecar).
pub async fn via_proxy(proxy: SocketAddr, url: &str) -> anyhow::Result<Answer> {
    Ok(via_proxy_with(proxy, url, &[]).await?.0)
}

/// `curl -x PROXY -H 'name: value'... URL`: `GET url` through the HTTP proxy at `proxy` with
/// extra request headers; the answer and how long it took, from the connect to the last
/// byte (what a route's delay or timeout shows as).
pub async fn via_proxy_with(
    proxy: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(Answer, Duration)> {
    let start = Instant::now();
    let answer = exchange(proxy, &request_head(url, headers)?).await?;
    Ok((answer, start.elapsed()))
}

fn request_head(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<String> {
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("not an http URL: {url}"))?;
    let mut head =
        format!("GET {url} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: meshfed-testbed\r\n");
    for (name, value) in headers {
        if [name, value].iter().any(|s| s.contains(['\r', '\n'])) {
            bail!("header {name:?} breaks the request head");
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Ok(head)
}

impl super::ClusterBed {
    /// One request from sleep through its sidecar, made inside the cluster, with extra
    /// request headers (`curl -H`); the answer and how long it took.
    pub async fn curl_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(Answer, Duration)> {
        let proxy = self.addrs.sleep_proxy;
        let url = url.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.rt
            .spawn(async move {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                via_proxy_with(proxy, &url, &headers).await
            })
            .await?
    }
}

async fn exchange(addr: SocketAddr, head: &str) -> anyhow::Result<Answer> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| addr.to_string())?;
        s.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        parse(&String::from_utf8_lossy(&raw))
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("{addr}: no answer within {TIMEOUT:?}"))?
}

fn parse(raw: &str) -> anyhow::Result<Answer> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("incomplete HTTP answer")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .context("bad status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_version_peer_and_upstream() {
        let a = parse("HTTP/1.1 200 OK\r\nX-Meshfed-Upstream: 172.31.0.12:15443\r\n\r\nHello version: v2, instance: helloworld-v2\npeer: spiffe://cluster.local/ns/sample/sa/sleep\n").unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.version(), Some("v2"));
        assert_eq!(a.upstream(), Some("172.31.0.12:15443"));
        assert_eq!(
            a.body_field("peer"),
            Some("spiffe://cluster.local/ns/sample/sa/sleep")
        );
        assert!(parse("HTTP/1.1 200 OK\r\n").is_err());
    }

    /// `curl -x` sends the absolute URI with Host set to its authority, then each `-H`
    /// header as given (what a route's header match reads, e.g. Istio's `end-user: jason`);
    /// a header that would split the head is refused.
    #[test]
    fn request_heads_carry_extra_headers() {
        let head = request_head(
            "http://helloworld.sample:5000/hello",
            &[("end-user", "jason"), ("x-b", "2")],
        )
        .unwrap();
        assert_eq!(
            head,
            "GET http://helloworld.sample:5000/hello HTTP/1.1\r\nhost: helloworld.sample:5000\r\n\
             user-agent: meshfed-testbed\r\nend-user: jason\r\nx-b: 2\r\n\r\n"
        );
        assert!(request_head("http://h:1/", &[("a", "b\r\nc: d")]).is_err());
        assert!(request_head("https://h:1/", &[]).is_err());
    }
}
