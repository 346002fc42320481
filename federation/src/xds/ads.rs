//! The ADS gRPC service: one task per stream, woken by client requests and by pushes.

use super::Limits;
use super::auth::XdsAuth;
use super::delta::Delta;
use super::generate::Push;
use super::listen::{ConnInfo, KillSwitch};
use super::node::Proxy;
use super::sotw::Sotw;
use crate::ca::authn::Caller;
use crate::metrics;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshfed_proto::ads::MAX_XDS_MESSAGE;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The pushes streams follow: None until the registry is ready to be served.
pub type Pushes = watch::Receiver<Option<Arc<Push>>>;

pub struct Ads {
    pushes: Pushes,
    limits: Limits,
    /// On the secure port: every stream is authenticated and its node authorized.
    auth: Option<Arc<XdsAuth>>,
}

impl Ads {
    /// ADS for anyone who connects (the plaintext port).
    pub fn new(pushes: Pushes, limits: Limits) -> Ads {
        Ads {
            pushes,
            limits,
            auth: None,
        }
    }

    /// ADS for authenticated callers whose nodes they may claim (the secure port).
    pub fn authenticated(pushes: Pushes, limits: Limits, auth: Arc<XdsAuth>) -> Ads {
        Ads {
            pushes,
            limits,
            auth: Some(auth),
        }
    }
}

/// What one stream needs besides its messages: the pushes, the limits, and its connection's
/// kill switch (tests that serve without [`super::listen`] have none).
struct StreamCx {
    pushes: Pushes,
    limits: Limits,
    kill: Option<Arc<KillSwitch>>,
    /// The authenticated caller and the rules its node must pass.
    caller: Option<(Arc<XdsAuth>, Caller)>,
}

impl Ads {
    /// The stream's context; on the secure port, an unauthenticated caller ends here.
    async fn cx<T>(&self, request: &Request<T>) -> Result<StreamCx, Status> {
        let caller = match &self.auth {
            Some(auth) => Some((auth.clone(), auth.caller(request).await?)),
            None => None,
        };
        Ok(StreamCx {
            pushes: self.pushes.clone(),
            limits: self.limits,
            kill: request
                .extensions()
                .get::<ConnInfo>()
                .map(|c| c.kill.clone()),
            caller,
        })
    }
}

impl StreamCx {
    /// The client's node, if it parses and the caller may claim it.
    fn proxy(&self, node: Option<&Node>) -> Result<Proxy, Status> {
        let proxy = proxy(node)?;
        if let Some((auth, caller)) = &self.caller {
            auth.authorize(caller, &proxy)?;
        }
        Ok(proxy)
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
        // Two responses in flight at most: a client that does not read pins no more.
        let (tx, rx) = mpsc::channel(2);
        let cx = self.cx(&request).await?;
        tokio::spawn(serve::<Sotw>(request.into_inner(), tx, cx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(2);
        let cx = self.cx(&request).await?;
        tokio::spawn(serve::<Delta>(request.into_inner(), tx, cx));
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
    fn proxy_mut(&mut self) -> &mut Proxy;
    fn request(&mut self, req: &Self::Req, push: &Push) -> Option<Self::Resp>;
    fn push(&mut self, push: &Push) -> Vec<Self::Resp>;
    /// The most names subscribed to for one type.
    fn subscriptions(&self) -> usize;
    /// `resp` as messages of at most `max` bytes (split, or refused: empty).
    fn fit(&mut self, resp: Self::Resp, max: usize) -> Vec<Self::Resp>;
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
    fn proxy_mut(&mut self) -> &mut Proxy {
        &mut self.proxy
    }
    fn request(&mut self, req: &DiscoveryRequest, push: &Push) -> Option<DiscoveryResponse> {
        Sotw::request(self, req, push)
    }
    fn push(&mut self, push: &Push) -> Vec<DiscoveryResponse> {
        Sotw::push(self, push)
    }
    fn subscriptions(&self) -> usize {
        Sotw::subscriptions(self)
    }
    fn fit(&mut self, resp: DiscoveryResponse, max: usize) -> Vec<DiscoveryResponse> {
        Sotw::fit(self, resp, max)
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
    fn proxy_mut(&mut self) -> &mut Proxy {
        &mut self.proxy
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
    fn subscriptions(&self) -> usize {
        Delta::subscriptions(self)
    }
    fn fit(&mut self, resp: DeltaDiscoveryResponse, max: usize) -> Vec<DeltaDiscoveryResponse> {
        Delta::fit(self, resp, max)
    }
}

/// Serves one stream: the first request names the client; nothing is answered until the
/// first push exists (the registry is ready); then requests and pushes, in turn.
async fn serve<S: Stream>(mut inbound: Streaming<S::Req>, tx: Out<S::Resp>, mut cx: StreamCx)
where
    Streaming<S::Req>: Send,
{
    let Ok(Some(first)) = inbound.message().await else {
        return;
    };
    let mut conn = match cx.proxy(S::node(&first)) {
        Ok(p) => S::new(p),
        Err(status) => {
            metrics::rejected();
            tracing::info!(error = %status.message(), "xDS stream refused");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let _connected = Connected::new(S::MODE);
    tracing::debug!(node = %conn.proxy_id(), mode = S::MODE, "stream");
    let mut early = vec![first];
    let Some(push) = first_push(&mut inbound, &mut cx.pushes, &mut early).await else {
        return;
    };
    // Where a client that does not say is: known once the local cluster has synced.
    conn.proxy_mut().apply_defaults(&push.defaults);
    let mut out: Vec<S::Resp> = early
        .iter()
        .filter_map(|r| conn.request(r, &push))
        .collect();
    drop(early);
    loop {
        if conn.subscriptions() > cx.limits.max_subscriptions {
            metrics::rejected();
            let msg = format!("more than {} names subscribed", cx.limits.max_subscriptions);
            let _ = tx.try_send(Err(Status::resource_exhausted(msg)));
            return;
        }
        if !send(&mut conn, &tx, std::mem::take(&mut out), &cx).await {
            return;
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if let Some(push) = cx.pushes.borrow().clone() {
                        out.extend(conn.request(&req, &push));
                    }
                }
                _ => return,
            },
            changed = cx.pushes.changed() => {
                if changed.is_err() { return; }
                if let Some(push) = cx.pushes.borrow_and_update().clone() {
                    out = conn.push(&push);
                }
            }
        }
    }
}

/// The size delta responses are cut to. gRPC's encoder keeps, for each stream, a buffer as
/// large as the largest message it sent, for as long as the stream lives: with whole-state
/// responses of a few hundred KiB that was most of what an idle client cost (2,000 clients
/// of a 300-service mesh: 880 MiB; cut to 16 KiB: 283 MiB). State of the world cannot be cut.
const RESPONSE_TARGET: usize = 16 << 10;

/// What one response may take: delta responses are cut to [`RESPONSE_TARGET`]; a state of
/// the world response cannot be cut, so only the message limit applies to it.
fn response_limit<S: Stream>() -> usize {
    if S::MODE == "delta" {
        RESPONSE_TARGET.min(MAX_XDS_MESSAGE)
    } else {
        MAX_XDS_MESSAGE
    }
}

/// Sends `responses`, each within the size limit; false when the stream is over. A client
/// that takes nothing for the send timeout is disconnected (its whole connection: HTTP/2
/// would otherwise keep the unsent responses).
async fn send<S: Stream>(
    conn: &mut S,
    tx: &Out<S::Resp>,
    responses: Vec<S::Resp>,
    cx: &StreamCx,
) -> bool {
    let target = response_limit::<S>();
    for r in responses.into_iter().flat_map(|r| conn.fit(r, target)) {
        match tokio::time::timeout(cx.limits.send_timeout, tx.send(Ok(r))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                metrics::send_timeout();
                tracing::warn!(node = %conn.proxy_id(), timeout = ?cx.limits.send_timeout,
                    "xDS client took no response within the send timeout: disconnecting it");
                if let Some(kill) = &cx.kill {
                    kill.pull();
                }
                return false;
            }
        }
    }
    true
}

/// Requests kept while waiting for the first push: one per type is what a client sends.
const MAX_EARLY_REQUESTS: usize = 32;

/// Waits for the first push, keeping the requests that arrive meanwhile (each type's first
/// subscription) to answer once it exists. None when the client leaves first, or sends more
/// than any client needs to before an answer.
async fn first_push<R>(
    inbound: &mut Streaming<R>,
    pushes: &mut Pushes,
    early: &mut Vec<R>,
) -> Option<Arc<Push>> {
    loop {
        if let Some(push) = pushes.borrow_and_update().clone() {
            return Some(push);
        }
        tokio::select! {
            changed = pushes.changed() => changed.ok()?,
            msg = inbound.message() => early.push(msg.ok()??),
        }
        if early.len() > MAX_EARLY_REQUESTS {
            return None;
        }
    }
}

/// A push of services `hosts` (namespace `ns`, port 80, one ready endpoint each in cluster
/// c1 on network n1), for the stream modules' tests. Built through serde so that fields the
/// registry adds later keep their defaults.
#[cfg(test)]
pub(crate) fn test_push(version: u64, hosts: &[&str]) -> Push {
    let services: Vec<serde_json::Value> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            serde_json::json!({
                "hostname": format!("{h}.ns.svc.cluster.local"),
                "namespace": "ns",
                "ports": [{"name": "http", "port": 80}],
                "endpoints": [{
                    "cluster": "c1", "network": "n1", "address": format!("10.0.0.{}", i + 10),
                    "port": 8080, "service_port": 80, "locality": "", "labels": {},
                    "ready": true, "service_account": "sa",
                }],
                "cluster_ips": {"c1": format!("10.96.0.{}", i + 10)},
            })
        })
        .collect();
    let snapshot = serde_json::from_value(serde_json::json!({
        "services": services, "gateways": [],
    }))
    .expect("a snapshot");
    Push::new(
        version,
        std::time::Instant::now(),
        snapshot,
        Vec::new(),
        "cluster.local",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xDS state of the world: each response carries every subscribed resource and cannot be
    /// split, so one over the delta cut (16 KiB, a few dozen clusters with mTLS) must still
    /// go out whole; only delta responses are cut.
    #[test]
    fn state_of_the_world_responses_are_not_held_to_the_delta_cut() {
        let big = DiscoveryResponse {
            resources: vec![envoy_types::pb::google::protobuf::Any {
                type_url: "t".into(),
                value: vec![7; 100 << 10],
            }],
            ..Default::default()
        };
        let mut s = Sotw::new(crate::xds::node::test_sidecar());
        assert_eq!(s.fit(big, response_limit::<Sotw>()).len(), 1);
        assert_eq!(response_limit::<Delta>(), RESPONSE_TARGET);
    }
}
