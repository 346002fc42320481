use super::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use std::net::Ipv4Addr;
use tokio::net::UdpSocket;

/// What the test DNS server answers for every A query: addresses, or `None` for SERVFAIL.
pub(crate) type Answer = Arc<Mutex<Option<Vec<Ipv4Addr>>>>;

/// A DNS server on a loopback UDP port answering A queries from `answer` with a 1 s TTL
/// (an empty list is NXDOMAIN) and AAAA queries with no records.
pub(crate) async fn dns_server(answer: Answer) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..n]).unwrap();
            let reply = reply(&query, answer.lock().unwrap().clone());
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

fn reply(query: &Message, answer: Option<Vec<Ipv4Addr>>) -> Message {
    let mut r = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    r.metadata.recursion_desired = query.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.queries = query.queries.clone();
    let q = &query.queries[0];
    match answer {
        None => r.metadata.response_code = ResponseCode::ServFail,
        Some(ips) if ips.is_empty() => r.metadata.response_code = ResponseCode::NXDomain,
        Some(ips) if q.query_type() == RecordType::A => {
            for ip in ips {
                r.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(ip))));
            }
        }
        Some(_) => {}
    }
    r
}

pub(crate) fn answer(ips: Option<&[Ipv4Addr]>) -> Answer {
    Arc::new(Mutex::new(ips.map(<[Ipv4Addr]>::to_vec)))
}

/// Waits for the next registry change the names announce, then reads `name`.
async fn next(names: &Arc<GatewayNames>, rx: &mut watch::Receiver<u64>, name: &str) -> Resolution {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a change within 10 s")
        .unwrap();
    names.lookup(name)
}

fn names(server: SocketAddr) -> (Arc<GatewayNames>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    let names = GatewayNames::new(tx, Servers::Udp(vec![server]), Duration::from_secs(1));
    (names, rx)
}

/// Istio (networkGatewayNameCache): a gateway hostname stands for its A records, and is
/// looked up again when the answer's TTL runs out, so a LoadBalancer whose address moves is
/// followed (each change notifies the registry).
#[tokio::test]
async fn a_hostname_resolves_and_follows_its_records_on_their_ttl() {
    let ip = |last| Ipv4Addr::new(192, 0, 2, last);
    let records = answer(Some(&[ip(7), ip(8)]));
    let (names, mut rx) = names(dns_server(records.clone()).await);
    let name = "lb-1.elb.example.com";
    assert_eq!(names.lookup(name), Resolution::Pending);
    assert_eq!(
        next(&names, &mut rx, name).await,
        Resolution::Addresses(vec!["192.0.2.7".into(), "192.0.2.8".into()])
    );
    *records.lock().unwrap() = Some(vec![ip(9)]);
    assert_eq!(
        next(&names, &mut rx, name).await,
        Resolution::Addresses(vec!["192.0.2.9".into()])
    );
}

/// Istio: a failed lookup keeps the addresses the name had ("gracefully retain old addresses
/// in case the DNS server is unavailable"); a name that never resolved has none, with a reason.
#[tokio::test]
async fn dns_failures_keep_the_last_addresses_and_explain_a_name_that_never_resolved() {
    let (names, mut rx) = names(dns_server(answer(None)).await);
    let name = "lb-1.elb.example.com";
    names.lookup(name);
    let Resolution::Failed(reason) = next(&names, &mut rx, name).await else {
        panic!("a name that never resolved must fail");
    };
    assert!(!reason.is_empty());
    let addresses = Ok(vec!["192.0.2.7".to_string()]);
    assert!(names.store(name, addresses));
    assert!(!names.store(name, Err("SERVFAIL".into())), "kept");
    assert_eq!(
        names.lookup(name),
        Resolution::Addresses(vec!["192.0.2.7".into()])
    );
}

/// Istio: a name without records leaves its gateways with no address (they are dropped).
#[tokio::test]
async fn a_name_with_no_records_has_no_address() {
    let (names, mut rx) = names(dns_server(answer(Some(&[]))).await);
    names.lookup("gone.example.com");
    assert_eq!(
        next(&names, &mut rx, "gone.example.com").await,
        Resolution::Failed("it has no A or AAAA records".into())
    );
}

/// Istio's cleanupWatches: a name no gateway uses any more is no longer looked up.
#[tokio::test]
async fn names_no_longer_wanted_are_forgotten() {
    let (names, _rx) = names(dns_server(answer(Some(&[Ipv4Addr::LOCALHOST]))).await);
    names.lookup("a.example.com");
    names.lookup("b.example.com");
    names.retain(&["b.example.com".to_string()].into_iter().collect());
    let kept: Vec<String> = names.lookup_keys();
    assert_eq!(kept, ["b.example.com"]);
}

/// Service status is remote input: the names resolved at once are capped, so a cluster that
/// publishes thousands of gateway hostnames cannot start thousands of lookups; a name past
/// the cap fails with a reason, and is taken once another is forgotten.
#[tokio::test]
async fn the_names_resolved_at_once_are_capped() {
    let (names, _rx) = names(dns_server(answer(Some(&[Ipv4Addr::LOCALHOST]))).await);
    for i in 0..MAX_NAMES {
        names.lookup(&format!("gw{i}.example.com"));
    }
    let refused = names.lookup("one-more.example.com");
    assert!(
        matches!(&refused, Resolution::Failed(why) if why.contains("256")),
        "{refused:?}"
    );
    assert_eq!(names.lookup_keys().len(), MAX_NAMES);
    names.retain(&["gw0.example.com".to_string()].into_iter().collect());
    assert_eq!(names.lookup("one-more.example.com"), Resolution::Pending);
}

impl GatewayNames {
    fn lookup_keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}
