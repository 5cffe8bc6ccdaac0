//! The probe cache of a scan: one STARTTLS probe per address, port and SNI name, and one
//! comparison of the authoritative servers per TLSA owner, however many domains share them.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dns::{DnsName, Resolver};
use moka::sync::Cache;
use tokio::sync::{OnceCell, Semaphore};

use super::findings::ns_findings;
use super::model::Finding;
use crate::probe::{Presented, ProbeConfig, connect};

/// Probes shared by every domain of a scan: hosting is concentrated, so one probe per
/// address, port and SNI name serves all the domains that share an MX host.
///
/// Memory stays bounded however long the scan: at most `capacity` probe results and as many
/// server comparisons are held (a TinyLFU cache, so the hosts many domains share stay while
/// one-off hosts leave first). A result evicted before a later domain needs it is probed
/// again, which costs a connection, never a wrong answer.
pub struct ProbeCache {
    entries: Cache<ProbeKey, Arc<OnceCell<Presented>>>,
    /// Connection limits, one per stripe of addresses (see [`PER_ADDRESS`]).
    stripes: Box<[Semaphore; STRIPES]>,
    /// Comparisons of the authoritative servers, per TLSA owner name.
    servers: Cache<DnsName, Arc<OnceCell<Vec<Finding>>>>,
    /// Probes made (connections attempted), including any repeated after an eviction.
    made: AtomicUsize,
}

/// Connections at once to one address: a scan must not look like an attack on a provider
/// that hosts thousands of the domains. Addresses share a limit when they fall in the same
/// stripe (of [`STRIPES`]), which is only stricter, and keeps the limits in fixed memory.
const PER_ADDRESS: usize = 2;

/// How many address stripes carry a connection limit.
const STRIPES: usize = 1024;

/// Address, port and SNI name: what makes two probes the same.
type ProbeKey = (IpAddr, u16, String);

impl Default for ProbeCache {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl ProbeCache {
    /// Probe results held by [`ProbeCache::default`]: far more MX addresses than a scan's
    /// concurrency has in flight, a few kilobytes (a certificate chain) each.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A cache holding at most `capacity` probe results (at least one) and as many server
    /// comparisons.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = u64::try_from(capacity.max(1)).unwrap_or(u64::MAX);
        Self {
            entries: Cache::new(capacity),
            stripes: Box::new(std::array::from_fn(|_| Semaphore::new(PER_ADDRESS))),
            servers: Cache::new(capacity),
            made: AtomicUsize::new(0),
        }
    }

    /// The probe result cell for `key`, shared while it is held.
    fn cell(&self, key: ProbeKey) -> Arc<OnceCell<Presented>> {
        self.entries.get_with(key, Default::default)
    }

    /// The connection limit of `address`.
    fn limit(&self, address: IpAddr) -> &Semaphore {
        let mut h = DefaultHasher::new();
        address.hash(&mut h);
        // Truncating the hash is fine: any bits pick a stripe.
        &self.stripes[h.finish() as usize % STRIPES]
    }

    pub(crate) async fn get(
        &self,
        address: IpAddr,
        port: u16,
        sni: &str,
        cfg: &ProbeConfig,
    ) -> Presented {
        let cell = self.cell((address, port, sni.to_owned()));
        let limit = self.limit(address);
        cell.get_or_init(|| async {
            let _permit = limit.acquire().await;
            self.made.fetch_add(1, Ordering::Relaxed);
            connect(address, port, sni, cfg).await
        })
        .await
        .clone()
    }

    /// The findings about `owner`'s authoritative servers, asked once per scan (while held).
    pub(crate) async fn servers<R: Resolver>(
        &self,
        resolver: &R,
        owner: &DnsName,
        timeout: Duration,
    ) -> Vec<Finding> {
        let cell = self.servers.get_with(owner.clone(), Default::default);
        cell.get_or_init(|| async {
            let answers =
                dns::authoritative::ask_all(resolver, owner, dns::RecordType::Tlsa, timeout).await;
            ns_findings(owner, &answers)
        })
        .await
        .clone()
    }

    /// How many probes were made (connections attempted).
    pub fn len(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Whether none was made.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many probe results are held now.
    pub fn held(&self) -> usize {
        self.entries.run_pending_tasks();
        usize::try_from(self.entries.entry_count()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> ProbeKey {
        (IpAddr::from(i.to_be_bytes()), 25, format!("mx{i}.test"))
    }

    #[test]
    fn a_held_probe_is_shared() {
        let cache = ProbeCache::default();
        assert!(Arc::ptr_eq(&cache.cell(key(1)), &cache.cell(key(1))));
        assert!(!Arc::ptr_eq(&cache.cell(key(1)), &cache.cell(key(2))));
        assert_eq!(cache.held(), 2);
        assert!(cache.is_empty(), "no connection was made");
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = ProbeCache::with_capacity(8);
        for i in 0..1000 {
            let _ = cache.cell(key(i));
            let _ = cache.servers.get_with(
                format!("_25._tcp.mx{i}.test").parse().unwrap(),
                Default::default,
            );
        }
        assert!(cache.held() <= 8, "{}", cache.held());
        cache.servers.run_pending_tasks();
        assert!(cache.servers.entry_count() <= 8);
        assert_eq!(
            ProbeCache::with_capacity(0).entries.policy().max_capacity(),
            Some(1)
        );
    }

    #[test]
    fn an_address_always_has_the_same_limit_and_limits_are_fixed_in_number() {
        let cache = ProbeCache::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(std::ptr::eq(cache.limit(a), cache.limit(a)));
        assert_eq!(cache.limit(a).available_permits(), PER_ADDRESS);
        for i in 0..10_000u32 {
            let _ = cache.limit(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(cache.stripes.len(), STRIPES);
    }
}
