//! The object store: every object as JSON, one resourceVersion counter, and a bounded event
//! log so watches can resume from a resourceVersion (older ones get 410 Gone).
//!
//! Objects are kept as their JSON text ([`Stored`]) and parsed on each read: a parsed
//! `serde_json::Value` costs about ten times its text in maps and small strings, and the
//! benchmarks hold millions of objects (issue 21).
//!
//! Every write, a client's or a controller's, goes through a [`Txn`]: it bumps the
//! resourceVersion, records the event and runs the [`Hooks`] the store was made with. The
//! store knows the controllers only as those hooks; they never see its fields.

use super::error::{ApiError, ApiResult};
use super::resources::{RESOURCES, ResourceId};
use super::selector::Selector;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Kind, namespace ("" for cluster-scoped kinds) and name.
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

/// Who a recorded bearer token belongs to: a static token (the admin's), or a legacy
/// Secret token of a service account, recorded so it dies with its Secret and account.
/// Bound tokens are never recorded: their claims say who they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    /// Groups of a static token's user (`system:authenticated` is added to every user).
    pub groups: Vec<String>,
    /// The service account a token belongs to, so deleting it revokes the token.
    pub service_account: Option<(String, String)>,
}

/// What runs inside every write, as kube-apiserver's defaulting and kube-controller-manager's
/// controllers would (see `controllers`). Each hook gets a [`Txn`] on the store, so whatever
/// it changes is versioned and watched like a client's write, in the same critical section.
pub trait Hooks: Send + Sync {
    /// Before `obj` is stored: may fill it in, or refuse it.
    fn on_create(
        &self,
        txn: &mut Txn<'_>,
        res: ResourceId,
        ns: &str,
        obj: &mut Value,
    ) -> ApiResult<()>;
    /// After `obj` is stored and its ADDED event recorded.
    fn after_create(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value);
    /// Before `next` replaces `current`: may fill it in, or refuse it.
    fn on_update(
        &self,
        txn: &mut Txn<'_>,
        res: ResourceId,
        current: &Value,
        next: &mut Value,
    ) -> ApiResult<()>;
    /// After `obj` is gone and its DELETED event recorded.
    fn after_delete(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value);
}

/// Everything behind the store's lock; only this module touches it, through [`Txn`].
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    log: VecDeque<Arc<Event>>,
    /// Watches may resume from any resourceVersion >= this; older ones are gone.
    oldest_rv: u64,
    tokens: HashMap<String, Identity>,
    /// Recorded by writes under the lock, published when it is released.
    pending: Vec<Arc<Event>>,
    /// Set while seeding ([`Store::insert_many`]): writes record no events.
    quiet: bool,
}

/// One stored object: its compact JSON text. Reads parse it, writes serialize it.
struct Stored(Box<str>);

impl Stored {
    fn new(obj: &Value) -> Self {
        Stored(obj.to_string().into_boxed_str())
    }

    fn value(&self) -> Value {
        // The text was written by `new` from a Value, so it always parses; Null is never
        // reached and would read as a missing object's fields.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

pub struct Store {
    inner: Mutex<Inner>,
    hooks: Box<dyn Hooks>,
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
    /// An empty store with Kubernetes' four namespaces, created through `hooks` as every
    /// later object is.
    pub fn new(hooks: Box<dyn Hooks>, log_capacity: usize) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                oldest_rv: 1,
                tokens: HashMap::new(),
                pending: Vec::new(),
                quiet: false,
            }),
            hooks,
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

    /// Runs `f` on a transaction with the store locked; the events it records are published
    /// when it returns.
    fn with<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> T) -> T {
        let mut inner = self.lock();
        let out = f(&mut Txn {
            inner: &mut inner,
            hooks: self.hooks.as_ref(),
        });
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
            .map(Stored::value)
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
            .map(|(key, obj)| (key, obj.value()))
            .filter(|(_, obj)| sel.matches(obj));
        let mut items = Vec::new();
        let mut last = None;
        for ((_, n, name), obj) in matching.by_ref().take(limit) {
            items.push(obj);
            last = Some((n.clone(), name.clone()));
        }
        let more = matching.next().is_some();
        (items, inner.rv, last.filter(|_| more))
    }

    /// [`Store::list_page`] as the objects' stored JSON text: a list needs no parse of an
    /// object the selector does not read (a large list costs a copy per object, not a parse
    /// and an encode).
    pub fn list_page_text(
        &self,
        res: ResourceId,
        ns: Option<&str>,
        sel: &Selector,
        after: Option<(String, String)>,
        limit: usize,
    ) -> (Vec<String>, u64, Option<(String, String)>) {
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
            .filter(|(_, obj)| sel.is_empty() || sel.matches(&obj.value()));
        let mut items = Vec::new();
        let mut last = None;
        for ((_, n, name), obj) in matching.by_ref().take(limit) {
            items.push(obj.0.to_string());
            last = Some((n.clone(), name.clone()));
        }
        let more = matching.next().is_some();
        (items, inner.rv, last.filter(|_| more))
    }

    pub fn create(&self, res: ResourceId, ns: &str, obj: Value) -> ApiResult<Value> {
        self.with(|txn| txn.create(res, ns, obj))
    }

    /// Creates `objects` of kind `res` in `ns` in one critical section, each exactly as
    /// [`Store::create`] does (name checks, uid, creationTimestamp, its own resourceVersion,
    /// the controllers' hooks) but without recording events: for seeding large test states.
    /// Stops at the first refused object, keeping those before it. Then the history is
    /// compacted and open watches end with 410 Gone, as after an etcd compaction: a client
    /// relists and sees the seeded objects, none resumes past them. Returns how many were
    /// created.
    pub fn insert_many(
        &self,
        res: ResourceId,
        ns: &str,
        objects: impl IntoIterator<Item = Value>,
    ) -> ApiResult<usize> {
        let mut created = 0;
        let result = {
            let mut inner = self.lock();
            inner.quiet = true;
            let mut txn = Txn {
                inner: &mut inner,
                hooks: self.hooks.as_ref(),
            };
            let result = objects
                .into_iter()
                .try_for_each(|obj| txn.create(res, ns, obj).map(|_| created += 1));
            inner.quiet = false;
            result
        };
        if created > 0 {
            self.expire_watches();
        }
        result.map(|()| created)
    }

    /// Replaces an object with what `f` makes of the current one, atomically.
    pub fn update(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        self.with(|txn| {
            let key = (res, ns.to_string(), name.to_string());
            let current = txn.current(&key)?;
            let next = f(&current)?;
            txn.replace_current(key, current, next)
        })
    }

    pub fn delete(&self, res: ResourceId, ns: &str, name: &str) -> ApiResult<Value> {
        self.with(|txn| txn.delete(res, ns, name))
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
            let initial = of_kind(&inner.objects, res)
                .map(|(_, o)| o.value())
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

/// One critical section on the store, as the controllers see it: lookups, and writes that
/// each bump the resourceVersion, record their event and run the [`Hooks`], exactly as a
/// client's request does.
pub struct Txn<'a> {
    inner: &'a mut Inner,
    hooks: &'a dyn Hooks,
}

impl Txn<'_> {
    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> Option<Value> {
        self.inner
            .objects
            .get(&(res, ns.to_string(), name.to_string()))
            .map(Stored::value)
    }

    fn exists(&self, res: ResourceId, ns: &str, name: &str) -> bool {
        let key = (res, ns.to_string(), name.to_string());
        self.inner.objects.contains_key(&key)
    }

    /// The keys of the objects in namespace `ns`: of kind `res`, or of every kind for None.
    pub fn keys(&self, res: Option<ResourceId>, ns: &str) -> Vec<Key> {
        let objects = &self.inner.objects;
        let keys: Box<dyn Iterator<Item = &Key>> = match res {
            Some(res) => Box::new(of_kind(objects, res).map(|(k, _)| k)),
            None => Box::new(objects.keys()),
        };
        keys.filter(|(_, n, _)| n == ns).cloned().collect()
    }

    /// Every object of kind `res`, in all namespaces.
    pub fn all(&self, res: ResourceId) -> impl Iterator<Item = Value> + '_ {
        of_kind(&self.inner.objects, res).map(|(_, obj)| obj.value())
    }

    /// How many objects the store holds, of every kind.
    pub fn object_count(&self) -> usize {
        self.inner.objects.len()
    }

    pub fn add_token(&mut self, token: String, identity: Identity) {
        self.inner.tokens.insert(token, identity);
    }

    /// Revokes a service account's recorded token; static tokens (the admin's) stay, whatever
    /// a Secret claims to hold.
    pub fn revoke_token(&mut self, token: &str) {
        if self
            .inner
            .tokens
            .get(token)
            .is_some_and(|id| id.service_account.is_some())
        {
            self.inner.tokens.remove(token);
        }
    }

    /// Revokes every token of service account `ns/name`.
    pub fn revoke_service_account(&mut self, ns: &str, name: &str) {
        let sa = Some((ns.to_string(), name.to_string()));
        self.inner.tokens.retain(|_, id| id.service_account != sa);
    }

    pub fn create(&mut self, res: ResourceId, ns: &str, mut obj: Value) -> ApiResult<Value> {
        let rt = &RESOURCES[res];
        let name = object_name(&mut obj)?;
        let namespace = super::resources::by_kind("Namespace");
        if rt.namespaced && !self.exists(namespace, "", ns) {
            return Err(ApiError::not_found("namespaces", ns));
        }
        let key = (res, ns.to_string(), name.clone());
        if self.inner.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified_plural()),
            ));
        }
        stamp_new(&mut obj, &name, rt.namespaced.then_some(ns))?;
        let hooks = self.hooks;
        hooks.on_create(self, res, ns, &mut obj)?;
        let rv = self.inner.next_rv();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.inner.objects.insert(key, Stored::new(&obj));
        self.inner.record(res, ns, EventType::Added, &obj, None);
        hooks.after_create(self, res, ns, &obj);
        Ok(obj)
    }

    /// Replaces the object `obj` names with it (a resourceVersion in it must be current).
    pub fn replace(&mut self, res: ResourceId, ns: &str, obj: Value) -> ApiResult<Value> {
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?;
        let key = (res, ns.to_string(), name.to_string());
        let current = self.current(&key)?;
        self.replace_current(key, current, obj)
    }

    pub fn delete(&mut self, res: ResourceId, ns: &str, name: &str) -> ApiResult<Value> {
        let key = (res, ns.to_string(), name.to_string());
        let mut obj = self
            .inner
            .objects
            .remove(&key)
            .ok_or_else(|| not_found(res, name))?
            .value();
        let rv = self.inner.next_rv();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.inner.record(res, ns, EventType::Deleted, &obj, None);
        let hooks = self.hooks;
        hooks.after_delete(self, res, ns, &obj);
        Ok(obj)
    }

    fn current(&self, key: &Key) -> ApiResult<Value> {
        self.inner
            .objects
            .get(key)
            .map(Stored::value)
            .ok_or_else(|| not_found(key.0, &key.2))
    }

    /// `next` in place of `current` (the object at `key`): identity fields kept, generation
    /// bumped when the spec changed, and nothing at all when nothing changed.
    fn replace_current(&mut self, key: Key, current: Value, mut next: Value) -> ApiResult<Value> {
        let (res, ns) = (key.0, key.1.clone());
        check_replacement(&key, &current, &mut next)?;
        let hooks = self.hooks;
        hooks.on_update(self, res, &current, &mut next)?;
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        let bump = i64::from(current.get("spec") != next.get("spec"));
        if generation > 0 || next.get("spec").is_some() {
            next["metadata"]["generation"] = (generation.max(1) + bump).into();
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == current {
            return Ok(current); // No-op updates do not bump resourceVersion, as in Kubernetes.
        }
        let rv = self.inner.next_rv();
        next["metadata"]["resourceVersion"] = rv.to_string().into();
        self.inner.objects.insert(key, Stored::new(&next));
        self.inner
            .record(res, &ns, EventType::Modified, &next, Some(current));
        Ok(next)
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
        object: &Value,
        prev: Option<Value>,
    ) {
        if self.quiet {
            return;
        }
        let rv = self.rv;
        self.pending.push(Arc::new(Event {
            rv,
            res,
            namespace: ns.to_string(),
            kind,
            object: object.clone(),
            prev,
        }));
    }
}

/// The objects of kind `res`: a range of the map, since the kind leads the key.
fn of_kind(
    objects: &BTreeMap<Key, Stored>,
    res: ResourceId,
) -> impl Iterator<Item = (&Key, &Stored)> {
    let from = (res, String::new(), String::new());
    objects
        .range(from..)
        .take_while(move |((r, _, _), _)| *r == res)
}

/// The metadata the server owns on a new object: its name and namespace (none for a
/// cluster-scoped kind), a uid, the creation time, generation 1 for objects with a spec.
fn stamp_new(obj: &mut Value, name: &str, ns: Option<&str>) -> ApiResult<()> {
    let meta = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    meta.insert("name".into(), name.into());
    match ns {
        Some(ns) => meta.insert("namespace".into(), ns.into()),
        None => meta.remove("namespace"),
    };
    meta.insert("uid".into(), uid().into());
    meta.insert("creationTimestamp".into(), now_rfc3339().into());
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    if obj.get("spec").is_some() {
        obj["metadata"]["generation"] = 1.into();
    }
    Ok(())
}

/// Refuses a stale resourceVersion or a new name, and carries over the fields a client
/// cannot change (uid, creationTimestamp, name, namespace).
fn check_replacement(key: &Key, current: &Value, next: &mut Value) -> ApiResult<()> {
    let name = &key.2;
    let want_rv = next["metadata"]["resourceVersion"].as_str().unwrap_or("");
    let have_rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("");
    if !want_rv.is_empty() && want_rv != have_rv {
        return Err(ApiError::conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            RESOURCES[key.0].qualified_plural()
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
    Ok(())
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

/// A random RFC 4122 version 4 UUID, as Kubernetes gives objects.
pub fn uid() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::by_kind;
    use serde_json::json;

    /// Gives every ConfigMap a companion `<name>-copy` and deletes it with it, as a
    /// controller would.
    struct Copier;

    fn original(res: ResourceId, obj: &Value) -> Option<&str> {
        let name = obj["metadata"]["name"].as_str()?;
        (res == by_kind("ConfigMap") && !name.ends_with("-copy")).then_some(name)
    }

    impl Hooks for Copier {
        fn on_create(
            &self,
            _: &mut Txn<'_>,
            _: ResourceId,
            _: &str,
            _: &mut Value,
        ) -> ApiResult<()> {
            Ok(())
        }
        fn after_create(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value) {
            if let Some(name) = original(res, obj) {
                let copy = json!({"metadata": {"name": format!("{name}-copy")}});
                txn.create(res, ns, copy).unwrap();
            }
        }
        fn on_update(
            &self,
            _: &mut Txn<'_>,
            _: ResourceId,
            _: &Value,
            _: &mut Value,
        ) -> ApiResult<()> {
            Ok(())
        }
        fn after_delete(&self, txn: &mut Txn<'_>, res: ResourceId, ns: &str, obj: &Value) {
            if let Some(name) = original(res, obj) {
                txn.delete(res, ns, &format!("{name}-copy")).unwrap();
            }
        }
    }

    #[test]
    fn writes_by_hooks_are_versioned_and_watched_like_a_clients() {
        let store = Store::new(Box::new(Copier), 100);
        let cm = by_kind("ConfigMap");
        let from = store.resource_version();
        store
            .create(cm, "default", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let copy = store.get(cm, "default", "a-copy").unwrap();
        assert_eq!(copy["metadata"]["resourceVersion"], (from + 2).to_string());
        store.delete(cm, "default", "a").unwrap();
        assert!(store.get(cm, "default", "a-copy").is_err());
        let seen: Vec<(u64, EventType, String)> = store
            .watch(cm, Some(from), false)
            .unwrap()
            .backlog
            .iter()
            .map(|e| (e.rv, e.kind, e.object["metadata"]["name"].to_string()))
            .collect();
        let want = [
            (from + 1, EventType::Added, "\"a\""),
            (from + 2, EventType::Added, "\"a-copy\""),
            (from + 3, EventType::Deleted, "\"a\""),
            (from + 4, EventType::Deleted, "\"a-copy\""),
        ]
        .map(|(rv, kind, name)| (rv, kind, name.to_string()));
        assert_eq!(seen, want);
        assert_eq!(store.resource_version(), from + 4);
    }

    /// Seeding creates each object as a client's create would (uid, creationTimestamp, its
    /// own resourceVersion, the controllers' hooks) but records no events: the history is
    /// compacted, so resuming from before it is 410 Gone (as after an etcd compaction) and
    /// an open watch ends to relist, while lists and snapshots show every seeded object.
    #[test]
    fn seeding_creates_like_a_client_and_compacts_the_history() {
        let store = Store::new(Box::new(Copier), 100);
        let cm = by_kind("ConfigMap");
        let from = store.resource_version();
        let mut open = store.watch(cm, None, true).unwrap();
        let objects = (0..3).map(|i| json!({"metadata": {"name": format!("s{i}")}}));
        assert_eq!(store.insert_many(cm, "default", objects).unwrap(), 3);
        let s1 = store.get(cm, "default", "s1").unwrap();
        // Each object and its hook's copy take one resourceVersion, in order.
        assert_eq!(s1["metadata"]["resourceVersion"], (from + 3).to_string());
        assert_eq!(s1["metadata"]["uid"].as_str().map(str::len), Some(36));
        assert!(s1["metadata"]["creationTimestamp"].is_string());
        assert!(store.get(cm, "default", "s1-copy").is_ok());
        assert_eq!(store.resource_version(), from + 6);
        assert!(open.expired.has_changed().unwrap());
        assert!(open.live.try_recv().is_err(), "seeding published an event");
        let gone = store.watch(cm, Some(from), false).err().unwrap();
        assert_eq!(gone.code, 410);
        let (items, _) = store.list(cm, Some("default"), &Selector::default());
        assert_eq!(items.len(), 6);
        assert_eq!(store.watch(cm, None, true).unwrap().initial.len(), 6);
        // Later writes are watched again, from the compacted history.
        let now = store.resource_version();
        store
            .create(cm, "default", json!({"metadata": {"name": "late"}}))
            .unwrap();
        assert_eq!(store.watch(cm, Some(now), false).unwrap().backlog.len(), 2);
    }

    /// A refused object (a name already taken: 409 AlreadyExists, as kube-apiserver answers)
    /// stops the seeding; the objects before it stay.
    #[test]
    fn seeding_stops_at_a_refused_object() {
        let store = Store::new(Box::new(Copier), 100);
        let cm = by_kind("ConfigMap");
        let objects = ["a", "b", "a", "c"].map(|n| json!({"metadata": {"name": n}}));
        let err = store.insert_many(cm, "default", objects).err().unwrap();
        assert_eq!(err.code, 409);
        assert!(store.get(cm, "default", "b").is_ok());
        assert!(store.get(cm, "default", "c").is_err());
    }
}
