//! Policy discovery (RFC 8461 §3 and §5.1): the TXT record, the cache and the fetch, put
//! together so that an attacker who blocks DNS or HTTPS cannot remove a policy a sender has
//! seen (RFC 8461 §10.2): a live, unexpired cached policy applies until a *fetched* policy
//! replaces it, whatever happens to the TXT record or the policy host meanwhile.
//!
//! | TXT record | cache | what happens |
//! |---|---|---|
//! | id = cached id | unexpired, fetched less than `refresh_after` ago | the cached policy, no fetch |
//! | id = cached id, older | unexpired | fetch; on failure the cached policy |
//! | another id, or nothing cached | any | fetch; on failure the unexpired cached policy, else none |
//! | none, invalid, lookup failed | unexpired | the cached policy |
//! | none, invalid, lookup failed | nothing or expired | no policy |
//!
//! A fetched policy (mode `none` included: it is how a domain withdraws, RFC 8461 §8.3)
//! replaces the cached one. After a failed fetch the same TXT id is not fetched again for
//! `retry_after` (five minutes, as RFC 8461 §3.3 suggests), so one broken policy host does
//! not cost every message a fetch timeout. Time is always passed in.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dns::{DnsName, Failure};

use crate::cache::{CachedPolicy, PolicyStore};
use crate::fetch::{AddressSource, FetchError, Fetcher};
use crate::policy::{Mode, Policy, PolicyError};
use crate::record::{RecordError, StsId, StsRecord};
use crate::txt::{TxtAnswer, TxtResolver};

/// After this long, a cached policy is fetched again even if the TXT id is unchanged (RFC
/// 8461 §3.3: refresh cached policies before they expire; "once per day" suggested).
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// After a failed fetch, the same TXT id is not fetched again for this long (RFC 8461 §3.3).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);
/// Failed fetches remembered at most (older ones are dropped once expired).
const MAX_RECENT_FAILURES: usize = 4096;

/// The TLS-RPT result types (RFC 8460 §4.3); discovery failures map onto the MTA-STS ones
/// (§4.3.2.2) through [`DiscoveryError::result_type`].
pub use crate::report::ResultType;

/// Why live discovery gave no policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// No `v=STSv1` TXT record: the domain does not publish MTA-STS. Not a failure.
    #[error("no MTA-STS TXT record")]
    NoRecord,
    /// The TXT lookup failed (or its answer was bogus).
    #[error("TXT lookup of {name} failed: {failure}")]
    TxtLookup {
        /// `_mta-sts.<domain>`.
        name: DnsName,
        /// Why.
        failure: Failure,
    },
    /// The TXT record is invalid, or there are several (RFC 8461 §3.1).
    #[error("invalid MTA-STS TXT record: {0}")]
    InvalidRecord(#[from] RecordError),
    /// The policy could not be fetched (RFC 8461 §3.3).
    #[error("policy fetch failed: {0}")]
    Fetch(#[from] FetchError),
    /// The fetched policy is invalid (RFC 8461 §3.2).
    #[error("invalid policy: {0}")]
    InvalidPolicy(#[from] PolicyError),
    /// A fetch of this TXT id failed a short while ago and is not retried yet.
    #[error("fetching policy {id} failed recently ({kind}); next attempt after {retry_at:?}")]
    RecentFailure {
        /// The TXT id.
        id: StsId,
        /// How it failed.
        kind: ResultType,
        /// When a fetch will be tried again.
        retry_at: SystemTime,
    },
}

impl DiscoveryError {
    /// The TLS-RPT failure kind (RFC 8460 §4.3.2.2), `None` for [`DiscoveryError::NoRecord`].
    /// A failed TXT lookup counts as a fetch error, an invalid TXT record as an invalid
    /// policy, and a PKIX failure of the policy host as `sts-webpki-invalid`.
    pub fn result_type(&self) -> Option<ResultType> {
        match self {
            DiscoveryError::NoRecord => None,
            DiscoveryError::TxtLookup { .. } => Some(ResultType::StsPolicyFetchError),
            DiscoveryError::InvalidRecord(_) | DiscoveryError::InvalidPolicy(_) => {
                Some(ResultType::StsPolicyInvalid)
            }
            DiscoveryError::Fetch(e) if e.is_webpki() => Some(ResultType::StsWebpkiInvalid),
            DiscoveryError::Fetch(_) => Some(ResultType::StsPolicyFetchError),
            DiscoveryError::RecentFailure { kind, .. } => Some(*kind),
        }
    }
}

/// Where an applied policy comes from.
#[derive(Debug)]
pub enum Source {
    /// Fetched just now.
    Fetched,
    /// The cache, the TXT record still announcing its id.
    Cached,
    /// The cache, because live discovery failed or found no record (RFC 8461 §3.3, §5.1: an
    /// unexpired cached policy applies until a fetched one replaces it).
    CachedFallback(DiscoveryError),
}

/// The outcome of discovery for one domain.
#[derive(Debug)]
pub enum Discovery {
    /// A policy applies (its mode may be `none`).
    Policy {
        /// The policy.
        policy: Policy,
        /// Where it comes from.
        source: Source,
    },
    /// No policy applies: deliver as if the domain had no MTA-STS (RFC 8461 §3.3).
    NoPolicy(DiscoveryError),
}

impl Discovery {
    /// The policy that applies, if any.
    pub fn policy(&self) -> Option<&Policy> {
        match self {
            Discovery::Policy { policy, .. } => Some(policy),
            Discovery::NoPolicy(_) => None,
        }
    }

    /// What went wrong in live discovery, if anything (also when a cached policy applies).
    pub fn error(&self) -> Option<&DiscoveryError> {
        match self {
            Discovery::Policy {
                source: Source::CachedFallback(e),
                ..
            }
            | Discovery::NoPolicy(e) => Some(e),
            Discovery::Policy { .. } => None,
        }
    }
}

/// A failed fetch of one TXT id, remembered until `retry_at`.
#[derive(Clone, Debug)]
struct RecentFailure {
    id: StsId,
    kind: ResultType,
    retry_at: SystemTime,
}

/// MTA-STS discovery for a sending MTA: TXT lookups, address lookups, the fetcher and the
/// cache, with the rules of RFC 8461 §3.3 and §5.1 (see the [module documentation](self)).
pub struct Sts<T, A, S> {
    txt: T,
    addresses: A,
    store: S,
    fetcher: Fetcher,
    refresh_after: Option<Duration>,
    retry_after: Duration,
    failures: Mutex<HashMap<DnsName, RecentFailure>>,
}

impl<T, A, S: fmt::Debug> fmt::Debug for Sts<T, A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sts")
            .field("store", &self.store)
            .field("fetcher", &self.fetcher)
            .field("refresh_after", &self.refresh_after)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl<T: TxtResolver, A: AddressSource, S: PolicyStore> Sts<T, A, S> {
    /// Discovery through `txt` and `addresses`, caching in `store`, fetching with `fetcher`;
    /// refresh after [`DEFAULT_REFRESH_AFTER`], retry after [`DEFAULT_RETRY_AFTER`].
    pub fn new(txt: T, addresses: A, store: S, fetcher: Fetcher) -> Self {
        Self {
            txt,
            addresses,
            store,
            fetcher,
            refresh_after: Some(DEFAULT_REFRESH_AFTER),
            retry_after: DEFAULT_RETRY_AFTER,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches a cached policy again after `after` even when the TXT id is unchanged; `None`
    /// only on an id change or once it expired.
    pub fn with_refresh_after(mut self, after: Option<Duration>) -> Self {
        self.refresh_after = after;
        self
    }

    /// How long a failed fetch of a TXT id is not retried (zero: always retry).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The cache.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The policy that applies to mail for `domain` at `now` (RFC 8461 §5.1 step 1). An error
    /// only when the cache cannot be read: then whether a policy applies is unknown, and the
    /// caller should defer rather than deliver without one.
    pub async fn policy_for(
        &self,
        domain: &DnsName,
        now: SystemTime,
    ) -> Result<Discovery, S::Error> {
        let cached = self.store.get(domain)?;
        let live = cached.as_ref().filter(|c| !c.is_expired(now));
        let record = match self.record(domain).await {
            Ok(record) => record,
            Err(e) => return Ok(self.fall_back(domain, cached.as_ref(), now, e)),
        };
        if let Some(c) = live {
            let refresh_due = self.refresh_after.is_some_and(|after| c.age(now) >= after);
            if c.policy.id() == &record.id && !refresh_due {
                return Ok(Discovery::Policy {
                    policy: c.policy.clone(),
                    source: Source::Cached,
                });
            }
        }
        if let Some(recent) = self.recent_failure(domain, &record.id, now) {
            let e = DiscoveryError::RecentFailure {
                id: recent.id,
                kind: recent.kind,
                retry_at: recent.retry_at,
            };
            return Ok(self.fall_back(domain, cached.as_ref(), now, e));
        }
        match self.fetch(domain, record.id.clone()).await {
            Ok(policy) => {
                self.forget_failure(domain);
                let entry = CachedPolicy {
                    policy: policy.clone(),
                    fetched_at: now,
                };
                if let Err(e) = self.store.put(domain, &entry) {
                    tracing::warn!(%domain, error = %e, "MTA-STS: cannot cache the policy just fetched");
                }
                Ok(Discovery::Policy {
                    policy,
                    source: Source::Fetched,
                })
            }
            Err(e) => {
                if let Some(kind) = e.result_type() {
                    self.remember_failure(domain, record.id, kind, now);
                }
                Ok(self.fall_back(domain, cached.as_ref(), now, e))
            }
        }
    }

    /// The domain's MTA-STS record (RFC 8461 §3.1).
    async fn record(&self, domain: &DnsName) -> Result<StsRecord, DiscoveryError> {
        // A name too long to exist has no records.
        let name: DnsName = format!("_mta-sts.{domain}")
            .parse()
            .map_err(|_| DiscoveryError::NoRecord)?;
        match self.txt.txt(&name).await {
            TxtAnswer::Records(records) => {
                StsRecord::select(&records)?.ok_or(DiscoveryError::NoRecord)
            }
            TxtAnswer::NoRecords => Err(DiscoveryError::NoRecord),
            TxtAnswer::Failed(failure) => Err(DiscoveryError::TxtLookup { name, failure }),
        }
    }

    /// Fetches and parses the policy (RFC 8461 §3.2, §3.3).
    async fn fetch(&self, domain: &DnsName, id: StsId) -> Result<Policy, DiscoveryError> {
        let body = self.fetcher.fetch(domain, &self.addresses).await?;
        Ok(Policy::parse(&body, id)?)
    }

    /// Live discovery gave no policy: the unexpired cached one applies if there is one (RFC
    /// 8461 §3.3, §5.1); an expired one is dropped.
    fn fall_back(
        &self,
        domain: &DnsName,
        cached: Option<&CachedPolicy>,
        now: SystemTime,
        e: DiscoveryError,
    ) -> Discovery {
        match cached {
            Some(c) if !c.is_expired(now) => {
                // RFC 8461 §3.3: tell the administrator, unless the policy is mode none.
                if c.policy.mode() != Mode::None {
                    tracing::warn!(%domain, id = %c.policy.id(), error = %e,
                        "MTA-STS: discovery failed; applying the cached policy");
                }
                Discovery::Policy {
                    policy: c.policy.clone(),
                    source: Source::CachedFallback(e),
                }
            }
            Some(_) => {
                if let Err(e) = self.store.remove(domain) {
                    tracing::warn!(%domain, error = %e, "MTA-STS: cannot drop an expired policy");
                }
                Discovery::NoPolicy(e)
            }
            None => Discovery::NoPolicy(e),
        }
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<DnsName, RecentFailure>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent_failure(
        &self,
        domain: &DnsName,
        id: &StsId,
        now: SystemTime,
    ) -> Option<RecentFailure> {
        self.failures()
            .get(domain)
            .filter(|f| &f.id == id && now < f.retry_at)
            .cloned()
    }

    fn remember_failure(&self, domain: &DnsName, id: StsId, kind: ResultType, now: SystemTime) {
        if self.retry_after.is_zero() {
            return;
        }
        let Some(retry_at) = now.checked_add(self.retry_after) else {
            return;
        };
        let mut failures = self.failures();
        if failures.len() >= MAX_RECENT_FAILURES {
            failures.retain(|_, f| now < f.retry_at);
        }
        if failures.len() < MAX_RECENT_FAILURES {
            failures.insert(domain.clone(), RecentFailure { id, kind, retry_at });
        }
    }

    fn forget_failure(&self, domain: &DnsName) {
        self.failures().remove(domain);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::RootCertStore;

    use super::*;
    use crate::cache::MemoryStore;
    use crate::fetch::AddressError;

    /// TXT answers from a table that tests change as they go.
    #[derive(Default)]
    struct Txt(Mutex<HashMap<String, TxtAnswer>>);

    impl Txt {
        fn set(&self, name: &str, answer: TxtAnswer) {
            self.0.lock().unwrap().insert(name.to_owned(), answer);
        }
    }

    impl TxtResolver for Txt {
        async fn txt(&self, name: &DnsName) -> TxtAnswer {
            self.0
                .lock()
                .unwrap()
                .get(name.as_str())
                .cloned()
                .unwrap_or(TxtAnswer::NoRecords)
        }
    }

    /// No address for anyone: every fetch fails, and is counted.
    #[derive(Default)]
    struct Nowhere(AtomicUsize);

    impl AddressSource for Nowhere {
        async fn addresses(&self, _: &DnsName) -> Result<Vec<IpAddr>, AddressError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(AddressError::NoAddresses)
        }
    }

    type TestSts = Sts<Arc<Txt>, Arc<Nowhere>, Arc<MemoryStore>>;

    fn setup() -> (TestSts, Arc<Txt>, Arc<Nowhere>, Arc<MemoryStore>) {
        let txt = Arc::new(Txt::default());
        let nowhere = Arc::new(Nowhere::default());
        let store = Arc::new(MemoryStore::new());
        let fetcher = Fetcher::new(RootCertStore::empty()).unwrap();
        let sts = Sts::new(txt.clone(), nowhere.clone(), store.clone(), fetcher);
        (sts, txt, nowhere, store)
    }

    fn d() -> DnsName {
        "example.com".parse().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn enforce(id: &str, max_age: u32) -> Policy {
        Policy::new(
            id.parse().unwrap(),
            Mode::Enforce,
            vec!["mx.example.com".parse().unwrap()],
            max_age,
        )
        .unwrap()
    }

    fn record(id: &str) -> TxtAnswer {
        TxtAnswer::Records(vec![format!("v=STSv1; id={id}").into_bytes()])
    }

    #[tokio::test]
    async fn no_record_and_nothing_cached_is_no_policy_without_a_fetch() {
        let (sts, _, nowhere, _) = setup();
        let got = sts.policy_for(&d(), t(0)).await.unwrap();
        assert!(
            matches!(got, Discovery::NoPolicy(DiscoveryError::NoRecord)),
            "{got:?}"
        );
        assert_eq!(got.error().and_then(DiscoveryError::result_type), None);
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_same_id_uses_the_cache_without_a_fetch() {
        let (sts, txt, nowhere, store) = setup();
        store
            .put(
                &d(),
                &CachedPolicy {
                    policy: enforce("a1", 86_400 * 7),
                    fetched_at: t(0),
                },
            )
            .unwrap();
        txt.set("_mta-sts.example.com", record("a1"));
        let got = sts.policy_for(&d(), t(3600)).await.unwrap();
        assert!(
            matches!(
                got,
                Discovery::Policy {
                    source: Source::Cached,
                    ..
                }
            ),
            "{got:?}"
        );
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 0);
        // A day later the same id is fetched again; the fetch fails, the cache still applies.
        let got = sts.policy_for(&d(), t(86_400)).await.unwrap();
        assert!(
            matches!(
                got,
                Discovery::Policy {
                    source: Source::CachedFallback(DiscoveryError::Fetch(_)),
                    ..
                }
            ),
            "{got:?}"
        );
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_cached_policy_outlives_dns_failures_until_it_expires() {
        let (sts, txt, _, store) = setup();
        store
            .put(
                &d(),
                &CachedPolicy {
                    policy: enforce("a1", 100),
                    fetched_at: t(0),
                },
            )
            .unwrap();
        for answer in [
            TxtAnswer::NoRecords,
            TxtAnswer::Failed(Failure::ServFail),
            TxtAnswer::Records(vec![b"v=STSv1; id=x".to_vec(), b"v=STSv1; id=y".to_vec()]),
            TxtAnswer::Records(vec![b"v=STSv1; id=bad!".to_vec()]),
        ] {
            txt.set("_mta-sts.example.com", answer.clone());
            let got = sts.policy_for(&d(), t(50)).await.unwrap();
            assert_eq!(
                got.policy().map(Policy::mode),
                Some(Mode::Enforce),
                "{answer:?}"
            );
            assert!(got.error().is_some());
        }
        // Expired: no policy, and the cache entry is gone.
        txt.set("_mta-sts.example.com", TxtAnswer::Failed(Failure::Timeout));
        let got = sts.policy_for(&d(), t(100)).await.unwrap();
        assert!(
            matches!(got, Discovery::NoPolicy(DiscoveryError::TxtLookup { .. })),
            "{got:?}"
        );
        assert_eq!(
            got.error().and_then(DiscoveryError::result_type),
            Some(ResultType::StsPolicyFetchError)
        );
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_retried_for_a_while() {
        let (sts, txt, nowhere, _) = setup();
        txt.set("_mta-sts.example.com", record("a1"));
        let got = sts.policy_for(&d(), t(0)).await.unwrap();
        assert!(
            matches!(got, Discovery::NoPolicy(DiscoveryError::Fetch(_))),
            "{got:?}"
        );
        let got = sts.policy_for(&d(), t(60)).await.unwrap();
        match got {
            Discovery::NoPolicy(DiscoveryError::RecentFailure { kind, retry_at, .. }) => {
                assert_eq!(kind, ResultType::StsPolicyFetchError);
                assert_eq!(retry_at, t(300));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 1);
        // A new id is fetched at once, then again only five minutes after its failure.
        txt.set("_mta-sts.example.com", record("a2"));
        sts.policy_for(&d(), t(61)).await.unwrap();
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 2);
        sts.policy_for(&d(), t(360)).await.unwrap();
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 2);
        sts.policy_for(&d(), t(361)).await.unwrap();
        assert_eq!(nowhere.0.load(Ordering::Relaxed), 3);
    }

    /// A store whose reads fail.
    struct Broken;

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Fire;

    impl PolicyStore for Broken {
        type Error = Fire;

        fn get(&self, _: &DnsName) -> Result<Option<CachedPolicy>, Fire> {
            Err(Fire)
        }

        fn put(&self, _: &DnsName, _: &CachedPolicy) -> Result<(), Fire> {
            Err(Fire)
        }

        fn remove(&self, _: &DnsName) -> Result<(), Fire> {
            Err(Fire)
        }
    }

    #[tokio::test]
    async fn an_unreadable_cache_is_an_error_not_an_absent_policy() {
        let txt = Arc::new(Txt::default());
        txt.set("_mta-sts.example.com", TxtAnswer::NoRecords);
        let fetcher = Fetcher::new(RootCertStore::empty()).unwrap();
        let sts = Sts::new(txt, Arc::new(Nowhere::default()), Broken, fetcher);
        assert!(matches!(sts.policy_for(&d(), t(0)).await, Err(Fire)));
    }

    #[test]
    fn failure_kinds_map_to_tls_rpt_result_types() {
        let invalid = DiscoveryError::InvalidPolicy(PolicyError::Missing("mode"));
        assert_eq!(invalid.result_type(), Some(ResultType::StsPolicyInvalid));
        let record = DiscoveryError::InvalidRecord(RecordError::MissingId);
        assert_eq!(record.result_type(), Some(ResultType::StsPolicyInvalid));
        let status = DiscoveryError::Fetch(FetchError::Status(404));
        assert_eq!(status.result_type(), Some(ResultType::StsPolicyFetchError));
        let cert = DiscoveryError::Fetch(FetchError::Certificate {
            host: "mta-sts.example.com".into(),
            addr: ([127, 0, 0, 1], 443).into(),
            source: rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        });
        assert_eq!(cert.result_type(), Some(ResultType::StsWebpkiInvalid));
        assert_eq!(
            ResultType::StsWebpkiInvalid.to_string(),
            "sts-webpki-invalid"
        );
    }
}
