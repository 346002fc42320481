//! Incremental (delta) ADS: the client subscribes and unsubscribes names (or `*`), tells on
//! reconnect which versions it holds, and each response carries only what changed plus the
//! names that went away (and names just subscribed to that do not exist). The first request
//! of a type on a stream is always answered, whatever nonce it carries.

use super::generate::{Changes, Kind, Push, Resource, Resources, Subscription, parse_version};
use super::node::Proxy;
use crate::metrics;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Default)]
struct TypeState {
    sub: Subscription,
    /// What the client holds: name -> version hash (names shared with the resources).
    held: BTreeMap<Arc<str>, u64>,
    /// Names the client said it held when it (re)connected and this stream has not sent:
    /// while a push is not complete (a cluster has not synced), their absence may only mean
    /// the controller restarted and has not seen them yet, so they are not removed.
    resumed: BTreeSet<Arc<str>>,
    /// The push whose resources `held` matches exactly (0: none), so the next push's
    /// precomputed changes can be sent without comparing every resource.
    base: u64,
}

pub struct Delta {
    pub proxy: Proxy,
    types: HashMap<Kind, TypeState>,
    nonces: u64,
}

impl Delta {
    pub fn new(proxy: Proxy) -> Delta {
        Delta {
            proxy,
            types: HashMap::new(),
            nonces: 0,
        }
    }

    pub fn request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        push: &Push,
    ) -> Option<DeltaDiscoveryResponse> {
        let Some(kind) = Kind::from_url(&req.type_url) else {
            tracing::debug!(node = %self.proxy.id, type_url = %req.type_url, "ignoring unknown type");
            return None;
        };
        let first = !self.types.contains_key(&kind);
        let state = self.types.entry(kind).or_default();
        if let Some(err) = &req.error_detail {
            metrics::nack(kind.label());
            tracing::warn!(node = %self.proxy.id, r#type = kind.label(), nonce = %req.response_nonce,
                error = %super::generate::short(&err.message), "NACK: the client keeps its last good version");
        }
        if first {
            state.held = req
                .initial_resource_versions
                .iter()
                .map(|(n, v)| (Arc::from(n.as_str()), parse_version(v)))
                .collect();
            state.resumed = state.held.keys().cloned().collect();
            state.sub.wildcard =
                req.resource_names_subscribe.is_empty() && kind.wildcard_when_empty();
        }
        let mut changed = false;
        let mut asked = Vec::new();
        for name in &req.resource_names_subscribe {
            changed = true;
            if name == "*" {
                state.sub.wildcard = true;
            } else {
                state.sub.names.insert(name.clone());
                asked.push(name.as_str());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.sub.wildcard = false;
                state.base = 0; // what it holds beyond its names goes at the next compare
            } else {
                state.sub.names.remove(name);
                state.held.remove(name.as_str());
                state.resumed.remove(name.as_str());
            }
        }
        if !first && !changed {
            // An ACK, a NACK or an unsubscribe: nothing new to send, and what the client holds
            // still matches `base`, so the next push can send its precomputed changes.
            return None;
        }
        // New names are compared in full (the push at hand may be newer than `base`, and
        // its changes list only what changed since the one before).
        state.base = 0;
        let resp = self.diff(kind, push, &asked);
        // The first answer is always sent, even empty, so the client stops waiting.
        if first {
            resp.or_else(|| Some(self.empty(kind, push)))
        } else {
            resp
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.types
            .values()
            .map(|s| s.sub.names.len())
            .max()
            .unwrap_or(0)
    }

    /// `resp` in parts of at most `max` bytes: resources spread over several responses, the
    /// removals in the last (a delta response may carry any part of the changes).
    pub fn fit(&mut self, resp: DeltaDiscoveryResponse, max: usize) -> Vec<DeltaDiscoveryResponse> {
        if prost::Message::encoded_len(&resp) <= max {
            return vec![resp];
        }
        metrics::oversized(Kind::from_url(&resp.type_url).map_or("unknown", |k| k.label()));
        let empty = DeltaDiscoveryResponse {
            type_url: resp.type_url.clone(),
            system_version_info: resp.system_version_info.clone(),
            ..Default::default()
        };
        let mut parts = vec![empty.clone()];
        let mut size = 0;
        for r in resp.resources {
            // A field's tag and length prefix: at most 11 bytes over the resource itself.
            let n = prost::Message::encoded_len(&r) + 11;
            if size + n > max && size > 0 {
                parts.push(empty.clone());
                size = 0;
            }
            size += n;
            if let Some(p) = parts.last_mut() {
                p.resources.push(r);
            }
        }
        if let Some(last) = parts.last_mut() {
            last.removed_resources = resp.removed_resources;
        }
        for p in &mut parts {
            self.nonces += 1;
            p.nonce = format!("{}-{}", p.system_version_info, self.nonces);
        }
        parts
    }

    pub fn push(&mut self, push: &Push) -> Vec<DeltaDiscoveryResponse> {
        let mut kinds: Vec<Kind> = self.types.keys().copied().collect();
        kinds.sort();
        kinds
            .into_iter()
            .filter_map(|k| self.diff(k, push, &[]))
            .collect()
    }

    /// What the client lacks or holds in an older version, and what it holds that is gone;
    /// names just `asked` for that do not exist are listed as removed too, so the client
    /// knows at once rather than when its does-not-exist timer fires (Istio lists every
    /// watched name it did not generate; gRPC waits 15 s otherwise).
    fn diff(&mut self, kind: Kind, push: &Push, asked: &[&str]) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(&kind)?;
        // A complete push settles resumed names the client still holds: compare everything.
        let settles = push.complete && !state.resumed.is_empty();
        let follows = state.base != 0 && state.base + 1 == push.version && !settles;
        let changes = if follows {
            push.changes(&self.proxy, kind, &state.sub)
        } else {
            None
        };
        let (resources, removed) = match changes {
            Some(c) => changes_for(state, &c),
            None => {
                let now = push.resources(&self.proxy, kind, &state.sub);
                full_diff(state, &now, push.complete)
            }
        };
        let removed = absent(state, asked, removed);
        state.base = push.version;
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        metrics::sent(kind.label(), "delta", resources.len());
        self.nonces += 1;
        Some(DeltaDiscoveryResponse {
            system_version_info: push.version.to_string(),
            resources,
            removed_resources: removed,
            type_url: kind.url().to_string(),
            nonce: format!("{}-{}", push.version, self.nonces),
            ..Default::default()
        })
    }

    fn empty(&mut self, kind: Kind, push: &Push) -> DeltaDiscoveryResponse {
        self.nonces += 1;
        DeltaDiscoveryResponse {
            system_version_info: push.version.to_string(),
            type_url: kind.url().to_string(),
            nonce: format!("{}-{}", push.version, self.nonces),
            ..Default::default()
        }
    }
}

fn resource(r: &Resource) -> DeltaResource {
    DeltaResource {
        name: r.name.to_string(),
        version: r.version(),
        resource: Some(r.body.clone()),
        ..Default::default()
    }
}

/// The client holds exactly the previous push: send what changed there, if subscribed.
fn changes_for(state: &mut TypeState, c: &Changes) -> (Vec<DeltaResource>, Vec<String>) {
    let mut resources = Vec::new();
    for r in c.updated.iter().filter(|r| state.sub.wants(&r.name)) {
        state.held.insert(r.name.clone(), r.hash);
        resources.push(resource(r));
    }
    let removed = c
        .removed
        .iter()
        .filter(|n| state.held.remove(n.as_str()).is_some())
        .cloned()
        .collect();
    (resources, removed)
}

/// `removed` plus the `asked` names the client does not hold after this diff (what was just
/// sent is held; a resumed name kept while a cluster is unsynced is held too).
fn absent(state: &TypeState, asked: &[&str], mut removed: Vec<String>) -> Vec<String> {
    for name in asked {
        if !state.held.contains_key(*name) && !removed.iter().any(|r| r == name) {
            removed.push(name.to_string());
        }
    }
    removed
}

/// Compares every subscribed resource with what the client holds. A resumed name that is
/// missing is removed only from a `complete` push.
fn full_diff(
    state: &mut TypeState,
    now: &Resources,
    complete: bool,
) -> (Vec<DeltaResource>, Vec<String>) {
    let mut resources = Vec::new();
    for r in now.values() {
        state.resumed.remove(&r.name);
        if state.held.get(&r.name) != Some(&r.hash) {
            resources.push(resource(r));
            state.held.insert(r.name.clone(), r.hash);
        }
    }
    if complete {
        state.resumed.clear();
    }
    let removed: Vec<String> = state
        .held
        .keys()
        .filter(|n| !now.contains_key(&***n) && !state.resumed.contains(&**n))
        .map(|n| n.to_string())
        .collect();
    for n in &removed {
        state.held.remove(n.as_str());
    }
    (resources, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn delta() -> Delta {
        Delta::new(crate::xds::node::test_sidecar())
    }

    fn subscribe(type_url: &str, names: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name.as_str()).collect()
    }

    const A: &str = "outbound|80||a.ns.svc.cluster.local";
    const NOPE: &str = "outbound|80||nope.ns.svc.cluster.local";

    /// Istio (delta.go: every watched name not generated goes into `removed_resources`) and
    /// the xDS protocol ("knowing when a requested resource does not exist": in the
    /// incremental variants the server says so in `removed_resources`): a name subscribed to
    /// that does not exist is answered as removed at once, instead of leaving the client to
    /// its does-not-exist timer; said once, not on every push; sent when it appears.
    #[test]
    fn a_subscribed_name_that_does_not_exist_is_listed_as_removed() {
        let mut d = delta();
        let push = crate::xds::ads::test_push(2, &["a"]);
        let resp = d
            .request(&subscribe(Kind::Endpoint.url(), &[A, NOPE], ""), &push)
            .expect("an answer");
        assert_eq!(names(&resp), [A]);
        assert_eq!(resp.removed_resources, [NOPE]);
        let later = crate::xds::ads::test_push(3, &["a", "b"]);
        assert!(d.push(&later).is_empty(), "nothing changed for this client");
        let appears = crate::xds::ads::test_push(4, &["a", "nope"]);
        let sent = d.push(&appears);
        assert_eq!(sent.len(), 1);
        assert_eq!(names(&sent[0]), [NOPE]);
        assert!(sent[0].removed_resources.is_empty());
        // Subscribing to more names later: only the new missing one is listed.
        let resp = d
            .request(
                &subscribe(Kind::Endpoint.url(), &["gone"], &sent[0].nonce),
                &appears,
            )
            .expect("an answer");
        assert!(resp.resources.is_empty());
        assert_eq!(resp.removed_resources, ["gone"]);
    }

    /// Istio (`shouldRespondDelta`: no watched resource yet is INIT or RECONNECT, answered
    /// whatever nonce the request carries): the first request of a reconnected client, with
    /// the old stream's nonce and the versions it holds, gets what it lacks.
    #[test]
    fn a_reconnect_carrying_an_old_streams_nonce_is_answered() {
        let mut d = delta();
        let push = crate::xds::ads::test_push(2, &["a", "b"]);
        let mut req = subscribe(Kind::Cluster.url(), &[], "1-7");
        let a = push.all(&d.proxy, Kind::Cluster)[A].version();
        req.initial_resource_versions = [(A.to_string(), a)].into();
        let resp = d.request(&req, &push).expect("the reconnect is answered");
        assert_eq!(names(&resp), ["outbound|80||b.ns.svc.cluster.local"]);
        assert!(resp.removed_resources.is_empty());
    }

    /// A response over the message limit goes out in parts under it, every resource once,
    /// the removals in the last part, each part with a nonce of its own.
    #[test]
    fn an_oversized_delta_response_is_split_not_cut() {
        let resources: Vec<DeltaResource> = (0..10)
            .map(|i| DeltaResource {
                name: format!("r{i}"),
                resource: Some(Any {
                    type_url: "t".into(),
                    value: vec![7; 1000],
                }),
                ..Default::default()
            })
            .collect();
        let resp = DeltaDiscoveryResponse {
            type_url: Kind::Endpoint.url().into(),
            system_version_info: "3".into(),
            resources,
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let mut d = delta();
        let parts = d.fit(resp.clone(), 3500);
        assert!(parts.len() >= 3, "{}", parts.len());
        for p in &parts {
            assert!(prost::Message::encoded_len(p) <= 3500);
        }
        let names: Vec<&str> = parts
            .iter()
            .flat_map(|p| &p.resources)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
        assert_eq!(parts.last().unwrap().removed_resources, ["gone"]);
        let nonces: BTreeSet<&str> = parts.iter().map(|p| p.nonce.as_str()).collect();
        assert_eq!(nonces.len(), parts.len());
        assert_eq!(
            d.fit(resp, 1 << 20).len(),
            1,
            "one that fits is sent as it is"
        );
    }
}
