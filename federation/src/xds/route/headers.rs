//! VirtualService `headers` as Envoy header operations, as Istio's `route.go` writes them
//! (`TranslateHeadersOperations`, `translateAppendHeaders`, `dropInternal`): `set` entries
//! overwrite (`OVERWRITE_IF_EXISTS_OR_ADD`) and come first, `add` entries append
//! (`APPEND_IF_EXISTS_OR_ADD`), each group sorted by key; pseudo-headers (`:...`) and `host`
//! are never written, and an `:authority`/`host` value becomes the route's host rewrite
//! (`set` wins over `add`). Envoy only: gRPC's proxyless clients do not read these.

use super::super::virtual_service::{HeaderOps, Headers};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use std::collections::BTreeMap;

/// The operations of one `headers` block.
#[derive(Debug, Default, PartialEq)]
pub struct Operations {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    /// An `:authority` or `host` the request block sets or adds.
    pub authority: Option<String>,
}

impl Operations {
    /// `other`'s operations after these (Istio appends a destination's after the route's).
    pub fn append(&mut self, other: Operations) {
        self.request_add.extend(other.request_add);
        self.request_remove.extend(other.request_remove);
        self.response_add.extend(other.response_add);
        self.response_remove.extend(other.response_remove);
    }

    pub fn apply_to_route(&self, r: &mut Route) {
        r.request_headers_to_add = self.request_add.clone();
        r.request_headers_to_remove = self.request_remove.clone();
        r.response_headers_to_add = self.response_add.clone();
        r.response_headers_to_remove = self.response_remove.clone();
    }

    pub fn apply_to_weight(&self, w: &mut ClusterWeight) {
        w.request_headers_to_add = self.request_add.clone();
        w.request_headers_to_remove = self.request_remove.clone();
        w.response_headers_to_add = self.response_add.clone();
        w.response_headers_to_remove = self.response_remove.clone();
    }
}

/// Istio `TranslateHeadersOperations`.
pub fn operations(h: &Headers) -> Operations {
    let (mut request_add, set_auth) = options(&h.request.set, false);
    let (add, add_auth) = options(&h.request.add, true);
    request_add.extend(add);
    let (mut response_add, _) = options(&h.response.set, false);
    response_add.extend(options(&h.response.add, true).0);
    Operations {
        request_add,
        request_remove: removals(&h.request),
        response_add,
        response_remove: removals(&h.response),
        authority: set_auth.or(add_auth),
    }
}

/// Istio `translateAppendHeaders`: sorted by key (a BTreeMap already is), internal headers
/// dropped, the authority remembered.
fn options(
    headers: &BTreeMap<String, String>,
    append: bool,
) -> (Vec<HeaderValueOption>, Option<String>) {
    let action = if append {
        HeaderAppendAction::AppendIfExistsOrAdd
    } else {
        HeaderAppendAction::OverwriteIfExistsOrAdd
    };
    let mut authority = None;
    let mut out = Vec::new();
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host") {
            authority = Some(v.clone());
        }
        if internal(k) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    (out, authority)
}

fn removals(ops: &HeaderOps) -> Vec<String> {
    ops.remove
        .iter()
        .filter(|k| !internal(k))
        .cloned()
        .collect()
}

/// Istio `isInternalHeader`: Envoy cannot change pseudo-headers or `host` this way.
fn internal(k: &str) -> bool {
    k.starts_with(':') || k.eq_ignore_ascii_case("host")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn keys(v: &[HeaderValueOption]) -> Vec<(String, i32)> {
        v.iter()
            .map(|o| (o.header.as_ref().unwrap().key.clone(), o.append_action))
            .collect()
    }

    /// Istio `TranslateHeadersOperations`: set (overwrite) then add (append), each sorted
    /// by key; `host`/`:authority` become the host rewrite (set over add) and are not
    /// written; internal keys are not removed either.
    #[test]
    fn set_then_add_sorted_and_authority_rewrites_the_host() {
        let mut h = Headers::default();
        h.request.set = ops(&[("z-set", "1"), ("a-set", "2"), ("host", "set.example")]);
        h.request.add = ops(&[("b-add", "3"), (":authority", "add.example")]);
        h.request.remove = vec!["x-drop".into(), ":path".into(), "Host".into()];
        h.response.set = ops(&[("x-resp", "r")]);
        h.response.remove = vec!["server".into()];
        let o = operations(&h);
        let (over, app) = (
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            HeaderAppendAction::AppendIfExistsOrAdd as i32,
        );
        assert_eq!(
            keys(&o.request_add),
            [
                ("a-set".to_string(), over),
                ("z-set".to_string(), over),
                ("b-add".to_string(), app)
            ]
        );
        assert_eq!(o.request_remove, ["x-drop"]);
        assert_eq!(keys(&o.response_add), [("x-resp".to_string(), over)]);
        assert_eq!(o.response_remove, ["server"]);
        assert_eq!(o.authority.as_deref(), Some("set.example"));
        assert_eq!(o.request_add[0].header.as_ref().unwrap().value, "2");
    }
}
