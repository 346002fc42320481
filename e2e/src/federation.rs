//! The federation as the proxyless scenarios run it: in the test process, over cluster1's
//! API server with cluster2 joined by its remote secret, and serving plaintext xDS
//! (`--xds-listen`) on a free loopback port.

use meshfed_federation::{Controllers, FederationConfig, xds};
use meshfed_testbed::ApiServer;
use std::net::SocketAddr;

/// Joins cluster2 (`s2`) to cluster1 (`c1`) by a remote secret, as `istioctl
/// create-remote-secret` would, and starts cluster1's federation (network1) over both.
pub async fn start(c1: &kube::Client, s2: &ApiServer) -> Result<Controllers, String> {
    meshfed_testbed::seed::remote_secret(c1, "cluster2", &s2.kubeconfig())
        .await
        .map_err(|e| format!("cluster2's remote secret: {e}"))?;
    let config = FederationConfig::new("cluster1", "network1");
    Ok(Controllers::start(c1.clone(), &config))
}

/// Serves plaintext xDS over `fed`'s registry (default debounce and limits) on a free
/// loopback port, and returns its address.
pub async fn serve_xds(fed: &Controllers) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("xDS listener: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("xDS listener: {e}"))?;
    tokio::spawn(xds::serve(
        listener,
        fed.registry.clone(),
        xds::Debounce::default(),
    ));
    Ok(addr)
}

/// How many endpoints `fed`'s registry holds for `hostname`, over every cluster.
pub fn endpoints(fed: &Controllers, hostname: &str) -> usize {
    let snapshot = fed.registry.snapshot();
    snapshot
        .services
        .iter()
        .filter(|s| s.hostname == hostname)
        .map(|s| s.endpoints.len())
        .sum()
}
