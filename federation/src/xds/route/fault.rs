//! Fault injection as Istio writes it (`route.go` `TranslateFault`): the route's
//! `typed_per_filter_config["envoy.filters.http.fault"]` holds an `HTTPFault`, which gRPC's
//! proxyless clients apply (gRFC A33). Unlike Istio, the percentage is always written:
//! grpc-js refuses a fault whose percentage is unset and NACKs the whole RouteConfiguration.

use super::super::duration::to_envoy;
use super::super::virtual_service::{AbortStatus, Fault, Percentage};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

/// The HTTP filter's name, the key of the per-route config.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// The per-route fault config of `fault`.
pub fn http_fault(fault: &Fault) -> HttpFault {
    HttpFault {
        delay: fault.delay.as_ref().map(|d| FaultDelay {
            percentage: Some(percent(d.percentage)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(to_envoy(
                d.fixed_delay,
            ))),
        }),
        abort: fault.abort.as_ref().map(|a| FaultAbort {
            percentage: Some(percent(a.percentage)),
            error_type: Some(match &a.status {
                AbortStatus::Http(code) => fault_abort::ErrorType::HttpStatus(u32::from(*code)),
                AbortStatus::Grpc(_, code) => fault_abort::ErrorType::GrpcStatus(*code),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Istio's percentages: `percentage.value` (0–100 with fractions) out of a million,
/// truncated; the deprecated integer `percent` out of a hundred; unset is 0 %.
pub fn percent(p: Percentage) -> FractionalPercent {
    match p {
        Percentage::Value(v) => FractionalPercent {
            // Truncated as Istio does (`uint32(value * 10000)`); the parser keeps v in 0..=100.
            numerator: (v * 10_000.0) as u32,
            denominator: DenominatorType::Million as i32,
        },
        Percentage::Percent(n) => FractionalPercent {
            numerator: n,
            denominator: DenominatorType::Hundred as i32,
        },
        Percentage::Unset => FractionalPercent {
            numerator: 0,
            denominator: DenominatorType::Million as i32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::virtual_service::{Abort, Delay};
    use std::time::Duration;

    /// Istio: `percentage.value` is out of a million, truncated (`0.1` % gives 1000;
    /// pitfall 10); the deprecated `percent: 100` (the seed's form) is out of a hundred.
    #[test]
    fn percentages_as_istio_writes_them() {
        let v = |x| percent(Percentage::Value(x));
        assert_eq!((v(0.1).numerator, v(0.1).denominator), (1000, 2));
        assert_eq!(v(100.0).numerator, 1_000_000);
        assert_eq!(v(33.33333).numerator, 333_333);
        let p = percent(Percentage::Percent(100));
        assert_eq!((p.numerator, p.denominator), (100, 0));
    }

    /// gRPC A33 / grpc-js: a fault without a percentage is refused, so an unset one is
    /// written as 0 % (pitfall 1); the abort and the delay both carry it.
    #[test]
    fn a_fault_always_carries_its_percentages() {
        let f = Fault {
            delay: Some(Delay {
                fixed_delay: Duration::from_secs(1),
                percentage: Percentage::Unset,
            }),
            abort: Some(Abort {
                status: AbortStatus::Grpc("UNAVAILABLE".into(), 14),
                percentage: Percentage::Unset,
            }),
        };
        let h = http_fault(&f);
        let d = h.delay.unwrap();
        assert_eq!(d.percentage.unwrap().numerator, 0);
        let Some(fault_delay::FaultDelaySecifier::FixedDelay(fd)) = d.fault_delay_secifier else {
            panic!("no fixed delay")
        };
        assert_eq!(fd.seconds, 1);
        let a = h.abort.unwrap();
        assert!(a.percentage.is_some());
        assert_eq!(a.error_type, Some(fault_abort::ErrorType::GrpcStatus(14)));
    }

    /// Istio: `httpStatus` aborts carry the HTTP code (gRPC maps it: 503 → UNAVAILABLE).
    #[test]
    fn http_status_abort() {
        let f = Fault {
            delay: None,
            abort: Some(Abort {
                status: AbortStatus::Http(503),
                percentage: Percentage::Value(50.0),
            }),
        };
        let a = http_fault(&f).abort.unwrap();
        assert_eq!(a.error_type, Some(fault_abort::ErrorType::HttpStatus(503)));
        assert_eq!(a.percentage.unwrap().numerator, 500_000);
    }
}
