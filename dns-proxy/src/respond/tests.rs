use super::*;
use crate::names::Scope;
use hickory_server::proto::op::{Message, Query};
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::BTreeMap;

pub(crate) fn names() -> Names {
    let table: BTreeMap<String, NameInfo> = [
        (
            "helloworld.sample.svc.cluster.local".to_string(),
            NameInfo {
                ips: vec!["240.240.1.2".into(), "2001:2::102".into()],
                registry: "Kubernetes".into(),
                shortname: "helloworld".into(),
                namespace: "sample".into(),
                ..Default::default()
            },
        ),
        (
            "local.sample.svc.cluster.local".to_string(),
            NameInfo {
                ips: vec!["10.96.0.9".into()],
                registry: "Kubernetes".into(),
                shortname: "local".into(),
                namespace: "sample".into(),
                ..Default::default()
            },
        ),
    ]
    .into();
    Names::build(&table, &Scope::kubernetes("sample", "cluster.local", &[]))
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encodes")
}

const SRC: ([u8; 4], u16) = ([127, 0, 0, 1], 5353);

fn ask(raw: &[u8], names: Option<&Names>) -> Outcome {
    decide(raw, SRC.into(), Protocol::Udp, true, names)
}

fn local(raw: &[u8]) -> Message {
    match ask(raw, Some(&names())) {
        Outcome::Local(bytes) => Message::from_vec(&bytes).expect("a valid answer"),
        other => panic!("expected a local answer, got {other:?}"),
    }
}

fn rdata(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn a_remote_only_service_answers_its_vip() {
    let m = local(&query(
        "helloworld.sample.svc.cluster.local.",
        RecordType::A,
    ));
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && m.metadata.recursion_desired);
    assert_eq!(rdata(&m), vec!["240.240.1.2"]);
    assert_eq!(m.answers[0].ttl, TTL);
    assert_eq!(m.queries.len(), 1, "the question is echoed");
}

#[test]
fn aaaa_and_a_local_service_without_v6() {
    let m = local(&query("helloworld.", RecordType::AAAA));
    assert_eq!(rdata(&m), vec!["2001:2::102"]);
    assert_eq!(m.answers[0].name.to_ascii(), "helloworld.");
    let m = local(&query("local.sample.", RecordType::AAAA));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        m.answers.is_empty(),
        "no AAAA: empty NOERROR, never NXDOMAIN"
    );
    let m = local(&query("local.sample.", RecordType::TXT));
    assert!(m.answers.is_empty());
}

#[test]
fn a_search_expansion_gets_a_cname_then_the_address() {
    let m = local(&query(
        "helloworld.sample.sample.svc.cluster.local.",
        RecordType::A,
    ));
    assert_eq!(
        rdata(&m),
        vec!["helloworld.sample.svc.cluster.local.", "240.240.1.2"]
    );
    assert_eq!(
        m.answers[1].name.to_ascii(),
        "helloworld.sample.svc.cluster.local."
    );
}

#[test]
fn other_names_and_everything_before_the_first_table_go_upstream() {
    assert_eq!(
        ask(&query("example.com.", RecordType::A), Some(&names())),
        Outcome::Forward
    );
    assert_eq!(
        ask(
            &query("helloworld.sample.svc.cluster.local.", RecordType::A),
            None
        ),
        Outcome::Forward
    );
}

#[test]
fn edns_is_answered_with_edns() {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("helloworld.").expect("name"),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let answer = local(&m.to_vec().expect("encodes"));
    assert_eq!(answer.edns.map(|e| e.max_payload()), Some(1232));
}

#[test]
fn strangers_are_refused() {
    let raw = query("helloworld.", RecordType::A);
    let Outcome::Refused(bytes) = decide(&raw, SRC.into(), Protocol::Udp, false, Some(&names()))
    else {
        panic!("a client outside the allowed networks is refused");
    };
    let m = Message::from_vec(&bytes).expect("valid");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(m.metadata.id, 4242);
}

#[test]
fn malformed_messages_are_dropped_or_formerr() {
    let n = names();
    assert_eq!(ask(&[], Some(&n)), Outcome::Drop);
    assert_eq!(ask(&[1, 2, 3], Some(&n)), Outcome::Drop);
    // A header promising one question, then garbage.
    let mut raw = query("helloworld.", RecordType::A);
    raw.truncate(15);
    let Outcome::FormErr(bytes) = ask(&raw, Some(&n)) else {
        panic!("a message with a good header and a broken body is FORMERR");
    };
    let m = Message::from_vec(&bytes).expect("valid");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 4242);
    // A response sent to us is never answered (no reflection loops).
    let mut resp = Message::new(1, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(
        Name::from_ascii("x.").expect("name"),
        RecordType::A,
    ));
    assert_eq!(
        ask(&resp.to_vec().expect("encodes"), Some(&n)),
        Outcome::Drop
    );
}

#[test]
fn servfail_echoes_the_question() {
    let raw = query("example.com.", RecordType::A);
    let m = Message::from_vec(&servfail(&raw).expect("an answer")).expect("valid");
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
}

#[test]
fn an_answer_too_big_for_udp_is_truncated() {
    let ips: Vec<String> = (0..100).map(|i| format!("10.1.0.{i}")).collect();
    let table: BTreeMap<String, NameInfo> = [(
        "big.sample.svc.cluster.local".to_string(),
        NameInfo {
            ips,
            registry: "Kubernetes".into(),
            shortname: "big".into(),
            namespace: "sample".into(),
            ..Default::default()
        },
    )]
    .into();
    let n = Names::build(&table, &Scope::kubernetes("sample", "cluster.local", &[]));
    let raw = query("big.sample.svc.cluster.local.", RecordType::A);
    let Outcome::Local(bytes) = decide(&raw, SRC.into(), Protocol::Udp, true, Some(&n)) else {
        panic!("local");
    };
    let m = Message::from_vec(&bytes).expect("valid");
    assert!(m.metadata.truncation && m.answers.is_empty() && bytes.len() <= 512);
    let Outcome::Local(bytes) = decide(&raw, SRC.into(), Protocol::Tcp, true, Some(&n)) else {
        panic!("local");
    };
    let m = Message::from_vec(&bytes).expect("valid");
    assert_eq!(m.answers.len(), 100, "TCP carries the whole answer");
}

/// Istio (pkg/dns/server/name_table.go): a headless Service's name holds every ready pod's
/// address, and the agent answers them all, shuffled "so for things like headless services
/// we can do DNS-LB" (kube-dns, CoreDNS `loadbalance`, rotates too): each answer lists every
/// pod, and successive answers start with another one. Such answers are never kept whole
/// (`reusable`), or the cache would freeze one order.
#[test]
fn a_headless_name_answers_every_pod_in_turns() {
    let pods = ["10.10.0.7", "10.10.0.8", "10.10.0.9"];
    let table: BTreeMap<String, NameInfo> = [(
        "mysql.db.svc.cluster.local".to_string(),
        NameInfo {
            ips: pods.iter().map(|p| p.to_string()).collect(),
            registry: "Kubernetes".into(),
            shortname: "mysql".into(),
            namespace: "db".into(),
            ..Default::default()
        },
    )]
    .into();
    let n = Names::build(&table, &Scope::kubernetes("db", "cluster.local", &[]));
    let mut firsts = Vec::new();
    for _ in 0..pods.len() {
        let raw = query("mysql.db.svc.cluster.local.", RecordType::A);
        let Outcome::Local(bytes) = ask(&raw, Some(&n)) else {
            panic!("a mesh name is answered locally");
        };
        assert!(!reusable(&bytes), "an answer that turns is not kept");
        let mut got = rdata(&Message::from_vec(&bytes).expect("an answer"));
        firsts.push(got[0].clone());
        got.sort();
        assert_eq!(got, pods, "every ready pod in every answer");
    }
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), pods.len(), "each pod takes its turn first");
    let single = query("local.sample.svc.cluster.local.", RecordType::A);
    let Outcome::Local(bytes) = ask(&single, Some(&names())) else {
        panic!("local answer");
    };
    assert!(reusable(&bytes), "one address: kept as it is");
}
