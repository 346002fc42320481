//! The xDS server: ADS (state of the world and delta) over gRPC, serving CDS, EDS, LDS/RDS
//! (for gRPC's proxyless clients) and NDS, built per client from the merged registry.

pub mod ads;
pub mod auth;
pub mod cache_key;
pub mod cds;
pub mod delta;
pub mod duration;
pub mod eds;
pub mod generate;
pub mod lds;
pub mod listen;
pub mod locality;
pub mod nds;
pub mod node;
pub mod pusher;
pub mod rds;
pub mod route;
pub mod rules;
pub mod sotw;
pub mod virtual_service;
pub mod vs_index;

use crate::registry::Registry;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use meshfed_proto::ads::MAX_XDS_MESSAGE;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use pusher::Debounce;

/// What one xDS server allows, whoever the clients are.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once; past it, new ones wait in the backlog.
    pub max_connections: usize,
    /// HTTP/2 streams per connection (an Envoy or gRPC client opens one ADS stream).
    pub max_streams_per_connection: u32,
    /// Names one stream may subscribe to, per type.
    pub max_subscriptions: usize,
    /// A client that takes no response for this long is disconnected.
    pub send_timeout: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 16;
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100_000;
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

/// Serves ADS on `listener` until the task is dropped; pushes follow `registry`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    debounce: Debounce,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, registry, debounce, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    registry: Arc<Registry>,
    debounce: Debounce,
    limits: Limits,
) -> Result<(), tonic::transport::Error> {
    let (pusher, pushes) = start_pusher(registry, debounce);
    let result = serve_plain(listener, pushes, limits).await;
    pusher.abort();
    result
}

/// Turns registry changes into pushes, which every ADS service (plaintext and secure
/// port alike) follows.
pub fn start_pusher(
    registry: Arc<Registry>,
    debounce: Debounce,
) -> (tokio::task::JoinHandle<()>, ads::Pushes) {
    crate::metrics::describe();
    let (tx, rx) = watch::channel(None);
    (tokio::spawn(pusher::run(registry, tx, debounce)), rx)
}

/// Plaintext ADS for any client (opt-in: `--xds-listen`).
pub async fn serve_plain(
    listener: TcpListener,
    pushes: ads::Pushes,
    limits: Limits,
) -> Result<(), tonic::transport::Error> {
    let incoming = listen::incoming(listener, limits.max_connections, None);
    server(limits)
        .add_service(ads_server(ads::Ads::new(pushes, limits)))
        .serve_with_incoming(incoming)
        .await
}

/// A gRPC server with the limits every port of the federation shares.
pub fn server(limits: Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
}

/// The ADS service with its message size limits.
pub fn ads_server(ads: ads::Ads) -> AggregatedDiscoveryServiceServer<ads::Ads> {
    AggregatedDiscoveryServiceServer::new(ads)
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_XDS_MESSAGE + (1 << 20))
}

/// Requests are names and versions: 16 MiB holds the largest subscription allowed.
const MAX_REQUEST: usize = 16 << 20;
