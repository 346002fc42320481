//! The test bed sidecar's certificate, from SDS as Envoy gets it: `default` and `ROOTCA` from
//! `meshfed agent` on its Unix socket, each push swapped in for new connections.

use crate::OneLine;
use crate::mesh_tls::{Credentials, Material};
use anyhow::{Context, anyhow, bail};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status;
use meshfed_proto::ads::{SDS_ROOT_SECRET, SDS_WORKLOAD_SECRET, SECRET_TYPE};
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Credentials kept current from SDS, and the version of the last ones taken.
pub struct SdsCredentials {
    pub credentials: Credentials,
    version: watch::Receiver<String>,
    _follow: JoinHandle<()>,
}

impl SdsCredentials {
    /// Connects to `socket`, waits for the first certificate, then follows every push.
    pub async fn follow(socket: PathBuf) -> anyhow::Result<SdsCredentials> {
        let shown = socket.display().to_string();
        let on = || format!("SDS on {shown}");
        let channel = connect_unix(socket).await.one_line().with_context(on)?;
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(request("", "", None)).await;
        let mut inbound = SecretDiscoveryServiceClient::new(channel)
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .one_line()
            .with_context(on)?
            .into_inner();
        let first = inbound
            .message()
            .await
            .one_line()
            .with_context(on)?
            .with_context(|| format!("SDS on {shown}: closed before the first secrets"))?;
        let credentials = Credentials::new(material(&first)?);
        let _ = tx
            .send(request(&first.version_info, &first.nonce, None))
            .await;
        let (version, versions) = watch::channel(first.version_info);
        let taken = credentials.clone();
        let follow = tokio::spawn(async move {
            while let Ok(Some(resp)) = inbound.message().await {
                let ack = match material(&resp) {
                    Ok(m) => {
                        taken.replace(m);
                        version.send_replace(resp.version_info.clone());
                        request(&resp.version_info, &resp.nonce, None)
                    }
                    Err(e) => request(
                        version.borrow().as_str(),
                        &resp.nonce,
                        Some(format!("{e:#}")),
                    ),
                };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
            tracing::warn!(socket = %shown, "SDS stream ended; the last certificate stays");
        });
        Ok(SdsCredentials {
            credentials,
            version: versions,
            _follow: follow,
        })
    }

    pub fn version(&self) -> String {
        self.version.borrow().clone()
    }

    /// Waits until a version other than `seen` has been taken; returns it.
    pub async fn changed_from(&self, seen: &str, timeout: Duration) -> anyhow::Result<String> {
        let mut v = self.version.clone();
        let wait = v.wait_for(|v| v != seen);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(v)) => Ok(v.clone()),
            _ => Err(anyhow!("no new certificate over SDS within {timeout:?}")),
        }
    }
}

/// A gRPC channel over the Unix socket at `socket` (where Envoy's `sds-grpc` points).
pub async fn connect_unix(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://sds.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// Both secrets, on every request (a NACK carries the reason).
fn request(version: &str, nonce: &str, error: Option<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: SECRET_TYPE.into(),
        resource_names: vec![SDS_WORKLOAD_SECRET.into(), SDS_ROOT_SECRET.into()],
        version_info: version.into(),
        response_nonce: nonce.into(),
        error_detail: error.map(|message| Status {
            code: 3,
            message,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The credentials in an SDS response: `default`'s chain and key, `ROOTCA`'s trust anchors.
fn material(resp: &DiscoveryResponse) -> anyhow::Result<Material> {
    let (mut chain, mut key, mut roots) = (None, None, None);
    for any in &resp.resources {
        let s = Secret::decode(any.value.as_slice()).context("SDS secret")?;
        match s.r#type {
            Some(secret::Type::TlsCertificate(t)) if s.name == SDS_WORKLOAD_SECRET => {
                chain = inline(t.certificate_chain);
                key = inline(t.private_key);
            }
            Some(secret::Type::ValidationContext(v)) if s.name == SDS_ROOT_SECRET => {
                roots = inline(v.trusted_ca);
            }
            _ => bail!("SDS secret {:?}: not one this sidecar asked for", s.name),
        }
    }
    match (chain, key, roots) {
        (Some(c), Some(k), Some(r)) => Ok(Material::from_pem(&c, &k, &r)?),
        _ => bail!("SDS response without inline default and ROOTCA"),
    }
}

fn inline(d: Option<DataSource>) -> Option<Vec<u8>> {
    match d?.specifier? {
        data_source::Specifier::InlineBytes(b) => Some(b),
        _ => None,
    }
}
