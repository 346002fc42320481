//! The names the proxy answers from, shared between the NDS client that replaces them and the
//! servers that read them. `None` until the first NameTable: until then every query is
//! forwarded, so a mesh name is never answered NXDOMAIN by us for want of data.

use crate::names::{Names, Scope};
use meshfed_proto::nds::name_table::NameInfo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct Table {
    scope: Arc<Scope>,
    current: Arc<RwLock<Option<Arc<Names>>>>,
    generation: Arc<AtomicU64>,
}

impl Table {
    pub fn new(scope: Scope) -> Table {
        Table {
            scope: Arc::new(scope),
            current: Arc::new(RwLock::new(None)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The names now (cheap: one reference count).
    pub fn get(&self) -> Option<Arc<Names>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// Replaces the names with those of `entries` (hostname to info).
    pub fn set(&self, entries: &BTreeMap<String, NameInfo>) {
        let names = Arc::new(Names::build(entries, &self.scope));
        let hosts = names.hosts();
        if let Ok(mut g) = self.current.write() {
            *g = Some(names);
        }
        self.generation.fetch_add(1, Ordering::Release);
        let m = crate::metrics::global();
        m.names.set(hosts as f64);
        m.table_updates.increment(1);
    }

    /// How many tables have been received (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
