//! A VirtualService `match` as an Envoy `RouteMatch` (Istio `route.go` `TranslateRouteMatch`,
//! `translateHeaderMatch`), in the forms gRPC's proxyless clients accept (gRFC A28): path
//! exact/prefix/safe_regex (RE2, whole path), header `string_match` exact/prefix/safe_regex
//! or `present_match`; and whether a match applies to this client at all
//! (`TranslateRoute`: port, sourceLabels, sourceNamespace, gateways).

use super::super::virtual_service::{HttpMatch, StringMatch};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RouteMatch, header_matcher, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::BTreeMap;

/// Who is asking and for which port: what decides whether a match applies.
pub struct Client<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// The service port the route configuration is for.
    pub port: u16,
}

/// The Envoy match; None (an `http` route without `match`) matches everything.
pub fn route_match(m: Option<&HttpMatch>) -> RouteMatch {
    let Some(m) = m else {
        return catch_all();
    };
    let path_specifier = Some(match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".into()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    });
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, v)| header(name, v, false))
        .chain(
            m.without_headers
                .iter()
                .map(|(name, v)| header(name, v, true)),
        )
        .collect();
    // Sorted by name as Istio sorts them, so equal rules give equal bytes.
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    RouteMatch {
        path_specifier,
        case_sensitive: Some(BoolValue {
            value: !m.ignore_uri_case,
        }),
        headers,
        ..Default::default()
    }
}

/// `prefix: "/"`, case sensitive: Istio's match for a route that matches everything.
pub fn catch_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        case_sensitive: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

/// Istio `IsCatchAllRoute`: no match, or a match on nothing but prefix `/`; translation
/// stops after such a route since nothing after it can be reached.
pub fn is_catch_all(m: Option<&HttpMatch>) -> bool {
    let Some(m) = m else { return true };
    let uri_all = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p == "/",
        Some(StringMatch::Regex(r)) => r == "*" || r == ".*",
        Some(StringMatch::Exact(_)) => false,
    };
    uri_all && m.headers.is_empty() && m.without_headers.is_empty()
}

/// Istio `TranslateRoute`: a match whose `port`, `sourceLabels`, `sourceNamespace` or
/// `gateways` exclude this client is left out.
pub fn applies(m: &HttpMatch, client: &Client) -> bool {
    m.port.is_none_or(|p| p == client.port)
        && m.source_labels
            .iter()
            .all(|(k, v)| client.labels.get(k) == Some(v))
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns == client.namespace)
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
}

fn header(name: &str, v: &StringMatch, invert: bool) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as S;
    let spec = match v {
        // Istio `canBeConvertedToPresentMatch`: `regex: "*"` only asks for presence.
        StringMatch::Regex(r) if r == "*" => S::PresentMatch(true),
        StringMatch::Exact(s) => {
            S::StringMatch(string(string_matcher::MatchPattern::Exact(s.clone())))
        }
        StringMatch::Prefix(s) => {
            S::StringMatch(string(string_matcher::MatchPattern::Prefix(s.clone())))
        }
        StringMatch::Regex(r) => {
            S::StringMatch(string(string_matcher::MatchPattern::SafeRegex(regex(r))))
        }
    };
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        treat_missing_header_as_empty: invert,
        header_match_specifier: Some(spec),
    }
}

fn string(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// RE2 (no engine field: `google_re2{}` is deprecated and RE2 is the default).
fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

/// gRPC C-core (`xds_route_config_parser.cc`) ignores, without a NACK, a route whose exact
/// path is not `/service/method` or whose prefix has more than two slashes: such a match
/// never routes a proxyless call. Reported, not changed (design pitfall 9).
pub fn grpc_ignores(m: &RouteMatch) -> bool {
    match &m.path_specifier {
        Some(route_match::PathSpecifier::Path(p)) => {
            let parts: Vec<&str> = p.split('/').collect();
            !(parts.len() == 3
                && parts[0].is_empty()
                && parts.iter().skip(1).all(|s| !s.is_empty()))
        }
        Some(route_match::PathSpecifier::Prefix(p)) => p.matches('/').count() > 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
