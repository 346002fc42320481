//! `meshfed_gateway_*` series. Handles are registered once, so the per-connection cost is an
//! atomic add, not a registry lookup.

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use std::sync::OnceLock;

/// How a downstream connection ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Routed,
    NoSni,
    NoRoute,
    BadHello,
    HelloTimeout,
    NoEndpoint,
    UpstreamFailed,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Routed,
        Outcome::NoSni,
        Outcome::NoRoute,
        Outcome::BadHello,
        Outcome::HelloTimeout,
        Outcome::NoEndpoint,
        Outcome::UpstreamFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::NoSni => "no_sni",
            Outcome::NoRoute => "no_route",
            Outcome::BadHello => "bad_hello",
            Outcome::HelloTimeout => "hello_timeout",
            Outcome::NoEndpoint => "no_endpoint",
            Outcome::UpstreamFailed => "upstream_failed",
        }
    }
}

pub struct Metrics {
    outcomes: [Counter; 7],
    pub active: Gauge,
    pub bytes_to_upstream: Counter,
    pub bytes_to_downstream: Counter,
    pub connect_seconds: Histogram,
    pub connect_failures: Counter,
    pub route_reloads_ok: Counter,
    pub route_reloads_failed: Counter,
    pub routes: Gauge,
    /// Upstream connects that failed on this side (EMFILE, ENOBUFS, ...): nobody ejected.
    pub connect_local_errors: Counter,
    /// EDS endpoints dropped for not being marked as mesh workloads.
    pub xds_not_mesh: Counter,
    /// Connections holding a ClientHello buffer now (read or waiting to be replayed).
    pub pending_hellos: Gauge,
    /// Accepts that waited because the ClientHello budget was spent.
    pub hello_budget_waits: Counter,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            outcomes: Outcome::ALL
                .map(|o| counter!("meshfed_gateway_connections_total", "outcome" => o.label())),
            active: gauge!("meshfed_gateway_active_connections"),
            bytes_to_upstream: counter!("meshfed_gateway_bytes_total", "direction" => "to_upstream"),
            bytes_to_downstream: counter!("meshfed_gateway_bytes_total", "direction" => "to_downstream"),
            connect_seconds: histogram!("meshfed_gateway_upstream_connect_seconds"),
            connect_failures: counter!("meshfed_gateway_upstream_connect_failures_total"),
            route_reloads_ok: counter!("meshfed_gateway_route_reloads_total", "result" => "ok"),
            route_reloads_failed: counter!("meshfed_gateway_route_reloads_total", "result" => "error"),
            routes: gauge!("meshfed_gateway_routes"),
            connect_local_errors: counter!("meshfed_gateway_upstream_local_errors_total"),
            xds_not_mesh: counter!("meshfed_gateway_xds_endpoints_not_mesh_total"),
            pending_hellos: gauge!("meshfed_gateway_pending_hellos"),
            hello_budget_waits: counter!("meshfed_gateway_hello_budget_waits_total"),
        }
    }

    pub fn outcome(&self, o: Outcome) {
        self.outcomes[Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)].increment(1);
    }

    pub fn hello_failure(&self, reason: &'static str) {
        counter!("meshfed_gateway_clienthello_parse_failures_total", "reason" => reason)
            .increment(1);
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
    describe_counter!(
        "meshfed_gateway_connections_total",
        "Downstream connections, by how they ended up (routed, no_sni, no_route, ...)."
    );
    describe_gauge!(
        "meshfed_gateway_active_connections",
        "Connections open now."
    );
    describe_counter!(
        "meshfed_gateway_bytes_total",
        Unit::Bytes,
        "Bytes copied, by direction (to_upstream, to_downstream)."
    );
    describe_histogram!(
        "meshfed_gateway_upstream_connect_seconds",
        Unit::Seconds,
        "Time to connect to an endpoint."
    );
    describe_counter!(
        "meshfed_gateway_upstream_connect_failures_total",
        "Endpoint connects that failed: refused, unreachable or timed out (the endpoint is set aside)."
    );
    describe_counter!(
        "meshfed_gateway_upstream_local_errors_total",
        "Upstream connects that failed on the gateway's side (EMFILE, ENFILE, ENOBUFS, EADDRNOTAVAIL, ...); no endpoint is set aside."
    );
    describe_counter!(
        "meshfed_gateway_xds_endpoints_not_mesh_total",
        "EDS endpoints dropped because they were not marked as mesh workloads (tlsMode: istio)."
    );
    describe_gauge!(
        "meshfed_gateway_pending_hellos",
        "Connections holding a buffered ClientHello now (being read or waiting to be replayed)."
    );
    describe_counter!(
        "meshfed_gateway_hello_budget_waits_total",
        "Times accepting waited because --max-pending-hellos connections were holding a ClientHello."
    );
    describe_counter!(
        "meshfed_gateway_route_reloads_total",
        "Route table updates, by result (ok, error)."
    );
    describe_gauge!("meshfed_gateway_routes", "SNI names in the route table.");
    describe_counter!(
        "meshfed_gateway_clienthello_parse_failures_total",
        "ClientHellos that could not be read, by reason."
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
            meshfed_model::telemetry::series_without_help(&page, "meshfed_gateway_");
        assert!(series >= 5, "{page}");
        assert!(missing.is_empty(), "no help for {missing:?}");
    }
}
