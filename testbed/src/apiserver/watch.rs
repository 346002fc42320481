//! Watches: replay from a resourceVersion (or a snapshot), then live events, bookmarks,
//! and a 410 ERROR event when the requested history is gone or the watcher fell behind.

use super::error::{ApiError, ApiResult};
use super::present;
use super::resources::{RESOURCES, ResourceId};
use super::selector::Selector;
use super::store::{Event, EventType, Store};
use bytes::Bytes;
use futures::SinkExt;
use futures::channel::mpsc;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub struct WatchParams {
    pub res: ResourceId,
    pub version: String,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// None: start now with a snapshot of existing objects as ADDED events.
    pub from: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
    pub table: bool,
}

impl WatchParams {
    pub fn parse_rv(raw: Option<&String>) -> ApiResult<Option<u64>> {
        match raw.map(String::as_str) {
            None | Some("") | Some("0") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
        }
    }
}

type Tx = mpsc::Sender<Bytes>;

/// Starts the watch; events arrive on the returned stream until timeout or disconnect.
pub fn start(store: Arc<Store>, p: WatchParams) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // An error here means the client went away; nothing to report.
        let _ = run(store, p, tx).await;
    });
    rx
}

async fn run(store: Arc<Store>, p: WatchParams, mut tx: Tx) -> Result<(), mpsc::SendError> {
    let snapshot = p.from.is_none() || p.send_initial_events;
    let start = match store.watch(p.res, p.from, snapshot) {
        Ok(s) => s,
        Err(e) => return send(&mut tx, &error_event(&e)).await,
    };
    let mut last_rv = start.rv;
    for obj in start.initial.into_iter().filter(|o| in_scope(&p, o)) {
        send(&mut tx, &event_json(&p, "ADDED", obj)).await?;
    }
    if p.send_initial_events && p.bookmarks {
        send(&mut tx, &bookmark(&p, last_rv, true)).await?;
    }
    for ev in &start.backlog {
        if let Some(line) = translate(&p, ev) {
            send(&mut tx, &line).await?;
        }
        last_rv = ev.rv;
    }
    let mut live = start.live;
    let mut expired = start.expired;
    let deadline = tokio::time::sleep(p.timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(p.bookmark_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            _ = expired.changed() => {
                let gone = ApiError::gone(format!("too old resource version: {last_rv}"));
                return send(&mut tx, &error_event(&gone)).await;
            }
            _ = tick.tick(), if p.bookmarks => send(&mut tx, &bookmark(&p, last_rv, false)).await?,
            ev = live.recv() => match ev {
                Ok(ev) if ev.res == p.res && ev.rv > last_rv => {
                    last_rv = ev.rv;
                    if let Some(line) = translate(&p, &ev) {
                        send(&mut tx, &line).await?;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    let gone = ApiError::gone("watch fell behind; relist");
                    return send(&mut tx, &error_event(&gone)).await;
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

fn in_scope(p: &WatchParams, obj: &Value) -> bool {
    let ns_ok = p
        .namespace
        .as_deref()
        .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns));
    ns_ok && p.selector.matches(obj)
}

/// An update that moves an object into or out of the selection is an ADDED or DELETED for
/// this watcher, as kube-apiserver reports it.
fn translate(p: &WatchParams, ev: &Event) -> Option<Value> {
    let now = in_scope(p, &ev.object);
    let kind = match (ev.kind, ev.prev.as_ref().map(|o| in_scope(p, o))) {
        (EventType::Modified, Some(false)) if now => "ADDED",
        (EventType::Modified, Some(true)) if !now => "DELETED",
        (_, _) if !now => return None,
        (k, _) => k.as_str(),
    };
    Some(event_json(p, kind, ev.object.clone()))
}

fn event_json(p: &WatchParams, kind: &str, obj: Value) -> Value {
    let rt = &RESOURCES[p.res];
    let object = if p.table {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        present::table(&[obj], rt, rv, true)
    } else {
        present::object(obj, rt, &p.version)
    };
    json!({"type": kind, "object": object})
}

fn bookmark(p: &WatchParams, rv: u64, initial_end: bool) -> Value {
    let rt = &RESOURCES[p.res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(&p.version), "metadata": meta}})
}

fn error_event(e: &ApiError) -> Value {
    json!({"type": "ERROR", "object": e.status()})
}

async fn send(tx: &mut Tx, v: &Value) -> Result<(), mpsc::SendError> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    tx.send(Bytes::from(line)).await
}
