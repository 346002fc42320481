//! A DestinationRule's `outlierDetection` in Envoy's terms, as Istio's
//! `applyOutlierDetection` (pilot/pkg/networking/core/cluster_traffic_policy.go) writes it:
//! success-rate ejection off, the consecutive-error counters enforced when above zero, and the
//! healthy panic threshold at `minHealthPercent` (0 unless set), so a service with a few pods
//! does not spray requests at ejected ones.

use crate::xds::duration::duration;
use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use serde_json::Value as Json;

/// Envoy's OutlierDetection for `od` (the rule's `outlierDetection`); None when unset.
/// `interval`, `baseEjectionTime` and `maxEjectionPercent` are passed on only when set (above
/// zero for the percentage): Istio sets no defaults, Envoy's (10 s, 30 s, 10 %) apply. The
/// deprecated `consecutiveErrors` is ignored, as Istio has ignored it since 1.7.
pub fn detection(od: &Json) -> Option<OutlierDetection> {
    if !od.is_object() {
        return None;
    }
    let count = |k: &str| od[k].as_u64().map(|v| v.min(u64::from(u32::MAX)) as u32);
    let u32v = |v: Option<u32>| v.map(|value| UInt32Value { value });
    // Enforced fully when counting, not at all when the count is 0 (Istio's mapping).
    let enforce = |v: Option<u32>| u32v(v.map(|v| if v > 0 { 100 } else { 0 }));
    let five = count("consecutive5xxErrors");
    let gateway = count("consecutiveGatewayErrors");
    let mut out = OutlierDetection {
        enforcing_success_rate: u32v(Some(0)),
        consecutive_5xx: u32v(five),
        enforcing_consecutive_5xx: enforce(five),
        consecutive_gateway_failure: u32v(gateway),
        enforcing_consecutive_gateway_failure: enforce(gateway),
        interval: duration(&od["interval"]),
        base_ejection_time: duration(&od["baseEjectionTime"]),
        max_ejection_percent: u32v(count("maxEjectionPercent").filter(|p| *p > 0)),
        ..Default::default()
    };
    if od["splitExternalLocalOriginErrors"].as_bool() == Some(true) {
        out.split_external_local_origin_errors = true;
        let local = count("consecutiveLocalOriginFailures").filter(|n| *n > 0);
        out.consecutive_local_origin_failure = u32v(local);
        out.enforcing_consecutive_local_origin_failure = local.and(u32v(Some(100)));
        out.enforcing_local_origin_success_rate = u32v(Some(0));
    }
    Some(out)
}

/// The healthy panic threshold with `outlierDetection` set: `minHealthPercent`, 0 when
/// unset (Envoy's own default, 50 %, would send traffic to ejected endpoints once half are).
pub fn panic_threshold(od: &Json) -> Option<Percent> {
    if !od.is_object() {
        return None;
    }
    let value = od["minHealthPercent"].as_f64().unwrap_or(0.0);
    (value >= 0.0).then_some(Percent { value })
}
