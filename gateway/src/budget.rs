//! The process-wide budget of connections holding a ClientHello buffer (up to about 19 KiB
//! each, from accept until the hello was replayed upstream or the connection ended). The
//! per-connection cap and `--hello-timeout` bound one connection; this bounds them all, so
//! many silent or slow clients cannot add up to the gateway's memory limit.
//!
//! At the budget the accept loop waits instead of accepting and closing: new connections
//! queue in the kernel's backlog (as at `--max-connections`), a legitimate burst is served
//! as soon as hellos complete (usually one round trip), and nothing is read, so waiting
//! costs the gateway no memory. Silent clients give their slot back at `--hello-timeout`.

use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

#[derive(Clone)]
pub(crate) struct HelloBudget {
    slots: Arc<Semaphore>,
    metrics: &'static Metrics,
}

/// A slot taken before accepting: the accept loop holds one while it waits for the next
/// connection, so the budget can never be overrun between accept and the first read.
pub(crate) struct HelloSlot {
    permit: OwnedSemaphorePermit,
    metrics: &'static Metrics,
}

impl HelloSlot {
    /// The slot, now an accepted connection's (counted in the gauge).
    pub(crate) fn hold(self) -> PendingHello {
        self.metrics.pending_hellos.increment(1.0);
        PendingHello {
            _permit: self.permit,
            metrics: self.metrics,
        }
    }
}

/// One connection's share of the budget; given back (and the gauge lowered) on drop.
pub(crate) struct PendingHello {
    _permit: OwnedSemaphorePermit,
    metrics: &'static Metrics,
}

impl Drop for PendingHello {
    fn drop(&mut self) {
        self.metrics.pending_hellos.decrement(1.0);
    }
}

impl HelloBudget {
    pub(crate) fn new(max: usize, metrics: &'static Metrics) -> Self {
        HelloBudget {
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            metrics,
        }
    }

    /// A slot, waiting for one when the budget is spent (counted); None once closed.
    pub(crate) async fn take(&self) -> Option<HelloSlot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                self.metrics.hello_budget_waits.increment(1);
                self.slots.clone().acquire_owned().await.ok()?
            }
            Err(TryAcquireError::Closed) => return None,
        };
        Some(HelloSlot {
            permit,
            metrics: self.metrics,
        })
    }

    /// Slots not taken now (by connections, or by the accept loop for the next one).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.slots.available_permits()
    }
}
