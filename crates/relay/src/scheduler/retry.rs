//! When a deferred recipient is tried again, and when it has been tried long enough.

use std::time::Duration;

use crate::queue::Timestamp;

/// `[queue] retry_first`, `retry_max` and `lifetime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The first retry comes this long after a deferral.
    pub first: Duration,
    /// The longest wait between tries.
    pub max: Duration,
    /// After this long in the queue, a deferred recipient is returned to the sender.
    pub lifetime: Duration,
}

fn secs(d: Duration) -> Timestamp {
    Timestamp::try_from(d.as_secs()).unwrap_or(Timestamp::MAX)
}

impl Retry {
    /// The next try of a message that arrived at `arrival`, deferred at `now`: exponential
    /// back-off as Postfix computes it, waiting as long as the message is old, at least
    /// `first` and at most `max` (so the waits run `first`, `first`, 2×, 4×… up to `max`).
    /// Never past the end of the lifetime: the last try comes when it ends, so that a
    /// destination that came back in the meantime still gets the mail.
    pub fn next_attempt(&self, arrival: Timestamp, now: Timestamp) -> Timestamp {
        let age = now.saturating_sub(arrival).max(0);
        let wait = age.clamp(secs(self.first).max(1), secs(self.max).max(1));
        let end = arrival.saturating_add(secs(self.lifetime));
        now.saturating_add(wait).min(end.max(now + 1))
    }

    /// Whether a message that arrived at `arrival` has been queued for its lifetime at `now`:
    /// a deferral then becomes a bounce (RFC 5321 §4.5.4.1: give up after 4–5 days).
    pub fn expired(&self, arrival: Timestamp, now: Timestamp) -> bool {
        now >= arrival.saturating_add(secs(self.lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = 1_800_000_000;

    fn retry() -> Retry {
        Retry {
            first: Duration::from_secs(300),
            max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86_400),
        }
    }

    #[test]
    fn the_wait_doubles_from_first_to_max() {
        let r = retry();
        let mut now = T;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let next = r.next_attempt(T, now);
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits, [300, 300, 600, 1200, 2400, 3600, 3600]);
    }

    #[test]
    fn the_last_try_comes_at_the_end_of_the_lifetime() {
        let r = retry();
        let end = T + 5 * 86_400;
        assert_eq!(r.next_attempt(T, end - 10), end);
        assert!(!r.expired(T, end - 1));
        assert!(r.expired(T, end));
        // A message found past its lifetime is tried once more soon (then it bounces).
        assert_eq!(r.next_attempt(T, end + 50), end + 51);
    }

    #[test]
    fn seconds_are_enough_for_tests() {
        let r = Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
            lifetime: Duration::from_secs(20),
        };
        assert_eq!(r.next_attempt(T, T), T + 1);
        assert_eq!(r.next_attempt(T, T + 5), T + 7);
    }
}
