//! The proxy on real loopback sockets. Tests with timeouts run on paused time: a timeout
//! passes as soon as nothing else can happen, so they wait for no real clock, and a guard
//! that failed to act hangs into the test's own deadline instead of passing.

use super::*;
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longer than any test needs: reaching it means a guard did not act.
const DEADLINE: Duration = Duration::from_secs(600);

fn config(upstreams: Vec<SocketAddr>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        xds: None,
        identity: Identity::default(),
        upstreams: Upstreams::new(upstreams, Duration::from_secs(1)),
        scope: names::Scope::kubernetes("sample", "cluster.local", &[]),
        access: Access::default(),
    }
}

struct Running {
    dns: SocketAddr,
}

/// Binds and runs a proxy (until the test's runtime ends).
async fn start(config: Config) -> Running {
    let proxy = DnsProxy::bind(config).await.expect("bind");
    let running = Running {
        dns: proxy.local_addr().expect("dns"),
    };
    tokio::spawn(proxy.run(std::future::pending()));
    running
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("encodes")
}

fn rcode(answer: &[u8]) -> ResponseCode {
    Message::from_vec(answer)
        .expect("an answer")
        .metadata
        .response_code
}

async fn udp_client() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind")
}

async fn udp_answer(client: &tokio::net::UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = client.recv(&mut buf).await.expect("answer");
    buf.truncate(n);
    buf
}

async fn tcp_send(stream: &mut TcpStream, raw: &[u8]) {
    let len = u16::try_from(raw.len()).expect("small");
    stream.write_all(&len.to_be_bytes()).await.expect("len");
    stream.write_all(raw).await.expect("query");
}

async fn tcp_answer(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let n = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(n)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// One `meshfed_dns_*` series' value on this process's /metrics (0 if absent).
fn metric(series: &str) -> f64 {
    let page = meshfed_model::telemetry::prometheus().render();
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An echoing resolver: each UDP or TCP query comes back as its own answer, counted.
async fn echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let udp = Arc::new(udp_client().await);
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).await.expect("tcp");
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            buf[2] |= 0x80;
            let _ = udp.send_to(&buf[..n], from).await;
        }
    });
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut q = tcp_answer(&mut s).await.expect("query");
            q[2] |= 0x80;
            tcp_send(&mut s, &q).await;
        }
    });
    (addr, seen)
}

/// A proxy that is its own first upstream (as through an address no start-time check sees):
/// the query it sends itself is dropped, not forwarded again, and the next upstream answers.
#[tokio::test(start_paused = true)]
async fn a_query_from_our_own_upstream_socket_is_not_forwarded() {
    let free = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let listen = free.local_addr().expect("addr");
    drop(free);
    let (real, seen) = echo().await;
    let mut cfg = config(vec![listen, real]);
    cfg.listen = listen;
    let p = start(cfg).await;
    let loops = metric("meshfed_dns_forwarding_loops_total");

    let client = udp_client().await;
    let q = query(9, "www.example.test.");
    client.send_to(&q, p.dns).await.expect("send");
    let answer = timeout(DEADLINE, udp_answer(&client))
        .await
        .expect("answered");
    assert_eq!(
        rcode(&answer),
        ResponseCode::NoError,
        "the real upstream's answer"
    );
    assert_eq!(answer[3..], q[3..]);
    let mut tcp = TcpStream::connect(p.dns).await.expect("connect");
    tcp_send(&mut tcp, &q).await;
    let answer = timeout(DEADLINE, tcp_answer(&mut tcp))
        .await
        .expect("answered");
    assert_eq!(rcode(&answer.expect("framed")), ResponseCode::NoError);

    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one each"
    );
    assert!(metric("meshfed_dns_forwarding_loops_total") - loops >= 2.0);
}
