//! The gateway's xDS source: it subscribes over delta ADS as an Istio `router` and gets one
//! cluster per SNI name (`outbound_.port_.subset_.fqdn`) with its network's endpoints. The
//! table follows every push; when the server goes away the last table stays and the client
//! reconnects with what it holds, so a control-plane restart routes on without a gap.

use crate::metrics::Metrics;
use crate::routes::{RouteHandle, StaticEndpoint};
use envoy_types::pb::envoy::config::core::v3::{
    Locality as EnvoyLocality, Node, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use meshfed_model::{ClusterName, Locality};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Who the gateway says it is.
#[derive(Debug, Clone)]
pub struct XdsIdentity {
    pub cluster_id: String,
    pub network: String,
    pub ip: String,
    pub pod: String,
    pub namespace: String,
}

impl XdsIdentity {
    fn node(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(value::Kind::StringValue(v.to_string())),
        };
        let fields = [
            ("CLUSTER_ID", self.cluster_id.as_str()),
            ("NETWORK", self.network.as_str()),
            ("NAMESPACE", self.namespace.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), s(v)))
        .collect();
        Node {
            id: format!(
                "router~{}~{}.{}~{}.svc.cluster.local",
                self.ip, self.pod, self.namespace, self.namespace
            ),
            metadata: Some(Struct { fields }),
            locality: Some(EnvoyLocality::default()),
            ..Default::default()
        }
    }
}

/// What the client holds: SNI cluster names and the endpoints of each.
#[derive(Default)]
struct State {
    clusters: BTreeMap<String, String>,
    endpoints: HashMap<String, (String, Vec<StaticEndpoint>)>,
}

impl State {
    fn versions(&self, kind: &str) -> HashMap<String, String> {
        if kind == CLUSTER_TYPE {
            self.clusters.clone().into_iter().collect()
        } else {
            self.endpoints
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect()
        }
    }

    fn table(&self) -> Vec<(ClusterName, Vec<StaticEndpoint>)> {
        self.clusters
            .keys()
            .filter_map(|sni| {
                let name = ClusterName::parse_sni(sni).ok()?;
                let eps = self
                    .endpoints
                    .get(sni)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default();
                Some((name, eps))
            })
            .collect()
    }
}

/// Runs until aborted: connects to `server` (`http://host:port`), keeps `routes` in step.
pub async fn run(server: String, id: XdsIdentity, routes: RouteHandle, metrics: &'static Metrics) {
    let mut state = State::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&server, &id, &routes, metrics, &mut state).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "xDS stream ended; keeping the last routes")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One ADS stream: CDS wildcard, then EDS for every cluster CDS names.
async fn session(
    server: &str,
    id: &XdsIdentity,
    routes: &RouteHandle,
    metrics: &'static Metrics,
    state: &mut State,
) -> Result<(), String> {
    let mut client = AggregatedDiscoveryServiceClient::connect(server.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(16);
    let node = id.node();
    let first = |kind: &str, names: Vec<String>| DeltaDiscoveryRequest {
        node: Some(node.clone()),
        type_url: kind.to_string(),
        resource_names_subscribe: names,
        initial_resource_versions: state.versions(kind),
        ..Default::default()
    };
    send(&tx, first(CLUSTER_TYPE, vec!["*".into()])).await?;
    send(
        &tx,
        first(ENDPOINT_TYPE, state.clusters.keys().cloned().collect()),
    )
    .await?;
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    tracing::info!(server, "xDS stream open");
    while let Some(resp) = inbound.message().await.map_err(|e| e.to_string())? {
        let (ack, subscribe) = apply(state, &resp);
        send(&tx, ack).await?;
        if let Some(s) = subscribe {
            send(&tx, s).await?;
        }
        routes.update_clusters(&state.table());
        metrics.route_reloads_ok.increment(1);
        metrics.routes.set(routes.get().len() as f64);
    }
    Ok(())
}

async fn send(
    tx: &mpsc::Sender<DeltaDiscoveryRequest>,
    r: DeltaDiscoveryRequest,
) -> Result<(), String> {
    tx.send(r)
        .await
        .map_err(|_| "the stream closed".to_string())
}

/// Applies one response; returns its ACK (or NACK) and, after CDS, the EDS subscription change.
fn apply(
    state: &mut State,
    resp: &DeltaDiscoveryResponse,
) -> (DeltaDiscoveryRequest, Option<DeltaDiscoveryRequest>) {
    let mut error = None;
    let mut subscribe = None;
    if resp.type_url == CLUSTER_TYPE {
        let before: BTreeSet<String> = state.clusters.keys().cloned().collect();
        for r in &resp.resources {
            state.clusters.insert(r.name.clone(), r.version.clone());
        }
        for n in &resp.removed_resources {
            state.clusters.remove(n);
            state.endpoints.remove(n);
        }
        let after: BTreeSet<String> = state.clusters.keys().cloned().collect();
        let added: Vec<String> = after.difference(&before).cloned().collect();
        let gone: Vec<String> = before.difference(&after).cloned().collect();
        if !added.is_empty() || !gone.is_empty() {
            subscribe = Some(DeltaDiscoveryRequest {
                type_url: ENDPOINT_TYPE.into(),
                resource_names_subscribe: added,
                resource_names_unsubscribe: gone,
                ..Default::default()
            });
        }
    } else if resp.type_url == ENDPOINT_TYPE {
        for r in &resp.resources {
            match r
                .resource
                .as_ref()
                .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()))
            {
                Some(Ok(cla)) => {
                    state
                        .endpoints
                        .insert(r.name.clone(), (r.version.clone(), endpoints(&cla)));
                }
                Some(Err(e)) => error = Some(format!("{}: {e}", r.name)),
                None => error = Some(format!("{}: no resource", r.name)),
            }
        }
        for n in &resp.removed_resources {
            state.endpoints.remove(n);
        }
    }
    let ack = DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: error.map(|message| envoy_types::pb::google::rpc::Status {
            code: 3,
            message,
            details: vec![],
        }),
        ..Default::default()
    };
    (ack, subscribe)
}

/// The healthy endpoints of a load assignment (unhealthy ones are what not-ready looks like).
fn endpoints(cla: &ClusterLoadAssignment) -> Vec<StaticEndpoint> {
    let mut out = Vec::new();
    for group in &cla.endpoints {
        let locality = group
            .locality
            .as_ref()
            .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        for e in &group.lb_endpoints {
            if e.health_status
                == envoy_types::pb::envoy::config::core::v3::HealthStatus::Unhealthy as i32
            {
                continue;
            }
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
                continue;
            };
            let Ok(ip) = sa.address.parse::<std::net::IpAddr>() else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            out.push(StaticEndpoint {
                address: SocketAddr::new(ip, port),
                labels: Default::default(),
                locality: locality.clone(),
            });
        }
    }
    out
}
