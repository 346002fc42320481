//! Every series the federation exports, with its help text, in one place: `meshfed_xds_*`
//! (the xDS server), `meshfed_ca_*` (the CA), `meshfed_remote_secret_*`, `meshfed_registry_*`
//! and the per-cluster
//! `meshfed_remote_cluster_*`. The per-cluster series are rendered from the registry at scrape
//! time rather than kept in the recorder, so a removed cluster's series go with it.

use crate::registry::{ClusterStatus, Registry, Status};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use std::fmt::Write;
use std::sync::Once;

const SYNC_STATUS: &str = "meshfed_remote_cluster_sync_status";
const SYNC_AGE: &str = "meshfed_remote_cluster_last_sync_age_seconds";

/// Installs the recorder and registers every series' help text (once per process).
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        meshfed_model::telemetry::prometheus();
        describe_counter!(
            "meshfed_xds_nacks_total",
            "xDS responses a client rejected, by type."
        );
        describe_counter!(
            "meshfed_xds_stale_requests_total",
            "xDS requests answering an older response than the last sent, by type."
        );
        describe_counter!(
            "meshfed_xds_responses_total",
            "xDS responses sent, by type and mode."
        );
        describe_counter!(
            "meshfed_xds_resources_sent_total",
            "Resources carried by xDS responses, by type and mode."
        );
        describe_gauge!(
            "meshfed_xds_clients",
            "Connected xDS streams, by mode (delta, sotw)."
        );
        describe_counter!(
            "meshfed_xds_rejected_streams_total",
            "xDS streams refused (a node that does not parse or is not allowed)."
        );
        describe_counter!(
            "meshfed_xds_pushes_total",
            "Registry changes turned into a push."
        );
        describe_counter!(
            "meshfed_xds_send_timeouts_total",
            "Clients disconnected because they took no response within the send timeout."
        );
        describe_counter!(
            "meshfed_xds_oversized_responses_total",
            "Responses over the message size limit: split (delta) or refused (state of the world)."
        );
        describe_histogram!(
            "meshfed_xds_push_build_seconds",
            Unit::Seconds,
            "Time to build the resources of one push."
        );
        describe_histogram!(
            "meshfed_xds_change_to_push_seconds",
            Unit::Seconds,
            "Time from the first registry change of a push to the push being ready."
        );
        describe_counter!(
            "meshfed_ca_requests_total",
            "CreateCertificate requests by outcome (issued, unauthenticated, unavailable, permission_denied, invalid_argument, internal)."
        );
        describe_counter!(
            "meshfed_ca_auth_failures_total",
            "Callers of the secure port not authenticated, by reason (missing, bad_header, bad_certificate, token_refused, review_unavailable)."
        );
        describe_counter!(
            "meshfed_ca_authentications_total",
            "Callers of the secure port authenticated, by method (certificate, token, cached_token)."
        );
        describe_counter!(
            "meshfed_secure_tls_handshake_failures_total",
            "TLS handshakes on the secure port that failed (a client certificate that does not verify, not TLS, ...) or timed out, by reason (error, timeout)."
        );
        describe_gauge!(
            "meshfed_ca_serving_cert_expiry_timestamp_seconds",
            "When the secure port's own certificate expires (Unix seconds); it is renewed at half its life."
        );
        describe_counter!(
            "meshfed_remote_secret_events_total",
            "Remote secret changes handled, by event (add, update, delete, conflict, error)."
        );
        describe_gauge!(
            "meshfed_registry_services",
            "Services in the merged registry."
        );
        describe_gauge!(
            "meshfed_registry_endpoints",
            "Endpoints in the merged registry."
        );
        describe_gauge!(
            "meshfed_registry_gateways",
            "Network gateways in the merged registry."
        );
        describe_gauge!(
            "meshfed_registry_dropped_gateways",
            "Gateway Services (or their hostnames) giving no gateway, by reason (no_gateway_port, no_address, unresolved); /debug/clusterz says which."
        );
        describe_gauge!(
            "meshfed_config_errors",
            "Errors in Istio rules as of the last push, by kind and reason (a refused rule counts each of its errors; an unknown subset counts though the rule is kept); /debug/configz says which."
        );
    });
}

pub fn nack(kind: &'static str) {
    counter!("meshfed_xds_nacks_total", "type" => kind).increment(1);
}

pub fn stale(kind: &'static str) {
    counter!("meshfed_xds_stale_requests_total", "type" => kind).increment(1);
}

pub fn sent(kind: &'static str, mode: &'static str, resources: usize) {
    counter!("meshfed_xds_responses_total", "type" => kind, "mode" => mode).increment(1);
    counter!("meshfed_xds_resources_sent_total", "type" => kind, "mode" => mode)
        .increment(resources as u64);
}

pub fn connected(mode: &'static str, delta: f64) {
    gauge!("meshfed_xds_clients", "mode" => mode).increment(delta);
}

pub fn rejected() {
    counter!("meshfed_xds_rejected_streams_total").increment(1);
}

pub fn send_timeout() {
    counter!("meshfed_xds_send_timeouts_total").increment(1);
}

pub fn oversized(kind: &'static str) {
    counter!("meshfed_xds_oversized_responses_total", "type" => kind).increment(1);
}

pub fn push_built(seconds: f64, delay: f64) {
    counter!("meshfed_xds_pushes_total").increment(1);
    histogram!("meshfed_xds_push_build_seconds").record(seconds);
    histogram!("meshfed_xds_change_to_push_seconds").record(delay);
}

pub fn ca_request(outcome: &'static str) {
    counter!("meshfed_ca_requests_total", "outcome" => outcome).increment(1);
}

pub fn ca_auth_failure(reason: &'static str) {
    counter!("meshfed_ca_auth_failures_total", "reason" => reason).increment(1);
}

pub fn ca_authenticated(method: crate::ca::authn::Method) {
    use crate::ca::authn::Method;
    let method = match method {
        Method::Certificate => "certificate",
        Method::Token => "token",
        Method::CachedToken => "cached_token",
    };
    counter!("meshfed_ca_authentications_total", "method" => method).increment(1);
}

pub fn tls_handshake_failed(reason: &'static str) {
    counter!("meshfed_secure_tls_handshake_failures_total", "reason" => reason).increment(1);
}

pub fn ca_serving_expiry(unix_s: i64) {
    gauge!("meshfed_ca_serving_cert_expiry_timestamp_seconds").set(unix_s as f64);
}

/// The errors of `kind`'s rules by reason; every reason is written, so one that went away
/// reads 0 rather than its last count.
pub fn config_errors(
    kind: &'static str,
    by_reason: &std::collections::BTreeMap<crate::xds::virtual_service::Reason, usize>,
) {
    use crate::xds::virtual_service::Reason;
    for reason in Reason::ALL {
        let n = by_reason.get(&reason).copied().unwrap_or(0);
        gauge!("meshfed_config_errors", "kind" => kind, "reason" => reason.as_str()).set(n as f64);
    }
}

pub fn secret_event(event: &'static str) {
    counter!("meshfed_remote_secret_events_total", "event" => event).increment(1);
}

/// The whole `/metrics` page: the recorder's series, the registry's sizes as of now, and
/// one set of per-cluster series for each cluster the registry still has.
pub fn render(registry: &Registry) -> String {
    describe();
    let snap = registry.snapshot();
    gauge!("meshfed_registry_services").set(snap.services.len() as f64);
    let endpoints: usize = snap.services.iter().map(|s| s.endpoints.len()).sum();
    gauge!("meshfed_registry_endpoints").set(endpoints as f64);
    gauge!("meshfed_registry_gateways").set(snap.gateways.len() as f64);
    let prometheus = meshfed_model::telemetry::prometheus();
    prometheus.run_upkeep();
    let mut page = prometheus.render();
    page.push_str(&clusters(&registry.clusters()));
    page
}

/// Prometheus text for the per-cluster series.
fn clusters(clusters: &[ClusterStatus]) -> String {
    let mut out = format!(
        "# HELP {SYNC_STATUS} 1 for the status each remote cluster is in, else 0.\n# TYPE {SYNC_STATUS} gauge\n"
    );
    for c in clusters {
        for status in [
            Status::Syncing,
            Status::Synced,
            Status::Timeout,
            Status::Unreachable,
            Status::Error,
        ] {
            let on = u8::from(c.status == status);
            let _ = writeln!(
                out,
                "{SYNC_STATUS}{{cluster=\"{}\",status=\"{}\"}} {on}",
                escape(&c.id),
                status.as_str()
            );
        }
    }
    let _ = write!(
        out,
        "# HELP {SYNC_AGE} Seconds since the last good list or watch event of each cluster.\n# TYPE {SYNC_AGE} gauge\n"
    );
    for c in clusters {
        if let Some(age) = c.last_sync_age_s {
            let _ = writeln!(out, "{SYNC_AGE}{{cluster=\"{}\"}} {age}", escape(&c.id));
        }
    }
    out
}

/// A label value as the text format wants it: cluster ids come from secrets, so anything.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryConfig;
    use std::time::Duration;

    #[test]
    fn a_removed_cluster_leaves_no_series() {
        let registry = Registry::new(RegistryConfig {
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout: Duration::from_secs(30),
        });
        let generation = registry.add_generation("cluster-\"x\"", "s", None, 1);
        registry.listed("cluster-\"x\"", generation, crate::registry::Kind::Service);
        let page = render(&registry);
        assert!(
            page.contains("meshfed_remote_cluster_sync_status{cluster=\"cluster-\\\"x\\\"\",status=\"synced\"} 1"),
            "{page}"
        );
        assert!(page.contains("# HELP meshfed_remote_cluster_sync_status"));
        registry.remove_cluster("cluster-\"x\"");
        let page = render(&registry);
        assert!(!page.contains("cluster-"), "{page}");
        assert!(page.contains("meshfed_registry_services 0"), "{page}");
    }
}
