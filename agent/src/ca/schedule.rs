//! When to ask the CA: at half of a certificate's lifetime, a little earlier by a random
//! jitter so that pods started together do not renew together (Istio's grace ratio 0.5 with
//! its jitter), and after a failure with exponential backoff.

use std::time::Duration;
use time::OffsetDateTime;

/// Renewal comes at this fraction of the lifetime.
pub const GRACE_RATIO: f64 = 0.5;
/// ... up to this fraction of the lifetime earlier, at random.
pub const JITTER_RATIO: f64 = 0.05;

/// When a certificate valid from `not_before` to `not_after`, received at `received`,
/// should be renewed; `jitter` is a random number in [0, 1). The lifetime counts from the
/// later of notBefore and receipt: CAs backdate notBefore for clock skew (ours by 5 minutes),
/// and that time was never the workload's, as Istio counts from when the secret was made.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    received: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let start = not_before.max(received);
    let lifetime = (not_after - start).max(time::Duration::ZERO);
    start + lifetime * GRACE_RATIO - lifetime * (JITTER_RATIO * jitter.clamp(0.0, 1.0))
}

/// How long from `now` until `at`; zero if it has passed.
pub fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}

/// Retry delays while the CA is unreachable or refuses: `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Where a run of failures is in its backoff.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    next: Duration,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Retry {
        Retry {
            backoff,
            next: backoff.initial,
        }
    }

    /// The delay before the next attempt, and doubles the one after. `jitter` in [0, 1)
    /// takes up to half of it away ("equal jitter"): agents the same outage hit spread out
    /// instead of coming back at the same instant.
    pub fn delay(&mut self, jitter: f64) -> Duration {
        let base = self.next.min(self.backoff.max);
        self.next = (base * 2).min(self.backoff.max);
        base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// After a success the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.next = self.backoff.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    /// Istio renews at half the lifetime, a random few percent earlier; a backdated
    /// notBefore does not count as lifetime.
    #[test]
    fn renewal_is_at_half_life_up_to_five_percent_earlier() {
        let day = 86_400;
        assert_eq!(renew_at(t(0), t(day), t(0), 0.0), t(day / 2));
        let earliest = renew_at(t(0), t(day), t(0), 0.999_999);
        assert!(earliest > t(day / 2 - day / 20) && earliest < t(day / 2 - day / 20 + 1));
        // Backdated 5 minutes, received at 0: half of what is left from receipt.
        assert_eq!(renew_at(t(-300), t(4), t(0), 0.0), t(2));
        // A CA whose clock runs ahead: its notBefore is after receipt.
        assert_eq!(renew_at(t(10), t(20), t(0), 0.0), t(15));
        // Expired on arrival: renew at once.
        assert!(until(renew_at(t(0), t(5), t(9), 0.5), t(9)).is_zero());
    }

    /// Exponential backoff with jitter: 1 s doubling to 60 s, each delay between half and
    /// all of its step, back to 1 s after a success.
    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut r = Retry::new(Backoff::default());
        let full: Vec<u64> = (0..9).map(|_| r.delay(0.0).as_secs()).collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        r.reset();
        assert_eq!(r.delay(0.999), Duration::from_secs(1).mul_f64(1.0 - 0.4995));
        assert_eq!(r.delay(0.5), Duration::from_millis(1500));
        r.reset();
        assert_eq!(r.delay(0.0), Duration::from_secs(1));
    }
}
