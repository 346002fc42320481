//! VirtualServices read into typed routes, with Istio's validation (pkg/config/validation:
//! `ValidateVirtualService`, `validateHTTPRoute`, `validateTCPRoute`): a rule that does not
//! validate is dropped whole and the reasons are kept for `/debug/configz` and the
//! `meshfed_config_errors` metric; fields meshfed does not act on are warnings; a subset no
//! DestinationRule defines is reported by [`check_subsets`] and the rule is kept (only that
//! route's traffic fails, as in Istio).

use super::rules::Rule;
use std::collections::BTreeMap;
use std::time::Duration;

mod parse;
pub mod status;
pub use parse::parse;

/// One VirtualService as the route generators read it.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualService {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts as text): the first created wins.
    pub created: String,
    /// `hosts`, qualified in the rule's namespace (`*.` kept).
    pub hosts: Vec<String>,
    /// `gateways` as written; empty means `mesh`.
    pub gateways: Vec<String>,
    /// The rule applies to sidecars and proxyless clients: no `gateways`, or `mesh` among them.
    pub mesh: bool,
    /// `exportTo` as written; empty means every namespace.
    pub export_to: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tcp: Vec<TcpRoute>,
    /// Fields seen that meshfed does not act on.
    pub warnings: Vec<RuleError>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRoute {
    pub name: String,
    pub matches: Vec<HttpMatch>,
    pub route: Vec<RouteDestination>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpMatch {
    pub name: String,
    pub uri: Option<StringMatch>,
    pub ignore_uri_case: bool,
    pub headers: BTreeMap<String, StringMatch>,
    pub without_headers: BTreeMap<String, StringMatch>,
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

/// Istio's StringMatch; a regex is RE2 syntax (checked with the `regex` crate, which accepts
/// the same language: no look-around, no back-references).
#[derive(Debug, Clone, PartialEq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Qualified in the VirtualService's namespace.
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteDestination {
    pub destination: Destination,
    /// As written (0 when unset: one destination takes all traffic whatever its weight).
    pub weight: u32,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delay {
    pub fixed_delay: Duration,
    pub percentage: Percentage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    pub status: AbortStatus,
    pub percentage: Percentage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AbortStatus {
    Http(u16),
    /// The gRPC code's name as written and its number.
    Grpc(String, u32),
}

/// How often a fault applies: `percentage.value` (0 to 100, fractions kept), the deprecated
/// integer `percent`, or unset (which Envoy reads as 0 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Percentage {
    Value(f64),
    Percent(u32),
    Unset,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// 0 turns retries off.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// As written (comma separated); None for Istio's default policy list.
    pub retry_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub destination: Destination,
    /// Percent of requests mirrored; None means all (Istio's default).
    pub percentage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Headers {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderOps {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TcpRoute {
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct L4Match {
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

/// Why a rule (or one of its fields) is reported: the `reason` label of
/// `meshfed_config_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A field of the wrong type or shape.
    InvalidField,
    InvalidHost,
    InvalidDuration,
    InvalidRegex,
    InvalidWeight,
    InvalidPercentage,
    InvalidStatus,
    InvalidPort,
    InvalidRetries,
    InvalidFault,
    InvalidHeader,
    MissingRoute,
    UnknownSubset,
    Unsupported,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::InvalidField,
        Reason::InvalidHost,
        Reason::InvalidDuration,
        Reason::InvalidRegex,
        Reason::InvalidWeight,
        Reason::InvalidPercentage,
        Reason::InvalidStatus,
        Reason::InvalidPort,
        Reason::InvalidRetries,
        Reason::InvalidFault,
        Reason::InvalidHeader,
        Reason::MissingRoute,
        Reason::UnknownSubset,
        Reason::Unsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "invalid_field",
            Reason::InvalidHost => "invalid_host",
            Reason::InvalidDuration => "invalid_duration",
            Reason::InvalidRegex => "invalid_regex",
            Reason::InvalidWeight => "invalid_weight",
            Reason::InvalidPercentage => "invalid_percentage",
            Reason::InvalidStatus => "invalid_status",
            Reason::InvalidPort => "invalid_port",
            Reason::InvalidRetries => "invalid_retries",
            Reason::InvalidFault => "invalid_fault",
            Reason::InvalidHeader => "invalid_header",
            Reason::MissingRoute => "missing_route",
            Reason::UnknownSubset => "unknown_subset",
            Reason::Unsupported => "unsupported",
        }
    }
}

/// One problem with one rule: where (`http[0].fault.abort`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleError {
    pub namespace: String,
    pub name: String,
    pub field: String,
    pub reason: Reason,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}: {}: {} ({})",
            self.namespace,
            self.name,
            self.field,
            self.message,
            self.reason.as_str()
        )
    }
}

impl VirtualService {
    /// Every destination the rule sends to or mirrors to, with the field that names it.
    pub fn destinations(&self) -> Vec<(String, &Destination)> {
        let mut out = Vec::new();
        for (i, h) in self.http.iter().enumerate() {
            for (j, d) in h.route.iter().enumerate() {
                out.push((format!("http[{i}].route[{j}]"), &d.destination));
            }
            for (j, m) in h.mirrors.iter().enumerate() {
                out.push((format!("http[{i}].mirror[{j}]"), &m.destination));
            }
        }
        for (i, t) in self.tcp.iter().enumerate() {
            for (j, d) in t.route.iter().enumerate() {
                out.push((format!("tcp[{i}].route[{j}]"), &d.destination));
            }
        }
        out
    }
}

/// Subsets the rule names that no DestinationRule for that host defines (Istio's analyzer
/// IST0101 `ReferencedResourceNotFound`; at run time that route's traffic fails with `NC`
/// on Envoy and UNAVAILABLE on gRPC). The rule is kept.
pub fn check_subsets(vs: &VirtualService, rules: &[Rule]) -> Vec<RuleError> {
    vs.destinations()
        .into_iter()
        .filter_map(|(field, d)| {
            let subset = d.subset.as_deref()?;
            let known = rules
                .iter()
                .filter(|r| host_covers(&r.host, &d.host))
                .any(|r| r.subsets.iter().any(|s| s.name == subset));
            (!known).then(|| RuleError {
                namespace: vs.namespace.clone(),
                name: vs.name.clone(),
                field: format!("{field}.destination.subset"),
                reason: Reason::UnknownSubset,
                message: format!(
                    "subset {subset:?} of {} is not defined by any DestinationRule",
                    d.host
                ),
            })
        })
        .collect()
}

/// A DestinationRule for `rule_host` (exact, or `*.suffix`) covers `host`.
fn host_covers(rule_host: &str, host: &str) -> bool {
    match rule_host.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => rule_host == host,
    }
}

#[cfg(test)]
mod tests;
