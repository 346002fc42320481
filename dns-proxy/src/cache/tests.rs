use super::*;
use crate::respond::tests::names;
use crate::respond::{Outcome, decide};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RecordType};

#[derive(Clone, Copy)]
struct Ask {
    id: u16,
    rd: bool,
    edns: Option<u16>,
}

const fn ask(id: u16, rd: bool, edns: Option<u16>) -> Ask {
    Ask { id, rd, edns }
}

fn query(name: &str, qtype: RecordType, ask: Ask) -> Vec<u8> {
    let mut m = Message::new(ask.id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = ask.rd;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(payload) = ask.edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
    }
    m.to_vec().expect("encodes")
}

fn slow(raw: &[u8], names: &Names) -> Vec<u8> {
    match decide(
        raw,
        ([127, 0, 0, 1], 5353).into(),
        Protocol::Udp,
        true,
        Some(names),
    ) {
        Outcome::Local(bytes) => bytes,
        other => panic!("not a local answer: {other:?}"),
    }
}

/// Mixed case, as a 0x20 client sends it.
fn shout(name: &str, seed: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + seed).is_multiple_of(3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn a_kept_answer_is_the_answer_the_query_would_get_byte_for_byte() {
    let names = Arc::new(names());
    let mut cache = AnswerCache::default();
    let hosts = [
        "helloworld.sample.svc.cluster.local.",
        "helloworld.sample.",
        "helloworld.",
        "helloworld.sample.sample.svc.cluster.local.",
        "local.sample.svc.cluster.local.",
    ];
    let asks = [
        ask(0, true, None),
        ask(0, false, None),
        ask(0, true, Some(1232)),
        ask(0, true, Some(4096)),
    ];
    for host in hosts {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            for ask in asks {
                let first = query(host, qtype, Ask { id: 1, ..ask });
                cache.put(&first, &slow(&first, &names), &names);
                for (id, seed) in [(2, 0), (0xBEEF, 1), (65535, 2)] {
                    let again = query(&shout(host, seed), qtype, Ask { id, ..ask });
                    assert_eq!(
                        cache.get(&again, &names).as_deref(),
                        Some(slow(&again, &names).as_slice()),
                        "{host} {qtype} id {id} rd {} edns {:?}",
                        ask.rd,
                        ask.edns
                    );
                }
            }
        }
    }
    assert_eq!(cache.len(), hosts.len() * 3 * asks.len());
}

#[test]
fn flags_edns_and_type_make_other_questions() {
    let names = Arc::new(names());
    let mut cache = AnswerCache::default();
    let host = "helloworld.sample.svc.cluster.local.";
    let plain = ask(9, true, None);
    let raw = query(host, RecordType::A, plain);
    cache.put(&raw, &slow(&raw, &names), &names);
    for other in [
        query(host, RecordType::A, Ask { rd: false, ..plain }),
        query(
            host,
            RecordType::A,
            Ask {
                edns: Some(1232),
                ..plain
            },
        ),
        query(host, RecordType::AAAA, plain),
        query("local.sample.svc.cluster.local.", RecordType::A, plain),
    ] {
        assert!(cache.get(&other, &names).is_none());
    }
}

#[test]
fn a_new_table_empties_the_cache() {
    let (old, new) = (Arc::new(names()), Arc::new(names()));
    let mut cache = AnswerCache::default();
    let raw = query("helloworld.", RecordType::A, ask(1, true, None));
    cache.put(&raw, &slow(&raw, &old), &old);
    assert!(cache.get(&raw, &old).is_some());
    assert!(
        cache.get(&raw, &new).is_none(),
        "answered from another table"
    );
    assert!(cache.is_empty());
}

#[test]
fn only_plain_whole_questions_are_kept() {
    let names = Arc::new(names());
    let mut cache = AnswerCache::default();
    let raw = query("helloworld.", RecordType::A, ask(1, true, None));
    let answer = slow(&raw, &names);
    // Cut inside the question, or a name that is a compression pointer.
    cache.put(&raw[..raw.len() - 2], &answer, &names);
    let mut pointer = raw[..12].to_vec();
    pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    cache.put(&pointer, &answer, &names);
    // An answer whose question is not the query's as sent.
    let other = query("local.", RecordType::A, ask(1, true, None));
    cache.put(&other, &answer, &names);
    assert!(cache.is_empty());
    assert!(cache.get(&pointer, &names).is_none());
    assert!(cache.get(&[0u8; 5], &names).is_none());
}
