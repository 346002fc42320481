//! Turns registry changes into pushes: changes are debounced briefly (a burst of watch events
//! becomes one push), and a push whose snapshot and rules (DestinationRules, VirtualServices)
//! equal the last one is not made. VirtualServices are parsed here, once per push, and their
//! errors reported when they change.

use super::generate::Push;
use super::node::Defaults;
use super::rules;
use super::virtual_service::RuleError;
use super::virtual_service::status::{self, parse_all};
use crate::registry::{Readiness, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Push once no change came for this long...
    pub quiet: Duration,
    /// ...or this long after the first change, whichever is sooner.
    pub max: Duration,
}

/// A burst of watch events within this becomes one push (at most ten times this late).
pub const DEFAULT_PUSH_DEBOUNCE: Duration = Duration::from_millis(5);

impl Debounce {
    /// Push once `quiet` passed without a change, and never later than ten times that.
    pub fn after(quiet: Duration) -> Self {
        Debounce {
            quiet,
            max: quiet * 10,
        }
    }
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce::after(DEFAULT_PUSH_DEBOUNCE)
    }
}

pub fn build(registry: &Registry, version: u64, changed_at: Instant) -> Push {
    let domain = registry.config().domain.clone();
    let root = &registry.config().system_namespace;
    let rules = rules::from_objects(&registry.destination_rules(), &domain, root);
    let virtual_services = parse_all(&registry.virtual_services(), &rules, &domain);
    let complete = registry.complete();
    let trust_domain = &registry.config().trust_domain;
    let defaults = Defaults {
        cluster_id: registry.local_cluster().unwrap_or_default(),
        networks: registry.cluster_networks(),
    };
    Push::new(version, changed_at, registry.snapshot(), rules, &domain)
        .trust_domain(trust_domain)
        .virtual_services(virtual_services)
        .complete(complete)
        .defaults(defaults)
}

/// Waits until the registry may be served ([`Registry::readiness`]): on every change, and
/// when the next remote cluster's sync timeout passes.
async fn until_ready(registry: &Registry) {
    let mut changes = registry.subscribe();
    loop {
        let timeout_at = match registry.readiness() {
            Readiness::Ready => return,
            Readiness::Waiting { timeout_at } => timeout_at,
        };
        let timed_out = async {
            match timeout_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = timed_out => {}
        }
    }
}

/// Publishes the first push once the registry is ready, then one per (debounced) change.
pub async fn run(
    registry: Arc<Registry>,
    tx: watch::Sender<Option<Arc<Push>>>,
    debounce: Debounce,
) {
    until_ready(&registry).await;
    let mut changes = registry.subscribe();
    changes.borrow_and_update();
    let mut last = Arc::new(build(&registry, 1, Instant::now()));
    let mut reported: Vec<RuleError> = last.config_errors.clone();
    status::report(&[], &reported);
    tx.send_replace(Some(last.clone()));
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let first = Instant::now();
        // The runtime's clock for the waits (it is the wall clock, but tests can pause it).
        let burst = tokio::time::Instant::now();
        loop {
            let left = debounce.max.saturating_sub(burst.elapsed());
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(debounce.quiet.min(left)) => break,
            }
            if burst.elapsed() >= debounce.max {
                break;
            }
        }
        changes.borrow_and_update();
        let started = Instant::now();
        let push = build(&registry, last.version + 1, first);
        if push.config_errors != reported {
            status::report(&reported, &push.config_errors);
            reported = push.config_errors.clone();
        }
        if last.snapshot == push.snapshot
            && last.rules == push.rules
            && last.virtual_services == push.virtual_services
            && last.complete == push.complete
        {
            tracing::debug!(
                version = last.version,
                "registry changed but the pushed state did not"
            );
            continue;
        }
        let push = Arc::new(push.follow(&last));
        crate::metrics::push_built(
            started.elapsed().as_secs_f64(),
            first.elapsed().as_secs_f64(),
        );
        tracing::debug!(
            version = push.version,
            services = push.snapshot.services.len(),
            "push"
        );
        tx.send_replace(Some(push.clone()));
        last = push;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Kind, RegistryConfig};

    /// A registry whose one cluster `c1` has listed: ready, so the pusher pushes.
    fn synced_registry() -> (Arc<Registry>, u64) {
        let registry = Arc::new(Registry::new(RegistryConfig {
            system_namespace: "istio-system".into(),
            domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            stale_endpoint_ttl: None,
            sync_timeout: Duration::from_secs(30),
        }));
        let generation = registry.add_generation("c1", "", None, 1);
        registry.listed("c1", generation, Kind::Namespace);
        registry.mark_secrets_listed();
        (registry, generation)
    }

    /// A burst of watch events becomes few pushes: one per debounce maximum at most, the last
    /// with the final state (time is paused: the waits pass as soon as nothing else can run).
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_coalesced_up_to_the_maximum_delay() {
        let (registry, generation) = synced_registry();
        let (tx, mut rx) = watch::channel(None);
        let debounce = Debounce {
            quiet: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        tokio::spawn(run(registry.clone(), tx, debounce));
        rx.wait_for(Option::is_some).await.unwrap();
        // 200 changes 1 ms apart: 200 ms of events, never quiet for 5 ms.
        for i in 0..200 {
            registry.update("c1", generation, |d| {
                let svc = crate::registry::ServiceInfo {
                    ports: vec![],
                    labels: Default::default(),
                    cluster_ip: None,
                    external_addresses: vec![],
                    ..Default::default()
                };
                d.services.insert((format!("ns{i}"), "s".into()), svc);
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last = rx.borrow().clone().expect("pushed");
        assert_eq!(
            last.snapshot.services.len(),
            200,
            "the last push has the final state"
        );
        // The first push is version 1; one push per 50 ms of the burst, then the rest.
        let pushes = last.version - 1;
        assert!(
            (3..=6).contains(&pushes),
            "{pushes} pushes for a 200 ms burst"
        );
    }

    /// The names and first route timeouts of push `version`, and its error count.
    async fn next(
        rx: &mut watch::Receiver<Option<Arc<Push>>>,
        version: u64,
    ) -> (Vec<(String, Option<Duration>)>, usize) {
        let wanted = rx.wait_for(|p| p.as_ref().is_some_and(|p| p.version == version));
        // Time is paused: a push that never comes fails here at once.
        let push = tokio::time::timeout(Duration::from_secs(5), wanted)
            .await
            .expect("no such push")
            .unwrap()
            .clone()
            .unwrap();
        let names = push
            .virtual_services
            .iter()
            .map(|v| (v.name.clone(), v.http[0].timeout))
            .collect();
        (names, push.config_errors.len())
    }

    /// Istio pushes on a VirtualService change alone (`ConfigUpdate` for the kind): a valid
    /// rule added, changed or removed makes a push carrying the rules that validated; a
    /// refused rule is not carried.
    #[tokio::test(start_paused = true)]
    async fn a_virtual_service_change_alone_makes_a_push() {
        let (registry, generation) = synced_registry();
        let (tx, mut rx) = watch::channel(None);
        tokio::spawn(run(registry.clone(), tx, Debounce::default()));
        rx.wait_for(Option::is_some).await.unwrap();
        let set = |name: &str, timeout: &str| {
            let spec = serde_json::json!({"spec": {"hosts": ["a"],
                "http": [{"route": [{"destination": {"host": "a"}}], "timeout": timeout}]}});
            registry.update("c1", generation, |d| {
                d.virtual_services
                    .insert(("sample".into(), name.into()), spec);
            });
        };
        set("a", "1s");
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(next(&mut rx, 2).await, (vec![("a".into(), secs(1))], 0));
        set("a", "2s");
        assert_eq!(next(&mut rx, 3).await, (vec![("a".into(), secs(2))], 0));
        set("b", "never");
        // The refused rule changes nothing pushed: no push for it...
        set("a", "3s");
        assert_eq!(next(&mut rx, 4).await, (vec![("a".into(), secs(3))], 1));
    }
}
