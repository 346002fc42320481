//! The verbs: get, list, create, update, patch, delete and the status subresource (the token
//! endpoints are `token_api`'s).

use super::error::{ApiError, ApiResult};
use super::patch::{self, PatchKind};
use super::present;
use super::resources::RESOURCES;
use super::route::ResourcePath;
use super::selector::Selector;
use super::store::Store;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use std::time::SystemTime;

pub struct Request<'a> {
    pub path: &'a ResourcePath,
    pub query: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub table: bool,
    pub now: SystemTime,
}

impl Request<'_> {
    pub fn ns(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }
    pub fn name(&self) -> ApiResult<&str> {
        self.path
            .name
            .as_deref()
            .ok_or_else(|| ApiError::new(405, "MethodNotAllowed", "a name is required"))
    }
    fn rt(&self) -> &'static super::resources::ResourceType {
        &RESOURCES[self.path.res]
    }
    fn out(&self, obj: Value) -> Value {
        present::object(obj, self.rt(), &self.path.version)
    }
    pub fn json_body(&self) -> ApiResult<Value> {
        let v: Value = serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::bad_request("body must be a JSON object"));
        }
        Ok(v)
    }
    pub fn selector(&self) -> ApiResult<Selector> {
        Selector::parse(
            self.query.get("labelSelector").map(String::as_str),
            self.query.get("fieldSelector").map(String::as_str),
        )
    }
    /// A namespace on a cluster-scoped kind, or none on a namespaced create, is refused.
    fn check_scope(&self, need_ns: bool) -> ApiResult<()> {
        match (self.rt().namespaced, self.path.namespace.is_some()) {
            (false, true) => Err(ApiError::new(
                404,
                "NotFound",
                format!("{} is not namespaced", self.rt().plural),
            )),
            (true, false) if need_ns => Err(ApiError::bad_request("a namespace is required")),
            _ => Ok(()),
        }
    }
}

pub fn get(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(true)?;
    let obj = store.get(req.path.res, req.ns(), req.name()?)?;
    Ok(if req.table {
        present::table(&[obj], req.rt(), store.resource_version(), true)
    } else {
        req.out(obj)
    })
}

pub fn list(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(false)?;
    let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let (items, rv, next) = store.list_page(
        req.path.res,
        req.path.namespace.as_deref(),
        &req.selector()?,
        after,
        limit,
    );
    let cont = next.map(|(ns, name)| encode_continue(&ns, &name));
    Ok(if req.table {
        present::table(&items, req.rt(), rv, true)
    } else {
        present::list(items, req.rt(), &req.path.version, rv, cont)
    })
}

/// [`list`] as JSON text built from the stored objects' text (not for Tables).
pub fn list_text(store: &Store, req: &Request) -> ApiResult<Vec<u8>> {
    req.check_scope(false)?;
    let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let (items, rv, next) = store.list_page_text(
        req.path.res,
        req.path.namespace.as_deref(),
        &req.selector()?,
        after,
        limit,
    );
    let cont = next.map(|(ns, name)| encode_continue(&ns, &name));
    present::list_text(&items, req.rt(), &req.path.version, rv, cont)
}

/// The continue token names the last (namespace, name) returned.
fn encode_continue(ns: &str, name: &str) -> String {
    let key = serde_json::json!([ns, name]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

pub fn create(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(true)?;
    if req.path.name.is_some() {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "POST goes to the collection",
        ));
    }
    let body = req.json_body()?;
    check_body_identity(&body, req, None)?;
    store
        .create(req.path.res, req.ns(), body)
        .map(|o| req.out(o))
}

/// The body may not claim another kind, namespace or name than the URL.
fn check_body_identity(body: &Value, req: &Request, name: Option<&str>) -> ApiResult<()> {
    if let Some(kind) = body["kind"].as_str().filter(|k| *k != req.rt().kind) {
        return Err(ApiError::bad_request(format!(
            "kind {kind} does not match {}",
            req.rt().kind
        )));
    }
    if let Some(ns) = body["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty() && req.rt().namespaced && *n != req.ns())
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({})",
            req.ns()
        )));
    }
    if let (Some(want), Some(have)) = (name, body["metadata"]["name"].as_str())
        && want != have
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({have}) does not match the name on the URL ({want})"
        )));
    }
    Ok(())
}

pub fn update(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(true)?;
    let body = req.json_body()?;
    let name = req.name()?;
    check_body_identity(&body, req, Some(name))?;
    let sub = req.path.subresource.clone();
    let status_sub = RESOURCES[req.path.res].status_subresource;
    store
        .update(req.path.res, req.ns(), name, |current| {
            merge_for_subresource(current, body, sub.as_deref(), status_sub)
        })
        .map(|o| req.out(o))
}

pub fn patch(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(true)?;
    let kind = PatchKind::from_content_type(req.content_type).ok_or_else(|| {
        ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format ({}); accepted: json-patch, merge-patch, strategic-merge-patch", req.content_type))
    })?;
    // Custom resources take no strategic merge patch in Kubernetes either.
    if kind == PatchKind::Strategic && req.rt().group == "networking.istio.io" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "strategic merge patch is not supported for custom resources",
        ));
    }
    let sub = req.path.subresource.clone();
    let status_sub = RESOURCES[req.path.res].status_subresource;
    let body = req.body;
    store
        .update(req.path.res, req.ns(), req.name()?, |current| {
            let mut patched = patch::apply(kind, current, body)?;
            // A patch that does not name a resourceVersion must not fail on one.
            if patched["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"] {
                patched["metadata"]["resourceVersion"] = Value::Null;
                if let Some(m) = patched["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
            merge_for_subresource(current, patched, sub.as_deref(), status_sub)
        })
        .map(|o| req.out(o))
}

/// Through `/status` only the status changes; through the main endpoint everything but the
/// status (for kinds with a status subresource), as in Kubernetes.
fn merge_for_subresource(
    current: &Value,
    mut next: Value,
    sub: Option<&str>,
    status_sub: bool,
) -> ApiResult<Value> {
    match sub {
        Some("status") if status_sub => {
            let mut out = current.clone();
            out["status"] = next.get("status").cloned().unwrap_or(Value::Null);
            if let Some(rv) = next["metadata"].get("resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::not_found("subresource", other)),
        None => {
            if status_sub {
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(m) = next.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            Ok(next)
        }
    }
}

pub fn delete(store: &Store, req: &Request) -> ApiResult<Value> {
    req.check_scope(true)?;
    if req.path.name.is_none() {
        let (items, _) = store.list(
            req.path.res,
            req.path.namespace.as_deref(),
            &req.selector()?,
        );
        let mut deleted = Vec::new();
        for o in items {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            if let Ok(d) = store.delete(
                req.path.res,
                ns,
                o["metadata"]["name"].as_str().unwrap_or(""),
            ) {
                deleted.push(d);
            }
        }
        return Ok(present::list(
            deleted,
            req.rt(),
            &req.path.version,
            store.resource_version(),
            None,
        ));
    }
    store
        .delete(req.path.res, req.ns(), req.name()?)
        .map(|o| req.out(o))
}
