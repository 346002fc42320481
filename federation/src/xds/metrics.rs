//! `meshfed_xds_*` series.

use super::generate::Kind;

pub fn nack(kind: Kind) {
    metrics::counter!("meshfed_xds_nacks_total", "type" => kind.label()).increment(1);
}

pub fn stale(kind: Kind) {
    metrics::counter!("meshfed_xds_stale_requests_total", "type" => kind.label()).increment(1);
}

pub fn sent(kind: Kind, mode: &'static str, resources: usize) {
    metrics::counter!("meshfed_xds_responses_total", "type" => kind.label(), "mode" => mode)
        .increment(1);
    metrics::counter!("meshfed_xds_resources_sent_total", "type" => kind.label(), "mode" => mode)
        .increment(resources as u64);
}

pub fn connected(mode: &'static str, delta: f64) {
    metrics::gauge!("meshfed_xds_clients", "mode" => mode).increment(delta);
}

pub fn rejected() {
    metrics::counter!("meshfed_xds_rejected_streams_total").increment(1);
}

pub fn push_built(seconds: f64, delay: f64) {
    metrics::counter!("meshfed_xds_pushes_total").increment(1);
    metrics::histogram!("meshfed_xds_push_build_seconds").record(seconds);
    metrics::histogram!("meshfed_xds_change_to_push_seconds").record(delay);
}
