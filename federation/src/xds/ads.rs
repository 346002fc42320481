//! The ADS gRPC service: one task per stream, woken by client requests and by pushes.

use super::delta::Delta;
use super::generate::Push;
use super::metrics;
use super::node::Proxy;
use super::sotw::Sotw;
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
        tokio::spawn(sotw(request.into_inner(), tx, self.pushes.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(delta(request.into_inner(), tx, self.pushes.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn sotw(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Out<DiscoveryResponse>,
    mut pushes: watch::Receiver<Arc<Push>>,
) {
    let Ok(Some(first)) = inbound.message().await else {
        return;
    };
    let mut conn = match proxy(first.node.as_ref()) {
        Ok(p) => Sotw::new(p),
        Err(status) => {
            metrics::rejected();
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let _connected = Connected::new("sotw");
    tracing::debug!(node = %conn.proxy.id, "sotw stream");
    let push = pushes.borrow_and_update().clone();
    let mut out: Vec<DiscoveryResponse> = conn.request(&first, &push).into_iter().collect();
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

async fn delta(
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: Out<DeltaDiscoveryResponse>,
    mut pushes: watch::Receiver<Arc<Push>>,
) {
    let Ok(Some(first)) = inbound.message().await else {
        return;
    };
    let mut conn = match proxy(first.node.as_ref()) {
        Ok(p) => Delta::new(p),
        Err(status) => {
            metrics::rejected();
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let _connected = Connected::new("delta");
    tracing::debug!(node = %conn.proxy.id, "delta stream");
    let push = pushes.borrow_and_update().clone();
    let mut out: Vec<DeltaDiscoveryResponse> = conn.request(&first, &push).into_iter().collect();
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
