//! The secure port (istiod's 15012): TLS with the CA-issued serving certificate, client
//! certificates asked for; the CA's `CreateCertificate` and ADS for authenticated callers
//! (see [`crate::xds::auth`]); the serving certificate's renewal beside it. Connection
//! limits are the xDS server's.

use crate::ca::{self, Ca};
use crate::xds::ads::{Ads, Pushes};
use crate::xds::auth::{Account, XdsAuth};
use crate::xds::{self, Limits, listen};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Everything the port serves, as one future that ends only with an error.
pub fn serve(
    listener: TcpListener,
    ca: Ca,
    pushes: Pushes,
    limits: Limits,
    gateways: Vec<Account>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + use<>, ca::Error> {
    crate::metrics::describe();
    let acceptor = ca.acceptor()?;
    let renewal = ca.renewal();
    let service = ca.service().server();
    let auth = Arc::new(XdsAuth {
        authn: ca.authn.clone(),
        gateways,
    });
    let ads = xds::ads_server(Ads::authenticated(pushes, limits, auth));
    Ok(async move {
        let renewing = tokio::spawn(renewal);
        let incoming = listen::incoming(listener, limits.max_connections, Some(acceptor));
        let result = xds::server(limits)
            .add_service(service)
            .add_service(ads)
            .serve_with_incoming(incoming)
            .await;
        renewing.abort();
        result
    })
}
