//! How the sidecar picks an endpoint, as Envoy does for Istio's clusters: the lowest priority
//! that has a usable host, then (with locality-weighted balancing) a locality by its weight,
//! then a host by its weight. Weighted choices are smooth weighted round robin, so ratios are
//! exact over every cycle rather than random. Outlier detection ejects a host after
//! consecutive failures for the base ejection time times the number of its ejections; when
//! every host is ejected the ejections are ignored (Envoy's panic mode).

use super::{Host, Upstream};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Balancer {
    rr: HashMap<String, Swrr>,
    outliers: HashMap<(String, SocketAddr), Outlier>,
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Balancer {
    /// A host of `cluster` not in `exclude` (hosts already tried for this request).
    pub fn pick(
        &mut self,
        cluster: &str,
        up: &Upstream,
        exclude: &[SocketAddr],
        now: Instant,
    ) -> Option<Host> {
        let candidates = |ignore_ejection: bool| -> Vec<&Host> {
            up.endpoints
                .iter()
                .filter(|h| h.healthy && !exclude.contains(&h.addr))
                .filter(|h| ignore_ejection || !self.is_ejected(cluster, h.addr, now))
                .collect()
        };
        let mut hosts = candidates(false);
        if hosts.is_empty() {
            hosts = candidates(true);
        }
        let priority = hosts.iter().map(|h| h.priority).min()?;
        hosts.retain(|h| h.priority == priority);
        let mut key = format!("{cluster}|{priority}");
        if up.locality_weighted {
            let mut weights: BTreeMap<String, u32> = BTreeMap::new();
            for h in &hosts {
                weights.insert(h.locality.to_string(), h.locality_weight.max(1));
            }
            let items: Vec<(String, u32)> = weights.into_iter().collect();
            let chosen = self
                .rr
                .entry(format!("{key}|localities"))
                .or_default()
                .next(&items)?;
            let locality = items[chosen].0.clone();
            hosts.retain(|h| h.locality.to_string() == locality);
            key = format!("{key}|{locality}");
        }
        let items: Vec<(String, u32)> = hosts
            .iter()
            .map(|h| (h.addr.to_string(), h.weight.max(1)))
            .collect();
        let chosen = self.rr.entry(key).or_default().next(&items)?;
        Some(hosts[chosen].clone())
    }

    /// One of `items` by weight with smooth weighted round robin under `key`, so the ratio
    /// is exact over each cycle (the sidecar's choice among a route's weighted clusters).
    pub fn weighted(&mut self, key: &str, items: &[(String, u32)]) -> Option<usize> {
        self.rr.entry(key.to_string()).or_default().next(items)
    }

    pub fn is_ejected(&self, cluster: &str, addr: SocketAddr, now: Instant) -> bool {
        self.outliers
            .get(&(cluster.to_string(), addr))
            .and_then(|o| o.ejected_until)
            .is_some_and(|until| until > now)
    }

    /// Records a failed attempt (connect, handshake or 5xx); true if the host is now ejected.
    pub fn failed(&mut self, cluster: &str, up: &Upstream, addr: SocketAddr, now: Instant) -> bool {
        let Some(policy) = &up.outlier else {
            return false;
        };
        let o = self
            .outliers
            .entry((cluster.to_string(), addr))
            .or_default();
        o.consecutive += 1;
        if o.consecutive < policy.consecutive_failures {
            return false;
        }
        o.consecutive = 0;
        o.ejections += 1;
        o.ejected_until = Some(now + policy.base_ejection * o.ejections);
        true
    }

    pub fn succeeded(&mut self, cluster: &str, addr: SocketAddr) {
        if let Some(o) = self.outliers.get_mut(&(cluster.to_string(), addr)) {
            o.consecutive = 0;
        }
    }

    /// Forgets the outlier state of hosts the control plane no longer lists as healthy: a
    /// host that comes back (restarted, ready again) starts afresh, as a new host does in Envoy.
    pub fn sync(&mut self, clusters: &BTreeMap<String, Upstream>) {
        self.outliers.retain(|(cluster, addr), _| {
            clusters
                .get(cluster)
                .is_some_and(|up| up.endpoints.iter().any(|h| h.addr == *addr && h.healthy))
        });
    }

    /// Hosts of `cluster` ejected now.
    pub fn ejected(&self, cluster: &str, now: Instant) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .outliers
            .iter()
            .filter(|((c, _), o)| c == cluster && o.ejected_until.is_some_and(|u| u > now))
            .map(|((_, addr), _)| *addr)
            .collect();
        out.sort();
        out
    }
}

/// Smooth weighted round robin (nginx's): every pick adds each item's weight to its score,
/// takes the highest and subtracts the total from it.
#[derive(Debug, Default)]
struct Swrr {
    scores: HashMap<String, i64>,
}

impl Swrr {
    fn next(&mut self, items: &[(String, u32)]) -> Option<usize> {
        self.scores.retain(|k, _| items.iter().any(|(n, _)| n == k));
        let total: i64 = items.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, (name, weight)) in items.iter().enumerate() {
            let score = self.scores.entry(name.clone()).or_insert(0);
            *score += i64::from(*weight);
            if best.is_none_or(|(_, b)| *score > b) {
                best = Some((i, *score));
            }
        }
        let (i, _) = best?;
        if let Some(score) = self.scores.get_mut(&items[i].0) {
            *score -= total;
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests;
