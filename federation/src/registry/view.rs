//! The merged services kept between snapshots. Watcher changes mark the Services they touch
//! ([`super::touch`]); a snapshot re-merges only those, and every other Service stays the
//! same `Arc` as in the last snapshot. A change to the set of clusters (one added, removed,
//! replaced by a new generation, gone stale, or on another network) re-merges everything,
//! keeping the `Arc` of each Service that comes out equal.

use super::RegistryConfig;
use super::index::Key;
use super::intern::Interner;
use super::merge::{self, Part};
use super::types::ServiceView;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Which clusters (and in what state) the view was merged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartKey {
    pub id: String,
    pub generation: u64,
    pub stale: bool,
    pub network: Arc<str>,
}

#[derive(Debug)]
pub struct View {
    /// By hostname, as snapshots list them.
    services: BTreeMap<String, Arc<ServiceView>>,
    dirty: HashSet<Key>,
    /// Everything must be re-merged.
    all: bool,
    parts: Vec<PartKey>,
}

impl Default for View {
    fn default() -> Self {
        View {
            services: BTreeMap::new(),
            dirty: HashSet::new(),
            all: true,
            parts: Vec::new(),
        }
    }
}

impl View {
    /// Everything is re-merged at the next refresh.
    #[cfg(test)]
    pub fn mark_all(&mut self) {
        self.all = true;
    }

    pub fn mark(&mut self, keys: impl IntoIterator<Item = Key>) {
        if !self.all {
            self.dirty.extend(keys);
        }
    }

    /// Brings the view up to date with `parts` (described by `now`) and returns its services.
    pub fn refresh(
        &mut self,
        config: &RegistryConfig,
        parts: &[Part<'_>],
        now: Vec<PartKey>,
        interner: &mut Interner,
    ) -> Vec<Arc<ServiceView>> {
        if now != self.parts {
            self.all = true;
            self.parts = now;
        }
        if self.all {
            self.remerge_all(config, parts, interner);
        } else {
            for key in std::mem::take(&mut self.dirty) {
                self.remerge(config, &key, parts, interner);
            }
        }
        self.all = false;
        self.dirty.clear();
        self.services.values().cloned().collect()
    }

    fn remerge(
        &mut self,
        config: &RegistryConfig,
        key: &Key,
        parts: &[Part<'_>],
        interner: &mut Interner,
    ) {
        let hostname = merge::hostname(config, key);
        match merge::service(config, key, parts, interner) {
            Some(v) if self.services.get(&hostname).is_some_and(|old| **old == v) => {}
            Some(v) => {
                self.services.insert(hostname, Arc::new(v));
            }
            None => {
                self.services.remove(&hostname);
            }
        }
    }

    fn remerge_all(
        &mut self,
        config: &RegistryConfig,
        parts: &[Part<'_>],
        interner: &mut Interner,
    ) {
        let mut old = std::mem::take(&mut self.services);
        for key in merge::keys(parts) {
            let Some(v) = merge::service(config, &key, parts, interner) else {
                continue;
            };
            let kept = old.remove(&v.hostname).filter(|o| **o == v);
            let v = kept.unwrap_or_else(|| Arc::new(v));
            self.services.insert(v.hostname.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests;
