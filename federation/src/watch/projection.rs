//! What the watchers decode of each object: only the fields the registry reads (issue 21).
//! A Pod as the API server sends it carries its containers, status, conditions and
//! `managedFields`, several KiB that the registry never reads; decoding into these
//! projections skips them in the parser (serde ignores unknown fields without keeping them),
//! so a million pods cost what the registry keeps, not what the API server sends.
//!
//! Each projection implements [`kube::Resource`] by delegating to the full type, so kube's
//! watcher lists and watches the same URL as for the full object.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The metadata the registry and kube's watcher read: no `managedFields`, owner references
/// or annotations.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        uid: m.uid,
        labels: m.labels,
        ..Default::default()
    })
}

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

impl Resource for PodLite {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests;
