//! How objects leave the server: the requested apiVersion, lists and kubectl's Tables.

use super::error::{ApiError, ApiResult};
use super::resources::ResourceType;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Stamps the apiVersion the client asked in (one storage serves several versions).
pub fn object(mut obj: Value, rt: &ResourceType, version: &str) -> Value {
    obj["apiVersion"] = rt.api_version(version).into();
    obj["kind"] = rt.kind.into();
    obj
}

pub fn list(
    items: Vec<Value>,
    rt: &ResourceType,
    version: &str,
    rv: u64,
    cont: Option<String>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(version),
        "metadata": meta,
        "items": items.into_iter().map(|o| object(o, rt, version)).collect::<Vec<_>>(),
    })
}

/// [`list`] written from the objects' stored JSON text: each object's top-level members are
/// copied as they are (only `apiVersion` and `kind` replaced), never parsed into values.
pub fn list_text(
    items: &[String],
    rt: &ResourceType,
    version: &str,
    rv: u64,
    cont: Option<String>,
) -> ApiResult<Vec<u8>> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    let head = json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(version),
        "metadata": meta,
    });
    let stamp = format!(
        "\"apiVersion\":{},\"kind\":{}",
        Value::from(rt.api_version(version)),
        Value::from(rt.kind)
    );
    let mut out = head.to_string().into_bytes();
    out.pop(); // the closing brace: the items follow
    out.extend_from_slice(b",\"items\":[");
    for (i, text) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        object_text(text, &stamp, &mut out)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// One stored object with `stamp` as its apiVersion and kind, its other members verbatim.
fn object_text(text: &str, stamp: &str, out: &mut Vec<u8>) -> ApiResult<()> {
    let members: BTreeMap<&str, &RawValue> = serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            500,
            "InternalError",
            format!("stored object unreadable: {e}"),
        )
    })?;
    out.push(b'{');
    out.extend_from_slice(stamp.as_bytes());
    for (key, value) in members {
        if key == "apiVersion" || key == "kind" {
            continue;
        }
        out.push(b',');
        out.extend_from_slice(Value::from(key).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(())
}

/// True when the client asked for server-side printing (`kubectl get`).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// A `meta.k8s.io/v1` Table with Name and Age columns (plus type and address for Services).
pub fn table(items: &[Value], rt: &ResourceType, rv: u64, with_columns: bool) -> Value {
    let is_service = rt.kind == "Service";
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    if is_service {
        columns.push(json!({"name": "Type", "type": "string", "format": "", "description": "", "priority": 0}));
        columns.push(json!({"name": "Cluster-IP", "type": "string", "format": "", "description": "", "priority": 0}));
    }
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}),
    );
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            if is_service {
                cells.push(o["spec"]["type"].clone());
                cells.push(o["spec"]["clusterIP"].clone());
            }
            cells.push(age(o["metadata"]["creationTimestamp"].as_str()).into());
            let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
            json!({"cells": cells, "object": partial})
        })
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()}, "rows": rows});
    t["columnDefinitions"] = if with_columns {
        Value::Array(columns)
    } else {
        json!([])
    };
    t
}

fn age(created: Option<&str>) -> String {
    let parsed = created.and_then(|c| {
        time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
    });
    let Some(t) = parsed else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::{RESOURCES, by_kind};
    use crate::apiserver::selector::Selector;

    /// kube-apiserver's list body (`<Kind>List`, the requested apiVersion stamped on every
    /// item): the text path gives exactly what the value path gives, for objects stored with
    /// and without apiVersion and kind, with members sorting before them (`addressType`), with
    /// a label selector and across pages.
    #[test]
    fn a_list_from_stored_text_equals_the_list_from_values() {
        let store = crate::apiserver::authn::fixture().1;
        let slices = by_kind("EndpointSlice");
        for i in 0..5 {
            let mut obj = json!({
                "addressType": "IPv4",
                "metadata": {"name": format!("s{i}"), "labels": {"kubernetes.io/service-name": format!("svc{}", i % 2)}},
                "endpoints": [{"addresses": [format!("10.0.0.{i}")], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 8080}],
            });
            if i % 2 == 0 {
                obj["apiVersion"] = "discovery.k8s.io/v1".into();
                obj["kind"] = "EndpointSlice".into();
            }
            store.create(slices, "default", obj).unwrap();
        }
        let rt = &RESOURCES[slices];
        let all = Selector::default();
        let svc1 = Selector::parse(Some("kubernetes.io/service-name=svc1"), None).unwrap();
        for (sel, limit) in [(&all, usize::MAX), (&all, 2), (&svc1, usize::MAX)] {
            let mut after = None;
            loop {
                let (values, rv, next) =
                    store.list_page(slices, Some("default"), sel, after.clone(), limit);
                let (texts, rv2, next2) =
                    store.list_page_text(slices, Some("default"), sel, after.clone(), limit);
                assert_eq!((rv, &next), (rv2, &next2));
                let cont = next.as_ref().map(|(n, m)| format!("{n}/{m}"));
                let want = list(values, rt, "v1", rv, cont.clone());
                let got = list_text(&texts, rt, "v1", rv, cont).unwrap();
                let got: Value = serde_json::from_slice(&got).unwrap();
                assert_eq!(got, want);
                assert!(!got["items"].as_array().unwrap().is_empty());
                if next.is_none() {
                    break;
                }
                after = next;
            }
        }
    }
}
