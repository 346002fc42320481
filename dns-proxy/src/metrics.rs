//! `meshfed_dns_*` series. Handles are registered once, so answering a query costs an atomic
//! add, not a registry lookup.

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use std::sync::OnceLock;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the mesh's names.
    Local,
    /// Relayed upstream and answered.
    Forwarded,
    /// Relayed upstream, which failed: SERVFAIL.
    Failed,
    /// A client outside the allowed networks.
    Refused,
    /// Malformed after the header: FORMERR.
    Formerr,
    /// Malformed before the end of the header, or a response: dropped.
    Dropped,
    /// To be relayed while the most forwarded queries allowed were in flight: SERVFAIL.
    Overloaded,
}

const PROTOCOLS: [&str; 2] = ["udp", "tcp"];
const OUTCOMES: [Outcome; 7] = [
    Outcome::Local,
    Outcome::Forwarded,
    Outcome::Failed,
    Outcome::Refused,
    Outcome::Formerr,
    Outcome::Dropped,
    Outcome::Overloaded,
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Forwarded => "forwarded",
            Outcome::Failed => "servfail",
            Outcome::Refused => "refused",
            Outcome::Formerr => "formerr",
            Outcome::Dropped => "dropped",
            Outcome::Overloaded => "overloaded",
        }
    }
}

pub struct Metrics {
    requests: [[Counter; 7]; 2],
    upstream: [Counter; 2],
    pub upstream_failures: Counter,
    pub upstream_seconds: Histogram,
    pub names: Gauge,
    pub table_updates: Counter,
    pub forwards_in_flight: Gauge,
    pub forwarding_loops: Counter,
    pub tcp_connections: Gauge,
}

impl Metrics {
    /// Counts a request; `tcp` says how it came.
    pub fn request(&self, tcp: bool, outcome: Outcome) {
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[usize::from(tcp)][i].increment(1);
    }

    pub fn upstream_request(&self, tcp: bool) {
        self.upstream[usize::from(tcp)].increment(1);
    }
}

/// The process's DNS metrics (the recorder is installed by `meshfed_model::telemetry`).
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        meshfed_model::telemetry::prometheus();
        describe();
        Metrics {
            requests: PROTOCOLS.map(|p| {
                OUTCOMES.map(|o| {
                    counter!("meshfed_dns_requests_total", "protocol" => p, "outcome" => o.label())
                })
            }),
            upstream: PROTOCOLS
                .map(|p| counter!("meshfed_dns_upstream_requests_total", "protocol" => p)),
            upstream_failures: counter!("meshfed_dns_upstream_failures_total"),
            upstream_seconds: histogram!("meshfed_dns_upstream_duration_seconds"),
            names: gauge!("meshfed_dns_names"),
            table_updates: counter!("meshfed_dns_name_table_updates_total"),
            forwards_in_flight: gauge!("meshfed_dns_forwards_in_flight"),
            forwarding_loops: counter!("meshfed_dns_forwarding_loops_total"),
            tcp_connections: gauge!("meshfed_dns_tcp_connections"),
        }
    })
}

/// Help text for every series, registered before the first handle.
fn describe() {
    describe_counter!(
        "meshfed_dns_requests_total",
        "DNS requests, by protocol and outcome (local, forwarded, servfail, refused, formerr, dropped, \
         overloaded: SERVFAIL at once because the most forwarded queries allowed were in flight)."
    );
    describe_counter!(
        "meshfed_dns_upstream_requests_total",
        "Queries relayed to an upstream resolver, by protocol."
    );
    describe_counter!(
        "meshfed_dns_upstream_failures_total",
        "Relayed queries no upstream answered (SERVFAIL)."
    );
    describe_histogram!(
        "meshfed_dns_upstream_duration_seconds",
        Unit::Seconds,
        "Time for an upstream to answer."
    );
    describe_gauge!("meshfed_dns_names", "Mesh names in the NameTable.");
    describe_counter!(
        "meshfed_dns_name_table_updates_total",
        "NameTables taken from NDS."
    );
    describe_gauge!(
        "meshfed_dns_forwards_in_flight",
        "Queries relayed upstream and not yet answered (capped by --max-forwards-in-flight)."
    );
    describe_counter!(
        "meshfed_dns_forwarding_loops_total",
        "Queries dropped because they came from one of this proxy's own upstream sockets (a forwarding loop)."
    );
    describe_gauge!(
        "meshfed_dns_tcp_connections",
        "Open TCP client connections (capped by --max-tcp-connections)."
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
            meshfed_model::telemetry::series_without_help(&page, "meshfed_dns_");
        assert!(series >= 5, "{page}");
        assert!(missing.is_empty(), "no help for {missing:?}");
    }
}
