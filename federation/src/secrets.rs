//! Remote secrets: Secrets labelled `istio/multiCluster=true` in the system namespace, each
//! data key a cluster id whose value is a kubeconfig (Istio's format). Each becomes a watched
//! cluster; a change starts a new connection that replaces the old one once synced.

use crate::registry::Registry;
use crate::watch::{self, Target};
use crate::{kubeconfig, metrics};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

struct Owned {
    secret: String,
    kubeconfig: String,
}

pub struct SecretController {
    registry: Arc<Registry>,
    local_id: String,
    /// `--allow-insecure-kubeconfig-options`: accept what [`kubeconfig::sanitize`] refuses.
    allow_insecure: bool,
    owned: HashMap<String, Owned>,
}

fn clusters_in(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

impl SecretController {
    pub fn new(registry: Arc<Registry>, local_id: &str, allow_insecure: bool) -> Self {
        SecretController {
            registry,
            local_id: local_id.to_string(),
            allow_insecure,
            owned: HashMap::new(),
        }
    }

    /// Watches remote secrets until aborted.
    pub async fn run(mut self, local: Client) {
        let ns = self.registry.config().system_namespace.clone();
        let api: Api<Secret> = Api::namespaced(local, &ns);
        let config = watcher::Config::default()
            .labels(&format!("{}=true", meshfed_model::labels::MULTICLUSTER));
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut staging: Option<Vec<Secret>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => staging = Some(Vec::new()),
                Ok(Event::InitApply(s)) => staging.get_or_insert_with(Vec::new).push(s),
                Ok(Event::InitDone) => {
                    self.resync(staging.take().unwrap_or_default()).await;
                    self.registry.mark_secrets_listed();
                }
                Ok(Event::Apply(s)) => self.apply(&s.name_any(), clusters_in(&s)).await,
                Ok(Event::Delete(s)) => self.apply(&s.name_any(), BTreeMap::new()).await,
                Err(e) => tracing::warn!(error = %e, "watching remote secrets"),
            }
        }
    }

    /// After a (re)list: apply every secret, and forget secrets that are gone.
    async fn resync(&mut self, secrets: Vec<Secret>) {
        let names: Vec<String> = secrets.iter().map(|s| s.name_any()).collect();
        let gone: Vec<String> = self
            .owned
            .values()
            .map(|o| o.secret.clone())
            .filter(|s| !names.contains(s))
            .collect();
        for secret in gone {
            self.apply(&secret, BTreeMap::new()).await;
        }
        for s in &secrets {
            self.apply(&s.name_any(), clusters_in(s)).await;
        }
    }

    /// Brings the clusters of one secret in line with its current data.
    pub async fn apply(&mut self, secret: &str, clusters: BTreeMap<String, String>) {
        let dropped: Vec<String> = self
            .owned
            .iter()
            .filter(|(id, o)| o.secret == secret && !clusters.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            tracing::info!(cluster = %id, %secret, "remote cluster removed");
            self.owned.remove(&id);
            self.registry.remove_cluster(&id);
            metrics::secret_event("delete");
        }
        self.registry.clear_conflicts(secret);
        for (id, kubeconfig) in clusters {
            if id == self.local_id {
                tracing::debug!(cluster = %id, %secret, "ignoring the local cluster in a remote secret");
                continue;
            }
            match self.owned.get(&id) {
                Some(o) if o.secret != secret => {
                    let msg = format!("cluster id {id} is already claimed by secret {}", o.secret);
                    tracing::warn!(%secret, "{msg}");
                    self.registry.set_conflict(&id, secret, msg);
                    metrics::secret_event("conflict");
                }
                Some(o) if o.kubeconfig == kubeconfig => {}
                known => {
                    let event = if known.is_some() { "update" } else { "add" };
                    metrics::secret_event(event);
                    self.connect(&id, secret, &kubeconfig).await;
                    self.owned.insert(
                        id,
                        Owned {
                            secret: secret.to_string(),
                            kubeconfig,
                        },
                    );
                }
            }
        }
    }

    /// A new generation for `id`: it serves once synced; a broken kubeconfig is an error of
    /// this cluster only.
    async fn connect(&self, id: &str, secret: &str, kubeconfig: &str) {
        let generation = self
            .registry
            .add_generation(id, secret, None, watch::kinds(false));
        match kubeconfig::client(kubeconfig, self.allow_insecure).await {
            Ok(client) => {
                let target = Target {
                    registry: self.registry.clone(),
                    id: id.to_string(),
                    generation,
                };
                let task = tokio::spawn(watch::run_cluster(client, target, false));
                self.registry.set_task(id, generation, task.abort_handle());
                tracing::info!(cluster = %id, %secret, generation, "watching remote cluster");
            }
            Err(e) => {
                tracing::warn!(cluster = %id, %secret, error = %e, "remote secret unusable");
                metrics::secret_event("error");
                self.registry.set_error(id, generation, e.to_string());
            }
        }
    }
}
