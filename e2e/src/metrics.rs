//! The federation's metrics as a scenario reads them. The federation runs in the test
//! process, so its Prometheus recorder (`meshfed_model::telemetry`) is rendered directly:
//! the same text its `/metrics` serves, without a port.

/// The sum of the process's metric series whose line starts with `series` (a name, or a
/// name and its first labels, such as `name{reason="missing"}`).
pub fn sum(series: &str) -> u64 {
    let text = meshfed_model::telemetry::prometheus().render();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// xDS responses a client has NACKed so far (`meshfed_xds_nacks_total`, every type).
pub fn nacks() -> u64 {
    sum("meshfed_xds_nacks_total")
}
