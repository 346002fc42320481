//! The gateway's xDS source: it subscribes over delta ADS as an Istio `router` and gets one
//! cluster per SNI name (`outbound_.port_.subset_.fqdn`) with its network's endpoints. The
//! table follows every push; when the server goes away the last table stays and the client
//! reconnects with what it holds, so a control-plane restart routes on without a gap. The
//! server is reached in plaintext or, as Istio's gateways reach istiod's port 15012, over
//! TLS with the gateway's ServiceAccount token ([`XdsServer`]).
//!
//! Only endpoints the federation marks as mesh workloads (`tlsMode: istio` in the
//! `envoy.transport_socket_match` metadata, as Istio's EDS has it) enter the table: a
//! selector-less Service whose EndpointSlice names the API server, a node or anything else
//! on this network is never reachable through the gateway, even if a server sent it.

use crate::metrics::Metrics;
use crate::routes::{RouteHandle, StaticEndpoint};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::value;
use meshfed_model::labels::TLS_MODE_ISTIO;
use meshfed_model::{ClusterName, Locality};
use meshfed_proto::ads::{
    self, Applied, CLUSTER_TYPE, DeltaState, ENDPOINT_TYPE, Identity, Subscription,
};
pub use meshfed_proto::channel::{XdsFlags, XdsServer};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the client holds (SNI cluster names and the endpoints of each) and where it goes.
struct State {
    clusters: BTreeMap<String, String>,
    endpoints: HashMap<String, (String, Vec<StaticEndpoint>)>,
    routes: RouteHandle,
    metrics: &'static Metrics,
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

    /// CDS: the cluster set; returns the EDS subscription change it implies.
    fn apply_clusters(&mut self, resp: &DeltaDiscoveryResponse) -> Option<DeltaDiscoveryRequest> {
        let before: BTreeSet<String> = self.clusters.keys().cloned().collect();
        for r in &resp.resources {
            self.clusters.insert(r.name.clone(), r.version.clone());
        }
        for n in &resp.removed_resources {
            self.clusters.remove(n);
            self.endpoints.remove(n);
        }
        let after: BTreeSet<String> = self.clusters.keys().cloned().collect();
        ads::eds_follow_up(&before, &after)
    }

    /// EDS: endpoints per cluster; a resource that does not decode is reported (NACK).
    fn apply_endpoints(&mut self, resp: &DeltaDiscoveryResponse) -> Option<String> {
        let mut error = None;
        for r in &resp.resources {
            match r
                .resource
                .as_ref()
                .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()))
            {
                Some(Ok(cla)) => {
                    let (eps, not_mesh) = endpoints(&cla);
                    if not_mesh > 0 {
                        tracing::warn!(cluster = %r.name, dropped = not_mesh, "EDS endpoints not marked tlsMode: istio; not routing to them");
                        self.metrics.xds_not_mesh.increment(not_mesh);
                    }
                    self.endpoints
                        .insert(r.name.clone(), (r.version.clone(), eps));
                }
                Some(Err(e)) => error = Some(format!("{}: {e}", r.name)),
                None => error = Some(format!("{}: no resource", r.name)),
            }
        }
        for n in &resp.removed_resources {
            self.endpoints.remove(n);
        }
        error
    }
}

impl DeltaState for State {
    /// CDS wildcard, and EDS for every cluster already held.
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![
            Subscription {
                type_url: CLUSTER_TYPE.into(),
                names: vec!["*".into()],
                versions: self.versions(CLUSTER_TYPE),
            },
            Subscription {
                type_url: ENDPOINT_TYPE.into(),
                names: self.clusters.keys().cloned().collect(),
                versions: self.versions(ENDPOINT_TYPE),
            },
        ]
    }

    fn apply(&mut self, resp: &DeltaDiscoveryResponse) -> Applied {
        let mut applied = Applied::default();
        if resp.type_url == CLUSTER_TYPE {
            applied.follow_up.extend(self.apply_clusters(resp));
        } else if resp.type_url == ENDPOINT_TYPE {
            applied.error = self.apply_endpoints(resp);
        }
        self.routes.update_clusters(&self.table());
        self.metrics.route_reloads_ok.increment(1);
        self.metrics.routes.set(self.routes.get().len() as f64);
        applied
    }
}

/// Runs until aborted: connects to `server` (an [`XdsServer`], or a plaintext
/// `http://host:port`), keeps `routes` in step.
pub async fn run(
    server: impl Into<XdsServer>,
    identity: Identity,
    routes: RouteHandle,
    metrics: &'static Metrics,
) {
    // Istio's gateways announce themselves as routers: the server then sends SNI clusters.
    let identity = Identity {
        kind: "router".into(),
        ..identity
    };
    let mut state = State {
        clusters: BTreeMap::new(),
        endpoints: HashMap::new(),
        routes,
        metrics,
    };
    ads::run(server.into(), identity, &mut state).await
}

/// Where Istio's EDS (and the federation's) says how an endpoint is reached; the gateway
/// reads it as "this is a mesh workload".
const TLS_MODE_METADATA: &str = "envoy.transport_socket_match";
const TLS_MODE_FIELD: &str = "tlsMode";

/// The healthy mesh endpoints of a load assignment (unhealthy ones are what not-ready looks
/// like), and how many endpoints were dropped for not being marked as mesh workloads.
fn endpoints(cla: &ClusterLoadAssignment) -> (Vec<StaticEndpoint>, u64) {
    let mut out = Vec::new();
    let mut not_mesh = 0;
    for group in &cla.endpoints {
        let locality = group
            .locality
            .as_ref()
            .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        for e in &group.lb_endpoints {
            if !is_mesh_workload(e) {
                not_mesh += 1;
                continue;
            }
            if e.health_status == HealthStatus::Unhealthy as i32 {
                continue;
            }
            let Some(address) = ads::endpoint_addr(e) else {
                continue;
            };
            out.push(StaticEndpoint {
                address,
                labels: Default::default(),
                locality: locality.clone(),
            });
        }
    }
    (out, not_mesh)
}

/// `tlsMode: istio` in the endpoint's transport-socket-match metadata: the federation puts
/// it on pods with a sidecar and on remote gateways, never on arbitrary addresses.
fn is_mesh_workload(e: &LbEndpoint) -> bool {
    e.metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(TLS_MODE_METADATA))
        .and_then(|s| s.fields.get(TLS_MODE_FIELD))
        .and_then(|v| v.kind.as_ref())
        .is_some_and(|k| matches!(k, value::Kind::StringValue(m) if m == TLS_MODE_ISTIO))
}

#[cfg(test)]
mod tests;
