//! Envoy's Secret Discovery Service, state of the world, as Istio's agent serves it on
//! `sds-grpc`: `default` is the workload's certificate chain and key, `ROOTCA` the root its
//! peers are checked against. Each stream names the secrets it wants; every response holds
//! all of them at the current version, and a change of the credentials is pushed at once.
//! Before the first certificate (CA mode) requests are held, not answered empty: like Istio's
//! SDS, which waits for the CA, so Envoy never gets a `default` without a certificate.

use crate::material::Material;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use meshfed_proto::ads::{
    SDS_ROOT_SECRET as ROOT_SECRET, SDS_WORKLOAD_SECRET as WORKLOAD_SECRET, SECRET_TYPE,
};
use prost::Message;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The secret called `name`, if it is one this agent serves.
pub fn secret(name: &str, m: &Material) -> Option<Secret> {
    let bytes = |b: &[u8]| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(b.to_vec())),
        ..Default::default()
    };
    let r#type = match name {
        WORKLOAD_SECRET => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(bytes(&m.files.cert_chain)),
            private_key: Some(bytes(&m.files.key)),
            ..Default::default()
        }),
        ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(bytes(&m.files.root)),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(r#type),
    })
}

/// All of `names` this agent serves, at `m`'s version.
fn response(names: &BTreeSet<String>, m: &Material, nonce: String) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: m.generation.to_string(),
        resources: names
            .iter()
            .filter_map(|n| secret(n, m))
            .map(|s| Any {
                type_url: SECRET_TYPE.to_string(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.to_string(),
        nonce,
        ..Default::default()
    }
}

/// One stream's state: what it asked for and what it was last sent.
#[derive(Default)]
pub struct SecretStream {
    names: BTreeSet<String>,
    nonces: u64,
    nonce: String,
    /// The generation of the last response; 0 before the first.
    sent: u64,
}

impl SecretStream {
    /// Handles a request: the first one, a change of names, an ACK or a NACK.
    pub fn request(&mut self, req: &DiscoveryRequest, m: &Material) -> Option<DiscoveryResponse> {
        if !req.type_url.is_empty() && req.type_url != SECRET_TYPE {
            tracing::warn!(type_url = %req.type_url, "SDS request for another type; ignored");
            return None;
        }
        if !req.response_nonce.is_empty() && req.response_nonce != self.nonce {
            return None; // answers a response that a newer one replaced
        }
        if let Some(err) = &req.error_detail {
            tracing::warn!(version = %req.version_info, error = %err.message,
                "Envoy rejected the secrets; it keeps its last good ones");
            return None;
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        for unknown in names.iter().filter(|n| secret(n, m).is_none()) {
            tracing::warn!(name = %unknown, "SDS request for a secret this agent does not serve \
                (it serves {WORKLOAD_SECRET} and {ROOT_SECRET})");
        }
        if !req.response_nonce.is_empty() && names == self.names {
            return None; // an ACK
        }
        self.names = names;
        if m.is_pending() {
            return None; // answered by `update` when the first certificate arrives
        }
        Some(self.respond(m))
    }

    /// The response a change of the material calls for, if this stream has not seen it.
    pub fn update(&mut self, m: &Material) -> Option<DiscoveryResponse> {
        if self.names.is_empty() || self.sent == m.generation || m.is_pending() {
            return None;
        }
        Some(self.respond(m))
    }

    fn respond(&mut self, m: &Material) -> DiscoveryResponse {
        self.nonces += 1;
        self.nonce = self.nonces.to_string();
        self.sent = m.generation;
        response(&self.names, m, self.nonce.clone())
    }
}

/// The gRPC service.
pub struct Sds {
    material: watch::Receiver<Arc<Material>>,
}

impl Sds {
    pub fn server(material: watch::Receiver<Arc<Material>>) -> SecretDiscoveryServiceServer<Sds> {
        SecretDiscoveryServiceServer::new(Sds { material })
    }
}

type Out = mpsc::Sender<Result<DiscoveryResponse, Status>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(serve(request.into_inner(), tx, self.material.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "meshfed agent serves SDS in state-of-the-world mode (api_type: GRPC), as Istio's agent does",
        ))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        // Waits for the first certificate, as a stream does; the caller's deadline bounds it.
        let mut material = self.material.clone();
        let m = material
            .wait_for(|m| !m.is_pending())
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?
            .clone();
        let names = request.into_inner().resource_names.into_iter().collect();
        Ok(Response::new(response(&names, &m, String::new())))
    }
}

/// One stream: requests and changes of the material, in turn, until either side ends.
async fn serve(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Out,
    mut material: watch::Receiver<Arc<Material>>,
) {
    let mut stream = SecretStream::default();
    loop {
        let out = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let m = material.borrow_and_update().clone();
                    // An ACK may cross a change: the change is still owed.
                    stream.request(&req, &m).or_else(|| stream.update(&m))
                }
                _ => return,
            },
            changed = material.changed() => {
                if changed.is_err() { return; }
                let m = material.borrow_and_update().clone();
                stream.update(&m)
            }
        };
        if let Some(resp) = out
            && tx.send(Ok(resp)).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
