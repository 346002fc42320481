//! Who may read xDS on the secure port, as istiod's `XDS_AUTH`: the caller is authenticated
//! like a CA caller (workload certificate or ServiceAccount token), and its node may only
//! claim the caller's own namespace (Istio's `authorize`: a proxy's namespace must be its
//! identity's). `router` nodes, which get every mesh workload's address of their network,
//! must be one of the gateway identities.

use super::node::{Proxy, ProxyKind};
use crate::ca::authn::{Authenticator, Caller};
use crate::xds::listen::ConnInfo;
use meshfed_certs::SpiffeId;
use std::sync::Arc;
use tonic::{Request, Status};

/// The east-west gateway's ServiceAccount in deploy/meshfed.yaml.
pub const DEFAULT_GATEWAY_ACCOUNT: &str = "meshfed-gateway";

/// A ServiceAccount allowed to subscribe as a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for Account {
    type Err = String;

    /// `NS/SA`, or a SPIFFE id `spiffe://TD/ns/NS/sa/SA`.
    fn from_str(s: &str) -> Result<Account, String> {
        if s.starts_with("spiffe://") {
            let id: SpiffeId = s.parse().map_err(|e| format!("{e}"))?;
            return Ok(Account {
                namespace: id.namespace,
                name: id.service_account,
            });
        }
        match s.split_once('/') {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                Ok(Account {
                    namespace: ns.into(),
                    name: sa.into(),
                })
            }
            _ => Err(format!(
                "{s:?} is not NAMESPACE/SERVICEACCOUNT or a SPIFFE id"
            )),
        }
    }
}

pub struct XdsAuth {
    pub authn: Arc<Authenticator>,
    pub gateways: Vec<Account>,
}

impl XdsAuth {
    /// The caller of a stream, before anything is read from it.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let conn = request.extensions().get::<ConnInfo>();
        self.authn
            .authenticate(conn, request.metadata())
            .await
            .inspect(|c| crate::metrics::ca_authenticated(c.method))
            .map_err(|e| {
                crate::metrics::ca_auth_failure(e.reason());
                tracing::info!(reason = e.reason(), error = %e, "xDS caller not authenticated");
                e.status()
            })
    }

    /// Whether `caller` may be `proxy`.
    pub fn authorize(&self, caller: &Caller, proxy: &Proxy) -> Result<(), Status> {
        let id = &caller.identity;
        if proxy.namespace != id.namespace {
            return Err(Status::permission_denied(format!(
                "{id} may not act as a proxy of namespace {:?}",
                proxy.namespace
            )));
        }
        let gateway = self
            .gateways
            .iter()
            .any(|g| g.namespace == id.namespace && g.name == id.service_account);
        if proxy.kind == ProxyKind::Router && !gateway {
            return Err(Status::permission_denied(format!(
                "{id} is not a gateway identity; routers must be one"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::authn::Method;
    use crate::ca::review::{Account as Reviewed, CachedReviewer, ReviewError, Reviewer};
    use crate::xds::node::test_sidecar;
    use futures::future::BoxFuture;

    struct Never;
    impl Reviewer for Never {
        fn review<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Reviewed, ReviewError>> {
            Box::pin(async { Err(ReviewError::Refused("no".into())) })
        }
    }

    fn auth() -> XdsAuth {
        let authn = Authenticator::new(
            CachedReviewer::new(Box::new(Never)),
            "istio-ca",
            "cluster.local",
        );
        XdsAuth {
            authn: Arc::new(authn),
            gateways: vec!["istio-system/meshfed-gateway".parse().unwrap()],
        }
    }

    fn caller(id: &str) -> Caller {
        Caller {
            identity: id.parse().unwrap(),
            method: Method::Token,
        }
    }

    /// Istio's xDS authorization: a proxy's namespace must be its identity's namespace;
    /// a router (which learns every mesh workload's address) must be a gateway identity.
    #[test]
    fn a_node_may_claim_only_its_own_namespace_and_routers_only_gateways() {
        let auth = auth();
        let mut sidecar = test_sidecar();
        sidecar.namespace = "sample".into();
        assert!(
            auth.authorize(
                &caller("spiffe://cluster.local/ns/sample/sa/sleep"),
                &sidecar
            )
            .is_ok()
        );
        let other = auth.authorize(
            &caller("spiffe://cluster.local/ns/other/sa/sleep"),
            &sidecar,
        );
        assert_eq!(other.unwrap_err().code(), tonic::Code::PermissionDenied);
        let mut router = test_sidecar();
        router.kind = ProxyKind::Router;
        router.namespace = "istio-system".into();
        let gw = caller("spiffe://cluster.local/ns/istio-system/sa/meshfed-gateway");
        assert!(auth.authorize(&gw, &router).is_ok());
        let not_gw = caller("spiffe://cluster.local/ns/istio-system/sa/meshfed-dns");
        assert_eq!(
            auth.authorize(&not_gw, &router).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        // A pod in the gateway's namespace is still not a router unless it is the gateway.
        router.namespace = "sample".into();
        let sleep = caller("spiffe://cluster.local/ns/sample/sa/sleep");
        assert_eq!(
            auth.authorize(&sleep, &router).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn gateway_identities_parse_in_both_forms() {
        let a: Account = "istio-system/meshfed-gateway".parse().unwrap();
        let b: Account = "spiffe://cluster.local/ns/istio-system/sa/meshfed-gateway"
            .parse()
            .unwrap();
        assert_eq!(a, b);
        for bad in ["", "gw", "/gw", "ns/", "a/b/c", "spiffe://x/ns/a"] {
            assert!(bad.parse::<Account>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unauthenticated_stream_is_refused_before_anything_is_read() {
        let request = Request::new(());
        let err = auth().caller(&request).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
