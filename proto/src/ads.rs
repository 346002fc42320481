//! A delta ADS client for meshfed's own consumers of xDS (the gateway, the DNS proxy, the test
//! bed's sidecar). It owns the stream: node identity, first subscriptions with the versions
//! already held (so a reconnect resumes instead of starting over), ACK or NACK of every
//! response, and reconnection with backoff. What a response means is up to a [`DeltaState`].
//! How the server is reached (plaintext, or TLS with a ServiceAccount token) is an
//! [`XdsServer`]'s business: every reconnect connects anew and reads the token again.

use envoy_types::pb::envoy::config::core::v3::{Locality, Node, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use envoy_types::pb::google::rpc::Status;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use crate::channel::XdsServer;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// SDS: a certificate and key, or a validation context (Envoy's `Secret`).
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Istio's SDS contract, which meshfed's CDS asks for and meshfed's agent serves: the
/// bootstrap cluster, the workload's certificate and key, and the root peers are checked against.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The largest xDS message meshfed's server sends and its clients accept (gRPC's default of
/// 4 MiB is too small for a large mesh's EDS or NDS). A delta response past it is split; a
/// state-of-the-world one is refused with an error, never cut.
pub const MAX_XDS_MESSAGE: usize = 64 << 20;
pub const SDS_WORKLOAD_SECRET: &str = "default";
pub const SDS_ROOT_SECRET: &str = "ROOTCA";

/// The IP and port of an EDS endpoint; None for pipes, host names or ports out of range.
pub fn endpoint_addr(e: &LbEndpoint) -> Option<SocketAddr> {
    let lb_endpoint::HostIdentifier::Endpoint(ep) = e.host_identifier.as_ref()? else {
        return None;
    };
    let address::Address::SocketAddress(sa) = ep.address.as_ref()?.address.as_ref()? else {
        return None;
    };
    let socket_address::PortSpecifier::PortValue(port) = sa.port_specifier.clone()? else {
        return None;
    };
    Some(SocketAddr::new(
        sa.address.parse().ok()?,
        u16::try_from(port).ok()?,
    ))
}

/// The EDS subscription change a CDS update implies: endpoints of new clusters wanted,
/// those of removed clusters not (None when the cluster set did not change).
pub fn eds_follow_up(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) -> Option<DeltaDiscoveryRequest> {
    let added: Vec<String> = after.difference(before).cloned().collect();
    let gone: Vec<String> = before.difference(after).cloned().collect();
    (!added.is_empty() || !gone.is_empty()).then(|| DeltaDiscoveryRequest {
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: added,
        resource_names_unsubscribe: gone,
        ..Default::default()
    })
}

/// Who a client says it is, in Istio's terms: the node id
/// `KIND~IP~POD.NS~NS.svc.cluster.local` and the metadata Istio's agent sends.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `sidecar` or `router`.
    pub kind: String,
    pub cluster_id: String,
    pub network: String,
    pub ip: String,
    pub pod: String,
    pub namespace: String,
    pub locality: Locality,
}

impl Identity {
    pub fn node(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(value::Kind::StringValue(v.to_string())),
        };
        let fields = [
            ("CLUSTER_ID", self.cluster_id.as_str()),
            ("NETWORK", self.network.as_str()),
            ("NAMESPACE", self.namespace.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), s(v)))
        .collect();
        Node {
            id: format!(
                "{}~{}~{}.{}~{}.svc.cluster.local",
                self.kind, self.ip, self.pod, self.namespace, self.namespace
            ),
            metadata: Some(Struct { fields }),
            locality: Some(self.locality.clone()),
            ..Default::default()
        }
    }
}

/// One type a client subscribes to when a stream opens.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub type_url: String,
    /// Resource names; `*` asks for every resource of the type.
    pub names: Vec<String>,
    /// Versions of the resources already held, by name.
    pub versions: HashMap<String, String>,
}

/// What a response did: an error makes the reply a NACK; `follow_up` requests (subscription
/// changes caused by the response, such as EDS for new clusters) are sent after the reply.
#[derive(Debug, Default)]
pub struct Applied {
    pub error: Option<String>,
    pub follow_up: Vec<DeltaDiscoveryRequest>,
}

/// The client-side state a stream keeps in step.
pub trait DeltaState: Send {
    /// What to subscribe to when a stream opens, with the versions held.
    fn subscriptions(&self) -> Vec<Subscription>;
    /// Applies one response.
    fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Applied;
}

/// Runs until aborted: connects to `server`, keeps `state` in step, and on any failure
/// (the connect, the handshake, an unreadable token, the stream) keeps what it holds and
/// reconnects with backoff (0.1 s doubling to 5 s).
pub async fn run(server: XdsServer, identity: Identity, state: &mut impl DeltaState) {
    run_node(server, identity.node(), state).await
}

/// As [`run`], for a client that sends more than an [`Identity`] says (the test bed's
/// sidecar adds Istio's `HTTP_PROXY_PORT`, `INTERCEPTION_MODE` and `LABELS` metadata).
pub async fn run_node(server: XdsServer, node: Node, state: &mut impl DeltaState) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&server, &node, state).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "xDS stream ended; keeping what was received")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    server: &XdsServer,
    node: &Node,
    state: &mut impl DeltaState,
) -> Result<(), String> {
    let (channel, bearer) = server.connect().await.map_err(|e| e.to_string())?;
    let mut client = AggregatedDiscoveryServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_XDS_MESSAGE);
    let (tx, rx) = mpsc::channel(16);
    for s in state.subscriptions() {
        let first = DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: s.type_url,
            resource_names_subscribe: s.names,
            initial_resource_versions: s.versions,
            ..Default::default()
        };
        send(&tx, first).await?;
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| status_text(&e))?
        .into_inner();
    tracing::info!(server = %server, "xDS stream open");
    while let Some(response) = inbound.message().await.map_err(|e| status_text(&e))? {
        let applied = state.apply(&response);
        if let Some(e) = &applied.error {
            tracing::warn!(type_url = %response.type_url, error = %e, "rejecting an xDS response");
        }
        send(&tx, reply(&response, applied.error)).await?;
        for r in applied.follow_up {
            send(&tx, r).await?;
        }
    }
    Ok(())
}

/// A status with what caused it (a refused token reads UNAUTHENTICATED with the reason).
fn status_text(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => format!(
            "{:?}: {} ({})",
            status.code(),
            status.message(),
            crate::channel::causes(source)
        ),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The ACK of a response, or its NACK with `error`.
fn reply(response: &DeltaDiscoveryResponse, error: Option<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        error_detail: error.map(|message| Status {
            code: 3, // INVALID_ARGUMENT, as Envoy reports a rejected config
            message,
            details: vec![],
        }),
        ..Default::default()
    }
}

async fn send(
    tx: &mpsc::Sender<DeltaDiscoveryRequest>,
    r: DeltaDiscoveryRequest,
) -> Result<(), String> {
    tx.send(r)
        .await
        .map_err(|_| "the stream closed".to_string())
}
