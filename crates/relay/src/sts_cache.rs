//! The MTA-STS policy cache in the queue store: [`StorePolicies`], an [`sts::PolicyStore`]
//! over any [`Store`].
//!
//! RFC 8461 §5.1 asks senders to cache a policy until its `max_age` runs out, and RFC 8461
//! §10.2 relies on that cache against an attacker who blocks DNS or HTTPS: a policy once seen
//! keeps applying although its refresh fails. A cache in memory would forget every policy at
//! each restart, and an attacker who can make the daemon restart (or wait for an upgrade)
//! would get the downgrade back. Kept in the queue store, the policies survive restarts, and
//! nodes sharing a store share them.
//!
//! The store keeps each policy as JSON ([`StsPolicyRecord`]); this adapter encodes and decodes
//! it. An entry that no longer decodes (damaged JSON, or a policy that fails the checks of
//! [`sts::Policy`], e.g. written by a build with other limits) is no policy: it is removed and
//! logged, never a panic and never a failure of the delivery that read it. A failure of the
//! store itself is an error ([`StsCacheError`]), not an empty cache: taking it for "nothing
//! cached" would let a broken disk downgrade an enforced domain.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns::DnsName;
use sts::{CachedPolicy, PolicyStore};

use crate::queue::{QueueError, Store, StsPolicyRecord, Timestamp};

/// Why the policy cache failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StsCacheError {
    /// The store failed (or does not keep policies: [`QueueError::Unsupported`]).
    #[error("MTA-STS policy cache: {0}")]
    Store(#[from] QueueError),
    /// The policy could not be written as JSON (a fetch time before 1970).
    #[error("MTA-STS policy cache: cannot encode the policy of {domain}: {source}")]
    Encode {
        /// The policy domain.
        domain: DnsName,
        /// Why.
        source: serde_json::Error,
    },
}

/// The MTA-STS policies kept in a queue [`Store`], as an [`sts::PolicyStore`] for
/// [`sts::Sts`]. Every call is one short store transaction (synchronous, like the store): call
/// it where blocking is allowed.
pub struct StorePolicies<S: ?Sized = dyn Store> {
    store: Arc<S>,
}

impl<S: ?Sized> StorePolicies<S> {
    /// The policy cache of `store`.
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    /// The store the policies are kept in.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

impl<S: ?Sized> Clone for StorePolicies<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
        }
    }
}

impl<S: ?Sized> fmt::Debug for StorePolicies<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorePolicies").finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized> StorePolicies<S> {
    /// Removes the policies expired at `now` (RFC 8461 §5.1: an expired policy is not
    /// applied) and returns how many. Cheap; call it whenever (the scheduler's idle moments).
    pub fn prune(&self, now: SystemTime) -> Result<usize, StsCacheError> {
        Ok(self.store.prune_sts_policies(unix_seconds(now))?)
    }
}

impl<S: Store + ?Sized> PolicyStore for StorePolicies<S> {
    type Error = StsCacheError;

    /// The cached policy, expired or not. An entry that does not decode is removed and
    /// logged, and the answer is `None` (the domain is then treated as having no cached
    /// policy, as after its expiry): a damaged entry must not stop deliveries.
    fn get(&self, domain: &DnsName) -> Result<Option<CachedPolicy>, StsCacheError> {
        let Some(record) = self.store.sts_policy(domain)? else {
            return Ok(None);
        };
        match serde_json::from_str::<CachedPolicy>(&record.policy) {
            Ok(cached) => Ok(Some(cached)),
            Err(e) => {
                tracing::warn!(
                    target: "relay",
                    %domain,
                    error = %e,
                    "MTA-STS: the cached policy of {domain} is damaged; dropped"
                );
                if let Err(e) = self.store.remove_sts_policy(domain) {
                    tracing::warn!(
                        target: "relay",
                        %domain,
                        error = %e,
                        "MTA-STS: cannot remove the damaged cached policy of {domain}"
                    );
                }
                Ok(None)
            }
        }
    }

    fn put(&self, domain: &DnsName, policy: &CachedPolicy) -> Result<(), StsCacheError> {
        let record = record_of(domain, policy)?;
        Ok(self.store.put_sts_policy(domain, &record)?)
    }

    fn remove(&self, domain: &DnsName) -> Result<(), StsCacheError> {
        Ok(self.store.remove_sts_policy(domain)?)
    }
}

/// The store's form of `policy`: its JSON, and its fetch and expiry times in Unix seconds.
/// A policy whose expiry the clock cannot hold (never, with `max_age` at most a year) expires
/// at [`Timestamp::MAX`]; an expiry is rounded up to the next second so that pruning never
/// removes a policy that still applies.
fn record_of(domain: &DnsName, policy: &CachedPolicy) -> Result<StsPolicyRecord, StsCacheError> {
    let json = serde_json::to_string(policy).map_err(|source| StsCacheError::Encode {
        domain: domain.clone(),
        source,
    })?;
    let expires_at = match policy.expires_at() {
        Some(t) => unix_seconds_ceil(t),
        None => Timestamp::MAX,
    };
    Ok(StsPolicyRecord {
        policy: json,
        fetched_at: unix_seconds(policy.fetched_at),
        expires_at,
    })
}

/// `t` in whole Unix seconds, rounded down (negative before 1970; saturating).
fn unix_seconds(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => whole_seconds(after),
        Err(e) => {
            let before = e.duration();
            whole_seconds(before)
                .saturating_add(Timestamp::from(before.subsec_nanos() > 0))
                .saturating_neg()
        }
    }
}

/// `t` in whole Unix seconds, rounded up.
fn unix_seconds_ceil(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => whole_seconds(after).saturating_add(Timestamp::from(after.subsec_nanos() > 0)),
        Err(e) => whole_seconds(e.duration()).saturating_neg(),
    }
}

fn whole_seconds(d: Duration) -> Timestamp {
    Timestamp::try_from(d.as_secs()).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_to_whole_seconds() {
        let at = |s: u64, n: u32| UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(unix_seconds(at(10, 0)), 10);
        assert_eq!(unix_seconds(at(10, 1)), 10);
        assert_eq!(unix_seconds_ceil(at(10, 0)), 10);
        assert_eq!(unix_seconds_ceil(at(10, 1)), 11);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::new(2, 0)), -2);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::new(2, 5)), -3);
        assert_eq!(unix_seconds_ceil(UNIX_EPOCH - Duration::new(2, 5)), -2);
        assert_eq!(unix_seconds_ceil(UNIX_EPOCH - Duration::new(2, 0)), -2);
    }
}
