//! VirtualService `mirror`/`mirrors` as Envoy request mirror policies, as Istio writes them
//! (`route.go` `MirrorPercent`, `MirrorPercentByPolicy`, `TranslateRequestMirrorPolicy`):
//! no percentage mirrors everything (100 out of a hundred), a percentage above 0 is out of a
//! million, and an explicit 0 sends no mirror at all. Envoy only (gRPC does not mirror).

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::BoolValue;

/// The policy mirroring to `cluster`; None for an explicit 0 %.
pub fn policy(cluster: String, percentage: Option<f64>) -> Option<RequestMirrorPolicy> {
    let fraction = match percentage {
        None => FractionalPercent {
            numerator: 100,
            denominator: DenominatorType::Hundred as i32,
        },
        Some(p) if p > 0.0 => FractionalPercent {
            // Truncated as Istio's `uint32(value * 10000)`.
            numerator: (p * 10_000.0) as u32,
            denominator: DenominatorType::Million as i32,
        },
        Some(_) => return None,
    };
    Some(RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction),
            ..Default::default()
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Istio `MirrorPercent`: unset is 100 %, `mirrorPercentage.value` 50 is 500000 out of
    /// a million, an explicit 0 means no mirror; `trace_sampled` false.
    #[test]
    fn mirror_percentages_as_istio_writes_them() {
        let all = policy("c".into(), None).unwrap();
        let f = all.runtime_fraction.unwrap().default_value.unwrap();
        assert_eq!(
            (f.numerator, f.denominator),
            (100, DenominatorType::Hundred as i32)
        );
        assert_eq!(all.trace_sampled, Some(BoolValue { value: false }));
        let half = policy("c".into(), Some(50.0)).unwrap();
        let f = half.runtime_fraction.unwrap().default_value.unwrap();
        assert_eq!(
            (f.numerator, f.denominator),
            (500_000, DenominatorType::Million as i32)
        );
        assert_eq!(half.cluster, "c");
        assert_eq!(policy("c".into(), Some(0.0)), None);
    }
}
