//! The helloworld workloads the proxyless scenarios seed: one a cluster, every cluster in
//! one network so that gRPC's clients reach each endpoint directly.

use meshfed_testbed::seed::{ClusterSpec, Workload};

/// helloworld v`index` in cluster`index` (region`index`, zone1, network1) at `ip:port`.
pub fn helloworld(index: usize, ip: &str, port: u16) -> Workload {
    Workload {
        cluster: ClusterSpec {
            network: "network1".into(),
            zone: "zone1".into(),
            ..ClusterSpec::numbered(index)
        },
        ip: ip.into(),
        port,
    }
}
