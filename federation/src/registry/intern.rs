//! Shares the values a million endpoints repeat: namespaces, service accounts, networks,
//! localities, and whole label maps (a Deployment's pods carry the same labels but for
//! `pod-template-hash`, and each endpoint carries its pod's). Each distinct value is kept
//! once, behind an `Arc`.
//!
//! The table is bounded by what is alive: a value only the table holds is garbage, and the
//! table sweeps those out whenever it has doubled since the last sweep, so the cost of
//! sweeping is amortised over the insertions that grew it.

use super::types::Labels;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Never sweep tables smaller than this (a sweep of a small table gains nothing).
const MIN_SWEEP: usize = 1024;

/// One table of shared values of type `T`.
#[derive(Debug)]
struct Table<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// Sweep once the table holds this many values.
    sweep_at: usize,
}

impl<T: ?Sized> Default for Table<T> {
    fn default() -> Self {
        Table {
            values: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Table<T> {
    /// The shared copy of `value`, made from `make` when there is none yet.
    fn get(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(v) = self.values.get(value) {
            return v.clone();
        }
        if self.values.len() >= self.sweep_at {
            // Only the table holds these: nothing uses them any more.
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.values.len() * 2).max(MIN_SWEEP);
        }
        let v = make();
        self.values.insert(v.clone());
        v
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

/// The registry's tables of shared strings and label maps.
#[derive(Debug, Default)]
pub struct Interner {
    strings: Table<str>,
    labels: Table<BTreeMap<String, String>>,
}

impl Interner {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        self.strings.get(s, || Arc::from(s))
    }

    /// The shared copy of a label map equal to `labels` (taking `labels` if it is the first).
    pub fn labels(&mut self, labels: BTreeMap<String, String>) -> Labels {
        if let Some(v) = self.labels.values.get(&labels) {
            return v.clone();
        }
        self.labels.get(&labels.clone(), || Arc::new(labels))
    }

    /// A label map already behind an `Arc`: replaced by the shared copy.
    pub fn share_labels(&mut self, labels: &Labels) -> Labels {
        self.labels.get(labels, || labels.clone())
    }

    /// How many distinct strings and label maps are held (for tests and metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.strings.len(), self.labels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equal_values_share_one_allocation() {
        let mut i = Interner::default();
        let a = i.str("bench");
        let b = i.str("bench");
        assert!(Arc::ptr_eq(&a, &b));
        let l1 = i.labels(map(&[("app", "hw"), ("version", "v1")]));
        let l2 = i.labels(map(&[("app", "hw"), ("version", "v1")]));
        let l3 = i.labels(map(&[("app", "hw"), ("version", "v2")]));
        assert!(Arc::ptr_eq(&l1, &l2));
        assert!(!Arc::ptr_eq(&l1, &l3));
        let shared = i.share_labels(&Arc::new(map(&[("app", "hw"), ("version", "v1")])));
        assert!(Arc::ptr_eq(&shared, &l1));
        assert_eq!(i.sizes(), (1, 2));
    }

    /// The table does not grow with values nobody holds: churning through many distinct
    /// strings keeps it within twice what is alive (plus the minimum).
    #[test]
    fn values_nobody_holds_are_swept() {
        let mut i = Interner::default();
        let kept: Vec<Arc<str>> = (0..100).map(|n| i.str(&format!("kept{n}"))).collect();
        for n in 0..100_000 {
            drop(i.str(&format!("churn{n}")));
        }
        let (strings, _) = i.sizes();
        assert!(strings <= 2 * MIN_SWEEP, "{strings} strings held");
        // The live ones survived every sweep and are still shared.
        assert!(Arc::ptr_eq(&kept[7], &i.str("kept7")));
    }
}
