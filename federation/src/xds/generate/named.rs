//! LDS and RDS resources kept per push by key and name: a RouteConfiguration is built once
//! for every client whose [`CacheKey`] is equal and that asks for the same name, however many
//! there are, and the next push compares with these to tell what changed.

use super::{Changes, Resource};
use crate::xds::cache_key::CacheKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Named resources kept per push. One per service port and key, so more than the per-key
/// builds: 16 namespaces of a 1,024-port mesh. A RouteConfiguration is a few hundred bytes,
/// so this is a few MiB at most; past it, names are built per client.
pub const MAX_NAMED: usize = 16 * super::MAX_CACHED;

/// What was built, by key and then by name; None: the name is no resource for such proxies
/// (kept too, so that a name that appears later counts as a change).
pub type Built = HashMap<CacheKey, BTreeMap<String, Option<Arc<Resource>>>>;

#[derive(Default)]
pub struct Named {
    pub built: Built,
    len: usize,
}

impl Named {
    /// The resource `name` for `key`, built with `build` the first time it is asked for.
    pub fn get_or_build(
        &mut self,
        key: &CacheKey,
        name: &str,
        build: impl FnOnce() -> Option<Arc<Resource>>,
    ) -> Option<Arc<Resource>> {
        if let Some(r) = self.built.get(key).and_then(|m| m.get(name)) {
            return r.clone();
        }
        let r = build();
        if self.len < MAX_NAMED {
            self.len += 1;
            self.built
                .entry(key.clone())
                .or_default()
                .insert(name.to_string(), r.clone());
        }
        r
    }
}

/// What changed for `key` between `before` (the previous push's builds) and `now` (this
/// push's build of the same name). Only the names `before` holds are compared, and the
/// result says which: a client that asks for another name is compared name by name instead.
pub fn changes(
    before: &BTreeMap<String, Option<Arc<Resource>>>,
    mut now: impl FnMut(&str) -> Option<Arc<Resource>>,
) -> Changes {
    let mut c = Changes {
        covers: Some(before.keys().cloned().collect()),
        ..Default::default()
    };
    for (name, was) in before {
        match (was, now(name)) {
            (Some(w), Some(r)) if w.hash == r.hash => {}
            (_, Some(r)) => c.updated.push(r),
            (Some(_), None) => c.removed.push(name.clone()),
            (None, None) => {}
        }
    }
    c
}
