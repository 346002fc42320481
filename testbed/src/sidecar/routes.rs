//! The sidecar's routes as plain data, decoded from the LDS/RDS resources meshfed sends
//! Envoy ([`decode`]), and how Envoy chooses among them: a virtual host by the Host header
//! (exact, then the longest `*.suffix`, then the longest `prefix.*`, then `*`), then the
//! first route whose path and header matchers all match.

pub mod decode;

use std::time::Duration;

/// Istio's HTTP proxy listener (`127.0.0.1_<HTTP_PROXY_PORT>`): which RouteConfiguration
/// its HttpConnectionManager takes over RDS, and the fault filter's listener-level config.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProxyListener {
    pub rds: String,
    /// The fault filter's own config, for routes without a per-route one.
    pub fault: Option<Fault>,
}

/// A RouteConfiguration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    /// Applied after the vhost's and the route's (Envoy's default order).
    pub headers: HeaderOps,
    /// `ignore_port_in_host_matching` (Istio's per-port route configurations): the Host's
    /// port is dropped before domains are matched.
    pub ignore_port: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderOps,
    /// The vhost's fault, used by routes without their own.
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub action: Action,
    pub fault: Option<Fault>,
    pub headers_ops: HeaderOps,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// RE2, matched against the whole path.
    Regex(Regex),
}

/// A header matcher; `invert` flips the result (Envoy's `invert_match`).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    pub name: String,
    pub rule: HeaderRule,
    pub invert: bool,
    /// A missing header matches as the empty string instead of failing.
    pub missing_as_empty: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderRule {
    Present(bool),
    Str(StringMatch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StringMatch {
    pub kind: StringKind,
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

/// A compiled RE2-syntax pattern anchored at both ends (Envoy's `safe_regex` is a full match).
#[derive(Debug, Clone)]
pub struct Regex(pub regex::Regex);

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Regex {
    pub fn full(pattern: &str) -> Result<Regex, regex::Error> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(Regex)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Forward(Box<Forward>),
    /// `direct_response`: answered by the sidecar (Istio's `block_all` catch-all).
    Direct {
        status: u16,
        body: String,
    },
}

/// A `route` action.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub clusters: Vec<WeightedCluster>,
    /// None: no timeout (Istio's `0s`); Envoy's default when unset is 15 s.
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub mirrors: Vec<Mirror>,
    /// `host_rewrite_literal` (Istio's `headers.request.set[":authority"]`).
    pub host_rewrite: Option<String>,
}

/// One cluster of the action; a plain `cluster` is a single one of weight 1.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub headers: HeaderOps,
    pub host_rewrite: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `envoy.retry_host_predicates.previous_hosts`: a retry avoids hosts already tried.
    pub other_hosts: bool,
}

/// The `retry_on` conditions the sidecar acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    /// gRPC status codes (from a `grpc-status` response header) that are retried.
    pub grpc: GrpcRetryOn,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GrpcRetryOn {
    pub cancelled: bool,
    pub deadline_exceeded: bool,
    pub internal: bool,
    pub resource_exhausted: bool,
    pub unavailable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests mirrored, in millionths.
    pub per_million: u32,
}

/// The fault filter's per-route config (`HTTPFault`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(Abort, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Abort {
    Http(u16),
    Grpc(u32),
}

/// `*_headers_to_add` and `*_headers_to_remove` of one level, for requests and answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    pub request: HeaderEdit,
    pub response: HeaderEdit,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdit {
    pub add: Vec<HeaderAdd>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderAdd {
    pub name: String,
    pub value: String,
    pub append: Append,
}

/// Envoy's `HeaderAppendAction`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Append {
    AppendOrAdd,
    AddIfAbsent,
    OverwriteOrAdd,
    OverwriteIfExists,
}

/// What route matching reads from a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// With the query string; matching uses the part before `?`, as Envoy does.
    pub path: &'a str,
    /// The Host header (or the absolute URI's authority) as sent.
    pub authority: &'a str,
    pub headers: &'a [(String, String)],
}

impl RequestView<'_> {
    /// A header's value (values of a repeated header joined by `,`, as Envoy matches them);
    /// `:authority`, `:path`, `:method` and `:scheme` are the pseudo-headers Envoy matches.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            ":authority" | "host" => return Some(self.authority.to_string()),
            ":path" => return Some(self.path.to_string()),
            ":method" => return Some(self.method.to_string()),
            ":scheme" => return Some("http".into()),
            _ => {}
        }
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

impl RouteTable {
    /// The virtual host for `authority`, in Envoy's order: an exact domain, then the longest
    /// `*.suffix` wildcard, then the longest `prefix.*` one, then `*`. Case does not matter.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let mut host = authority.to_ascii_lowercase();
        if self.ignore_port
            && let Some((h, p)) = host.rsplit_once(':')
            && p.chars().all(|c| c.is_ascii_digit())
        {
            host = h.to_string();
        }
        let domains = || {
            self.vhosts
                .iter()
                .flat_map(|v| v.domains.iter().map(move |d| (d.to_ascii_lowercase(), v)))
        };
        if let Some((_, v)) = domains().find(|(d, _)| *d == host) {
            return Some(v);
        }
        let best = |pick: &dyn Fn(&str) -> Option<usize>| {
            domains()
                .filter_map(|(d, v)| pick(&d).map(|len| (len, v)))
                .fold(None, |best: Option<(usize, &VirtualHost)>, (len, v)| {
                    // The first of equal length wins, as Envoy's ordered map keeps the first.
                    if best.is_none_or(|(b, _)| len > b) {
                        Some((len, v))
                    } else {
                        best
                    }
                })
                .map(|(_, v)| v)
        };
        // A wildcard stands for at least one character.
        let suffix = |d: &str| {
            let s = d.strip_prefix('*')?;
            (!s.is_empty() && host.len() > s.len() && host.ends_with(s)).then_some(s.len())
        };
        let prefix = |d: &str| {
            let p = d.strip_suffix('*')?;
            (!p.is_empty() && host.len() > p.len() && host.starts_with(p)).then_some(p.len())
        };
        best(&suffix)
            .or_else(|| best(&prefix))
            .or_else(|| domains().find(|(d, _)| d == "*").map(|(_, v)| v))
    }
}

impl VirtualHost {
    /// The first route that matches, as Envoy tries them in order.
    pub fn route(&self, req: &RequestView) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
    }
}

impl Route {
    pub fn matches(&self, req: &RequestView) -> bool {
        let path = req.path.split('?').next().unwrap_or_default();
        let path_ok = match &self.path {
            PathMatch::Prefix(p) if self.case_sensitive => path.starts_with(p.as_str()),
            PathMatch::Prefix(p) => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            PathMatch::Exact(p) if self.case_sensitive => path == p,
            PathMatch::Exact(p) => path.eq_ignore_ascii_case(p),
            PathMatch::Regex(re) => re.0.is_match(path),
        };
        path_ok && self.headers.iter().all(|h| h.matches(req))
    }
}

impl HeaderMatch {
    pub fn matches(&self, req: &RequestView) -> bool {
        let value = req
            .header(&self.name)
            .or_else(|| self.missing_as_empty.then(String::new));
        let hit = match (&self.rule, value) {
            (HeaderRule::Present(want), v) => v.is_some() == *want,
            // A missing header fails a string match, so an inverted one passes (Envoy).
            (HeaderRule::Str(_), None) => false,
            (HeaderRule::Str(m), Some(v)) => m.matches(&v),
        };
        hit != self.invert
    }
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let v = fold(value);
        match &self.kind {
            StringKind::Exact(s) => v == fold(s),
            StringKind::Prefix(s) => v.starts_with(&fold(s)),
            StringKind::Suffix(s) => v.ends_with(&fold(s)),
            StringKind::Contains(s) => v.contains(&fold(s)),
            StringKind::Regex(re) => re.0.is_match(value),
        }
    }
}

impl HeaderEdit {
    /// Envoy's order within one level: removals, then additions.
    pub fn apply(&self, headers: &mut Vec<(String, String)>) {
        headers.retain(|(n, _)| !self.remove.iter().any(|r| r.eq_ignore_ascii_case(n)));
        for a in &self.add {
            let present = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&a.name));
            match a.append {
                Append::AppendOrAdd => {}
                Append::AddIfAbsent if present => continue,
                Append::AddIfAbsent => {}
                Append::OverwriteIfExists if !present => continue,
                Append::OverwriteIfExists | Append::OverwriteOrAdd => {
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&a.name))
                }
            }
            headers.push((a.name.clone(), a.value.clone()));
        }
    }
}

/// True with probability `per_million` / 1,000,000 (a FractionalPercent's roll).
pub fn roll(per_million: u32) -> bool {
    use rand::Rng;
    per_million >= 1_000_000 || rand::thread_rng().gen_range(0..1_000_000) < per_million
}

#[cfg(test)]
mod tests;
