//! The sidecar's xDS client: CDS (wildcard) and EDS for every cluster, LDS (wildcard) and RDS
//! for every route configuration a listener's HTTP connection manager names, over delta ADS
//! as an Istio `sidecar` node. Clusters carry the settings the sidecar acts on (connect
//! timeout, locality-weighted balancing, outlier detection, circuit breakers, the mTLS
//! match); load assignments carry priorities, locality weights, host weights, health and the
//! `tlsMode` metadata; route configurations become [`super::routes::RouteTable`]s.

use super::routes::{HttpProxyListener, RouteTable, decode as routes};
use super::{Host, Limits, OutlierPolicy, Table, TlsPolicy, Upstream};
use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::google::protobuf::value;
use meshfed_model::Locality;
use meshfed_proto::ads::{self, Applied, CLUSTER_TYPE, DeltaState, ENDPOINT_TYPE, Subscription};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Envoy's defaults for what a Cluster leaves out.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

pub struct State {
    clusters: BTreeMap<String, (String, Upstream)>,
    endpoints: HashMap<String, (String, Vec<Host>)>,
    listeners: BTreeMap<String, (String, HttpProxyListener)>,
    routes: BTreeMap<String, (String, Arc<RouteTable>)>,
    out: watch::Sender<Arc<Table>>,
}

impl State {
    pub fn new(out: watch::Sender<Arc<Table>>) -> State {
        State {
            clusters: BTreeMap::new(),
            endpoints: HashMap::new(),
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            out,
        }
    }

    /// The route configurations the listeners name (what RDS is subscribed to).
    fn rds_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .map(|(_, l)| l.rds.clone())
            .collect()
    }

    fn publish(&self) {
        let clusters = self
            .clusters
            .iter()
            .map(|(name, (_, up))| {
                let mut up = up.clone();
                up.endpoints = self
                    .endpoints
                    .get(name)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default();
                (name.clone(), up)
            })
            .collect();
        self.out.send_replace(Arc::new(Table {
            clusters,
            listeners: self
                .listeners
                .iter()
                .map(|(k, (_, l))| (k.clone(), l.clone()))
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|(k, (_, r))| (k.clone(), r.clone()))
                .collect(),
        }));
    }

    /// LDS; returns the RDS subscription change it implies. Listeners without an HTTP
    /// connection manager are not kept.
    fn apply_listeners(
        &mut self,
        resp: &DeltaDiscoveryResponse,
    ) -> (Option<String>, Option<DeltaDiscoveryRequest>) {
        let before = self.rds_names();
        let mut error = None;
        for r in &resp.resources {
            match decode::<Listener>(r).and_then(|l| routes::listener(&l)) {
                Ok(Some(l)) => {
                    self.listeners
                        .insert(r.name.clone(), (r.version.clone(), l));
                }
                Ok(None) => {
                    self.listeners.remove(&r.name);
                }
                Err(e) => error = Some(format!("{}: {e:#}", r.name)),
            }
        }
        for n in &resp.removed_resources {
            self.listeners.remove(n);
        }
        let after = self.rds_names();
        self.routes.retain(|name, _| after.contains(name));
        (error, rds_follow_up(&before, &after))
    }

    fn apply_routes(&mut self, resp: &DeltaDiscoveryResponse) -> Option<String> {
        let mut error = None;
        for r in &resp.resources {
            match decode::<RouteConfiguration>(r).and_then(|rc| routes::route_configuration(&rc)) {
                Ok(table) => {
                    self.routes
                        .insert(r.name.clone(), (r.version.clone(), Arc::new(table)));
                }
                Err(e) => error = Some(format!("{}: {e:#}", r.name)),
            }
        }
        for n in &resp.removed_resources {
            self.routes.remove(n);
        }
        error
    }

    /// CDS; returns the EDS subscription change it implies.
    fn apply_clusters(
        &mut self,
        resp: &DeltaDiscoveryResponse,
    ) -> (Option<String>, Option<DeltaDiscoveryRequest>) {
        let before: BTreeSet<String> = self.clusters.keys().cloned().collect();
        let mut error = None;
        for r in &resp.resources {
            match decode::<Cluster>(r).and_then(|c| upstream(&c)) {
                Ok(up) => {
                    self.clusters
                        .insert(r.name.clone(), (r.version.clone(), up));
                }
                Err(e) => error = Some(format!("{}: {e:#}", r.name)),
            }
        }
        for n in &resp.removed_resources {
            self.clusters.remove(n);
            self.endpoints.remove(n);
        }
        let after: BTreeSet<String> = self.clusters.keys().cloned().collect();
        (error, ads::eds_follow_up(&before, &after))
    }

    fn apply_endpoints(&mut self, resp: &DeltaDiscoveryResponse) -> Option<String> {
        let mut error = None;
        for r in &resp.resources {
            match decode::<ClusterLoadAssignment>(r) {
                Ok(cla) => {
                    self.endpoints
                        .insert(r.name.clone(), (r.version.clone(), hosts(&cla)));
                }
                Err(e) => error = Some(format!("{}: {e:#}", r.name)),
            }
        }
        for n in &resp.removed_resources {
            self.endpoints.remove(n);
        }
        error
    }
}

impl DeltaState for State {
    fn subscriptions(&self) -> Vec<Subscription> {
        let cluster_versions = self
            .clusters
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let endpoint_versions = self
            .endpoints
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        vec![
            Subscription {
                type_url: CLUSTER_TYPE.into(),
                names: vec!["*".into()],
                versions: cluster_versions,
            },
            Subscription {
                type_url: ENDPOINT_TYPE.into(),
                names: self.clusters.keys().cloned().collect(),
                versions: endpoint_versions,
            },
            Subscription {
                type_url: LISTENER_TYPE.into(),
                names: vec!["*".into()],
                versions: versions(&self.listeners),
            },
            Subscription {
                type_url: ROUTE_TYPE.into(),
                names: self.rds_names().into_iter().collect(),
                versions: versions(&self.routes),
            },
        ]
    }

    fn apply(&mut self, resp: &DeltaDiscoveryResponse) -> Applied {
        let mut applied = Applied::default();
        if resp.type_url == CLUSTER_TYPE {
            let (error, change) = self.apply_clusters(resp);
            applied.error = error;
            applied.follow_up.extend(change);
        } else if resp.type_url == ENDPOINT_TYPE {
            applied.error = self.apply_endpoints(resp);
        } else if resp.type_url == LISTENER_TYPE {
            let (error, change) = self.apply_listeners(resp);
            applied.error = error;
            applied.follow_up.extend(change);
        } else if resp.type_url == ROUTE_TYPE {
            applied.error = self.apply_routes(resp);
        }
        self.publish();
        applied
    }
}

fn versions<T>(held: &BTreeMap<String, (String, T)>) -> HashMap<String, String> {
    held.iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// The RDS subscription change an LDS update implies, as EDS follows CDS.
pub fn rds_follow_up(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) -> Option<DeltaDiscoveryRequest> {
    ads::eds_follow_up(before, after).map(|r| DeltaDiscoveryRequest {
        type_url: ROUTE_TYPE.into(),
        ..r
    })
}

fn decode<M: Message + Default>(r: &Resource) -> anyhow::Result<M> {
    let any = r.resource.as_ref().context("no resource")?;
    Ok(M::decode(any.value.as_slice())?)
}

fn duration(d: Option<&envoy_types::pb::google::protobuf::Duration>) -> Option<Duration> {
    let d = d?;
    let secs = u64::try_from(d.seconds).ok()?;
    Some(Duration::from_secs(secs) + Duration::from_nanos(u64::try_from(d.nanos).ok()?))
}

/// What the sidecar takes from a Cluster (endpoints come from EDS).
pub fn upstream(c: &Cluster) -> anyhow::Result<Upstream> {
    let locality_weighted = c
        .common_lb_config
        .as_ref()
        .and_then(|l| l.locality_config_specifier.as_ref())
        .is_some_and(|s| {
            matches!(
                s,
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_)
            )
        });
    let outlier = c.outlier_detection.as_ref().map(|od| {
        // A connect failure counts as a 5xx and as a gateway failure (Envoy without
        // split_external_local_origin_errors): whichever threshold is lower ejects first.
        let five = od
            .consecutive_5xx
            .as_ref()
            .map_or(DEFAULT_CONSECUTIVE_5XX, |v| v.value);
        let gateway = od
            .consecutive_gateway_failure
            .as_ref()
            .map_or(u32::MAX, |v| v.value);
        OutlierPolicy {
            consecutive_failures: five.min(gateway).max(1),
            base_ejection: duration(od.base_ejection_time.as_ref())
                .unwrap_or(DEFAULT_BASE_EJECTION),
        }
    });
    Ok(Upstream {
        connect_timeout: duration(c.connect_timeout.as_ref()).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        locality_weighted,
        outlier,
        tls: tls_policy(c)?,
        limits: limits(c),
        endpoints: Vec::new(),
    })
}

/// The DEFAULT-priority thresholds; each unset one keeps Envoy's default.
fn limits(c: &Cluster) -> Limits {
    let mut out = Limits::default();
    let Some(t) = c
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.iter().find(|t| t.priority == 0))
    else {
        return out;
    };
    let set = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: &mut u32| {
        if let Some(v) = v {
            *d = v.value;
        }
    };
    set(&t.max_connections, &mut out.max_connections);
    set(&t.max_pending_requests, &mut out.max_pending_requests);
    set(&t.max_requests, &mut out.max_requests);
    set(&t.max_retries, &mut out.max_retries);
    out
}

/// The transport socket for endpoints marked `tlsMode: istio`, if the cluster has one.
fn tls_policy(c: &Cluster) -> anyhow::Result<Option<TlsPolicy>> {
    let Some(m) = c.transport_socket_matches.iter().find(|m| {
        m.r#match.as_ref().is_some_and(|s| {
            s.fields.get("tlsMode").and_then(|v| v.kind.as_ref())
                == Some(&value::Kind::StringValue("istio".into()))
        })
    }) else {
        return Ok(None);
    };
    let any = match m
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    {
        Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) => any,
        None => bail!("tlsMode-istio match without a transport socket"),
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice())?;
    let sans = tls
        .common_tls_context
        .as_ref()
        .and_then(|c| match &c.validation_context_type {
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) => {
                v.default_validation_context.as_ref()
            }
            Some(common_tls_context::ValidationContextType::ValidationContext(v)) => Some(v),
            _ => None,
        })
        .map(|v| {
            v.match_typed_subject_alt_names
                .iter()
                .filter_map(|m| match m.matcher.as_ref()?.match_pattern.as_ref()? {
                    string_matcher::MatchPattern::Exact(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(TlsPolicy { sni: tls.sni, sans }))
}

/// Every host of a load assignment, with its group's priority and locality weight.
pub fn hosts(cla: &ClusterLoadAssignment) -> Vec<Host> {
    let mut out = Vec::new();
    for group in &cla.endpoints {
        let locality = group
            .locality
            .as_ref()
            .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        let locality_weight = group.load_balancing_weight.as_ref().map_or(1, |w| w.value);
        for e in &group.lb_endpoints {
            let Some(addr) = ads::endpoint_addr(e) else {
                continue;
            };
            out.push(Host {
                addr,
                priority: group.priority,
                locality: locality.clone(),
                locality_weight,
                weight: e.load_balancing_weight.as_ref().map_or(1, |w| w.value),
                healthy: e.health_status != HealthStatus::Unhealthy as i32
                    && e.health_status != HealthStatus::Draining as i32,
                tls: tls_mode_istio(e),
            });
        }
    }
    out
}

fn tls_mode_istio(e: &LbEndpoint) -> bool {
    e.metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .and_then(|s| s.fields.get("tlsMode"))
        .and_then(|v| v.kind.as_ref())
        == Some(&value::Kind::StringValue("istio".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::routes::decode::tests::{
        config, istio_filters, proxy_listener, route, to_cluster,
    };
    use envoy_types::util::pack_any;

    fn response(
        type_url: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: "n".into(),
            ..Default::default()
        }
    }

    fn resource(name: &str, any: envoy_types::pb::google::protobuf::Any) -> Resource {
        Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(any),
            ..Default::default()
        }
    }

    /// Envoy's LDS → RDS chain: a listener's HCM names `http_proxy`, so RDS subscribes to it
    /// (as EDS follows CDS); the RouteConfiguration lands in the table; the listener's
    /// removal unsubscribes and drops the routes. A reconnect resubscribes LDS `*` and RDS by
    /// name with the versions held.
    #[test]
    fn listeners_bring_their_route_configurations() {
        let (tx, rx) = watch::channel(Arc::new(Table::default()));
        let mut s = State::new(tx);
        let l = proxy_listener("127.0.0.1_15001", "http_proxy", istio_filters());
        let a = s.apply(&response(
            LISTENER_TYPE,
            vec![resource("127.0.0.1_15001", pack_any(l))],
            &[],
        ));
        assert_eq!(a.error, None);
        let follow: Vec<_> = a
            .follow_up
            .iter()
            .map(|r| (r.type_url.as_str(), r.resource_names_subscribe.clone()))
            .collect();
        assert_eq!(follow, [(ROUTE_TYPE, vec!["http_proxy".to_string()])]);
        let rc = config(&["helloworld:5000"], vec![route("/", to_cluster("c"))]);
        let a = s.apply(&response(
            ROUTE_TYPE,
            vec![resource("http_proxy", pack_any(rc))],
            &[],
        ));
        assert_eq!(a.error, None);
        assert!(
            rx.borrow().http_proxy(15001).is_some(),
            "listener and routes in the table"
        );
        let subs = s.subscriptions();
        let rds = subs.iter().find(|x| x.type_url == ROUTE_TYPE).expect("RDS");
        assert_eq!(
            (rds.names.clone(), rds.versions.get("http_proxy").cloned()),
            (vec!["http_proxy".to_string()], Some("1".to_string()))
        );
        assert!(
            subs.iter()
                .any(|x| x.type_url == LISTENER_TYPE && x.names == ["*"])
        );
        let a = s.apply(&response(LISTENER_TYPE, vec![], &["127.0.0.1_15001"]));
        assert_eq!(a.follow_up[0].resource_names_unsubscribe, ["http_proxy"]);
        assert!(rx.borrow().routes.is_empty() && rx.borrow().http_proxy(15001).is_none());
    }

    /// What the sidecar cannot honour is NACKed (the reply carries the error), as Envoy
    /// rejects a config it cannot load; what it holds stays.
    #[test]
    fn unsupported_routes_are_nacked_and_the_old_ones_kept() {
        let (tx, rx) = watch::channel(Arc::new(Table::default()));
        let mut s = State::new(tx);
        let l = proxy_listener("127.0.0.1_15001", "http_proxy", istio_filters());
        s.apply(&response(
            LISTENER_TYPE,
            vec![resource("127.0.0.1_15001", pack_any(l))],
            &[],
        ));
        let good = config(&["helloworld:5000"], vec![route("/", to_cluster("c"))]);
        s.apply(&response(
            ROUTE_TYPE,
            vec![resource("http_proxy", pack_any(good))],
            &[],
        ));
        let mut bad_action = to_cluster("c");
        bad_action.prefix_rewrite = "/v2".into();
        let bad = config(&["helloworld:5000"], vec![route("/", bad_action)]);
        let a = s.apply(&response(
            ROUTE_TYPE,
            vec![resource("http_proxy", pack_any(bad))],
            &[],
        ));
        assert!(a.error.is_some_and(|e| e.contains("path rewrites")));
        let t = rx.borrow();
        let (_, routes) = t.http_proxy(15001).expect("still routed");
        assert_eq!(routes.vhosts[0].routes.len(), 1);
    }
}
