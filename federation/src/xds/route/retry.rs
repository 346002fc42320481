//! Retry policies as Istio writes them (`route/retry/retry.go`: `DefaultPolicy`,
//! `ConvertPolicy`, `parseRetryOn`). gRPC's proxyless clients read them too (gRFC A44): the
//! gRPC status names in `retry_on` (`cancelled`, `deadline-exceeded`, `internal`,
//! `resource-exhausted`, `unavailable`) and `num_retries`, which must be at least 1 or the
//! whole RouteConfiguration is NACKed.

use super::super::duration::to_envoy;
use super::super::virtual_service::Retries;
use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryHostPredicate, retry_host_predicate,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

/// Istio's `retry_on` when a rule sets no `retries` or no `retryOn`.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const RETRIABLE_STATUS_CODES: &str = "retriable-status-codes";

/// Istio's default policy: 2 retries on connect failures, refused streams and gRPC
/// UNAVAILABLE/CANCELLED, each on another host. Since Istio 1.24 (#56023 removed the 1.23
/// profile's `EXCLUDE_503_FROM_DEFAULT_RETRIES=false`) an HTTP 503 is not retried by default:
/// `retriable-status-codes` stays in `retry_on` with no codes listed.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pack_any(
                PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// The route's policy: the default without `retries`, none with `attempts: 0` (never
/// `num_retries: 0`, which gRPC refuses), else the default with the rule's fields.
pub fn policy(retries: Option<&Retries>) -> Option<RetryPolicy> {
    let Some(r) = retries else {
        return Some(default_policy());
    };
    if r.attempts == 0 {
        return None;
    }
    let mut out = default_policy();
    out.num_retries = Some(UInt32Value { value: r.attempts });
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let (names, codes) = parse_retry_on(on);
        out.retry_on = names;
        if !codes.is_empty() && !out.retry_on.split(',').any(|n| n == RETRIABLE_STATUS_CODES) {
            if !out.retry_on.is_empty() {
                out.retry_on.push(',');
            }
            out.retry_on.push_str(RETRIABLE_STATUS_CODES);
        }
        out.retriable_status_codes = codes;
    }
    out.per_try_timeout = r.per_try_timeout.map(to_envoy);
    Some(out)
}

/// `retryOn` split into Envoy's condition names and the HTTP status codes written as numbers.
fn parse_retry_on(on: &str) -> (String, Vec<u32>) {
    let mut names = Vec::new();
    let mut codes = Vec::new();
    for item in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => names.push(item),
        }
    }
    (names.join(","), codes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn retries(attempts: u32, retry_on: Option<&str>) -> Retries {
        Retries {
            attempts,
            per_try_timeout: None,
            retry_on: retry_on.map(String::from),
        }
    }

    /// Istio: no `retries` gives the default policy (2 retries, previous_hosts, 5 host
    /// selection attempts) — proxyless clients get it too (design pitfall 12).
    #[test]
    fn no_retries_means_istio_default() {
        let p = policy(None).unwrap();
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(p.num_retries, Some(UInt32Value { value: 2 }));
        assert!(
            p.retriable_status_codes.is_empty(),
            "Istio >= 1.24 leaves 503 out"
        );
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert_eq!(
            p.retry_host_predicate[0].name,
            "envoy.retry_host_predicates.previous_hosts"
        );
    }

    /// Istio: `attempts: 0` turns retries off with no policy at all; gRPC NACKs
    /// `num_retries: 0` (pitfall 2).
    #[test]
    fn zero_attempts_means_no_policy_never_zero_retries() {
        assert_eq!(policy(Some(&retries(0, Some("unavailable")))), None);
        let p = policy(Some(&retries(3, None))).unwrap();
        assert_eq!(p.num_retries, Some(UInt32Value { value: 3 }));
        assert_eq!(
            p.retry_on, DEFAULT_RETRY_ON,
            "no retryOn keeps the default list"
        );
    }

    /// Istio `parseRetryOn`: numbers go to `retriable_status_codes` and
    /// `retriable-status-codes` is added once (pitfall 11); gRPC names pass through.
    #[test]
    fn retry_on_codes_and_grpc_names() {
        let p = policy(Some(&retries(2, Some("5xx, 503")))).unwrap();
        assert_eq!(p.retry_on, "5xx,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![503]);
        let p = policy(Some(&retries(2, Some("503")))).unwrap();
        assert_eq!(p.retry_on, "retriable-status-codes");
        let p = policy(Some(&retries(2, Some("unavailable,deadline-exceeded")))).unwrap();
        assert_eq!(p.retry_on, "unavailable,deadline-exceeded");
        assert!(p.retriable_status_codes.is_empty());
        let p = policy(Some(&retries(1, Some("retriable-status-codes,502")))).unwrap();
        assert_eq!(p.retry_on, "retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![502]);
    }

    /// Istio: `perTryTimeout` becomes `per_try_timeout` (gRPC ignores it; Envoy uses it).
    #[test]
    fn per_try_timeout_is_carried() {
        let mut r = retries(2, None);
        r.per_try_timeout = Some(Duration::from_millis(500));
        let p = policy(Some(&r)).unwrap();
        let d = p.per_try_timeout.unwrap();
        assert_eq!((d.seconds, d.nanos), (0, 500_000_000));
    }
}
