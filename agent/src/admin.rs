//! The agent's admin port (Istio's agent serves the same on 15020): `/healthz/ready` once a
//! valid certificate is held, `/metrics`.

use crate::material::Material;
use meshfed_model::admin::Reply;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;

/// Istio's agent's status port, on loopback: metrics are for the pod's own scrapers.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15020));

/// The routes, reading the material served now.
pub fn route(
    material: watch::Receiver<Arc<Material>>,
) -> impl Fn(&str) -> Reply + Clone + Send + Sync + 'static {
    move |path: &str| match path {
        "/healthz/ready" => readiness(&material.borrow(), OffsetDateTime::now_utc()),
        "/metrics" => Reply::metrics(),
        _ => Reply::not_found(),
    }
}

/// Ready while a certificate is held and unexpired: a pod whose certificate lapsed (the CA
/// away too long) cannot make mTLS connections and should leave its Service's endpoints.
fn readiness(m: &Material, now: OffsetDateTime) -> Reply {
    if m.is_pending() {
        return Reply::readiness(false, "no workload certificate yet");
    }
    let expired = format!("the workload certificate expired at {}", m.not_after);
    Reply::readiness(m.not_after > now, &expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_an_unexpired_certificate() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(readiness(&Material::pending(), now).status, 503);
        let dir = tempfile::tempdir().expect("tempdir");
        let w = crate::material::tests::workload(&crate::material::tests::ca("c1"), "sleep");
        crate::material::tests::write(dir.path(), &w.chain_pem(), &w.key_pem, &w.root_pem);
        let m = Material::load(dir.path(), 1).expect("load");
        assert_eq!(readiness(&m, now).status, 200);
        let late = readiness(&m, m.not_after + time::Duration::seconds(1));
        assert_eq!(late.status, 503);
        assert!(late.body.contains("expired"), "{}", late.body);
    }
}
