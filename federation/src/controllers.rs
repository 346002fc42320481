//! The controllers that fill the registry: the local cluster's watchers and the remote secret
//! controller, which starts (and stops) one set of watchers per remote cluster.

use crate::config::FederationConfig;
use crate::registry::Registry;
use crate::{secrets, watch};
use kube::Client;
use std::sync::Arc;
use tokio::task::{JoinError, JoinHandle};

/// Running controllers; dropping them stops every watcher and empties the registry.
pub struct Controllers {
    pub registry: Arc<Registry>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Controllers {
    /// Starts the controllers over a registry of their own.
    pub fn start(local: Client, cfg: &FederationConfig) -> Controllers {
        Self::start_on(Arc::new(Registry::new(cfg.registry())), local, cfg)
    }

    pub fn start_on(registry: Arc<Registry>, local: Client, cfg: &FederationConfig) -> Controllers {
        let generation = registry.add_generation(
            &cfg.cluster_id,
            "",
            Some(cfg.network.clone()),
            watch::kinds(true),
        );
        let target = watch::Target {
            registry: registry.clone(),
            id: cfg.cluster_id.clone(),
            generation,
        };
        let local_task = tokio::spawn(watch::run_cluster(local.clone(), target, true));
        registry.set_task(&cfg.cluster_id, generation, local_task.abort_handle());
        let secrets = tokio::spawn(
            secrets::SecretController::new(
                registry.clone(),
                &cfg.cluster_id,
                cfg.allow_insecure_kubeconfig_options,
            )
            .run(local),
        );
        Controllers {
            registry,
            tasks: vec![
                ("the local cluster's watchers", local_task),
                ("the remote secret controller", secrets),
            ],
        }
    }

    /// Completes when a controller ends, which they never do on their own: only a panic
    /// (or a bug) gets here. Says which one and how.
    pub async fn stopped(&mut self) -> (&'static str, Result<(), JoinError>) {
        let waits = self
            .tasks
            .iter_mut()
            .map(|(name, task)| Box::pin(async move { (*name, task.await) }));
        futures::future::select_all(waits).await.0
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
        for c in self.registry.clusters() {
            self.registry.remove_cluster(&c.id);
        }
    }
}
