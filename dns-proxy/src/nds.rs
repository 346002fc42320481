//! The NDS client: a delta ADS subscription to every NameTable resource. Our federation sends
//! one resource per hostname (`name_info`); a resource carrying a whole `table` (as a state of
//! the world server would fold it) is read too. The server is reached in plaintext or over
//! TLS with a ServiceAccount token, as an [`XdsServer`] says.

use crate::table::Table;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use meshfed_proto::ads::{self, Applied, DeltaState, Identity, Subscription, XdsServer};
use meshfed_proto::nds::name_table::NameInfo;
use meshfed_proto::nds::{NAME_TABLE_TYPE_URL, NameTable};
use prost::Message;
use std::collections::BTreeMap;

struct State {
    /// Resource name to (version, the entries it carries).
    resources: BTreeMap<String, (String, BTreeMap<String, NameInfo>)>,
    table: Table,
}

impl State {
    fn entries(&self) -> BTreeMap<String, NameInfo> {
        self.resources
            .values()
            .flat_map(|(_, e)| e.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }
}

impl DeltaState for State {
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription {
            type_url: NAME_TABLE_TYPE_URL.into(),
            names: vec!["*".into()],
            versions: self
                .resources
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        }]
    }

    fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Applied {
        if response.type_url != NAME_TABLE_TYPE_URL {
            return Applied::default();
        }
        let mut applied = Applied::default();
        for r in &response.resources {
            let decoded = r
                .resource
                .as_ref()
                .ok_or_else(|| "no resource".to_string())
                .and_then(|any| NameTable::decode(any.value.as_slice()).map_err(|e| e.to_string()));
            match decoded {
                Ok(t) => {
                    self.resources
                        .insert(r.name.clone(), (r.version.clone(), entries(&r.name, t)));
                }
                Err(e) => applied.error = Some(format!("{}: {e}", r.name)),
            }
        }
        for name in &response.removed_resources {
            self.resources.remove(name);
        }
        self.table.set(&self.entries());
        applied
    }
}

fn entries(resource: &str, t: NameTable) -> BTreeMap<String, NameInfo> {
    let mut out: BTreeMap<String, NameInfo> = t.table.into_iter().collect();
    if let Some(info) = t.name_info {
        out.insert(resource.to_string(), info);
    }
    out
}

/// Runs until aborted, keeping `table` in step with `server`.
pub async fn run(server: XdsServer, identity: Identity, table: Table) {
    let mut state = State {
        resources: BTreeMap::new(),
        table,
    };
    ads::run(server, identity, &mut state).await
}
