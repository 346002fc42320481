//! The federation controller: reads remote secrets, list-watches every cluster's API server
//! and merges what it sees into one registry with the network, cluster and locality of
//! every endpoint.

pub mod admin;
pub mod eds;
pub mod locality;
pub mod merge;
pub mod registry;
pub mod remote_secret;
pub mod secrets;
pub mod watch;
pub mod xds;

use kube::Client;
use registry::{Registry, RegistryConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct FederationConfig {
    pub cluster_id: String,
    /// The local cluster's network, used where neither pods nor the system namespace say.
    pub network: String,
    pub system_namespace: String,
    pub domain: String,
    pub stale_endpoint_ttl: Option<Duration>,
    pub sync_timeout: Duration,
}

impl FederationConfig {
    pub fn new(cluster_id: &str, network: &str) -> Self {
        FederationConfig {
            cluster_id: cluster_id.to_string(),
            network: network.to_string(),
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout: Duration::from_secs(30),
        }
    }
}

/// A running controller: the local cluster's watchers and the remote secret controller.
pub struct Federation {
    pub registry: Arc<Registry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Federation {
    pub fn start(local: Client, cfg: &FederationConfig) -> Federation {
        let registry = Arc::new(Registry::new(RegistryConfig {
            system_namespace: cfg.system_namespace.clone(),
            domain: cfg.domain.clone(),
            stale_endpoint_ttl: cfg.stale_endpoint_ttl,
            sync_timeout: cfg.sync_timeout,
        }));
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
            secrets::SecretController::new(registry.clone(), &cfg.cluster_id).run(local),
        );
        Federation {
            registry,
            tasks: vec![local_task, secrets],
        }
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for c in self.registry.clusters() {
            self.registry.remove_cluster(&c.id);
        }
    }
}
