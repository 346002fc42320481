//! The one annotation a projection keeps: Istio's `traffic.istio.io/nodeSelector` on a
//! Service (a NodePort gateway's nodes). Every other annotation is skipped while parsing;
//! kubectl's `last-applied-configuration` alone can be as large as the object.

use super::Kept;
use meshfed_model::labels::NODE_SELECTOR;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

/// `metadata.annotations` with only the node selector kept (`null` reads as none, as
/// k8s_openapi reads it).
#[derive(Default)]
pub struct NodeSelector(Option<String>);

impl Kept for Option<NodeSelector> {
    fn kept(self) -> Option<BTreeMap<String, String>> {
        let value = self?.0?;
        Some([(NODE_SELECTOR.to_string(), value)].into())
    }
}

impl<'de> Deserialize<'de> for NodeSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeepNodeSelector)
    }
}

struct KeepNodeSelector;

impl<'de> Visitor<'de> for KeepNodeSelector {
    type Value = NodeSelector;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of annotations")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<NodeSelector, M::Error> {
        let mut kept = None;
        while let Some(IsNodeSelector(wanted)) = map.next_key()? {
            if wanted {
                kept = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(NodeSelector(kept))
    }
}

/// An annotation's key, compared without being copied.
struct IsNodeSelector(bool);

impl<'de> Deserialize<'de> for IsNodeSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = IsNodeSelector;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an annotation key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<IsNodeSelector, E> {
        Ok(IsNodeSelector(key == NODE_SELECTOR))
    }
}

/// Metadata keeping the node selector annotation.
pub fn service_meta<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, D::Error> {
    super::meta_keeping::<Option<NodeSelector>, D>(d)
}
