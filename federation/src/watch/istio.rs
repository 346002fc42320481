//! Istio's `networking.istio.io` kinds (DestinationRule, VirtualService), watched in the local
//! cluster only, unstructured and at whichever version the cluster serves: the xDS layer
//! reads only the fields it knows.

use super::{Sink, Target, ns_name, run_sink};
use crate::registry::Touch;
use crate::registry::{ClusterData, Kind};
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use std::collections::HashMap;
use std::time::Duration;

/// The Istio kinds the local cluster watches.
pub const KINDS: [Kind; 2] = [Kind::DestinationRule, Kind::VirtualService];

/// The versions read, newest first: Istio serves v1 since 1.22, v1beta1 since 1.8, v1alpha3
/// before; their specs are the same.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

const GROUP: &str = "networking.istio.io";

/// The API kind name and where the registry keeps it; None for a non-Istio kind.
fn spec(kind: Kind) -> Option<(&'static str, MapFn)> {
    match kind {
        Kind::DestinationRule => Some(("DestinationRule", |d| &mut d.destination_rules)),
        Kind::VirtualService => Some(("VirtualService", |d| &mut d.virtual_services)),
        _ => None,
    }
}

type Map = HashMap<(String, String), serde_json::Value>;
type MapFn = fn(&mut ClusterData) -> &mut Map;

/// The object as stored: the whole of it, `metadata.creationTimestamp` included (VirtualServices
/// are ordered by it).
fn entry(o: &DynamicObject) -> Option<((String, String), serde_json::Value)> {
    Some((ns_name(o), serde_json::to_value(o).ok()?))
}

/// The newest served version of `kind`, found by API discovery so that clusters whose Istio
/// CRDs predate v1 are read too. Each version is asked for on its own, newest first (one
/// request on a current cluster); only "not served" moves on to an older one, any other error
/// is retried, so a blip never settles on an old version.
async fn discover(client: &Client, kind: &str) -> Result<Api<DynamicObject>, String> {
    for version in VERSIONS {
        let gvk = GroupVersionKind::gvk(GROUP, version, kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => return Ok(Api::all_with(client.clone(), &resource)),
            Err(e) if not_served(&e) => continue,
            Err(e) => return Err(format!("{kind} discovery ({version}): {e}")),
        }
    }
    Err(format!("{kind} discovery: none of {VERSIONS:?} is served"))
}

/// The group version is not served (404), or serves no such kind.
fn not_served(e: &kube::Error) -> bool {
    use kube::error::DiscoveryError as D;
    match e {
        kube::Error::Api(status) => status.is_not_found(),
        kube::Error::Discovery(D::MissingKind(_) | D::MissingResource(_)) => true,
        _ => false,
    }
}

/// Watches `kind` once discovery finds it, retrying discovery (with backoff) while the API
/// server cannot say which version it serves.
pub async fn run(client: Client, target: Target, kind: Kind) {
    let Some((name, map)) = spec(kind) else {
        return;
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match discover(&client, name).await {
            Ok(api) => {
                let sink = Sink {
                    kind,
                    entry,
                    key: ns_name::<DynamicObject>,
                    map,
                    // Read separately (`Registry::destination_rules`), not merged.
                    touch: |_| Touch::Nothing,
                    relist: Touch::Nothing,
                    share: |_, _| {},
                };
                return run_sink(api, target, sink).await;
            }
            Err(e) => target
                .registry
                .watch_error(&target.id, target.generation, e),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
