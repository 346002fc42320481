//! The secure port (istiod's 15012): TLS with the CA-issued serving certificate, client
//! certificates asked for, the CA's `CreateCertificate`, and the serving certificate's
//! renewal beside it. Connection limits are the xDS server's.

use crate::ca::{self, Ca};
use crate::xds::{Limits, listen};
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything the port serves, as one future that ends only with an error.
pub fn serve(
    listener: TcpListener,
    ca: Ca,
    limits: Limits,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + use<>, ca::Error> {
    crate::metrics::describe();
    let acceptor = ca.acceptor()?;
    let renewal = ca.renewal();
    let service = ca.service().server();
    Ok(async move {
        let renewing = tokio::spawn(renewal);
        let incoming = listen::incoming(listener, limits.max_connections, Some(acceptor));
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(Some(limits.max_streams_per_connection))
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        renewing.abort();
        result
    })
}
