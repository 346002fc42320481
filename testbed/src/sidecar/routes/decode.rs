//! LDS and RDS resources as the sidecar's plain route model. What Envoy would act on and the
//! sidecar cannot is an error, so the response is NACKed (a generator sending something the
//! test bed would silently ignore shows up in the `nacks` metric instead of as a wrong
//! demo). Fields that do not change where or how a request goes (stats, tracing, gRPC-only
//! timeouts, hash policies, CORS) are ignored.

use super::*;
use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, data_source};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::HashMap;

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
const CORS_FILTER: &str = "envoy.filters.http.cors";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const FAULT_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
/// Envoy's route timeout when `timeout` is unset.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's `num_retries` when unset.
const DEFAULT_NUM_RETRIES: u32 = 1;

/// The HTTP connection manager of a listener's first filter chain, if it has one (TCP proxy
/// and other listeners are not the sidecar's business).
pub fn listener(l: &Listener) -> anyhow::Result<Option<HttpProxyListener>> {
    let Some(chain) = l.filter_chains.first() else {
        return Ok(None);
    };
    let Some(any) = chain.filters.iter().find_map(|f| match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) if any.type_url == HCM_TYPE => Some(any),
        _ => None,
    }) else {
        return Ok(None);
    };
    let hcm =
        HttpConnectionManager::decode(any.value.as_slice()).context("HttpConnectionManager")?;
    http_connection_manager(&hcm)
}

/// Only managers taking RDS are outbound routes; inline ones (Istio's inbound chains) are
/// not the forward proxy's and are skipped.
fn http_connection_manager(
    hcm: &HttpConnectionManager,
) -> anyhow::Result<Option<HttpProxyListener>> {
    let rds = match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => rds.route_config_name.clone(),
        Some(http_connection_manager::RouteSpecifier::RouteConfig(_)) => return Ok(None),
        Some(_) => bail!("only RDS routes are supported (no scoped routes)"),
        None => bail!("HttpConnectionManager without routes"),
    };
    if rds.is_empty() {
        bail!("RDS without a route_config_name");
    }
    let mut fault = None;
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let last = i + 1 == hcm.http_filters.len();
        match f.name.as_str() {
            ROUTER_FILTER if last => {}
            ROUTER_FILTER => bail!("the router filter is not last"),
            _ if last => bail!("the last HTTP filter is {} (router expected)", f.name),
            FAULT_FILTER => {
                fault = match &f.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => http_fault(any)?,
                    _ => None,
                };
            }
            CORS_FILTER => {}
            _ if f.is_optional => {}
            other => bail!("unsupported HTTP filter {other}"),
        }
    }
    if hcm.http_filters.is_empty() {
        bail!("no HTTP filters (router expected)");
    }
    Ok(Some(HttpProxyListener { rds, fault }))
}

/// A RouteConfiguration.
pub fn route_configuration(rc: &rt::RouteConfiguration) -> anyhow::Result<RouteTable> {
    if rc.vhds.is_some() || !rc.cluster_specifier_plugins.is_empty() {
        bail!("VHDS and cluster specifier plugins are not supported");
    }
    if !rc.request_mirror_policies.is_empty() {
        bail!("route-configuration-level mirror policies are not supported");
    }
    let vhosts = rc
        .virtual_hosts
        .iter()
        .map(|v| virtual_host(v).with_context(|| format!("virtual host {}", v.name)))
        .collect::<anyhow::Result<_>>()?;
    Ok(RouteTable {
        name: rc.name.clone(),
        vhosts,
        headers: header_ops(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
        )?,
        ignore_port: rc.ignore_port_in_host_matching,
    })
}

fn virtual_host(v: &rt::VirtualHost) -> anyhow::Result<VirtualHost> {
    if v.matcher.is_some() || !v.request_mirror_policies.is_empty() || v.hedge_policy.is_some() {
        bail!("matcher, mirror policies and hedging on a virtual host are not supported");
    }
    if v.require_tls != 0 {
        bail!("require_tls is not supported");
    }
    for d in &v.domains {
        let stars = d.matches('*').count();
        if d.is_empty() || stars > 1 || (stars == 1 && !d.starts_with('*') && !d.ends_with('*')) {
            bail!("bad domain {d:?}");
        }
    }
    let vhost_retry = v.retry_policy.as_ref().map(retry).transpose()?;
    let routes = v
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            route(r, vhost_retry.as_ref()).with_context(|| format!("route {i} {:?}", r.name))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes,
        headers: header_ops(
            &v.request_headers_to_add,
            &v.request_headers_to_remove,
            &v.response_headers_to_add,
            &v.response_headers_to_remove,
        )?,
        fault: per_filter_fault(&v.typed_per_filter_config)?,
    })
}

fn route(r: &rt::Route, vhost_retry: Option<&Retry>) -> anyhow::Result<Route> {
    let m = r.r#match.as_ref().context("route without a match")?;
    if !m.query_parameters.is_empty()
        || !m.cookies.is_empty()
        || m.grpc.is_some()
        || m.tls_context.is_some()
        || !m.dynamic_metadata.is_empty()
        || !m.filter_state.is_empty()
        || m.runtime_fraction.is_some()
    {
        bail!("only path and header matches are supported");
    }
    use rt::route_match::PathSpecifier;
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(re)) => PathMatch::Regex(regex(&re.regex)?),
        Some(_) => bail!("unsupported path specifier"),
        None => bail!("route match without a path specifier"),
    };
    let action = match &r.action {
        Some(rt::route::Action::Route(a)) => {
            Action::Forward(Box::new(forward(a, vhost_retry).context("route action")?))
        }
        Some(rt::route::Action::DirectResponse(d)) => direct(d)?,
        Some(_) => bail!("only route and direct_response actions are supported"),
        None => bail!("route without an action"),
    };
    Ok(Route {
        name: r.name.clone(),
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: m
            .headers
            .iter()
            .map(header_match)
            .collect::<anyhow::Result<_>>()?,
        action,
        fault: per_filter_fault(&r.typed_per_filter_config)?,
        headers_ops: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
    })
}

fn direct(d: &rt::DirectResponseAction) -> anyhow::Result<Action> {
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => String::new(),
        Some(data_source::Specifier::InlineString(s)) => s.clone(),
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(_) => bail!("direct_response body from a file or the environment"),
    };
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .with_context(|| format!("bad direct_response status {}", d.status))?;
    Ok(Action::Direct { status, body })
}

fn regex(pattern: &str) -> anyhow::Result<Regex> {
    Regex::full(pattern).with_context(|| format!("bad regex {pattern:?}"))
}

// The deprecated matchers are still Envoy's (Istio sends string_match; others may not).
#[allow(deprecated)]
fn header_match(h: &rt::HeaderMatcher) -> anyhow::Result<HeaderMatch> {
    use rt::header_matcher::HeaderMatchSpecifier as S;
    let s = |kind| {
        HeaderRule::Str(StringMatch {
            kind,
            ignore_case: false,
        })
    };
    let rule = match &h.header_match_specifier {
        // Envoy: a matcher without a specifier asks only that the header be present.
        None => HeaderRule::Present(true),
        Some(S::PresentMatch(p)) => HeaderRule::Present(*p),
        Some(S::ExactMatch(v)) => s(StringKind::Exact(v.clone())),
        Some(S::PrefixMatch(v)) => s(StringKind::Prefix(v.clone())),
        Some(S::SuffixMatch(v)) => s(StringKind::Suffix(v.clone())),
        Some(S::ContainsMatch(v)) => s(StringKind::Contains(v.clone())),
        Some(S::SafeRegexMatch(re)) => s(StringKind::Regex(regex(&re.regex)?)),
        Some(S::StringMatch(m)) => HeaderRule::Str(string_match(m)?),
        Some(S::RangeMatch(_)) => bail!("header {}: range matches are not supported", h.name),
    };
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        rule,
        invert: h.invert_match,
        missing_as_empty: h.treat_missing_header_as_empty,
    })
}

fn string_match(m: &StringMatcher) -> anyhow::Result<StringMatch> {
    use string_matcher::MatchPattern as P;
    let kind = match &m.match_pattern {
        Some(P::Exact(v)) => StringKind::Exact(v.clone()),
        Some(P::Prefix(v)) => StringKind::Prefix(v.clone()),
        Some(P::Suffix(v)) => StringKind::Suffix(v.clone()),
        Some(P::Contains(v)) => StringKind::Contains(v.clone()),
        Some(P::SafeRegex(re)) => StringKind::Regex(regex(&re.regex)?),
        Some(P::Custom(_)) | None => bail!("unsupported string matcher"),
    };
    Ok(StringMatch {
        kind,
        ignore_case: m.ignore_case,
    })
}

fn forward(a: &rt::RouteAction, vhost_retry: Option<&Retry>) -> anyhow::Result<Forward> {
    use rt::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    if !a.prefix_rewrite.is_empty()
        || a.regex_rewrite.is_some()
        || a.path_rewrite_policy.is_some()
        || !a.path_rewrite.is_empty()
    {
        bail!("path rewrites are not supported");
    }
    if a.metadata_match.is_some()
        || a.hedge_policy.is_some()
        || a.retry_policy_typed_config.is_some()
    {
        bail!("metadata_match, hedge_policy and typed retry policies are not supported");
    }
    let clusters = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => vec![WeightedCluster {
            name: c.clone(),
            weight: 1,
            headers: HeaderOps::default(),
            host_rewrite: None,
        }],
        Some(ClusterSpecifier::WeightedClusters(w)) => weighted(w)?,
        _ => bail!("only cluster and weighted_clusters are supported"),
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
        Some(_) => bail!("only host_rewrite_literal is supported"),
    };
    let timeout = match a.timeout.as_ref() {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) => Some(duration(d)?).filter(|d| !d.is_zero()),
    };
    let retry = match &a.retry_policy {
        Some(p) => Some(retry(p)?),
        None => vhost_retry.cloned(),
    };
    let mirrors = a
        .request_mirror_policies
        .iter()
        .map(mirror)
        .collect::<anyhow::Result<_>>()?;
    Ok(Forward {
        clusters,
        timeout,
        retry,
        mirrors,
        host_rewrite,
    })
}

fn weighted(w: &rt::WeightedCluster) -> anyhow::Result<Vec<WeightedCluster>> {
    use rt::weighted_cluster::cluster_weight::HostRewriteSpecifier;
    let mut out = Vec::new();
    for c in &w.clusters {
        if c.name.is_empty() || c.metadata_match.is_some() {
            bail!("weighted cluster without a name, or with metadata_match");
        }
        let weight = c.weight.as_ref().map_or(0, |v| v.value);
        if weight == 0 {
            continue;
        }
        out.push(WeightedCluster {
            name: c.name.clone(),
            weight,
            headers: header_ops(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )?,
            host_rewrite: (c.host_rewrite_specifier.as_ref())
                .map(|HostRewriteSpecifier::HostRewriteLiteral(h)| h.clone()),
        });
    }
    if out.is_empty() {
        bail!("weighted_clusters with a total weight of 0");
    }
    Ok(out)
}

fn retry(p: &rt::RetryPolicy) -> anyhow::Result<Retry> {
    if p.retry_priority.is_some()
        || p.rate_limited_retry_back_off.is_some()
        || !p.retriable_headers.is_empty()
        || !p.retriable_request_headers.is_empty()
        || !p.retry_options_predicates.is_empty()
    {
        bail!("retry priorities, rate-limited back-off and retriable headers are not supported");
    }
    let mut other_hosts = false;
    for pred in &p.retry_host_predicate {
        if pred.name != PREVIOUS_HOSTS {
            bail!("unsupported retry host predicate {}", pred.name);
        }
        other_hosts = true;
    }
    Ok(Retry {
        on: retry_on(&p.retry_on)?,
        num_retries: p
            .num_retries
            .as_ref()
            .map_or(DEFAULT_NUM_RETRIES, |n| n.value),
        per_try_timeout: p
            .per_try_timeout
            .as_ref()
            .map(duration)
            .transpose()?
            .filter(|d| !d.is_zero()),
        retriable_status_codes: p
            .retriable_status_codes
            .iter()
            .map(|c| u16::try_from(*c).context("bad retriable status code"))
            .collect::<anyhow::Result<_>>()?,
        other_hosts,
    })
}

/// Envoy's `retry_on` names; an unknown one is an invalid policy.
pub fn retry_on(s: &str) -> anyhow::Result<RetryOn> {
    let mut on = RetryOn::default();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t {
            "5xx" => on.five_xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" | "reset-before-request" => on.reset = true,
            "connect-failure" => on.connect_failure = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "cancelled" => on.grpc.cancelled = true,
            "deadline-exceeded" => on.grpc.deadline_exceeded = true,
            "internal" => on.grpc.internal = true,
            "resource-exhausted" => on.grpc.resource_exhausted = true,
            "unavailable" => on.grpc.unavailable = true,
            // HTTP/2, HTTP/3 and rate-limit conditions: the sidecar's HTTP/1.1 upstreams never
            // produce them.
            "refused-stream"
            | "http3-post-connect-failure"
            | "envoy-ratelimited"
            | "retriable-headers" => {}
            other => bail!("unknown retry_on {other:?}"),
        }
    }
    Ok(on)
}

fn mirror(m: &rt::route_action::RequestMirrorPolicy) -> anyhow::Result<Mirror> {
    if m.cluster.is_empty() || !m.request_headers_mutations.is_empty() {
        bail!("mirror policies need a cluster and no header mutations");
    }
    Ok(Mirror {
        cluster: m.cluster.clone(),
        per_million: m
            .runtime_fraction
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
            .map_or(1_000_000, per_million),
    })
}

fn per_filter_fault(config: &HashMap<String, Any>) -> anyhow::Result<Option<Fault>> {
    match config.get(FAULT_FILTER) {
        Some(any) => http_fault(any),
        None => Ok(None),
    }
}

/// A fault filter config; None when it injects nothing.
fn http_fault(any: &Any) -> anyhow::Result<Option<Fault>> {
    if any.type_url != FAULT_TYPE {
        bail!("fault filter config of type {}", any.type_url);
    }
    let f = HttpFault::decode(any.value.as_slice()).context("HTTPFault")?;
    if !f.headers.is_empty()
        || !f.upstream_cluster.is_empty()
        || !f.downstream_nodes.is_empty()
        || f.response_rate_limit.is_some()
    {
        bail!(
            "fault headers, upstream_cluster, downstream_nodes and rate limits are not supported"
        );
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => match &d.fault_delay_secifier {
            Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => Some((
                duration(fixed)?,
                d.percentage.as_ref().map_or(0, per_million),
            )),
            _ => bail!("only fixed fault delays are supported"),
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let kind = match a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) => Abort::Http(
                    u16::try_from(s)
                        .ok()
                        .filter(|s| (200..600).contains(s))
                        .with_context(|| format!("bad abort status {s}"))?,
                ),
                Some(fault_abort::ErrorType::GrpcStatus(s)) => Abort::Grpc(s),
                _ => bail!("only http_status and grpc_status aborts are supported"),
            };
            Some((kind, a.percentage.as_ref().map_or(0, per_million)))
        }
    };
    Ok((delay.is_some() || abort.is_some()).then_some(Fault { delay, abort }))
}

/// A FractionalPercent in millionths (a numerator above its denominator is 100 %).
pub fn per_million(p: &FractionalPercent) -> u32 {
    use fractional_percent::DenominatorType as D;
    let scale = match D::try_from(p.denominator).unwrap_or(D::Hundred) {
        D::Hundred => 10_000,
        D::TenThousand => 100,
        D::Million => 1,
    };
    p.numerator.saturating_mul(scale).min(1_000_000)
}

fn header_ops(
    req_add: &[HeaderValueOption],
    req_remove: &[String],
    resp_add: &[HeaderValueOption],
    resp_remove: &[String],
) -> anyhow::Result<HeaderOps> {
    Ok(HeaderOps {
        request: HeaderEdit {
            add: req_add
                .iter()
                .map(header_add)
                .collect::<anyhow::Result<_>>()?,
            remove: req_remove.to_vec(),
        },
        response: HeaderEdit {
            add: resp_add
                .iter()
                .map(header_add)
                .collect::<anyhow::Result<_>>()?,
            remove: resp_remove.to_vec(),
        },
    })
}

#[allow(deprecated)]
fn header_add(o: &HeaderValueOption) -> anyhow::Result<HeaderAdd> {
    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction as A;
    let h = o
        .header
        .as_ref()
        .context("header to add without a header")?;
    if h.key.is_empty() || h.key.starts_with(':') || h.key.eq_ignore_ascii_case("host") {
        bail!("header {:?} cannot be added", h.key);
    }
    let value = if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8(h.raw_value.clone()).context("header raw_value")?
    };
    // The deprecated `append` wins when set, as in Envoy.
    let append = match o.append.as_ref().map(|b| b.value) {
        Some(true) => Append::AppendOrAdd,
        Some(false) => Append::OverwriteOrAdd,
        None => match A::try_from(o.append_action).context("bad append_action")? {
            A::AppendIfExistsOrAdd => Append::AppendOrAdd,
            A::AddIfAbsent => Append::AddIfAbsent,
            A::OverwriteIfExistsOrAdd => Append::OverwriteOrAdd,
            A::OverwriteIfExists => Append::OverwriteIfExists,
        },
    };
    Ok(HeaderAdd {
        name: h.key.to_ascii_lowercase(),
        value,
        append,
    })
}

fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> anyhow::Result<Duration> {
    let secs = u64::try_from(d.seconds).context("negative duration")?;
    let nanos = u32::try_from(d.nanos).context("negative duration")?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
pub(crate) mod tests;
