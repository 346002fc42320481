//! A stub delta ADS server: every delta stream is reported (with the `authorization` header it
//! carried) and sent the same responses, whatever the client asks; ACKs are read and ignored.
//! A stream stays open until the client goes or the test calls [`DeltaStream::end`]. State of
//! the world streams are refused. Optionally a stream without a token is refused as istiod's
//! secure port refuses it.

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

/// One delta stream the stub took.
#[derive(Debug)]
pub struct DeltaStream {
    /// The `authorization` header as sent.
    pub authorization: Option<String>,
    ender: oneshot::Sender<()>,
}

impl DeltaStream {
    /// Ends the stream cleanly (with OK, after the responses), so the client reconnects.
    /// Dropping a `DeltaStream` leaves its stream open.
    pub fn end(self) {
        let _ = self.ender.send(());
    }
}

/// The stub's service.
pub struct StubAds {
    responses: Vec<DeltaDiscoveryResponse>,
    streams: mpsc::UnboundedSender<DeltaStream>,
    token_required: bool,
}

impl StubAds {
    /// A stub sending `responses`, in order, on every delta stream; streams arrive on the
    /// receiver.
    pub fn new(
        responses: Vec<DeltaDiscoveryResponse>,
    ) -> (StubAds, mpsc::UnboundedReceiver<DeltaStream>) {
        let (streams, rx) = mpsc::unbounded_channel();
        let stub = StubAds {
            responses,
            streams,
            token_required: false,
        };
        (stub, rx)
    }

    /// Answers a stream without an `authorization` header UNAUTHENTICATED (it is still
    /// reported), as istiod's secure port does.
    pub fn token_required(mut self) -> StubAds {
        self.token_required = true;
        self
    }

    /// Serves the stub on `incoming` (a [`super::TlsIncoming`], or plain TCP) on a task of
    /// its own, until the task is aborted or dropped with the runtime.
    pub fn spawn<I, IO, IE>(self, incoming: I) -> tokio::task::JoinHandle<()>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let server = tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(self))
            .serve_with_incoming(incoming);
        tokio::spawn(async move {
            let _ = server.await;
        })
    }
}

/// A response carrying one resource `name` of `type_url` (version "1") with `value`.
pub fn response(type_url: &str, name: &str, value: Vec<u8>, nonce: &str) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        system_version_info: "1".into(),
        resources: vec![Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(Any {
                type_url: type_url.into(),
                value,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for StubAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authorization = super::authorization(request.metadata());
        let refused = self.token_required && authorization.is_none();
        let (ender, ended) = oneshot::channel();
        let _ = self.streams.send(DeltaStream {
            authorization,
            ender,
        });
        if refused {
            return Err(Status::unauthenticated("no token"));
        }
        let (tx, rx) = mpsc::channel(self.responses.len().max(1));
        let (responses, mut inbound) = (self.responses.clone(), request.into_inner());
        tokio::spawn(async move {
            for response in responses {
                let _ = tx.send(Ok(response)).await;
            }
            // Only DeltaStream::end ends the stream; a dropped DeltaStream does not.
            let ended = async {
                if ended.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = ended => {}
                _ = async { while let Ok(Some(_)) = inbound.message().await {} } => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
