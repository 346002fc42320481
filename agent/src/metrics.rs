//! `meshfed_agent_*` series. Handles are registered once; the process-wide recorder
//! (`meshfed_model::telemetry`) renders them on the admin port's `/metrics`.

use crate::material::Material;
use crate::status::FailureReason;
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use std::sync::OnceLock;

pub const CERT_EXPIRY: &str = "meshfed_agent_cert_expiry_timestamp_seconds";
pub const CERT_ROTATIONS: &str = "meshfed_agent_cert_rotations_total";
pub const CSR_FAILURES: &str = "meshfed_agent_csr_failures_total";

pub struct Metrics {
    expiry: Gauge,
    rotations: Counter,
    failures: [Counter; FailureReason::ALL.len()],
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            expiry: gauge!(CERT_EXPIRY),
            rotations: counter!(CERT_ROTATIONS),
            failures: FailureReason::ALL.map(|r| counter!(CSR_FAILURES, "reason" => r.label())),
        }
    }

    /// `m` is served now; `replaced` when it took the place of an earlier certificate.
    pub fn served(&self, m: &Material, replaced: bool) {
        self.expiry.set(m.not_after.unix_timestamp() as f64);
        if replaced {
            self.rotations.increment(1);
        }
    }

    pub fn failure(&self, reason: FailureReason) {
        let i = FailureReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(FailureReason::ALL.len() - 1);
        self.failures[i].increment(1);
    }
}

/// This component's handles on the process-wide recorder.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        meshfed_model::telemetry::prometheus();
        describe();
        Metrics::new()
    })
}

/// Help text for every series, registered before the first handle.
fn describe() {
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "When the served workload certificate expires (its notAfter), as Unix time."
    );
    describe_counter!(
        CERT_ROTATIONS,
        "Workload certificates that replaced a served one (renewed from the CA, or rotated files)."
    );
    describe_counter!(
        CSR_FAILURES,
        "Certificate requests to the CA that gave nothing to serve, by reason (unavailable, \
         unauthenticated, permission_denied, invalid_response, token, other)."
    );
}

#[cfg(test)]
mod tests {
    /// Every series this component exports carries its help text on /metrics.
    #[test]
    fn every_series_has_help() {
        super::global();
        let page = meshfed_model::telemetry::prometheus().render();
        let (series, missing) =
            meshfed_model::telemetry::series_without_help(&page, "meshfed_agent_");
        assert!(series >= 3, "{page}");
        assert!(missing.is_empty(), "no help for {missing:?}");
        assert!(
            page.contains(r#"meshfed_agent_csr_failures_total{reason="invalid_response"}"#),
            "{page}"
        );
    }
}
