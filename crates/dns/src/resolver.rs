//! The resolver interface, and the answer cache in front of any back-end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lookup::{Lookup, RecordType};
use crate::name::DnsName;

/// A source of status-aware lookups. Both back-ends (in-process validation, trusting a local
/// resolver's AD bit) implement it, and so can test doubles.
pub trait Resolver: Send + Sync {
    /// Looks up `name`/`rtype`, following CNAMEs. Never fails: a failure is a [`Lookup`] whose
    /// status is bogus or indeterminate.
    fn lookup(&self, name: &DnsName, rtype: RecordType) -> impl Future<Output = Lookup> + Send;
}

/// Answers kept within their TTLs, in bounded memory. Bogus and indeterminate answers are
/// kept only briefly (a "BAD cache", RFC 4035 §4.7): long enough to spare the upstream a
/// storm of retries, short enough that a deferred message's retry asks again.
pub struct Cached<R> {
    inner: R,
    capacity: usize,
    max_ttl: Duration,
    failure_ttl: Duration,
    entries: Mutex<HashMap<(DnsName, RecordType), (Instant, Lookup)>>,
}

impl<R: Resolver> Cached<R> {
    /// A cache of at most `capacity` answers, each kept at most `max_ttl`.
    pub fn new(inner: R, capacity: usize, max_ttl: Duration) -> Self {
        Self {
            inner,
            capacity: capacity.max(1),
            max_ttl,
            failure_ttl: Duration::from_secs(5),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps failed lookups this long (5 s by default; zero keeps none).
    pub fn with_failure_ttl(mut self, ttl: Duration) -> Self {
        self.failure_ttl = ttl;
        self
    }

    /// The back-end behind the cache.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The back-end behind the cache, to change its settings before use.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    fn get(&self, key: &(DnsName, RecordType)) -> Option<Lookup> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, l)| l.clone())
    }

    fn put(&self, key: (DnsName, RecordType), lookup: &Lookup) {
        let ttl = if lookup.status().is_failure() {
            self.failure_ttl
        } else {
            self.max_ttl.min(Duration::from_secs(lookup.ttl().into()))
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let expires = now + ttl;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (e, _)| *e > now);
        }
        if entries.len() >= self.capacity {
            // Still full of live answers: drop the one closest to expiry.
            if let Some(victim) = entries
                .iter()
                .min_by_key(|(_, (e, _))| *e)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&victim);
            }
        }
        entries.insert(key, (expires, lookup.clone()));
    }

    /// How many answers are held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<R: Resolver> Resolver for Cached<R> {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        let key = (name.clone(), rtype);
        if let Some(hit) = self.get(&key) {
            return hit;
        }
        let fresh = self.inner.lookup(name, rtype).await;
        self.put(key, &fresh);
        fresh
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::lookup::Outcome;
    use crate::status::Status;

    /// Answers from a table; anything not in it is a secure NXDOMAIN. Counts the questions.
    #[derive(Default)]
    pub struct Table {
        pub answers: HashMap<(DnsName, RecordType), Lookup>,
        pub asked: AtomicUsize,
    }

    impl Table {
        pub fn with(mut self, lookup: Lookup) -> Self {
            self.answers
                .insert((lookup.name().clone(), lookup.rtype()), lookup);
            self
        }
    }

    impl Resolver for Table {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
            self.asked.fetch_add(1, Ordering::Relaxed);
            self.answers
                .get(&(name.clone(), rtype))
                .cloned()
                .unwrap_or_else(|| {
                    Lookup::new(
                        name.clone(),
                        rtype,
                        Status::Secure,
                        Outcome::NxDomain,
                        vec![],
                        60,
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::testing::Table;
    use super::*;
    use crate::lookup::{Failure, Outcome};
    use crate::status::Status;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn answers_are_cached_within_their_ttl_failures_only_briefly() {
        let table = || {
            Table::default()
                .with(Lookup::new(
                    n("a.test"),
                    RecordType::Mx,
                    Status::Secure,
                    Outcome::NoData,
                    vec![],
                    300,
                ))
                .with(Lookup::failed(
                    n("b.test"),
                    RecordType::Mx,
                    Failure::Timeout,
                ))
        };
        let cache = Cached::new(table(), 10, Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(
                cache.lookup(&n("a.test"), RecordType::Mx).await.status(),
                Status::Secure
            );
            assert!(
                cache
                    .lookup(&n("b.test"), RecordType::Mx)
                    .await
                    .status()
                    .is_failure()
            );
        }
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 2);

        let cache =
            Cached::new(table(), 10, Duration::from_secs(3600)).with_failure_ttl(Duration::ZERO);
        for _ in 0..3 {
            let _ = cache.lookup(&n("b.test"), RecordType::Mx).await;
        }
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_capacity() {
        let cache = Cached::new(Table::default(), 4, Duration::from_secs(3600));
        for i in 0..20 {
            let _ = cache.lookup(&n(&format!("h{i}.test")), RecordType::A).await;
        }
        assert!(cache.len() <= 4);
    }

    #[tokio::test]
    async fn zero_ttl_answers_are_not_kept() {
        let table = Table::default().with(Lookup::new(
            n("a.test"),
            RecordType::A,
            Status::Secure,
            Outcome::NoData,
            vec![],
            0,
        ));
        let cache = Cached::new(table, 10, Duration::from_secs(3600));
        let _ = cache.lookup(&n("a.test"), RecordType::A).await;
        let _ = cache.lookup(&n("a.test"), RecordType::A).await;
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 2);
    }
}
