//! Envoy's side of SDS for the agent's tests: a client over the agent's Unix socket (Istio's
//! `sds-grpc`), requests as Envoy words them, a StreamSecrets stream driven as Envoy drives it
//! (each response ACKed with its version and nonce) and the one secret a response carries.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use meshfed_proto::ads::SECRET_TYPE;
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// An SDS client over the agent's socket.
pub async fn connect(socket: PathBuf) -> SecretDiscoveryServiceClient<Channel> {
    let channel = meshfed_testbed::sidecar::sds::connect_unix(socket)
        .await
        .expect("connect over the socket");
    SecretDiscoveryServiceClient::new(channel)
}

/// A request for the secrets `names`; an ACK names the version and nonce it accepts.
pub fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: SECRET_TYPE.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// The one secret of `resp`.
pub fn only_secret(resp: &DiscoveryResponse) -> secret::Type {
    assert_eq!(resp.resources.len(), 1, "{resp:?}");
    let s = Secret::decode(resp.resources[0].value.as_slice()).expect("Secret");
    s.r#type.expect("typed secret")
}

/// A StreamSecrets stream for a fixed set of names, driven as Envoy drives it.
pub struct SdsStream {
    names: Vec<String>,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl SdsStream {
    /// Opens the stream with a first request for `names`.
    pub async fn open(
        client: &mut SecretDiscoveryServiceClient<Channel>,
        names: &[&str],
    ) -> SdsStream {
        let (tx, rx) = mpsc::channel(4);
        tx.send(request(names, "", "")).await.expect("send");
        let rx = client
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .expect("stream_secrets")
            .into_inner();
        let names = names.iter().map(|n| n.to_string()).collect();
        SdsStream { names, tx, rx }
    }

    /// The next response, ACKed; None if none comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<DiscoveryResponse> {
        let resp = tokio::time::timeout(within, self.rx.message()).await.ok()?;
        let resp = resp.expect("stream ok").expect("stream open");
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let ack = request(&names, &resp.version_info, &resp.nonce);
        self.tx.send(ack).await.expect("ack");
        Some(resp)
    }
}
