//! Reading a VirtualService object (any version: their specs are the same) into
//! [`VirtualService`], collecting every validation error (Istio reports them all, not the
//! first) and the unsupported fields as warnings.

use super::*;
use crate::xds::duration;
use crate::xds::rules::qualify;
use serde_json::{Map, Value};

/// Parses the object `obj` of VirtualService `namespace/name`; short hosts are qualified in
/// `namespace` under `domain`. Errors drop the rule whole, as Istio's validation would have
/// refused it.
pub fn parse(
    namespace: &str,
    name: &str,
    obj: &Value,
    domain: &str,
) -> Result<VirtualService, Vec<RuleError>> {
    let mut cx = Cx {
        namespace,
        name,
        domain,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let empty = Map::new();
    let spec = match &obj["spec"] {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => {
            cx.error("spec", Reason::InvalidField, "spec is not an object");
            &empty
        }
    };
    let vs = cx.virtual_service(spec, obj);
    if cx.errors.is_empty() {
        Ok(VirtualService {
            warnings: cx.warnings,
            ..vs
        })
    } else {
        Err(cx.errors)
    }
}

/// The fields of an HTTP route meshfed does not act on (reported, then ignored).
const HTTP_UNSUPPORTED: [&str; 7] = [
    "redirect",
    "directResponse",
    "rewrite",
    "corsPolicy",
    "delegate",
    "websocketUpgrade",
    "mirrors",
];

/// Match fields not acted on.
const MATCH_UNSUPPORTED: [&str; 6] = [
    "queryParams",
    "method",
    "authority",
    "scheme",
    "statPrefix",
    "sourceSubnet",
];

/// gRPC status names, in code order (Istio's `grpc.SupportedGRPCStatus`).
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Envoy's `retry_on` policies Istio accepts (`validateHTTPRetry`: `supportedRetryOnPolicies`).
const RETRY_ON: [&str; 17] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "previous-hosts",
];

struct Cx<'a> {
    namespace: &'a str,
    name: &'a str,
    domain: &'a str,
    errors: Vec<RuleError>,
    warnings: Vec<RuleError>,
}

impl Cx<'_> {
    fn report(&self, field: &str, reason: Reason, message: String) -> RuleError {
        RuleError {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            field: field.to_string(),
            reason,
            message,
        }
    }

    fn error(&mut self, field: &str, reason: Reason, message: impl Into<String>) {
        let e = self.report(field, reason, message.into());
        self.errors.push(e);
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let e = self.report(field, Reason::Unsupported, message.into());
        self.warnings.push(e);
    }

    /// `v` as an array (unset: empty); anything else is an error.
    fn array<'v>(&mut self, v: &'v Value, field: &str) -> &'v [Value] {
        match v {
            Value::Array(a) => a,
            Value::Null => &[],
            _ => {
                self.error(field, Reason::InvalidField, "not a list");
                &[]
            }
        }
    }

    /// `v` as a list of strings.
    fn strings(&mut self, v: &Value, field: &str) -> Vec<String> {
        let items = self.array(v, field);
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.error(
                    &format!("{field}[{i}]"),
                    Reason::InvalidField,
                    "not a string",
                ),
            }
        }
        out
    }

    /// `v` as a map of strings.
    fn string_map(&mut self, v: &Value, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match v {
            Value::Null => {}
            Value::Object(m) => {
                for (k, v) in m {
                    match v.as_str() {
                        Some(s) => {
                            out.insert(k.clone(), s.to_string());
                        }
                        None => self.error(
                            &format!("{field}.{k}"),
                            Reason::InvalidField,
                            "not a string",
                        ),
                    }
                }
            }
            _ => self.error(field, Reason::InvalidField, "not a map"),
        }
        out
    }

    fn optional_str(&mut self, v: &Value, field: &str) -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(field, Reason::InvalidField, "not a string");
                None
            }
        }
    }

    /// Istio's `ValidateDuration`: at least 1 ms, in whole milliseconds.
    fn duration(&mut self, v: &Value, field: &str) -> Option<Duration> {
        if v.is_null() {
            return None;
        }
        let Some(d) = v.as_str().and_then(duration::parse) else {
            self.error(
                field,
                Reason::InvalidDuration,
                format!("{v} is not a duration"),
            );
            return None;
        };
        if d < Duration::from_millis(1) {
            self.error(
                field,
                Reason::InvalidDuration,
                "duration must be at least 1ms",
            );
        } else if d.as_nanos() % 1_000_000 != 0 {
            self.error(
                field,
                Reason::InvalidDuration,
                "only durations to ms precision are supported",
            );
        }
        Some(d)
    }

    /// A port number (1 to 65535), or None when unset.
    fn port(&mut self, v: &Value, field: &str) -> Option<u16> {
        if v.is_null() {
            return None;
        }
        match v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        {
            Some(p) => Some(p),
            None => {
                self.error(
                    field,
                    Reason::InvalidPort,
                    format!("port number {v} must be in the range 1..65535"),
                );
                None
            }
        }
    }

    fn virtual_service(&mut self, spec: &Map<String, Value>, obj: &Value) -> VirtualService {
        let hosts = self.strings(spec.get("hosts").unwrap_or(&Value::Null), "hosts");
        let gateways = self.strings(spec.get("gateways").unwrap_or(&Value::Null), "gateways");
        let mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
        if hosts.is_empty() {
            self.error(
                "hosts",
                Reason::InvalidHost,
                "virtual service must have at least one host",
            );
        }
        for (i, h) in hosts.iter().enumerate() {
            self.host(h, &format!("hosts[{i}]"));
            if h == "*" && mesh {
                self.error(
                    &format!("hosts[{i}]"),
                    Reason::InvalidHost,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
            }
        }
        let null = Value::Null;
        let get = |k: &str| spec.get(k).unwrap_or(&null);
        let export_to = self.strings(get("exportTo"), "exportTo");
        if get("http").is_null() && get("tcp").is_null() && get("tls").is_null() {
            self.error(
                "",
                Reason::MissingRoute,
                "http, tcp or tls must be provided in virtual service",
            );
        }
        if !get("tls").is_null() {
            self.warn("tls", "tls routes are not supported");
        }
        let http = self
            .array(get("http"), "http")
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let route = self.http_route(h, &format!("http[{i}]"));
                self.forwarding(route, i)
            })
            .collect();
        let tcp = self
            .array(get("tcp"), "tcp")
            .iter()
            .enumerate()
            .map(|(i, t)| self.tcp_route(t, &format!("tcp[{i}]")))
            .collect();
        let qualified = hosts
            .iter()
            .map(|h| qualify(h, self.namespace, self.domain))
            .collect();
        VirtualService {
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            created: obj["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            hosts: qualified,
            gateways,
            mesh,
            export_to,
            http,
            tcp,
            warnings: Vec::new(),
        }
    }

    /// A host: a DNS name, optionally with a leading `*` label (Istio's `ValidateWildcardDomain`).
    fn host(&mut self, host: &str, field: &str) {
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid = host == "*"
            || (!name.is_empty()
                && name.len() <= 255
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                }));
        if !valid {
            self.error(
                field,
                Reason::InvalidHost,
                format!("{host:?} is not a valid host name"),
            );
        }
    }

    /// An HTTP route that forwards somewhere; one whose only action is a `redirect`,
    /// `directResponse` or `delegate` (not supported) is left out with a warning rather than
    /// sent with no destinations: gRPC NACKs a route with an empty `weighted_clusters`
    /// (and grpc-js any action but `route`), which would take every other route with it.
    fn forwarding(&mut self, route: HttpRoute, i: usize) -> Option<HttpRoute> {
        if route.route.is_empty() && self.errors.is_empty() {
            self.warn(
                &format!("http[{i}]"),
                "a route without destinations (redirect, directResponse or delegate) is left out",
            );
            return None;
        }
        Some(route)
    }

    fn http_route(&mut self, v: &Value, at: &str) -> HttpRoute {
        if !v.is_object() {
            self.error(at, Reason::InvalidField, "not an object");
            return HttpRoute::default();
        }
        for k in HTTP_UNSUPPORTED {
            if !v[k].is_null() {
                self.warn(
                    &format!("{at}.{k}"),
                    format!("{k} is not supported and is ignored"),
                );
            }
        }
        let matches = self
            .array(&v["match"], &format!("{at}.match"))
            .iter()
            .enumerate()
            .map(|(j, m)| self.http_match(m, &format!("{at}.match[{j}]")))
            .collect();
        let route = self.destinations(&v["route"], &format!("{at}.route"));
        // Istio: a route, redirect, direct response or delegate is required.
        let elsewhere = ["redirect", "directResponse", "delegate"]
            .iter()
            .any(|k| !v[*k].is_null());
        if route.is_empty() && !elsewhere {
            self.error(
                at,
                Reason::MissingRoute,
                "HTTP route, redirect or direct_response is required",
            );
        }
        HttpRoute {
            name: v["name"].as_str().unwrap_or("").to_string(),
            matches,
            route,
            timeout: self.duration(&v["timeout"], &format!("{at}.timeout")),
            retries: self.retries(&v["retries"], &format!("{at}.retries")),
            fault: self.fault(&v["fault"], &format!("{at}.fault")),
            mirrors: self.mirror(v, at),
            headers: self.headers(&v["headers"], &format!("{at}.headers")),
        }
    }

    fn http_match(&mut self, m: &Value, at: &str) -> HttpMatch {
        if !m.is_object() {
            self.error(at, Reason::InvalidField, "not an object");
            return HttpMatch::default();
        }
        for k in MATCH_UNSUPPORTED {
            if !m[k].is_null() {
                self.warn(
                    &format!("{at}.{k}"),
                    format!("match on {k} is not supported and is ignored"),
                );
            }
        }
        let uri = self.string_match(&m["uri"], &format!("{at}.uri"));
        let headers = self.header_matches(&m["headers"], &format!("{at}.headers"));
        let without_headers =
            self.header_matches(&m["withoutHeaders"], &format!("{at}.withoutHeaders"));
        HttpMatch {
            name: m["name"].as_str().unwrap_or("").to_string(),
            uri,
            ignore_uri_case: m["ignoreUriCase"].as_bool().unwrap_or(false),
            headers,
            without_headers,
            port: self.port(&m["port"], &format!("{at}.port")),
            source_labels: self.string_map(&m["sourceLabels"], &format!("{at}.sourceLabels")),
            source_namespace: self
                .optional_str(&m["sourceNamespace"], &format!("{at}.sourceNamespace")),
            gateways: self.strings(&m["gateways"], &format!("{at}.gateways")),
        }
    }

    /// Header matches by name (names are lower case on the wire: Istio requires them so).
    fn header_matches(&mut self, v: &Value, at: &str) -> BTreeMap<String, StringMatch> {
        let mut out = BTreeMap::new();
        let Some(m) = v.as_object() else {
            if !v.is_null() {
                self.error(at, Reason::InvalidField, "not a map");
            }
            return out;
        };
        for (name, sm) in m {
            let field = format!("{at}.{name}");
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
            {
                self.error(
                    &field,
                    Reason::InvalidHeader,
                    format!("header name {name:?} must be lower case and not empty"),
                );
            }
            // `regex: "*"` is not RE2: Istio reads it as "present".
            if sm["regex"] == "*" {
                out.insert(name.clone(), StringMatch::Regex("*".into()));
                continue;
            }
            match self.string_match(sm, &field) {
                Some(s) => {
                    out.insert(name.clone(), s);
                }
                None if sm.as_object().is_some_and(Map::is_empty) => {
                    // An empty match: the header is present with any value.
                    out.insert(name.clone(), StringMatch::Regex("*".into()));
                }
                None => {}
            }
        }
        out
    }

    /// A StringMatch (`exact`, `prefix` or `regex`; one of them).
    fn string_match(&mut self, v: &Value, at: &str) -> Option<StringMatch> {
        if v.is_null() {
            return None;
        }
        let Some(m) = v.as_object() else {
            self.error(at, Reason::InvalidField, "not a string match");
            return None;
        };
        let set: Vec<&str> = ["exact", "prefix", "regex"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        if set.len() > 1 {
            self.error(
                at,
                Reason::InvalidField,
                format!("only one of exact, prefix, regex may be set (got {set:?})"),
            );
            return None;
        }
        let kind = *set.first()?;
        let Some(s) = m[kind].as_str() else {
            self.error(
                &format!("{at}.{kind}"),
                Reason::InvalidField,
                "not a string",
            );
            return None;
        };
        Some(match kind {
            "exact" => StringMatch::Exact(s.to_string()),
            "prefix" => StringMatch::Prefix(s.to_string()),
            _ => {
                if let Err(e) = regex::Regex::new(s) {
                    self.error(
                        &format!("{at}.regex"),
                        Reason::InvalidRegex,
                        format!("{s:?}: {e}"),
                    );
                }
                StringMatch::Regex(s.to_string())
            }
        })
    }

    /// `route` (or a TCP route's): destinations with weights, checked as Istio's
    /// `validateHTTPRouteDestinations`: no negative weight, and more than one destination
    /// cannot weigh 0 in total.
    fn destinations(&mut self, v: &Value, at: &str) -> Vec<RouteDestination> {
        let items = self.array(v, at);
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for (j, d) in items.iter().enumerate() {
            let field = format!("{at}[{j}]");
            let weight = match &d["weight"] {
                Value::Null => 0,
                w => match w.as_u64().and_then(|w| u32::try_from(w).ok()) {
                    Some(w) => w,
                    None => {
                        self.error(
                            &format!("{field}.weight"),
                            Reason::InvalidWeight,
                            format!("weight {w} must be a whole number from 0"),
                        );
                        0
                    }
                },
            };
            total += u64::from(weight);
            let Some(destination) =
                self.destination(&d["destination"], &format!("{field}.destination"))
            else {
                continue;
            };
            out.push(RouteDestination {
                destination,
                weight,
                headers: self.headers(&d["headers"], &format!("{field}.headers")),
            });
        }
        if items.len() > 1 && total == 0 {
            self.error(at, Reason::InvalidWeight, "total destination weight = 0");
        }
        if total > u64::from(u32::MAX) {
            self.error(
                at,
                Reason::InvalidWeight,
                "total destination weight is larger than 2^32-1",
            );
        }
        out
    }

    /// Istio's `validateDestination`: a host is required; a subset is a DNS label.
    fn destination(&mut self, v: &Value, at: &str) -> Option<Destination> {
        let Some(d) = v.as_object() else {
            self.error(at, Reason::InvalidField, "destination is required");
            return None;
        };
        let Some(host) = d
            .get("host")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
        else {
            self.error(
                &format!("{at}.host"),
                Reason::InvalidHost,
                "destination.host is required",
            );
            return None;
        };
        self.host(host, &format!("{at}.host"));
        let subset = self.optional_str(&v["subset"], &format!("{at}.subset"));
        if let Some(s) = &subset
            && !is_dns_label(s)
        {
            self.error(
                &format!("{at}.subset"),
                Reason::InvalidField,
                format!("subset {s:?} is not a DNS label"),
            );
        }
        Some(Destination {
            host: qualify(host, self.namespace, self.domain),
            subset,
            port: self.port(&v["port"]["number"], &format!("{at}.port.number")),
        })
    }

    /// Istio's `validateHTTPRetry`: attempts not negative, perTryTimeout a duration, each
    /// `retryOn` item a known policy or an HTTP status code.
    fn retries(&mut self, v: &Value, at: &str) -> Option<Retries> {
        if v.is_null() {
            return None;
        }
        let attempts = match &v["attempts"] {
            Value::Null => 0,
            a => match a.as_i64() {
                Some(n) if n < 0 => {
                    self.error(
                        &format!("{at}.attempts"),
                        Reason::InvalidRetries,
                        "attempts cannot be negative",
                    );
                    0
                }
                Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
                None => {
                    self.error(
                        &format!("{at}.attempts"),
                        Reason::InvalidRetries,
                        "attempts is not a number",
                    );
                    0
                }
            },
        };
        let retry_on = self.optional_str(&v["retryOn"], &format!("{at}.retryOn"));
        for item in retry_on.iter().flat_map(|r| r.split(',')) {
            let item = item.trim();
            let code = item.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !code && !RETRY_ON.contains(&item) {
                self.error(
                    &format!("{at}.retryOn"),
                    Reason::InvalidRetries,
                    format!("{item:?} is not a valid retryOn policy"),
                );
            }
        }
        for k in [
            "retryRemoteLocalities",
            "retryIgnorePreviousHosts",
            "backoff",
        ] {
            if !v[k].is_null() {
                self.warn(
                    &format!("{at}.{k}"),
                    format!("{k} is not supported and is ignored"),
                );
            }
        }
        Some(Retries {
            attempts,
            per_try_timeout: self.duration(&v["perTryTimeout"], &format!("{at}.perTryTimeout")),
            retry_on,
        })
    }

    /// Istio's `validateHTTPFaultInjection`: an abort and/or a delay, percentages within
    /// 0..=100, an HTTP status within 200..=599, a gRPC status by name.
    fn fault(&mut self, v: &Value, at: &str) -> Option<Fault> {
        if v.is_null() {
            return None;
        }
        if v["abort"].is_null() && v["delay"].is_null() {
            self.error(
                at,
                Reason::InvalidFault,
                "HTTP fault injection must have an abort and/or a delay",
            );
            return None;
        }
        let delay = (!v["delay"].is_null())
            .then(|| self.delay(&v["delay"], &format!("{at}.delay")))
            .flatten();
        let abort = (!v["abort"].is_null())
            .then(|| self.abort(&v["abort"], &format!("{at}.abort")))
            .flatten();
        Some(Fault { delay, abort })
    }

    fn delay(&mut self, d: &Value, at: &str) -> Option<Delay> {
        let percentage = self.percentage(d, at);
        if !d["exponentialDelay"].is_null() {
            self.warn(
                &format!("{at}.exponentialDelay"),
                "exponentialDelay is not supported: no delay",
            );
            return None;
        }
        let Some(fixed_delay) = self.duration(&d["fixedDelay"], &format!("{at}.fixedDelay")) else {
            self.error(
                &format!("{at}.fixedDelay"),
                Reason::InvalidFault,
                "delay must have a fixedDelay",
            );
            return None;
        };
        Some(Delay {
            fixed_delay,
            percentage,
        })
    }

    fn abort(&mut self, a: &Value, at: &str) -> Option<Abort> {
        let percentage = self.percentage(a, at);
        let status = if let Some(code) = a.get("httpStatus") {
            match code.as_u64().filter(|c| (200..=599).contains(c)) {
                Some(c) => AbortStatus::Http(c as u16),
                None => {
                    self.error(
                        &format!("{at}.httpStatus"),
                        Reason::InvalidStatus,
                        format!("invalid abort http status {code}"),
                    );
                    return None;
                }
            }
        } else if let Some(name) = a.get("grpcStatus") {
            let code = name
                .as_str()
                .and_then(|n| GRPC_CODES.iter().position(|c| *c == n));
            match code {
                Some(c) => AbortStatus::Grpc(GRPC_CODES[c].to_string(), c as u32),
                None => {
                    self.error(
                        &format!("{at}.grpcStatus"),
                        Reason::InvalidStatus,
                        format!("invalid abort grpc status {name}"),
                    );
                    return None;
                }
            }
        } else {
            if !a["http2Error"].is_null() {
                self.warn(&format!("{at}.http2Error"), "http2Error is not supported");
            } else {
                self.error(
                    at,
                    Reason::InvalidFault,
                    "abort must have an httpStatus or a grpcStatus",
                );
            }
            return None;
        };
        Some(Abort { status, percentage })
    }

    /// `percentage.value` (0 to 100) or the deprecated `percent` (an integer 0 to 100).
    fn percentage(&mut self, v: &Value, at: &str) -> Percentage {
        if let Some(p) = v.get("percentage") {
            match p["value"].as_f64() {
                Some(x) if (0.0..=100.0).contains(&x) => Percentage::Value(x),
                None if p.as_object().is_some_and(Map::is_empty) => Percentage::Value(0.0),
                _ => {
                    self.error(
                        &format!("{at}.percentage"),
                        Reason::InvalidPercentage,
                        "percentage must be in range [0.0, 100.0]",
                    );
                    Percentage::Unset
                }
            }
        } else if let Some(p) = v.get("percent") {
            match p.as_u64().filter(|p| *p <= 100) {
                Some(p) => Percentage::Percent(p as u32),
                None => {
                    self.error(
                        &format!("{at}.percent"),
                        Reason::InvalidPercentage,
                        "percent must be in range [0, 100]",
                    );
                    Percentage::Unset
                }
            }
        } else {
            Percentage::Unset
        }
    }

    /// `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`), each 0..=100.
    fn mirror(&mut self, v: &Value, at: &str) -> Vec<Mirror> {
        if v["mirror"].is_null() {
            return Vec::new();
        }
        let percentage = if let Some(p) = v.get("mirrorPercentage") {
            match p["value"].as_f64() {
                Some(x) if (0.0..=100.0).contains(&x) => Some(x),
                _ => {
                    self.error(
                        &format!("{at}.mirrorPercentage"),
                        Reason::InvalidPercentage,
                        "mirror_percentage must be in range [0, 100]",
                    );
                    None
                }
            }
        } else if let Some(p) = v.get("mirrorPercent") {
            match p.as_u64().filter(|p| *p <= 100) {
                Some(p) => Some(p as f64),
                None => {
                    self.error(
                        &format!("{at}.mirrorPercent"),
                        Reason::InvalidPercentage,
                        "mirror_percent must have a max value of 100",
                    );
                    None
                }
            }
        } else {
            None
        };
        self.destination(&v["mirror"], &format!("{at}.mirror"))
            .map(|destination| Mirror {
                destination,
                percentage,
            })
            .into_iter()
            .collect()
    }

    fn headers(&mut self, v: &Value, at: &str) -> Headers {
        Headers {
            request: self.header_ops(&v["request"], &format!("{at}.request")),
            response: self.header_ops(&v["response"], &format!("{at}.response")),
        }
    }

    /// set/add/remove; header names must not be empty (Istio's `ValidateHTTPHeaderName`).
    fn header_ops(&mut self, v: &Value, at: &str) -> HeaderOps {
        let ops = HeaderOps {
            set: self.string_map(&v["set"], &format!("{at}.set")),
            add: self.string_map(&v["add"], &format!("{at}.add")),
            remove: self.strings(&v["remove"], &format!("{at}.remove")),
        };
        let names = ops
            .set
            .keys()
            .chain(ops.add.keys())
            .chain(ops.remove.iter());
        let bad: Vec<String> = names
            .filter(|n| n.is_empty() || n.contains(char::is_whitespace))
            .cloned()
            .collect();
        for n in bad {
            self.error(
                at,
                Reason::InvalidHeader,
                format!("invalid header name {n:?}"),
            );
        }
        ops
    }

    /// Istio's `validateTCPRoute`: at least one destination, weights as for HTTP.
    fn tcp_route(&mut self, v: &Value, at: &str) -> TcpRoute {
        if !v.is_object() {
            self.error(at, Reason::InvalidField, "not an object");
            return TcpRoute::default();
        }
        let matches = self
            .array(&v["match"], &format!("{at}.match"))
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let f = format!("{at}.match[{j}]");
                L4Match {
                    port: self.port(&m["port"], &format!("{f}.port")),
                    source_labels: self
                        .string_map(&m["sourceLabels"], &format!("{f}.sourceLabels")),
                    source_namespace: self
                        .optional_str(&m["sourceNamespace"], &format!("{f}.sourceNamespace")),
                    gateways: self.strings(&m["gateways"], &format!("{f}.gateways")),
                }
            })
            .collect();
        let route = self.destinations(&v["route"], &format!("{at}.route"));
        if route.is_empty() {
            self.error(at, Reason::MissingRoute, "TCP route is required");
        }
        TcpRoute { matches, route }
    }
}

/// A Kubernetes DNS label (RFC 1123): lower case alphanumerics and `-`, at most 63.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
