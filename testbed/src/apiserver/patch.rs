//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and the subset of
//! Kubernetes strategic merge patch that kubectl sends for core types.

use super::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            _ => None,
        }
    }
}

/// A body that does not parse or apply is a 422 Invalid, as in kube-apiserver.
pub fn apply(kind: PatchKind, target: &Value, body: &[u8]) -> ApiResult<Value> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::new(422, "Invalid", format!("{what}: {e}"))
    };
    let mut doc = target.clone();
    match kind {
        PatchKind::Json => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| invalid("invalid JSON patch", &e))?;
            json_patch::patch(&mut doc, &patch).map_err(|e| invalid("JSON patch failed", &e))?;
        }
        PatchKind::Merge => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| invalid("invalid merge patch", &e))?;
            json_patch::merge(&mut doc, &patch);
        }
        PatchKind::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| invalid("invalid strategic merge patch", &e))?;
            strategic(&mut doc, &patch);
        }
    }
    Ok(doc)
}

/// The key that identifies list items of this field, as in the Kubernetes API's
/// `patchMergeKey` tags. Lists without one are replaced whole ("atomic").
fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        "topologySpreadConstraints" => Some("topologyKey"),
        // Container ports merge on containerPort, Service ports on port.
        "ports" if sample.get("containerPort").is_some() => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Lists of scalars that merge as sets rather than being replaced.
fn is_primitive_set(field: &str) -> bool {
    field == "finalizers"
}

fn strategic(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(obj) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(drop)) = (obj.get_mut(field), value.as_array()) {
                list.retain(|v| !drop.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue; // $setElementOrder, $retainKeys, $patch: ordering and bookkeeping hints.
        }
        match value {
            Value::Null => {
                obj.remove(key);
            }
            Value::Object(_) => strategic(obj.entry(key.clone()).or_insert(Value::Null), value),
            Value::Array(items) => {
                let current = obj.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(current, items, key);
            }
            _ => {
                obj.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
        obj.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn merge_list(current: &mut Value, items: &[Value], field: &str) {
    let key = items.first().and_then(|s| merge_key(field, s));
    let Some(key) = key.filter(|_| current.is_array()) else {
        if is_primitive_set(field) && current.is_array() {
            if let Value::Array(list) = current {
                for item in items {
                    if !list.contains(item) {
                        list.push(item.clone());
                    }
                }
            }
        } else {
            *current = Value::Array(items.iter().map(strip_directives).collect());
        }
        return;
    };
    let Value::Array(list) = current else { return };
    for item in items {
        let id = &item[key];
        let pos = list.iter().position(|c| &c[key] == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (Some(i), false) => strategic(&mut list[i], item),
            (None, false) => list.push(strip_directives(item)),
            (None, true) => {}
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        apply(PatchKind::Strategic, &target, patch.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn containers_merge_by_name_and_ports_by_port() {
        let pod = json!({"spec": {"containers": [
            {"name": "app", "image": "v1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "proxy"}
        ]}});
        let out = smp(
            pod,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "app", "image": "v2"}]
            }}),
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "v2");
        assert_eq!(
            out["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(out["spec"]["containers"][1]["image"], "proxy");

        let svc = json!({"spec": {"ports": [{"port": 5000, "name": "http"}, {"port": 15443, "name": "tls"}]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 15443, "$patch": "delete"}, {"port": 9090, "name": "m"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 5000, "name": "http"}, {"port": 9090, "name": "m"}])
        );
    }

    #[test]
    fn nulls_delete_and_atomic_lists_replace() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"selector": {"app": "x"}, "externalIPs": ["1.1.1.1"]}});
        let out = smp(
            obj,
            json!({"metadata": {"labels": {"a": null}}, "spec": {"externalIPs": ["2.2.2.2"]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
        assert_eq!(out["spec"]["selector"], json!({"app": "x"}));
    }

    #[test]
    fn finalizers_merge_as_a_set_and_can_be_removed() {
        let obj = json!({"metadata": {"finalizers": ["a"]}});
        let out = smp(obj, json!({"metadata": {"finalizers": ["a", "b"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let out = smp(
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn replace_and_retain_keys_directives() {
        let obj = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            obj.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(obj, json!({"spec": {"$patch": "replace", "x": 1}}));
        assert_eq!(out["spec"], json!({"x": 1}));
    }

    #[test]
    fn json_and_merge_patches() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1, 2]}});
        let out = apply(PatchKind::Json, &obj, br#"[{"op":"add","path":"/metadata/labels/b","value":"2"},{"op":"remove","path":"/spec/x/0"}]"#).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [2]}})
        );
        let out = apply(
            PatchKind::Merge,
            &obj,
            br#"{"spec":{"x":[3]},"metadata":{"labels":null}}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {}, "spec": {"x": [3]}}));
        assert!(
            apply(
                PatchKind::Json,
                &obj,
                br#"[{"op":"remove","path":"/nope"}]"#
            )
            .is_err()
        );
        assert!(apply(PatchKind::Merge, &obj, b"{").is_err());
    }
}
