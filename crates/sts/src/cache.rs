//! The policy cache (RFC 8461 §5.1 step 1: a cached policy applies until `max_age` after its
//! fetch): the [`PolicyStore`] interface, what it holds ([`CachedPolicy`]) and an in-memory
//! store. The relay keeps its own in its queue database, so that a restart does not forget
//! the policies that protect against downgrade.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dns::DnsName;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// A policy with the time it was fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The policy.
    pub policy: Policy,
    /// When it was fetched.
    pub fetched_at: SystemTime,
}

impl CachedPolicy {
    /// When it stops applying: `max_age` after the fetch (RFC 8461 §3.2). `None` when that is
    /// past what the clock can hold (never, in practice).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.fetched_at.checked_add(self.policy.max_age_duration())
    }

    /// Whether it has expired at `now` (RFC 8461 §5.1: an expired policy is not applied).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_none_or(|end| now >= end)
    }

    /// How long ago it was fetched (zero if `now` is before the fetch).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fetched_at).unwrap_or_default()
    }
}

/// Where policies are cached, by policy domain. Synchronous: implementations are local
/// (memory, SQLite) and quick. A failed read must be reported, not taken for "nothing
/// cached": that would let a broken store downgrade an enforced domain.
pub trait PolicyStore: Send + Sync {
    /// Why the store failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The policy cached for `domain`, expired or not.
    fn get(&self, domain: &DnsName) -> Result<Option<CachedPolicy>, Self::Error>;

    /// Caches `policy` for `domain`, replacing any other.
    fn put(&self, domain: &DnsName, policy: &CachedPolicy) -> Result<(), Self::Error>;

    /// Forgets the policy of `domain`, if any.
    fn remove(&self, domain: &DnsName) -> Result<(), Self::Error>;
}

/// Policies in memory (tests, and the one-shot `send` / `check` commands).
#[derive(Debug, Default)]
pub struct MemoryStore {
    policies: Mutex<HashMap<DnsName, CachedPolicy>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many domains have a cached policy.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no policy is cached.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DnsName, CachedPolicy>> {
        self.policies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PolicyStore for MemoryStore {
    type Error = Infallible;

    fn get(&self, domain: &DnsName) -> Result<Option<CachedPolicy>, Infallible> {
        Ok(self.lock().get(domain).cloned())
    }

    fn put(&self, domain: &DnsName, policy: &CachedPolicy) -> Result<(), Infallible> {
        self.lock().insert(domain.clone(), policy.clone());
        Ok(())
    }

    fn remove(&self, domain: &DnsName) -> Result<(), Infallible> {
        self.lock().remove(domain);
        Ok(())
    }
}

impl<S: PolicyStore> PolicyStore for std::sync::Arc<S> {
    type Error = S::Error;

    fn get(&self, domain: &DnsName) -> Result<Option<CachedPolicy>, S::Error> {
        (**self).get(domain)
    }

    fn put(&self, domain: &DnsName, policy: &CachedPolicy) -> Result<(), S::Error> {
        (**self).put(domain, policy)
    }

    fn remove(&self, domain: &DnsName) -> Result<(), S::Error> {
        (**self).remove(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

    fn cached(max_age: u32, fetched_at: SystemTime) -> CachedPolicy {
        let policy = Policy::new("1".parse().unwrap(), Mode::None, vec![], max_age).unwrap();
        CachedPolicy { policy, fetched_at }
    }

    #[test]
    fn a_policy_expires_max_age_after_its_fetch() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = cached(60, t0);
        assert_eq!(c.expires_at(), Some(t0 + Duration::from_secs(60)));
        assert!(!c.is_expired(t0));
        assert!(!c.is_expired(t0 + Duration::from_secs(59)));
        assert!(c.is_expired(t0 + Duration::from_secs(60)));
        assert_eq!(c.age(t0 + Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(c.age(t0 - Duration::from_secs(5)), Duration::ZERO);
        // max_age 0: never applies.
        assert!(cached(0, t0).is_expired(t0));
    }

    #[test]
    fn the_memory_store_keeps_one_policy_per_domain() {
        let store = MemoryStore::new();
        let d: DnsName = "example.com".parse().unwrap();
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(store.get(&d), Ok(None));
        store.put(&d, &cached(60, t0)).unwrap();
        store.put(&d, &cached(120, t0)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&d).unwrap().unwrap().policy.max_age(), 120);
        store.remove(&d).unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn cached_policies_serialise() {
        let c = cached(60, SystemTime::UNIX_EPOCH + Duration::from_secs(42));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CachedPolicy>(&json).unwrap(), c);
    }
}
