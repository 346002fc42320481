//! The object store: every object as JSON, one resourceVersion counter, and a bounded event
//! log so watches can resume from a resourceVersion (older ones get 410 Gone).

use super::controllers;
use super::error::{ApiError, ApiResult};
use super::resources::{RESOURCES, ResourceId};
use super::selector::Selector;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::broadcast;

pub type Key = (ResourceId, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub res: ResourceId,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    /// The object before a modification: a watch with a selector needs it to turn an
    /// update that leaves (or enters) the selection into DELETED (or ADDED).
    pub prev: Option<Value>,
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub expires: Option<SystemTime>,
    /// The service account a token belongs to, so deleting it revokes the token.
    pub service_account: Option<(String, String)>,
}

pub struct Inner {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
    /// Watches may resume from any resourceVersion >= this; older ones are gone.
    pub oldest_rv: u64,
    pub tokens: HashMap<String, Identity>,
    pub ca_pem: String,
    pub service_cidr: (u32, u8),
    pending: Vec<Arc<Event>>,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    /// Bumped to end every open watch with 410 Gone.
    expiry: tokio::sync::watch::Sender<u64>,
    log_capacity: usize,
}

/// Where a watch starts: the events it must replay, then the live feed.
pub struct WatchStart {
    /// With a snapshot: every current object of the resource, to send as ADDED.
    pub initial: Vec<Value>,
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    pub expired: tokio::sync::watch::Receiver<u64>,
    pub rv: u64,
}

impl Store {
    pub fn new(ca_pem: String, service_cidr: (u32, u8), log_capacity: usize) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                oldest_rv: 1,
                tokens: HashMap::new(),
                ca_pem,
                service_cidr,
                pending: Vec::new(),
            }),
            events,
            expiry: tokio::sync::watch::channel(0).0,
            log_capacity,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let _ = store.create(super::resources::by_kind("Namespace"), "", obj);
        }
        store
    }

    /// Runs `f` with the store locked; events it records are published when it returns.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut inner);
        let pending = std::mem::take(&mut inner.pending);
        for ev in pending {
            inner.log.push_back(ev.clone());
            while inner.log.len() > self.log_capacity {
                if let Some(old) = inner.log.pop_front() {
                    inner.oldest_rv = old.rv;
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(ev);
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent JSON behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> ApiResult<Value> {
        let inner = self.lock();
        inner
            .objects
            .get(&(res, ns.into(), name.into()))
            .cloned()
            .ok_or_else(|| not_found(res, name))
    }

    /// Objects of `res` (in `ns`, or everywhere for None) matching `sel`, sorted by
    /// namespace and name, with the store's resourceVersion.
    pub fn list(&self, res: ResourceId, ns: Option<&str>, sel: &Selector) -> (Vec<Value>, u64) {
        let (items, rv, _) = self.list_page(res, ns, sel, None, usize::MAX);
        (items, rv)
    }

    /// Up to `limit` matching objects after the (namespace, name) `after`, in key order, and
    /// the key to continue from if more remain. Scans only from `after`, so paging through
    /// a large kind costs what it returns.
    pub fn list_page(
        &self,
        res: ResourceId,
        ns: Option<&str>,
        sel: &Selector,
        after: Option<(String, String)>,
        limit: usize,
    ) -> (Vec<Value>, u64, Option<(String, String)>) {
        use std::ops::Bound;
        let inner = self.lock();
        let start = match after {
            Some((n, name)) => Bound::Excluded((res, n, name)),
            None => Bound::Included((res, String::new(), String::new())),
        };
        let mut matching = inner
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|((r, _, _), _)| *r == res)
            .filter(|((_, n, _), _)| ns.is_none_or(|want| want == n))
            .filter(|(_, obj)| sel.matches(obj));
        let mut items = Vec::new();
        let mut last = None;
        for ((_, n, name), obj) in matching.by_ref().take(limit) {
            items.push(obj.clone());
            last = Some((n.clone(), name.clone()));
        }
        let more = matching.next().is_some();
        (items, inner.rv, last.filter(|_| more))
    }

    pub fn create(&self, res: ResourceId, ns: &str, obj: Value) -> ApiResult<Value> {
        self.with(|inner| inner.create(res, ns, obj))
    }

    /// Replaces an object with what `f` makes of the current one, atomically.
    pub fn update(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        self.with(|inner| {
            let key = (res, ns.to_string(), name.to_string());
            let current = inner
                .objects
                .get(&key)
                .cloned()
                .ok_or_else(|| not_found(res, name))?;
            let next = f(&current)?;
            inner.replace(key, current, next)
        })
    }

    pub fn delete(&self, res: ResourceId, ns: &str, name: &str) -> ApiResult<Value> {
        self.with(|inner| inner.delete(&(res, ns.to_string(), name.to_string())))
    }

    /// Starts a watch from `from`, or from now with a snapshot. Subscribing under the lock
    /// means no event falls between the snapshot or backlog and the live feed.
    pub fn watch(
        &self,
        res: ResourceId,
        from: Option<u64>,
        snapshot: bool,
    ) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let expired = self.expiry.subscribe();
        if snapshot {
            let initial = inner
                .objects
                .iter()
                .filter(|((r, _, _), _)| *r == res)
                .map(|(_, o)| o.clone())
                .collect();
            return Ok(WatchStart {
                initial,
                backlog: Vec::new(),
                live,
                expired,
                rv: inner.rv,
            });
        }
        let rv = from.unwrap_or(inner.rv);
        if rv < inner.oldest_rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                inner.oldest_rv
            )));
        }
        let backlog = inner
            .log
            .iter()
            .filter(|e| e.res == res && e.rv > rv)
            .cloned()
            .collect();
        Ok(WatchStart {
            initial: Vec::new(),
            backlog,
            live,
            expired,
            rv,
        })
    }

    /// Forgets the event history (as etcd compaction does): older resourceVersions get 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.oldest_rv = inner.rv;
    }

    /// Compacts the history and ends every open watch with 410 Gone, as a restarted API
    /// server does: clients must relist, and resuming from any earlier resourceVersion fails.
    pub fn expire_watches(&self) {
        self.compact();
        self.expiry.send_modify(|n| *n += 1);
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn identity(&self, token: &str) -> Option<Identity> {
        self.lock().tokens.get(token).cloned()
    }

    pub fn add_token(&self, token: String, identity: Identity) {
        self.lock().tokens.insert(token, identity);
    }
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        res: ResourceId,
        ns: &str,
        kind: EventType,
        object: Value,
        prev: Option<Value>,
    ) {
        let rv = self.rv;
        self.pending.push(Arc::new(Event {
            rv,
            res,
            namespace: ns.to_string(),
            kind,
            object,
            prev,
        }));
    }

    pub fn create(&mut self, res: ResourceId, ns: &str, mut obj: Value) -> ApiResult<Value> {
        let rt = &RESOURCES[res];
        let name = object_name(&mut obj)?;
        if rt.namespaced {
            let ns_key = (
                super::resources::by_kind("Namespace"),
                String::new(),
                ns.to_string(),
            );
            if !self.objects.contains_key(&ns_key) {
                return Err(ApiError::not_found("namespaces", ns));
            }
        }
        let key = (res, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified_plural()),
            ));
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        meta.insert("name".into(), name.clone().into());
        if rt.namespaced {
            meta.insert("namespace".into(), ns.into());
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), uid().into());
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = 1.into();
        }
        controllers::on_create(self, res, ns, &mut obj)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.objects.insert(key, obj.clone());
        self.record(res, ns, EventType::Added, obj.clone(), None);
        controllers::after_create(self, res, ns, &obj);
        Ok(obj)
    }

    pub fn replace(&mut self, key: Key, current: Value, mut next: Value) -> ApiResult<Value> {
        let (res, ns, name) = (key.0, key.1.clone(), key.2.clone());
        let want_rv = next["metadata"]["resourceVersion"].as_str().unwrap_or("");
        let have_rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("");
        if !want_rv.is_empty() && want_rv != have_rv {
            return Err(ApiError::conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                RESOURCES[res].qualified_plural()
            )));
        }
        if next["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("metadata.name cannot be changed"));
        }
        for field in ["uid", "creationTimestamp", "name", "namespace"] {
            match current["metadata"].get(field) {
                Some(v) => next["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        controllers::on_update(self, res, &current, &mut next)?;
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        let bump = i64::from(current.get("spec") != next.get("spec"));
        if generation > 0 || next.get("spec").is_some() {
            next["metadata"]["generation"] = (generation.max(1) + bump).into();
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == current {
            return Ok(current); // No-op updates do not bump resourceVersion, as in Kubernetes.
        }
        let rv = self.next_rv();
        next["metadata"]["resourceVersion"] = rv.to_string().into();
        self.objects.insert(key, next.clone());
        self.record(res, &ns, EventType::Modified, next.clone(), Some(current));
        Ok(next)
    }

    pub fn delete(&mut self, key: &Key) -> ApiResult<Value> {
        let mut obj = self
            .objects
            .remove(key)
            .ok_or_else(|| not_found(key.0, &key.2))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.record(key.0, &key.1, EventType::Deleted, obj.clone(), None);
        controllers::after_delete(self, key.0, &key.1, &obj);
        Ok(obj)
    }
}

fn object_name(obj: &mut Value) -> ApiResult<String> {
    if !obj["metadata"].is_object() {
        return Err(ApiError::bad_request("metadata is required"));
    }
    if let Some(name) = obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        return valid_name(name).map(str::to_string);
    }
    let prefix = obj["metadata"]["generateName"].as_str().unwrap_or("");
    if prefix.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    let suffix: String = (0..5)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect();
    valid_name(&format!("{prefix}{suffix}")).map(str::to_string)
}

fn valid_name(name: &str) -> ApiResult<&str> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(name)
    } else {
        Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "metadata.name: Invalid value: \"{name}\": must be a lowercase RFC 1123 subdomain"
            ),
        ))
    }
}

pub fn not_found(res: ResourceId, name: &str) -> ApiError {
    ApiError::not_found(&RESOURCES[res].qualified_plural(), name)
}

fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
