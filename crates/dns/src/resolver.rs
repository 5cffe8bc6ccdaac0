//! The resolver interface, and the answer cache in front of any back-end.

use std::future::Future;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::lookup::{Lookup, RecordType};
use crate::name::DnsName;
use crate::status::Status;

/// Counter: lookups answered by the back-end behind a [`Cached`] (cache misses), by DNSSEC
/// status (label `dnssec`: `secure`, `insecure`, `bogus`, `indeterminate`).
pub const LOOKUPS_METRIC: &str = "danemta_dns_lookups_total";
/// Counter: lookups asked of a [`Cached`], by whether the answer was held (label `result`:
/// `hit`, `miss`). The hit rate is `hit` over both.
pub const CACHE_REQUESTS_METRIC: &str = "danemta_dns_cache_requests_total";

/// Describes this crate's metrics to the installed `metrics` recorder, and registers every
/// series of their closed label sets at zero so that rates are defined from the first scrape.
/// The daemon calls it once its recorder is installed; without a recorder the counters are
/// no-ops.
pub fn describe_metrics() {
    metrics::describe_counter!(
        LOOKUPS_METRIC,
        "DNS lookups answered by the resolver back-end (cache misses), by DNSSEC status"
    );
    metrics::describe_counter!(
        CACHE_REQUESTS_METRIC,
        "DNS lookups asked of the answer cache, by result (hit or miss)"
    );
    for status in Status::ANY {
        metrics::counter!(LOOKUPS_METRIC, "dnssec" => status_label(*status)).increment(0);
    }
    for result in ["hit", "miss"] {
        metrics::counter!(CACHE_REQUESTS_METRIC, "result" => result).increment(0);
    }
}

/// The `dnssec` label value of a status: a closed set.
fn status_label(status: Status) -> &'static str {
    match status {
        Status::Secure => "secure",
        Status::Insecure => "insecure",
        Status::Bogus => "bogus",
        Status::Indeterminate => "indeterminate",
    }
}

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
///
/// The store is a concurrent TinyLFU cache (`moka`): at most `capacity` answers, each gone
/// once its own TTL has passed, and no lookup waits while the cache evicts.
pub struct Cached<R> {
    inner: R,
    max_ttl: Duration,
    failure_ttl: Duration,
    entries: Cache<Key, Kept>,
}

/// What an answer is cached under.
type Key = (DnsName, RecordType);

/// A cached answer with how long it may be kept (RFC 2181 §8: no longer than its TTL).
#[derive(Clone)]
struct Kept {
    lookup: Lookup,
    ttl: Duration,
}

/// Each entry expires its own [`Kept::ttl`] after it was stored (or stored again).
struct OwnTtl;

impl Expiry<Key, Kept> for OwnTtl {
    fn expire_after_create(&self, _: &Key, kept: &Kept, _: Instant) -> Option<Duration> {
        Some(kept.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        kept: &Kept,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(kept.ttl)
    }
}

impl<R: Resolver> Cached<R> {
    /// A cache of at most `capacity` answers (at least one), each kept at most `max_ttl`.
    pub fn new(inner: R, capacity: usize, max_ttl: Duration) -> Self {
        let capacity = u64::try_from(capacity.max(1)).unwrap_or(u64::MAX);
        Self {
            inner,
            max_ttl,
            failure_ttl: Duration::from_secs(5),
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(OwnTtl)
                .build(),
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

    /// The most answers held at once.
    pub fn capacity(&self) -> usize {
        self.entries
            .policy()
            .max_capacity()
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(usize::MAX)
    }

    /// How long `lookup` may be kept: its TTL up to `max_ttl`, or `failure_ttl` for a failure.
    fn ttl(&self, lookup: &Lookup) -> Duration {
        if lookup.status().is_failure() {
            self.failure_ttl
        } else {
            self.max_ttl.min(Duration::from_secs(lookup.ttl().into()))
        }
    }

    fn get(&self, key: &Key) -> Option<Lookup> {
        self.entries.get(key).map(|kept| kept.lookup)
    }

    fn put(&self, key: Key, lookup: &Lookup) {
        let ttl = self.ttl(lookup);
        if ttl.is_zero() {
            return;
        }
        self.entries.insert(
            key,
            Kept {
                lookup: lookup.clone(),
                ttl,
            },
        );
    }

    /// How many answers are held, counting expired ones the cache has not yet swept (it sweeps
    /// on a timer wheel of about a second; an expired answer is never returned).
    pub fn len(&self) -> usize {
        self.entries.run_pending_tasks();
        usize::try_from(self.entries.entry_count()).unwrap_or(usize::MAX)
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
            metrics::counter!(CACHE_REQUESTS_METRIC, "result" => "hit").increment(1);
            return hit;
        }
        metrics::counter!(CACHE_REQUESTS_METRIC, "result" => "miss").increment(1);
        let fresh = self.inner.lookup(name, rtype).await;
        metrics::counter!(LOOKUPS_METRIC, "dnssec" => status_label(fresh.status())).increment(1);
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
    async fn the_cache_reports_its_capacity_and_holds_at_least_one() {
        assert_eq!(
            Cached::new(Table::default(), 4, Duration::MAX).capacity(),
            4
        );
        let one = Cached::new(Table::default(), 0, Duration::from_secs(60));
        assert_eq!(one.capacity(), 1);
        let _ = one.lookup(&n("a.test"), RecordType::A).await;
        let _ = one.lookup(&n("a.test"), RecordType::A).await;
        assert_eq!(one.inner().asked.load(Ordering::Relaxed), 1);
        assert_eq!(one.len(), 1);
    }

    #[tokio::test]
    async fn answers_expire_after_max_ttl_and_failures_after_failure_ttl() {
        let table = || {
            Table::default()
                .with(Lookup::new(
                    n("a.test"),
                    RecordType::Mx,
                    Status::Secure,
                    Outcome::NoData,
                    vec![],
                    3600,
                ))
                .with(Lookup::failed(
                    n("b.test"),
                    RecordType::Mx,
                    Failure::Timeout,
                ))
        };
        let short = Duration::from_millis(200);
        let cache = Cached::new(table(), 10, short).with_failure_ttl(short);
        for name in ["a.test", "b.test"] {
            let _ = cache.lookup(&n(name), RecordType::Mx).await;
            let _ = cache.lookup(&n(name), RecordType::Mx).await;
        }
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 2);
        assert_eq!(cache.len(), 2);
        tokio::time::sleep(short * 2).await;
        for name in ["a.test", "b.test"] {
            let _ = cache.lookup(&n(name), RecordType::Mx).await;
        }
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_bogus_answer_is_not_kept_longer_than_failure_ttl_even_with_a_long_ttl() {
        let table = Table::default().with(Lookup::new(
            n("a.test"),
            RecordType::A,
            Status::Bogus,
            Outcome::NoData,
            vec![],
            3600,
        ));
        let cache = Cached::new(table, 10, Duration::from_secs(3600))
            .with_failure_ttl(Duration::from_millis(100));
        let _ = cache.lookup(&n("a.test"), RecordType::A).await;
        let _ = cache.lookup(&n("a.test"), RecordType::A).await;
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = cache.lookup(&n("a.test"), RecordType::A).await;
        assert_eq!(cache.inner().asked.load(Ordering::Relaxed), 2);
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

    /// The counters seen by a debugging recorder: (name, label value) → count.
    fn counted(
        snapshot: metrics_util::debugging::Snapshot,
    ) -> std::collections::HashMap<(String, String), u64> {
        use metrics_util::debugging::DebugValue;
        snapshot
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Counter(count) = value else {
                    return None;
                };
                let key = key.key();
                let label = key.labels().map(|l| l.value().to_owned()).collect();
                Some(((key.name().to_owned(), label), count))
            })
            .collect()
    }

    #[test]
    fn lookups_and_cache_requests_are_counted_with_closed_labels() {
        let table = Table::default()
            .with(Lookup::new(
                n("a.test"),
                RecordType::A,
                Status::Insecure,
                Outcome::NoData,
                vec![],
                3600,
            ))
            .with(Lookup::failed(n("b.test"), RecordType::A, Failure::Timeout));
        let cache = Cached::new(table, 10, Duration::from_secs(3600));
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            runtime.block_on(async {
                for name in ["a.test", "a.test", "a.test", "b.test", "c.test"] {
                    let _ = cache.lookup(&n(name), RecordType::A).await;
                }
            });
        });
        let counted = counted(snapshotter.snapshot());
        let count = |name: &str, label: &str| counted.get(&(name.into(), label.into())).copied();
        assert_eq!(count(CACHE_REQUESTS_METRIC, "hit"), Some(2));
        assert_eq!(count(CACHE_REQUESTS_METRIC, "miss"), Some(3));
        assert_eq!(count(LOOKUPS_METRIC, "insecure"), Some(1));
        assert_eq!(count(LOOKUPS_METRIC, "indeterminate"), Some(1));
        assert_eq!(count(LOOKUPS_METRIC, "secure"), Some(1));
        // Registered at zero by `describe_metrics`, so present before any bogus answer.
        assert_eq!(count(LOOKUPS_METRIC, "bogus"), Some(0));
        assert_eq!(counted.len(), 6, "{counted:?}");
    }

    #[test]
    fn status_labels_are_the_serialized_statuses() {
        for status in Status::ANY {
            assert_eq!(status_label(*status), status.to_string());
        }
    }
}
