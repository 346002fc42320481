//! Plain HTTP/1.1 as the test bed's sleep client speaks it: `curl -x SIDECAR URL`, one request
//! per connection. (Admin endpoints are read with `meshfed_model::admin::AdminClient`.)

use anyhow::{Context, anyhow};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
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
    let authority = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("not an http URL: {url}"))?;
    let head =
        format!("GET {url} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: meshfed-testbed\r\n\r\n");
    exchange(proxy, &head).await
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
}
