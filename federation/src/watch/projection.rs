//! What the watchers decode of each object: only the fields the registry reads (issue 21).
//! A Pod as the API server sends it carries its containers, status, conditions and
//! `managedFields`, several KiB that the registry never reads; decoding into these
//! projections skips them in the parser (serde ignores unknown fields without keeping them),
//! so a million pods cost what the registry keeps, not what the API server sends.
//!
//! Each projection implements [`kube::Resource`] by delegating to the full k8s_openapi type,
//! so kube's watcher lists and watches the same URL as for the full object. Fields the
//! k8s_openapi types require default when missing, as k8s_openapi decodes them.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// kube's `Resource` for a projection, delegated to the k8s_openapi type it projects.
macro_rules! resource_as {
    ($lite:ty, $whole:ty) => {
        impl kube::Resource for $lite {
            type DynamicType = ();
            type Scope = <$whole as kube::Resource>::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mod annotations;
mod endpoint_slice;
mod service;

pub use endpoint_slice::EndpointSliceLite;
pub use service::ServiceLite;

/// The metadata the registry and kube's watcher read: no `managedFields` or owner
/// references; of the annotations only what `A` keeps (nothing unless it says otherwise).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta<A> {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: A,
}

/// Annotations as a projection keeps them.
trait Kept: Default {
    fn kept(self) -> Option<BTreeMap<String, String>>;
}

impl Kept for IgnoredAny {
    fn kept(self) -> Option<BTreeMap<String, String>> {
        None
    }
}

fn meta_keeping<'de, A, D>(d: D) -> Result<ObjectMeta, D::Error>
where
    A: Kept + Deserialize<'de>,
    D: Deserializer<'de>,
{
    let m = Meta::<A>::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        uid: m.uid,
        labels: m.labels,
        annotations: m.annotations.kept(),
        ..Default::default()
    })
}

/// Metadata without annotations.
fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    meta_keeping::<IgnoredAny, D>(d)
}

/// A Namespace as the registry reads it: its labels (the system namespace's network).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NamespaceLite {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
}

resource_as!(NamespaceLite, Namespace);

/// A Pod as the registry reads it: labels, service account and node.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodLite {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpecLite,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecLite {
    pub service_account_name: Option<String>,
    pub node_name: Option<String>,
}

resource_as!(PodLite, Pod);

/// A Node as the registry reads it: its labels (locality, a gateway's node selector) and
/// addresses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeLite {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    pub status: Option<NodeStatusLite>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeStatusLite {
    pub addresses: Option<Vec<NodeAddressLite>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeAddressLite {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub address: String,
}

resource_as!(NodeLite, Node);

#[cfg(test)]
mod tests;
