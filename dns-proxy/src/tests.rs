//! The proxy on real loopback sockets: its limits, its loop guard and its status port. Tests
//! with timeouts run on paused time: a timeout passes as soon as nothing else can happen, so
//! they wait for no real clock, and a limit that failed to act hangs into the test's own
//! deadline instead of passing.

use super::*;
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use meshfed_model::admin::AdminClient;
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const LOCAL: &str = "local.sample.svc.cluster.local.";
/// Longer than any test needs: reaching it means a limit did not act.
const DEADLINE: Duration = Duration::from_secs(600);

fn config(upstreams: Vec<SocketAddr>, limits: Limits) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        status: Some("127.0.0.1:0".parse().expect("addr")),
        xds: None,
        identity: Identity::default(),
        upstreams: Upstreams::new(upstreams, Duration::from_secs(1)),
        scope: names::Scope::kubernetes("sample", "cluster.local", &[]),
        access: Access::default(),
        limits,
    }
}

struct Running {
    dns: SocketAddr,
    admin: SocketAddr,
    status: SocketAddr,
    table: Table,
}

/// Binds and runs a proxy (until the test's runtime ends), with `local` in its table.
async fn start(config: Config) -> Running {
    let proxy = DnsProxy::bind(config).await.expect("bind");
    let running = Running {
        dns: proxy.local_addr().expect("dns"),
        admin: proxy.admin_addr().expect("admin"),
        status: proxy.status_addr().expect("status"),
        table: proxy.table(),
    };
    tokio::spawn(proxy.run(std::future::pending()));
    running
}

fn set_local(table: &Table) {
    let info = NameInfo {
        ips: vec!["10.96.0.9".into()],
        registry: "Kubernetes".into(),
        shortname: "local".into(),
        namespace: "sample".into(),
        ..Default::default()
    };
    table.set(&BTreeMap::from([(
        LOCAL.trim_end_matches('.').to_string(),
        info,
    )]));
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

/// A query in flight holds the one place; another to forward, over UDP or TCP, gets SERVFAIL
/// at once and never reaches the upstream; once the first is answered, forwarding resumes.
#[tokio::test(start_paused = true)]
async fn forwards_in_flight_are_capped_over_udp_and_tcp_together() {
    let upstream = udp_client().await;
    let limits = Limits {
        max_forwards_in_flight: 1,
        ..Limits::default()
    };
    let mut cfg = config(vec![upstream.local_addr().expect("addr")], limits);
    cfg.upstreams.timeout = DEADLINE;
    let p = start(cfg).await;
    let overloaded = |p: &str| {
        metric(&format!(
            "meshfed_dns_requests_total{{protocol=\"{p}\",outcome=\"overloaded\"}}"
        ))
    };
    let before = (overloaded("udp"), overloaded("tcp"));

    let first = udp_client().await;
    first
        .send_to(&query(1, "a.example.test."), p.dns)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let (n, relay) = upstream.recv_from(&mut buf).await.expect("forwarded");
    let held = buf[..n].to_vec();

    let second = udp_client().await;
    second
        .send_to(&query(2, "b.example.test."), p.dns)
        .await
        .expect("send");
    let answer = timeout(Duration::from_secs(1), udp_answer(&second)).await;
    assert_eq!(rcode(&answer.expect("at once")), ResponseCode::ServFail);
    let mut tcp = TcpStream::connect(p.dns).await.expect("connect");
    tcp_send(&mut tcp, &query(3, "c.example.test.")).await;
    let answer = timeout(Duration::from_secs(1), tcp_answer(&mut tcp)).await;
    assert_eq!(
        rcode(&answer.expect("at once").expect("framed")),
        ResponseCode::ServFail
    );
    assert_eq!(overloaded("udp") - before.0, 1.0);
    assert_eq!(overloaded("tcp") - before.1, 1.0);

    let mut reply = held.clone();
    reply[2] |= 0x80;
    upstream.send_to(&reply, relay).await.expect("answer");
    assert_eq!(udp_answer(&first).await, reply, "the first is relayed");
    second
        .send_to(&query(4, "d.example.test."), p.dns)
        .await
        .expect("send");
    upstream.recv_from(&mut buf).await.expect("forwarded again");
    assert_eq!(buf[..2], [0, 4]);
}

/// A TCP client that sends nothing is closed after the idle timeout, not before.
#[tokio::test(start_paused = true)]
async fn an_idle_tcp_client_is_closed() {
    let idle = Duration::from_secs(10);
    let limits = Limits {
        tcp_idle_timeout: idle,
        ..Limits::default()
    };
    let p = start(config(vec![], limits)).await;
    set_local(&p.table);
    let mut tcp = TcpStream::connect(p.dns).await.expect("connect");
    tcp_send(&mut tcp, &query(7, LOCAL)).await;
    let answer = tcp_answer(&mut tcp).await.expect("answered");
    assert_eq!(rcode(&answer), ResponseCode::NoError);
    let silent_from = Instant::now();
    let mut rest = Vec::new();
    let read = timeout(DEADLINE, tcp.read_to_end(&mut rest)).await;
    assert!(read.expect("closed by the proxy").is_ok() && rest.is_empty());
    let waited = silent_from.elapsed();
    assert!(
        waited >= idle && waited < idle * 2,
        "closed after {waited:?}"
    );
}

/// A TCP client that keeps asking but never reads: once its answers fill the socket buffers
/// the proxy's write stalls, and after the write timeout the connection is dropped.
#[tokio::test(start_paused = true)]
async fn a_tcp_client_that_reads_nothing_is_dropped() {
    let write = Duration::from_secs(3);
    let limits = Limits {
        tcp_idle_timeout: Duration::from_secs(300),
        tcp_write_timeout: write,
        ..Limits::default()
    };
    let p = start(config(vec![], limits)).await;
    set_local(&p.table);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut tcp = socket.connect(p.dns).await.expect("connect");
    let mut burst = Vec::new();
    for id in 0..100u16 {
        let q = query(id, LOCAL);
        burst.extend_from_slice(&u16::try_from(q.len()).expect("small").to_be_bytes());
        burst.extend_from_slice(&q);
    }
    let started = Instant::now();
    let flood = async {
        loop {
            if let Err(e) = tcp.write_all(&burst).await {
                return e;
            }
        }
    };
    let e = timeout(DEADLINE, flood)
        .await
        .expect("the proxy dropped us");
    let waited = started.elapsed();
    assert!(
        waited >= write && waited < Duration::from_secs(300),
        "dropped after {waited:?}: {e}"
    );
}

/// At the connection cap a further client is not served (it waits in the backlog) until an
/// open connection goes; then it is.
#[tokio::test(start_paused = true)]
async fn tcp_connections_are_capped() {
    let idle = Duration::from_secs(10);
    let limits = Limits {
        max_tcp_connections: 2,
        tcp_idle_timeout: idle,
        ..Limits::default()
    };
    let p = start(config(vec![], limits)).await;
    set_local(&p.table);
    let mut held = Vec::new();
    for id in 0..2 {
        let mut tcp = TcpStream::connect(p.dns).await.expect("connect");
        tcp_send(&mut tcp, &query(id, LOCAL)).await;
        tcp_answer(&mut tcp).await.expect("served below the cap");
        held.push(tcp);
    }
    let started = Instant::now();
    let mut third = TcpStream::connect(p.dns)
        .await
        .expect("the backlog takes it");
    tcp_send(&mut third, &query(3, LOCAL)).await;
    let early = timeout(idle / 2, tcp_answer(&mut third)).await;
    assert!(early.is_err(), "served past the connection cap");
    let answer = timeout(DEADLINE, tcp_answer(&mut third)).await;
    assert_eq!(
        rcode(&answer.expect("served").expect("framed")),
        ResponseCode::NoError
    );
    assert!(
        started.elapsed() >= idle,
        "served once an idle one was closed"
    );
    drop(held);
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
    let limits = Limits {
        max_forwards_in_flight: 64,
        ..Limits::default()
    };
    let mut cfg = config(vec![listen, real], limits);
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

/// The status port answers readiness and nothing else; the admin port has the rest.
#[tokio::test]
async fn the_status_port_serves_readiness_only() {
    let p = start(config(vec![], Limits::default())).await;
    let status = AdminClient::new(p.status);
    assert_eq!(status.get("/healthz/ready").await.expect("get").status, 503);
    set_local(&p.table);
    assert!(status.ready().await.expect("get"));
    for path in ["/metrics", "/debug/names"] {
        assert_eq!(status.get(path).await.expect("get").status, 404, "{path}");
    }
    let admin = AdminClient::new(p.admin);
    assert!(admin.ready().await.expect("get"));
    assert!(admin.metrics().await.expect("get").contains("meshfed_dns_"));
    let names = admin.page("/debug/names").await.expect("get");
    assert!(names.contains("local.sample.svc.cluster.local"), "{names}");
}
