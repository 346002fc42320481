//! Which endpoints to try, in order, for a new connection.

use crate::routes::{Cluster, RouteEndpoint};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    RoundRobin,
    LeastConnections,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "least-connections" => Ok(Policy::LeastConnections),
            other => Err(format!(
                "unknown balancing policy {other:?}: use round-robin or least-connections"
            )),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastConnections => "least-connections",
        })
    }
}

/// Endpoints in the order to try them: healthy ones by policy, then (only when every
/// endpoint is set aside) the ejected ones, since trying beats refusing outright.
pub fn candidates(cluster: &Cluster, policy: Policy) -> Vec<Arc<RouteEndpoint>> {
    let eps = &cluster.endpoints;
    if eps.is_empty() {
        return Vec::new();
    }
    let start = cluster.next.fetch_add(1, Ordering::Relaxed) % eps.len();
    let mut order: Vec<Arc<RouteEndpoint>> =
        eps[start..].iter().chain(&eps[..start]).cloned().collect();
    if policy == Policy::LeastConnections {
        // Stable sort: ties keep the round-robin rotation, so equal load still spreads.
        order.sort_by_key(|e| e.health.active.load(Ordering::Relaxed));
    }
    let (healthy, ejected): (Vec<_>, Vec<_>) =
        order.into_iter().partition(|e| !e.health.is_ejected());
    if healthy.is_empty() { ejected } else { healthy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{RouteTable, ServiceRoutes};
    use std::time::Duration;

    fn cluster(n: usize) -> std::sync::Arc<Cluster> {
        let eps: Vec<String> = (1..=n)
            .map(|i| format!("{{address: \"10.0.0.{i}:80\"}}"))
            .collect();
        let svc: ServiceRoutes = serde_yaml::from_str(&format!(
            "host: a.b\nport: 80\nendpoints: [{}]",
            eps.join(",")
        ))
        .unwrap();
        RouteTable::build(&[svc], &RouteTable::default())
            .lookup("outbound_.80_._.a.b")
            .unwrap()
    }

    fn first(c: &Cluster, p: Policy) -> String {
        candidates(c, p)[0].endpoint.address.to_string()
    }

    #[test]
    fn round_robin_rotates_and_skips_ejected() {
        let c = cluster(3);
        let firsts: Vec<String> = (0..3).map(|_| first(&c, Policy::RoundRobin)).collect();
        assert_eq!(firsts, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        c.endpoints[1].health.eject(Duration::from_secs(60));
        for _ in 0..6 {
            let order = candidates(&c, Policy::RoundRobin);
            assert_eq!(order.len(), 2);
            assert!(
                order
                    .iter()
                    .all(|e| e.endpoint.address.to_string() != "10.0.0.2:80")
            );
        }
    }

    #[test]
    fn all_ejected_still_yields_everything() {
        let c = cluster(2);
        for e in &c.endpoints {
            e.health.eject(Duration::from_secs(60));
        }
        assert_eq!(candidates(&c, Policy::RoundRobin).len(), 2);
        c.endpoints[0].health.restore();
        assert_eq!(candidates(&c, Policy::RoundRobin).len(), 1);
    }

    #[test]
    fn least_connections_prefers_the_idle_endpoint() {
        let c = cluster(3);
        c.endpoints[0].health.active.store(5, Ordering::Relaxed);
        c.endpoints[2].health.active.store(2, Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(first(&c, Policy::LeastConnections), "10.0.0.2:80");
        }
    }
}
