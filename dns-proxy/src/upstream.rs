//! The resolvers names that are not ours go to. Queries are relayed byte for byte (flags, EDNS
//! and DNSSEC bits untouched) over the protocol the client used, so a truncated UDP answer
//! reaches the client truncated and its retry over TCP goes upstream over TCP.

use crate::selfloop::OwnSockets;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// What a resolv.conf says: the name servers (port 53) and the search domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Reads the `nameserver`, `search` and `domain` lines; anything else is ignored, as the
    /// C library does. A scoped IPv6 address (`fe80::1%eth0`) is skipped: we cannot bind it.
    pub fn parse(text: &str) -> ResolvConf {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
                        out.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                // The last of `search` and `domain` wins, as in glibc.
                Some("search") | Some("domain") => {
                    out.search = words.map(|w| w.trim_end_matches('.').to_string()).collect();
                }
                _ => {}
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver is configured")]
    None,
    #[error("{0}: no answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0}: {1}")]
    Io(SocketAddr, io::Error),
}

/// How long one upstream gets before the next is tried.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The upstream resolvers, tried in order, each for at most `timeout`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    /// The sockets these exchanges have open (shared by clones).
    own: OwnSockets,
}

impl Upstreams {
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Upstreams {
        Upstreams {
            servers,
            timeout,
            own: OwnSockets::default(),
        }
    }

    /// The local addresses of the upstream sockets open now: a query from one of them is
    /// the proxy's own forward come back.
    pub fn own(&self) -> &OwnSockets {
        &self.own
    }

    /// Relays `query` over UDP; the first server that answers wins.
    pub async fn udp(&self, query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        self.each(|server| udp_exchange(server, query, &self.own))
            .await
    }

    /// Relays `query` over TCP; the first server that answers wins.
    pub async fn tcp(&self, query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        self.each(|server| tcp_exchange(server, query, &self.own))
            .await
    }

    async fn each<F, Fut>(&self, exchange: F) -> Result<Vec<u8>, UpstreamError>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = io::Result<Vec<u8>>>,
    {
        let mut last = UpstreamError::None;
        for &server in &self.servers {
            match tokio::time::timeout(self.timeout, exchange(server)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => last = UpstreamError::Io(server, e),
                Err(_) => last = UpstreamError::Timeout(server, self.timeout),
            }
        }
        Err(last)
    }
}

/// One query on its own socket (a fresh port per query is what keeps off-path spoofing hard),
/// waiting for the answer with the query's id: anything else arriving is ignored.
async fn udp_exchange(server: SocketAddr, query: &[u8], own: &OwnSockets) -> io::Result<Vec<u8>> {
    let socket = connected_udp(server)?;
    let _held = own.hold(false, socket.local_addr()?);
    socket.send(query).await?;
    loop {
        // Capacity without zeroing: most answers are a few hundred bytes of a possible 64 KiB.
        let mut buf = Vec::with_capacity(65535);
        let n = socket.recv_buf(&mut buf).await?;
        if n >= 12 && buf[..2] == query[..2.min(query.len())] {
            return Ok(buf);
        }
    }
}

/// A UDP socket connected to `server`, so the kernel drops datagrams from anyone else. No
/// explicit bind: connect binds an unbound socket to a random ephemeral port itself, one
/// syscall fewer per forwarded query.
fn connected_udp(server: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&SockAddr::from(server))?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// One query on its own connection, framed with the two-byte length of RFC 1035 4.2.2.
async fn tcp_exchange(server: SocketAddr, query: &[u8], own: &OwnSockets) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query over 64 KiB"))?;
    let mut stream = TcpStream::connect(server).await?;
    let _held = own.hold(true, stream.local_addr()?);
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let n = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(n)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_upstream_query_gets_its_own_connected_port() {
        let server: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        let a = connected_udp(server).unwrap();
        let b = connected_udp(server).unwrap();
        assert_eq!(a.peer_addr().unwrap(), server);
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        assert!(pa != 0 && pb != 0 && pa != pb, "{pa} {pb}");
    }

    #[test]
    fn resolv_conf_as_kubernetes_writes_it() {
        let text = "# generated by the kubelet\n\
                    search sample.svc.cluster.local svc.cluster.local cluster.local\n\
                    nameserver 10.96.0.10\n\
                    nameserver fd00::10\n\
                    nameserver fe80::1%eth0\n\
                    options ndots:5\n";
        let rc = ResolvConf::parse(text);
        assert_eq!(
            rc.nameservers,
            vec![
                "10.96.0.10:53".parse().expect("addr"),
                "[fd00::10]:53".parse().expect("addr")
            ]
        );
        assert_eq!(
            rc.search,
            [
                "sample.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(ResolvConf::parse("domain corp.\n").search, ["corp"]);
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    }

    #[tokio::test]
    async fn udp_waits_for_its_own_answer_and_tcp_frames() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.expect("recv");
            let mut stale = buf[..n].to_vec();
            stale[0] ^= 0xff;
            server.send_to(&stale, from).await.expect("send");
            server.send_to(&buf[..n], from).await.expect("send");
        });
        let up = Upstreams::new(vec![addr], Duration::from_secs(5));
        let query = [0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(up.udp(&query).await.expect("answer"), query);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let n = s.read_u16().await.expect("len");
            let mut q = vec![0u8; usize::from(n)];
            s.read_exact(&mut q).await.expect("query");
            s.write_all(&[0, 12]).await.expect("len");
            s.write_all(&q).await.expect("answer");
        });
        let up = Upstreams::new(vec![addr], Duration::from_secs(5));
        assert_eq!(up.tcp(&query).await.expect("answer"), query);
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_the_next_answers() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (silent_addr, echo_addr) = (
            silent.local_addr().expect("addr"),
            echo.local_addr().expect("addr"),
        );
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = echo.recv_from(&mut buf).await.expect("recv");
            echo.send_to(&buf[..n], from).await.expect("send");
        });
        let timeout = Duration::from_millis(200);
        let query = [1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let only_silent = Upstreams::new(vec![silent_addr], timeout);
        assert!(matches!(
            only_silent.udp(&query).await,
            Err(UpstreamError::Timeout(a, _)) if a == silent_addr
        ));
        let both = Upstreams::new(vec![silent_addr, echo_addr], timeout);
        assert_eq!(both.udp(&query).await.expect("the second answers"), query);
        drop(silent);
    }
}
