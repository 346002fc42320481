//! The xDS server: ADS (state of the world and delta) over gRPC, serving CDS, EDS, LDS/RDS
//! (for gRPC's proxyless clients) and NDS, built per client from the merged registry.

pub mod ads;
pub mod cache_key;
pub mod cds;
pub mod delta;
pub mod eds;
pub mod generate;
pub mod lds;
pub mod locality;
pub mod nds;
pub mod node;
pub mod pusher;
pub mod rules;
pub mod sotw;

use crate::registry::Registry;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use pusher::Debounce;

/// Serves ADS on `listener` until the task is dropped; pushes follow `registry`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    debounce: Debounce,
) -> Result<(), tonic::transport::Error> {
    crate::metrics::describe();
    let (tx, rx) = watch::channel(None);
    let pusher = tokio::spawn(pusher::run(registry, tx, debounce));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(
            AggregatedDiscoveryServiceServer::new(ads::Ads::new(rx))
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming(incoming)
        .await;
    pusher.abort();
    result
}
