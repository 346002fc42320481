//! Circuit breakers per cluster, as Envoy's resource manager keeps them for the DEFAULT
//! priority: requests in flight above `max_requests` overflow at once; requests that find
//! every one of `max_connections` busy wait as pending, and overflow above
//! `max_pending_requests` (the sidecar opens one connection per request, so a connection is
//! a request in flight); retries in flight above `max_retries` are not made.

use super::Limits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Default)]
pub struct Breakers {
    by_cluster: Mutex<HashMap<String, Arc<Breaker>>>,
}

#[derive(Debug)]
pub struct Breaker {
    limits: Limits,
    requests: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    connections: Arc<Semaphore>,
}

/// A request admitted: holds its request slot and its connection until dropped.
#[derive(Debug)]
pub struct Admitted {
    _request: Slot,
    _connection: OwnedSemaphorePermit,
}

/// One unit of a counter, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<Breaker>, fn(&Breaker) -> &AtomicU32);

impl Drop for Slot {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breakers {
    /// The breaker of `cluster`; new counters when its limits changed (as a CDS update gives
    /// Envoy a new cluster).
    pub fn get(&self, cluster: &str, limits: Limits) -> Arc<Breaker> {
        let mut map = self.by_cluster.lock().unwrap_or_else(|e| e.into_inner());
        let b = map
            .entry(cluster.to_string())
            .or_insert_with(|| Breaker::new(limits));
        if b.limits != limits {
            *b = Breaker::new(limits);
        }
        b.clone()
    }
}

impl Breaker {
    fn new(limits: Limits) -> Arc<Breaker> {
        let permits = usize::try_from(limits.max_connections)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(Breaker {
            limits,
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            connections: Arc::new(Semaphore::new(permits)),
        })
    }

    fn take(self: &Arc<Self>, max: u32, counter: fn(&Breaker) -> &AtomicU32) -> Option<Slot> {
        let c = counter(self);
        let before = c.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.clone(), counter);
        (before < max).then_some(slot)
    }

    /// Admits a request, waiting as pending for a connection if need be; None on overflow.
    pub async fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let request = self.take(self.limits.max_requests, |b| &b.requests)?;
        if let Ok(connection) = self.connections.clone().try_acquire_owned() {
            return Some(Admitted {
                _request: request,
                _connection: connection,
            });
        }
        let pending = self.take(self.limits.max_pending_requests, |b| &b.pending)?;
        let connection = self.connections.clone().acquire_owned().await.ok()?;
        drop(pending);
        Some(Admitted {
            _request: request,
            _connection: connection,
        })
    }

    /// A retry slot, or None when `max_retries` retries are in flight.
    pub fn retry(self: &Arc<Self>) -> Option<Slot> {
        self.take(self.limits.max_retries, |b| &b.retries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: u32, pending: u32, requests: u32, retries: u32) -> Limits {
        Limits {
            max_connections: conns,
            max_pending_requests: pending,
            max_requests: requests,
            max_retries: retries,
        }
    }

    /// Envoy's `max_requests` (Istio `http2MaxRequests`): one more request than the
    /// threshold overflows at once (503 with `x-envoy-overloaded`), and a finished request
    /// frees its slot.
    #[tokio::test]
    async fn max_requests_overflows_at_once_and_frees_on_completion() {
        let b = Breakers::default().get("c", limits(100, 100, 2, 3));
        let first = b.admit().await.expect("first");
        let _second = b.admit().await.expect("second");
        assert!(b.admit().await.is_none(), "third overflows");
        drop(first);
        assert!(b.admit().await.is_some(), "a slot came back");
    }

    /// Envoy's `max_connections` with `max_pending_requests` (Istio `tcp.maxConnections`,
    /// `http1MaxPendingRequests`): a request beyond the connections waits as pending, one
    /// beyond the pending threshold overflows, and the pending one goes once a connection
    /// is free.
    #[tokio::test]
    async fn max_connections_queue_pending_requests_up_to_the_pending_limit() {
        let b = Breakers::default().get("c", limits(1, 1, 100, 3));
        let first = b.admit().await.expect("first");
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.admit().await.is_some() }
        });
        // The pending request is counted before the third arrives.
        while b.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(b.admit().await.is_none(), "past max_pending_requests");
        drop(first);
        assert!(waiting.await.expect("task"), "the pending request went");
    }

    /// Envoy's `max_retries`: retries in flight beyond it are not made.
    #[test]
    fn max_retries_caps_retries_in_flight() {
        let b = Breakers::default().get("c", limits(1, 1, 1, 1));
        let r = b.retry().expect("one retry");
        assert!(b.retry().is_none());
        drop(r);
        assert!(b.retry().is_some());
    }

    /// A CDS update that changes the thresholds starts the breaker afresh with them.
    #[tokio::test]
    async fn new_limits_replace_the_breaker() {
        let all = Breakers::default();
        let b = all.get("c", limits(1, 0, 1, 0));
        let _held = b.admit().await.expect("first");
        assert!(all.get("c", limits(1, 0, 1, 0)).admit().await.is_none());
        assert!(all.get("c", limits(2, 0, 2, 0)).admit().await.is_some());
    }
}
