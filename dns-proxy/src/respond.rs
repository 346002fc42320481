//! What to do with one DNS message: answer it from the mesh's names, refuse it, reject it as
//! malformed, or leave it to the upstream resolvers. Pure (no I/O) so every rule is tested.

use crate::names::{Found, Host, Names};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Istio's DNS proxy answers with 30 s: short enough to follow a move between clusters.
const TTL: u32 = 30;

/// The largest UDP answer without EDNS (RFC 1035).
const UDP_PLAIN_MAX: usize = 512;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A mesh name: the answer, ready to send.
    Local(Vec<u8>),
    /// Not ours (or no table yet): the upstream resolvers decide.
    Forward,
    /// A client that may not use this proxy.
    Refused(Vec<u8>),
    /// A message that parses as far as its header only.
    FormErr(Vec<u8>),
    /// Not even a header, or a response sent to us (reflection): nothing to say.
    Drop,
}

/// Decides what to do with `raw`, received from `src` over `protocol`; `names` is None until
/// the first NameTable arrives, and then everything is forwarded.
pub fn decide(
    raw: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    allowed: bool,
    names: Option<&Names>,
) -> Outcome {
    let Ok(header) = Header::read(&mut BinDecoder::new(raw)) else {
        return Outcome::Drop;
    };
    if header.metadata.message_type == MessageType::Response {
        return Outcome::Drop;
    }
    let request = match Request::from_bytes(raw.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => return Outcome::FormErr(error(&header.metadata, ResponseCode::FormErr)),
    };
    if !allowed {
        return Outcome::Refused(error(&header.metadata, ResponseCode::Refused));
    }
    let [query] = request.queries.queries() else {
        return Outcome::Forward;
    };
    if request.metadata.op_code != OpCode::Query || query.query_class() != DNSClass::IN {
        return Outcome::Forward;
    }
    let Some(found) = names.and_then(|n| n.lookup(query.name())) else {
        return Outcome::Forward;
    };
    let owner = Name::from(query.name().clone());
    let records = answers(owner, found, query.query_type());
    match encode(&request, &records, protocol) {
        Some(bytes) => Outcome::Local(bytes),
        None => Outcome::Forward,
    }
}

/// The answer records: a CNAME for a search expansion, then the addresses of the asked type.
/// A mesh name with no address of that type gets none (NOERROR, empty), never NXDOMAIN.
fn answers(owner: Name, found: Found<'_>, qtype: RecordType) -> Vec<Record> {
    let (host, mut out, owner) = match found {
        Found::Direct(h) => (h, Vec::new(), owner),
        Found::Alias(h) => {
            let cname = Record::from_rdata(owner, TTL, RData::CNAME(CNAME(h.name.clone())));
            (h, vec![cname], h.name.clone())
        }
    };
    out.extend(addresses(host, &owner, qtype));
    out
}

fn addresses(host: &Host, owner: &Name, qtype: RecordType) -> Vec<Record> {
    let record = |data| Record::from_rdata(owner.clone(), TTL, data);
    match qtype {
        RecordType::A => rotated(&host.v4)
            .map(|ip| record(RData::A(A(*ip))))
            .collect(),
        RecordType::AAAA => rotated(&host.v6)
            .map(|ip| record(RData::AAAA(AAAA(*ip))))
            .collect(),
        _ => vec![],
    }
}

/// Where the next answer with several addresses starts; counted only for those.
static TURN: AtomicUsize = AtomicUsize::new(0);

/// The addresses, each answer starting one further on: a headless Service's pods take turns
/// being first (what most clients connect to), as Istio's agent shuffles its answers "so for
/// things like headless services we can do DNS-LB" and kube-dns (CoreDNS `loadbalance`) does.
fn rotated<T>(all: &[T]) -> impl Iterator<Item = &T> {
    let start = match all.len() {
        0 | 1 => 0,
        n => TURN.fetch_add(1, Ordering::Relaxed) % n,
    };
    all.iter().cycle().skip(start).take(all.len())
}

/// Whether an answer may be kept and sent again as it is: not when it lists several addresses
/// of one type, which [`rotated`] turns for every query.
pub fn reusable(answer: &[u8]) -> bool {
    let Ok(m) = Message::from_vec(answer) else {
        return false;
    };
    let count = |t: RecordType| m.answers.iter().filter(|r| r.record_type() == t).count();
    count(RecordType::A) <= 1 && count(RecordType::AAAA) <= 1
}

/// Encodes an authoritative answer; None if it cannot be (then upstream answers instead).
fn encode(request: &Request, records: &[Record], protocol: Protocol) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.recursion_available = true;
    let edns = request.edns.as_ref().map(|asked| {
        let mut e = Edns::new();
        e.set_max_payload(asked.max_payload().max(UDP_PLAIN_MAX as u16));
        e
    });
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        records.iter(),
        [],
        [],
        [],
    );
    let bytes = emit(response)?;
    // A handful of addresses always fits; should a table ever hold more than the client can
    // take over UDP, send the question back truncated so it asks again over TCP.
    let limit = request.edns.as_ref().map_or(UDP_PLAIN_MAX, |e| {
        usize::from(e.max_payload()).max(UDP_PLAIN_MAX)
    });
    if protocol == Protocol::Udp && bytes.len() > limit {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.truncation = true;
        metadata.authoritative = true;
        metadata.recursion_available = true;
        return emit(
            MessageResponseBuilder::new(&request.queries, None).build_no_records(metadata),
        );
    }
    Some(bytes)
}

/// An error answer that echoes only the header (the question may be what failed to parse).
pub fn error(request: &Metadata, code: ResponseCode) -> Vec<u8> {
    let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
        return Vec::new();
    };
    let mut metadata = Metadata::response_from_request(request);
    metadata.recursion_available = true;
    metadata.response_code = code;
    emit(MessageResponseBuilder::new(&queries, None).build_no_records(metadata)).unwrap_or_default()
}

/// SERVFAIL for a request whose upstream failed, echoing its question.
pub fn servfail(raw: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(raw)).ok()?;
    let request = Request::from_bytes(raw.to_vec(), ([0, 0, 0, 0], 0).into(), Protocol::Udp);
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.recursion_available = true;
    metadata.response_code = ResponseCode::ServFail;
    match &request {
        Ok(r) => emit(MessageResponseBuilder::new(&r.queries, None).build_no_records(metadata)),
        Err(_) => Some(error(&header.metadata, ResponseCode::ServFail)),
    }
}

fn emit<'q, 'a>(
    response: MessageResponse<
        'q,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(UDP_PLAIN_MAX);
    response
        .destructive_emit(&mut BinEncoder::new(&mut buf))
        .ok()?;
    Some(buf)
}

#[cfg(test)]
pub(crate) mod tests;
