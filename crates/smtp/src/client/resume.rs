//! TLS session resumption, keyed so that a session never crosses a security boundary.
//!
//! A resumed handshake (RFC 8446 §2.2 with a ticket from §4.6.1; RFC 5077 and RFC 5246
//! §7.4.1.2 for TLS 1.2) presents no certificate and no signature: the server only proves it
//! knows the secret of an earlier full handshake. Whatever authentication that earlier
//! handshake achieved is all a resumed one has (RFC 8446 §2.2: "the server's identity is
//! established" by the original handshake). So a session may be resumed only by a connection
//! that would have demanded *exactly* the same authentication of the same server, and the
//! proof of the original handshake must come along with it:
//!
//! - The [`SessionKey`] is what Postfix's tlsmgr keys its client cache by: the peer's host
//!   name, address and port, the SNI name sent, the TLS mode, and everything the
//!   authentication depended on: the TLSA RRset (sorted) and reference names for DANE
//!   (RFC 7672 §3.1, §3.2), the digests for `fingerprint`, the match names and the trust
//!   anchors (by identity) for PKIX; nothing else for unauthenticated TLS. A session made under
//!   `may` or `encrypt` can therefore never be offered to a DANE or PKIX peer, nor one made
//!   under other TLSA records (a key rollover, or an attacker's records).
//! - Each key has its own rustls [`ClientSessionStore`] and its own [`ClientConfig`], whose
//!   certificate verifier is one per key (`Router`): rustls itself refuses to resume a
//!   session under a verifier other than the one that made it. The router hands each call to
//!   the per-connection verifier of the handshake in progress (a tokio task-local set by
//!   `with_verifier`), so every connection keeps its own DANE or PKIX state, as without
//!   resumption.
//! - Each key keeps the [`PeerAuth`] proofs of the full handshakes that succeeded under it, by
//!   the leaf certificate they were about. A resumed connection takes the proof for the leaf
//!   rustls restored from the session; without one it is unauthenticated (and a mode that
//!   requires authentication fails). The store hands out no session until a proof is there.
//! - A failed handshake under a key drops its entry (tickets and proofs), and so does age
//!   ([`DEFAULT_MAX_AGE`], Postfix's `smtp_tls_session_cache_timeout`): a proof is not
//!   carried forward for ever, whatever the lifetime a server gives its tickets (rustls caps
//!   it at RFC 8446 §4.6.1's seven days).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dane::{ReferenceName, Tlsa};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, Error, NamedGroup, RootCertStore, SignatureScheme,
};

use crate::tls::{Auth, Mode, PeerAuth};

/// How many keys a cache holds by default (Postfix keeps its TLS session cache for an hour;
/// a relay talks to far fewer distinct servers than this in that time).
pub const DEFAULT_CAPACITY: usize = 1000;

/// How long a key's entry lives from the full handshake that made it (Postfix's
/// `smtp_tls_session_cache_timeout` default): after that, a full handshake again.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Sessions kept per key: a few TLS 1.3 tickets (single use, RFC 8446 §C.4) and one TLS 1.2
/// session.
const SESSIONS_PER_KEY: usize = 4;

/// Proofs kept per key: one per distinct leaf certificate seen (a server changing its
/// certificate, or several behind one address).
const PROOFS_PER_KEY: usize = 4;

/// What a connection is keyed by in the [`SessionCache`]: a session is resumed only by a
/// connection with an equal key (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    host: String,
    peer: SocketAddr,
    sni: String,
    auth: AuthKey,
}

/// The mode, and everything its authentication depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AuthKey {
    /// `may`: STARTTLS when offered, nothing checked.
    Opportunistic,
    /// `encrypt` (or `dane` without usable records): TLS required, nothing checked.
    Encrypt,
    /// DANE: the TLSA RRset (sorted, without duplicates) and the reference names.
    Dane {
        records: Vec<Tlsa>,
        names: Vec<String>,
    },
    /// `fingerprint`: the configured digests (sorted).
    Fingerprint { records: Vec<Tlsa> },
    /// PKIX: the trust anchors (by identity) and the accepted names.
    Pkix { roots: Roots, names: Vec<String> },
}

/// A root store by identity. Holding the `Arc` keeps its address from being reused by
/// another store while the key exists, so pointer equality is identity.
#[derive(Clone)]
struct Roots(Arc<RootCertStore>);

impl PartialEq for Roots {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Roots {}

impl Hash for Roots {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Roots({:p}, {} anchors)",
            Arc::as_ptr(&self.0),
            self.0.len()
        )
    }
}

fn sorted_records(records: &[Tlsa]) -> Vec<Tlsa> {
    let mut records = records.to_vec();
    records.sort();
    records.dedup();
    records
}

fn sorted_names(names: &[ReferenceName]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

impl SessionKey {
    /// The key of a TLS connection to `host` at `peer`, with `sni` sent, secured as `mode`;
    /// `None` for [`Mode::Plaintext`], which has no TLS session.
    pub fn new(host: &str, peer: SocketAddr, sni: &str, mode: &Mode) -> Option<Self> {
        let auth = match mode {
            Mode::Plaintext => return None,
            Mode::Opportunistic => AuthKey::Opportunistic,
            Mode::Required(Auth::None) => AuthKey::Encrypt,
            Mode::Required(Auth::Dane { records, names }) => AuthKey::Dane {
                records: sorted_records(records),
                names: sorted_names(names),
            },
            Mode::Required(Auth::Fingerprint(records)) => AuthKey::Fingerprint {
                records: sorted_records(records),
            },
            Mode::Required(Auth::Pkix { roots, names }) => AuthKey::Pkix {
                roots: Roots(roots.clone()),
                names: sorted_names(names),
            },
        };
        Some(Self {
            host: host.to_ascii_lowercase(),
            peer,
            sni: sni.to_ascii_lowercase(),
            auth,
        })
    }

    /// Whether the mode requires a proof of the peer's identity (DANE, fingerprint, PKIX).
    pub fn authenticates(&self) -> bool {
        !matches!(self.auth, AuthKey::Opportunistic | AuthKey::Encrypt)
    }
}

/// TLS sessions shared by the connections of a relay, bounded (least recently used keys go
/// first) and cheap to share (`Arc<SessionCache>`). See the module documentation for the
/// rules.
pub struct SessionCache {
    capacity: usize,
    max_age: Duration,
    state: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<SessionKey, (Arc<Entry>, u64)>,
    clock: u64,
}

impl fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCache")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .field("keys", &self.len())
            .finish()
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

/// Why a key's client configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// rustls refused the configuration (no protocol version the provider supports).
    #[error("TLS configuration for session resumption: {0}")]
    Config(#[from] Error),
}

impl SessionCache {
    /// A cache of at most `capacity` keys (at least one), each kept [`DEFAULT_MAX_AGE`].
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age: DEFAULT_MAX_AGE,
            state: Mutex::new(Lru::default()),
        }
    }

    /// The same, each key's entry kept `max_age` from its making (zero: nothing is resumed).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `key`, made (with its client configuration) when there is none yet.
    pub(crate) fn entry(
        &self,
        key: &SessionKey,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<Entry>, ResumeError> {
        let mut lru = self.lock();
        lru.clock += 1;
        let now = lru.clock;
        if let Some((entry, used)) = lru.entries.get_mut(key) {
            if entry.made.elapsed() < self.max_age {
                *used = now;
                return Ok(entry.clone());
            }
            lru.entries.remove(key);
        }
        let entry = Arc::new(Entry::new(provider)?);
        if lru.entries.len() >= self.capacity
            && let Some(oldest) = lru
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            lru.entries.remove(&oldest);
        }
        lru.entries.insert(key.clone(), (entry.clone(), now));
        Ok(entry)
    }

    /// Drops the entry of `key` (its sessions and proofs), if it is still `entry`: after a
    /// failed handshake, nothing of the key's past is resumed.
    pub(crate) fn forget(&self, key: &SessionKey, entry: &Arc<Entry>) {
        let mut lru = self.lock();
        if lru
            .entries
            .get(key)
            .is_some_and(|(held, _)| Arc::ptr_eq(held, entry))
        {
            lru.entries.remove(key);
        }
    }
}

/// One key's client configuration (its own verifier and session store) and the proofs of
/// the full handshakes that succeeded under it.
pub(crate) struct Entry {
    config: Arc<ClientConfig>,
    store: Arc<GatedStore>,
    made: Instant,
}

impl Entry {
    fn new(provider: &Arc<CryptoProvider>) -> Result<Self, Error> {
        let store = Arc::new(GatedStore {
            inner: ClientSessionMemoryCache::new(SESSIONS_PER_KEY),
            proofs: Mutex::new(Vec::new()),
        });
        let router = Arc::new(Router(provider.signature_verification_algorithms));
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(router)
            .with_no_client_auth();
        config.enable_sni = true;
        // TLS 1.3 tickets and TLS 1.2 session IDs or tickets (RFC 5077), the rustls default.
        config.resumption = Resumption::store(store.clone());
        Ok(Self {
            config: Arc::new(config),
            store,
            made: Instant::now(),
        })
    }

    /// The key's client configuration: use it only inside [`with_verifier`].
    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Records the proof of a full handshake that authenticated the peer as the key's mode
    /// requires, about its `leaf` certificate: from now on the key's sessions may be offered.
    pub(crate) fn record(&self, leaf: &CertificateDer<'_>, proof: PeerAuth) {
        let mut proofs = self.store.proofs();
        proofs.retain(|(l, _)| l.as_ref() != leaf.as_ref());
        if proofs.len() >= PROOFS_PER_KEY {
            proofs.remove(0);
        }
        proofs.push((leaf.clone().into_owned(), proof));
    }

    /// The proof of the full handshake that authenticated `leaf` under this key, for a
    /// resumed connection whose session carried that leaf.
    pub(crate) fn proof(&self, leaf: &CertificateDer<'_>) -> Option<PeerAuth> {
        self.store
            .proofs()
            .iter()
            .find(|(l, _)| l.as_ref() == leaf.as_ref())
            .map(|(_, p)| p.clone())
    }
}

/// A key's session store: rustls' in-memory cache, which hands out nothing until a full
/// handshake under the key recorded its proof.
#[derive(Debug)]
struct GatedStore {
    inner: ClientSessionMemoryCache,
    proofs: Mutex<Vec<(CertificateDer<'static>, PeerAuth)>>,
}

impl GatedStore {
    fn proofs(&self) -> MutexGuard<'_, Vec<(CertificateDer<'static>, PeerAuth)>> {
        self.proofs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> bool {
        !self.proofs().is_empty()
    }
}

impl ClientSessionStore for GatedStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.open()
            .then(|| self.inner.tls12_session(server_name))
            .flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.open()
            .then(|| self.inner.take_tls13_ticket(server_name))
            .flatten()
    }
}

tokio::task_local! {
    /// The verifier of the connection whose handshake the current task is running.
    static CONNECTION: Arc<dyn ServerCertVerifier>;
}

/// Runs `handshake` with `verifier` as the one a key's [`Router`] hands its calls to.
pub(crate) async fn with_verifier<F: Future>(
    verifier: Arc<dyn ServerCertVerifier>,
    handshake: F,
) -> F::Output {
    CONNECTION.scope(verifier, handshake).await
}

/// A key's certificate verifier: one object per key, so that rustls resumes only sessions
/// this key made (rustls compares verifiers by identity), handing every call to the verifier
/// of the connection in progress. Outside [`with_verifier`] it rejects every certificate.
#[derive(Debug)]
struct Router(WebPkiSupportedAlgorithms);

fn no_verifier() -> Error {
    Error::General("no certificate verifier for this connection".into())
}

impl ServerCertVerifier for Router {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        CONNECTION
            .try_with(|v| v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now))
            .unwrap_or_else(|_| Err(no_verifier()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        CONNECTION
            .try_with(|v| v.verify_tls12_signature(message, cert, dss))
            .unwrap_or_else(|_| Err(no_verifier()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        CONNECTION
            .try_with(|v| v.verify_tls13_signature(message, cert, dss))
            .unwrap_or_else(|_| Err(no_verifier()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        CONNECTION
            .try_with(|v| v.supported_verify_schemes())
            .unwrap_or_else(|_| self.0.supported_schemes())
    }

    fn requires_raw_public_keys(&self) -> bool {
        CONNECTION
            .try_with(|v| v.requires_raw_public_keys())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::PkixVerified;

    const A: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";
    const B: &str = "3 1 1 0202020202020202020202020202020202020202020202020202020202020202";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn dane(records: &[&str], names: &[&str]) -> Mode {
        Mode::Required(Auth::Dane {
            records: records.iter().map(|r| r.parse().unwrap()).collect(),
            names: names.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    fn key(mode: &Mode) -> SessionKey {
        SessionKey::new(
            "mx.example.test",
            addr("192.0.2.1:25"),
            "mx.example.test",
            mode,
        )
        .unwrap()
    }

    #[test]
    fn keys_separate_what_authentication_depends_on() {
        let roots = Arc::new(RootCertStore::empty());
        let pkix = |roots: &Arc<RootCertStore>, names: &[&str]| {
            Mode::Required(Auth::Pkix {
                roots: roots.clone(),
                names: names.iter().map(|n| n.parse().unwrap()).collect(),
            })
        };
        let modes = [
            Mode::Opportunistic,
            Mode::Required(Auth::None),
            dane(&[A], &[]),
            dane(&[B], &[]),
            dane(&[A, B], &[]),
            dane(&[A], &["mx.example.test"]),
            Mode::Required(Auth::Fingerprint(vec![A.parse().unwrap()])),
            pkix(&roots, &["example.test"]),
            pkix(&roots, &["mx.example.test"]),
            pkix(&Arc::new(RootCertStore::empty()), &["example.test"]),
        ];
        for (i, a) in modes.iter().enumerate() {
            for (j, b) in modes.iter().enumerate() {
                assert_eq!(key(a) == key(b), i == j, "{a:?} vs {b:?}");
            }
        }
        // The same RRset in another order, or with a duplicate, is the same set.
        assert_eq!(key(&dane(&[A, B], &[])), key(&dane(&[B, A, B], &[])));
        // The peer and the SNI name are part of the key; plaintext has none.
        let m = dane(&[A], &[]);
        let other = [
            SessionKey::new(
                "mx2.example.test",
                addr("192.0.2.1:25"),
                "mx.example.test",
                &m,
            ),
            SessionKey::new(
                "mx.example.test",
                addr("192.0.2.2:25"),
                "mx.example.test",
                &m,
            ),
            SessionKey::new(
                "mx.example.test",
                addr("192.0.2.1:587"),
                "mx.example.test",
                &m,
            ),
            SessionKey::new("mx.example.test", addr("192.0.2.1:25"), "other.test", &m),
        ];
        for k in other {
            assert_ne!(k.unwrap(), key(&m));
        }
        assert!(SessionKey::new("h", addr("192.0.2.1:25"), "h", &Mode::Plaintext).is_none());
        assert!(!key(&Mode::Opportunistic).authenticates());
        assert!(key(&m).authenticates());
    }

    #[test]
    fn the_cache_is_bounded_and_forgets() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cache = SessionCache::new(2);
        let k = |port: u16| {
            SessionKey::new(
                "h.test",
                addr(&format!("192.0.2.1:{port}")),
                "h.test",
                &Mode::Opportunistic,
            )
            .unwrap()
        };
        let first = cache.entry(&k(1), &provider).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.entry(&k(1), &provider).unwrap()));
        let _ = cache.entry(&k(2), &provider).unwrap();
        let _ = cache.entry(&k(1), &provider).unwrap();
        let _ = cache.entry(&k(3), &provider).unwrap();
        assert_eq!(cache.len(), 2);
        // Key 2 was the least recently used.
        assert!(Arc::ptr_eq(&first, &cache.entry(&k(1), &provider).unwrap()));
        cache.forget(&k(1), &first);
        assert!(!Arc::ptr_eq(
            &first,
            &cache.entry(&k(1), &provider).unwrap()
        ));
        // Forgetting an entry that was already replaced leaves the new one alone.
        let current = cache.entry(&k(1), &provider).unwrap();
        cache.forget(&k(1), &first);
        assert!(Arc::ptr_eq(
            &current,
            &cache.entry(&k(1), &provider).unwrap()
        ));
        // An entry older than the maximum age is made anew.
        let cache = SessionCache::new(2).with_max_age(Duration::ZERO);
        let first = cache.entry(&k(1), &provider).unwrap();
        assert!(!Arc::ptr_eq(
            &first,
            &cache.entry(&k(1), &provider).unwrap()
        ));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn proofs_are_per_leaf_and_open_the_store() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let entry = Entry::new(&provider).unwrap();
        let leaf = CertificateDer::from(vec![1, 2, 3]);
        let other = CertificateDer::from(vec![4, 5, 6]);
        assert!(!entry.store.open());
        assert!(entry.proof(&leaf).is_none());
        let proof = PeerAuth::Pkix(PkixVerified::for_tests("mx.example.test".parse().unwrap()));
        entry.record(&leaf, proof);
        assert!(entry.store.open());
        assert!(matches!(entry.proof(&leaf), Some(PeerAuth::Pkix(_))));
        assert!(entry.proof(&other).is_none());
        for i in 0..10u8 {
            entry.record(&CertificateDer::from(vec![i]), PeerAuth::Unchecked);
        }
        assert!(
            entry.proof(&leaf).is_none(),
            "bounded: the oldest proof went"
        );
    }

    #[tokio::test]
    async fn the_router_rejects_outside_a_connection() {
        let provider = rustls::crypto::ring::default_provider();
        let router = Router(provider.signature_verification_algorithms);
        let name = ServerName::try_from("mx.example.test").unwrap();
        let cert = CertificateDer::from(vec![0]);
        assert!(
            router
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_err()
        );
        assert!(!router.supported_verify_schemes().is_empty());
    }
}
