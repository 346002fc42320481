//! The ADS gRPC service: one task per stream, woken by client requests and by pushes.

use super::delta::Delta;
use super::generate::Push;
use super::node::Proxy;
use super::sotw::Sotw;
use crate::metrics;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct Ads {
    pushes: watch::Receiver<Arc<Push>>,
}

impl Ads {
    pub fn new(pushes: watch::Receiver<Arc<Push>>) -> Ads {
        Ads { pushes }
    }
}

type Out<T> = mpsc::Sender<Result<T, Status>>;

/// Counts a connected client for as long as it lives.
struct Connected(&'static str);

impl Connected {
    fn new(mode: &'static str) -> Connected {
        metrics::connected(mode, 1.0);
        Connected(mode)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::connected(self.0, -1.0);
    }
}

fn proxy(node: Option<&Node>) -> Result<Proxy, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("the first request carries no node"))?;
    Proxy::from_node(node).map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve::<Sotw>(request.into_inner(), tx, self.pushes.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve::<Delta>(
            request.into_inner(),
            tx,
            self.pushes.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One ADS dialect's per-stream state: how it reads a request and answers a push.
trait Stream: Sized {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const MODE: &'static str;
    fn new(proxy: Proxy) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn proxy_id(&self) -> &str;
    fn request(&mut self, req: &Self::Req, push: &Push) -> Option<Self::Resp>;
    fn push(&mut self, push: &Push) -> Vec<Self::Resp>;
}

impl Stream for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const MODE: &'static str = "sotw";
    fn new(proxy: Proxy) -> Self {
        Sotw::new(proxy)
    }
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn proxy_id(&self) -> &str {
        &self.proxy.id
    }
    fn request(&mut self, req: &DiscoveryRequest, push: &Push) -> Option<DiscoveryResponse> {
        Sotw::request(self, req, push)
    }
    fn push(&mut self, push: &Push) -> Vec<DiscoveryResponse> {
        Sotw::push(self, push)
    }
}

impl Stream for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const MODE: &'static str = "delta";
    fn new(proxy: Proxy) -> Self {
        Delta::new(proxy)
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn proxy_id(&self) -> &str {
        &self.proxy.id
    }
    fn request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        push: &Push,
    ) -> Option<DeltaDiscoveryResponse> {
        Delta::request(self, req, push)
    }
    fn push(&mut self, push: &Push) -> Vec<DeltaDiscoveryResponse> {
        Delta::push(self, push)
    }
}

/// Serves one stream: the first request names the client; then requests and pushes, in turn.
async fn serve<S: Stream>(
    mut inbound: Streaming<S::Req>,
    tx: Out<S::Resp>,
    mut pushes: watch::Receiver<Arc<Push>>,
) where
    Streaming<S::Req>: Send,
{
    let Ok(Some(first)) = inbound.message().await else {
        return;
    };
    let mut conn = match proxy(S::node(&first)) {
        Ok(p) => S::new(p),
        Err(status) => {
            metrics::rejected();
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let _connected = Connected::new(S::MODE);
    tracing::debug!(node = %conn.proxy_id(), mode = S::MODE, "stream");
    let push = pushes.borrow_and_update().clone();
    let mut out: Vec<S::Resp> = conn.request(&first, &push).into_iter().collect();
    loop {
        for r in out.drain(..) {
            if tx.send(Ok(r)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let push = pushes.borrow().clone();
                    out.extend(conn.request(&req, &push));
                }
                _ => return,
            },
            changed = pushes.changed() => {
                if changed.is_err() { return; }
                let push = pushes.borrow_and_update().clone();
                out = conn.push(&push);
            }
        }
    }
}
