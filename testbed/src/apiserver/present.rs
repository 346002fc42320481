//! How objects leave the server: the requested apiVersion, lists and kubectl's Tables.

use super::resources::ResourceType;
use serde_json::{Value, json};

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
