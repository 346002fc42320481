//! The one client of every component's admin port (`/healthz/ready`, `/metrics`, `/debug/*`),
//! for the CLI (`remote-clusters`), the test bed, the benchmarks and the tests: HTTP/1.1 GET
//! with a deadline, a bounded answer, and typed errors.

use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Debug pages of a large registry run to megabytes; anything past this is not an admin page.
const MAX_ANSWER: u64 = 256 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: not an HTTP answer ({what})")]
    Malformed {
        addr: SocketAddr,
        what: &'static str,
    },
    #[error("{addr}{path}: {status} {body}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{addr}{path}: {source}")]
    Json {
        addr: SocketAddr,
        path: String,
        source: serde_json::Error,
    },
}

/// What a GET returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Copy)]
pub struct AdminClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(addr: SocketAddr) -> Self {
        AdminClient {
            addr,
            timeout: TIMEOUT,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`, whatever the status.
    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let addr = self.addr;
        tokio::time::timeout(self.timeout, exchange(addr, path))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })?
    }

    /// `GET path`'s body; anything but 200 is an error.
    pub async fn page(&self, path: &str) -> Result<String, ClientError> {
        let a = self.get(path).await?;
        if a.status != 200 {
            return Err(ClientError::Status {
                addr: self.addr,
                path: path.to_string(),
                status: a.status,
                body: a.body.trim().chars().take(200).collect(),
            });
        }
        Ok(a.body)
    }

    /// A debug page decoded as `T`.
    pub async fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.page(path).await?;
        serde_json::from_str(&body).map_err(|source| ClientError::Json {
            addr: self.addr,
            path: path.to_string(),
            source,
        })
    }

    /// `/healthz/ready`: true on 200, false on 503 (not ready yet), an error otherwise.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        match self.get("/healthz/ready").await? {
            Answer { status: 200, .. } => Ok(true),
            Answer { status: 503, .. } => Ok(false),
            Answer { status, body } => Err(ClientError::Status {
                addr: self.addr,
                path: "/healthz/ready".into(),
                status,
                body,
            }),
        }
    }

    /// `/metrics`, the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.page("/metrics").await
    }

    /// [`AdminClient::get`] for callers that do not await (the CLI, plain tests). It runs on
    /// a thread of its own, so it also works from inside a runtime (which a nested
    /// `block_on` would not).
    pub fn get_blocking(&self, path: &str) -> Result<Answer, ClientError> {
        let client = *self;
        std::thread::scope(|s| {
            s.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| ClientError::Io {
                        addr: client.addr,
                        source,
                    })?;
                runtime.block_on(client.get(path))
            })
            .join()
            .unwrap_or(Err(ClientError::Malformed {
                addr: client.addr,
                what: "the client thread panicked",
            }))
        })
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<Answer, ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut s = TcpStream::connect(addr).await.map_err(io)?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).await.map_err(io)?;
    parse(&raw).map_err(|what| ClientError::Malformed { addr, what })
}

fn parse(raw: &[u8]) -> Result<Answer, &'static str> {
    let raw = String::from_utf8_lossy(raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of head")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &str) -> Result<String, &'static str> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).ok_or("truncated chunk")?);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Reply, serve};

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\nsyncing\n";
        assert_eq!(
            parse(plain),
            Ok(Answer {
                status: 503,
                body: "syncing\n".into()
            })
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).map(|a| a.body), Ok("abcde".into()));
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err());
    }

    /// The CLI tests and the gateway tests call it from plain and from async code alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_blocking_get_works_inside_a_runtime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = AdminClient::new(listener.local_addr().unwrap());
        tokio::spawn(serve(listener, |_: &str| Reply::text(200, "ok")));
        let answer = client.get_blocking("/");
        assert_eq!(answer.unwrap().body, "ok");
    }

    #[tokio::test]
    async fn reads_pages_readiness_and_json_from_an_admin_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = AdminClient::new(listener.local_addr().unwrap());
        tokio::spawn(serve(listener, |path: &str| match path {
            "/healthz/ready" => Reply::readiness(false, "syncing"),
            "/debug/x" => Reply::json("[1,2,3]".into()),
            _ => Reply::not_found(),
        }));
        assert!(!client.ready().await.unwrap());
        assert_eq!(client.json::<Vec<u8>>("/debug/x").await.unwrap(), [1, 2, 3]);
        let err = client.page("/nope").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 404, .. }),
            "{err}"
        );
    }
}
