//! A DestinationRule's `connectionPool` (and `retryBudget`) in a cluster, as Istio writes it.
//! Envoy sidecars and routers (`applyConnectionPool`, pilot/pkg/networking/core/
//! cluster_traffic_policy.go): every cluster gets one DEFAULT-priority circuit breaker with
//! all four limits at u32::MAX (`getDefaultCircuitBreakerThresholds`; Envoy's own 1024/3 trip
//! under churn) and `track_remaining`, each limit replaced by the rule's value when above zero;
//! `tcp.connectTimeout` and `tcp.tcpKeepalive` go on the cluster, and the HTTP settings into
//! the upstream `HttpProtocolOptions` that `protocol.rs` writes. Proxyless gRPC
//! (`grpcgen` `applyCircuitBreakers`) gets only `max_requests` from `http.http2MaxRequests`,
//! and only when set: gRFC A32 reads nothing else, and without it gRPC's default is 1024.

use crate::xds::node::Generator;
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, UpstreamConnectionOptions, circuit_breakers::Thresholds,
    circuit_breakers::thresholds::RetryBudget,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions, TcpKeepalive,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use serde_json::Value as Json;

use crate::xds::duration::duration;

/// Sets the circuit breakers and connection settings of `policy` (the cluster's merged
/// traffic policy) on `c`, for a client of `generator`.
pub fn apply(c: &mut Cluster, generator: Generator, policy: &Json) {
    let pool = &policy["connectionPool"];
    if generator == Generator::Grpc {
        c.circuit_breakers = grpc_breakers(pool);
        return;
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![envoy_thresholds(pool, &policy["retryBudget"])],
        ..Default::default()
    });
    let tcp = &pool["tcp"];
    if let Some(timeout) = duration(&tcp["connectTimeout"]) {
        c.connect_timeout = Some(timeout);
    }
    c.upstream_connection_options = tcp_keepalive(&tcp["tcpKeepalive"]);
}

/// A positive count (Istio's int32 fields apply only above zero), capped at u32::MAX.
fn positive(v: &Json) -> Option<UInt32Value> {
    let n = v.as_i64().filter(|n| *n > 0)?;
    Some(UInt32Value {
        value: u32::try_from(n).unwrap_or(u32::MAX),
    })
}

/// gRFC A32: gRPC reads `thresholds[DEFAULT].max_requests` only; Istio sends the breaker only
/// when `http2MaxRequests` is set, leaving gRPC's default of 1024 otherwise.
fn grpc_breakers(pool: &Json) -> Option<CircuitBreakers> {
    let max_requests = positive(&pool["http"]["http2MaxRequests"])?;
    Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_requests: Some(max_requests),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Istio's defaults (u32::MAX each, `track_remaining`), overridden by the pool's limits.
fn envoy_thresholds(pool: &Json, retry_budget: &Json) -> Thresholds {
    let (http, tcp) = (&pool["http"], &pool["tcp"]);
    let max = || Some(UInt32Value { value: u32::MAX });
    Thresholds {
        max_connections: positive(&tcp["maxConnections"]).or_else(max),
        max_pending_requests: positive(&http["http1MaxPendingRequests"]).or_else(max),
        max_requests: positive(&http["http2MaxRequests"]).or_else(max),
        max_retries: positive(&http["maxRetries"]).or_else(max),
        retry_budget: budget(retry_budget),
        track_remaining: true,
        ..Default::default()
    }
}

/// Istio's `applyRetryBudget`: 20 % and 3 concurrent retries unless the rule says otherwise.
fn budget(rb: &Json) -> Option<RetryBudget> {
    if !rb.is_object() {
        return None;
    }
    Some(RetryBudget {
        budget_percent: Some(Percent {
            value: rb["percent"]["value"]
                .as_f64()
                .or_else(|| rb["percent"].as_f64())
                .unwrap_or(20.0),
        }),
        min_retry_concurrency: positive(&rb["minRetryConcurrency"])
            .or(Some(UInt32Value { value: 3 })),
        budget_interval: duration(&rb["budgetInterval"]),
    })
}

/// Istio's `setKeepAliveSettings`: SO_KEEPALIVE with the OS's values, each replaced when set
/// (time and interval in whole seconds).
fn tcp_keepalive(ka: &Json) -> Option<UpstreamConnectionOptions> {
    if !ka.is_object() {
        return None;
    }
    let secs = |k: &str| {
        duration(&ka[k]).map(|d| UInt32Value {
            value: u32::try_from(d.seconds).unwrap_or(u32::MAX),
        })
    };
    Some(UpstreamConnectionOptions {
        tcp_keepalive: Some(TcpKeepalive {
            keepalive_probes: positive(&ka["probes"]),
            keepalive_time: secs("time"),
            keepalive_interval: secs("interval"),
        }),
        ..Default::default()
    })
}

/// The upstream `common_http_protocol_options` an Envoy cluster gets from the pool, None when
/// the pool sets none of them: `http.idleTimeout` (else `tcp.idleTimeout`),
/// `http.maxRequestsPerConnection` (above zero) and `tcp.maxConnectionDuration`.
pub fn common_http_options(policy: &Json) -> Option<CommonHttpOptions> {
    let (http, tcp) = (
        &policy["connectionPool"]["http"],
        &policy["connectionPool"]["tcp"],
    );
    let idle: Option<Duration> =
        duration(&http["idleTimeout"]).or_else(|| duration(&tcp["idleTimeout"]));
    let per_connection = positive(&http["maxRequestsPerConnection"]);
    let lifetime = duration(&tcp["maxConnectionDuration"]);
    if idle.is_none() && per_connection.is_none() && lifetime.is_none() {
        return None;
    }
    Some(CommonHttpOptions {
        idle_timeout: idle,
        max_requests_per_connection: per_connection,
        max_connection_duration: lifetime,
        ..Default::default()
    })
}

/// What the pool sets on an HTTP/2 upstream: `http.maxConcurrentStreams` (above zero), as
/// Istio's `applyConnectionPool` does.
pub fn tune_http2(h2: &mut Http2ProtocolOptions, policy: &Json) {
    if let Some(streams) = positive(&policy["connectionPool"]["http"]["maxConcurrentStreams"]) {
        h2.max_concurrent_streams = Some(streams);
    }
}
