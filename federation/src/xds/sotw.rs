//! State-of-the-world ADS: per type, the client names what it wants (or everything) and every
//! response carries the whole subscribed set. A request answering the last response's nonce
//! ACKs it (or NACKs it with `error_detail`); one with an older nonce is stale and ignored,
//! unless nothing of its type was sent on this stream yet: then the nonce is the previous
//! stream's (the client reconnected) and the request is answered.

use super::generate::{Kind, Push, Resources, Subscription, name_table};
use super::node::Proxy;
use crate::metrics;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
struct TypeState {
    sub: Subscription,
    /// Nonce of the last response; requests naming another one are stale.
    nonce: String,
    /// Versions of what the last response held, to tell whether a push changes anything.
    sent: BTreeMap<Arc<str>, u64>,
    acked: String,
    /// The push the last response was built from (0: none).
    base: u64,
}

pub struct Sotw {
    pub proxy: Proxy,
    types: HashMap<Kind, TypeState>,
    nonces: u64,
}

impl Sotw {
    pub fn new(proxy: Proxy) -> Sotw {
        Sotw {
            proxy,
            types: HashMap::new(),
            nonces: 0,
        }
    }

    /// Handles one request; returns the response to send, if any.
    pub fn request(&mut self, req: &DiscoveryRequest, push: &Push) -> Option<DiscoveryResponse> {
        let Some(kind) = Kind::from_url(&req.type_url) else {
            tracing::debug!(node = %self.proxy.id, type_url = %req.type_url, "ignoring unknown type");
            return None;
        };
        let state = self.types.entry(kind).or_default();
        // Nothing sent for this type on this stream: whatever nonce the request carries is
        // from an earlier stream (a reconnect), so it is a request to answer, never stale.
        let fresh = state.nonce.is_empty();
        if !fresh && !req.response_nonce.is_empty() && req.response_nonce != state.nonce {
            metrics::stale(kind.label());
            return None;
        }
        if let Some(err) = &req.error_detail {
            metrics::nack(kind.label());
            tracing::warn!(node = %self.proxy.id, r#type = kind.label(), version = %req.version_info,
                error = %super::generate::short(&err.message), "NACK: the client keeps its last good version");
            return None;
        }
        let sub = subscription(kind, &req.resource_names);
        let first = fresh || req.response_nonce.is_empty();
        if !first && sub == state.sub {
            state.acked = req.version_info.clone();
            return None;
        }
        state.sub = sub;
        Some(self.respond(kind, push))
    }

    pub fn subscriptions(&self) -> usize {
        self.types
            .values()
            .map(|s| s.sub.names.len())
            .max()
            .unwrap_or(0)
    }

    /// State of the world cannot be split: a response past `max` is refused (the client keeps
    /// what it has) and said so, never cut.
    pub fn fit(&mut self, resp: DiscoveryResponse, max: usize) -> Vec<DiscoveryResponse> {
        let size = prost::Message::encoded_len(&resp);
        if size <= max {
            return vec![resp];
        }
        let kind = Kind::from_url(&resp.type_url).map_or("unknown", |k| k.label());
        metrics::oversized(kind);
        tracing::error!(node = %self.proxy.id, r#type = kind, bytes = size, limit = max,
            "response over the xDS message limit not sent; use delta xDS (it is split)");
        Vec::new()
    }

    /// Responses for every subscribed type whose resources changed in `push`.
    pub fn push(&mut self, push: &Push) -> Vec<DiscoveryResponse> {
        let mut kinds: Vec<Kind> = self.types.keys().copied().collect();
        kinds.sort();
        let mut out = Vec::new();
        for kind in kinds {
            if self.changed(kind, push) {
                out.push(self.respond(kind, push));
            }
        }
        out
    }

    /// Whether `kind`'s subscribed resources differ from the last response: from the push's
    /// precomputed changes when the last response came from the push before, else by
    /// comparing every version.
    fn changed(&mut self, kind: Kind, push: &Push) -> bool {
        let Some(state) = self.types.get_mut(&kind) else {
            return false;
        };
        if state.nonce.is_empty() {
            return false;
        }
        let follows = state.base != 0 && state.base + 1 == push.version;
        if let Some(c) = follows
            .then(|| push.changes(&self.proxy, kind, &state.sub))
            .flatten()
        {
            let changed = c.updated.iter().any(|r| state.sub.wants(&r.name))
                || c.removed
                    .iter()
                    .any(|n| state.sent.contains_key(n.as_str()));
            state.base = push.version;
            return changed;
        }
        let now = push.resources(&self.proxy, kind, &state.sub);
        let changed = versions(&now) != state.sent;
        if !changed {
            state.base = push.version;
        }
        changed
    }

    fn respond(&mut self, kind: Kind, push: &Push) -> DiscoveryResponse {
        let sub = &self.types[&kind].sub;
        let resources = push.resources(&self.proxy, kind, sub);
        self.respond_with(kind, push, resources)
    }

    fn respond_with(&mut self, kind: Kind, push: &Push, resources: Resources) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = format!("{}-{}", push.version, self.nonces);
        let state = self.types.entry(kind).or_default();
        state.nonce = nonce.clone();
        state.sent = versions(&resources);
        state.base = push.version;
        let bodies = if kind == Kind::NameTable {
            vec![name_table(&resources)]
        } else {
            resources.values().map(|r| r.body.clone()).collect()
        };
        metrics::sent(kind.label(), "sotw", resources.len());
        DiscoveryResponse {
            version_info: push.version.to_string(),
            resources: bodies,
            type_url: kind.url().to_string(),
            nonce,
            ..Default::default()
        }
    }
}

fn subscription(kind: Kind, names: &[String]) -> Subscription {
    Subscription {
        wildcard: names.iter().any(|n| n == "*")
            || (names.is_empty() && kind.wildcard_when_empty()),
        names: names.iter().filter(|n| *n != "*").cloned().collect(),
    }
}

fn versions(r: &Resources) -> BTreeMap<Arc<str>, u64> {
    r.values().map(|v| (v.name.clone(), v.hash)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    /// State of the world cannot be split: past the limit the response is refused (the
    /// client keeps what it has), never cut short.
    #[test]
    fn an_oversized_response_is_refused() {
        let mut s = Sotw::new(crate::xds::node::test_sidecar());
        let resp = DiscoveryResponse {
            type_url: Kind::Cluster.url().into(),
            resources: vec![Any {
                type_url: "t".into(),
                value: vec![1; 4000],
            }],
            ..Default::default()
        };
        assert!(s.fit(resp.clone(), 1000).is_empty());
        assert_eq!(s.fit(resp, 1 << 20).len(), 1);
    }

    fn request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            version_info: "1".into(),
            ..Default::default()
        }
    }

    /// Istio (`ShouldRespond`, INIT/RECONNECT): a client that reconnects sends, as its first
    /// request on the new stream, the nonce of the last response of the old one. Nothing was
    /// sent on this stream, so it cannot be stale: it is answered with the current state.
    /// Once answered, a request with another nonce is stale again.
    #[test]
    fn a_reconnect_carrying_an_old_streams_nonce_is_answered() {
        let push = crate::xds::ads::test_push(2, &["a", "b"]);
        let mut s = Sotw::new(crate::xds::node::test_sidecar());
        let cluster = "outbound|80||a.ns.svc.cluster.local";
        let resp = s
            .request(&request(Kind::Endpoint.url(), &[cluster], "1-7"), &push)
            .expect("the reconnect's first request is answered");
        assert_eq!(resp.resources.len(), 1);
        assert_ne!(resp.nonce, "1-7");
        let stale = request(Kind::Endpoint.url(), &[cluster, "other"], "1-7");
        assert!(
            s.request(&stale, &push).is_none(),
            "an old nonce on a used stream is stale"
        );
        let ack = request(Kind::Endpoint.url(), &[cluster], &resp.nonce);
        assert!(s.request(&ack, &push).is_none(), "an ACK is not answered");
        let wildcard = s.request(&request(Kind::Cluster.url(), &[], "1-8"), &push);
        assert_eq!(wildcard.map(|r| r.resources.len()), Some(2), "per type");
    }
}
