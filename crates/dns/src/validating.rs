//! The `validating` back-end: DNSSEC validation in process (hickory's validator), from
//! built-in or configured trust anchors, asking an upstream resolver that passes DNSSEC
//! records through.
//!
//! Where hickory's validator gets it wrong, this layer compensates, and never towards a
//! downgrade:
//! * A DNSKEY or DS fetch that fails on the network comes back from hickory as *bogus*
//!   (hickory-dns#3932, #3964). A bogus verdict is therefore checked again with a fresh
//!   validator whose transport records network errors; if any occurred, the answer is
//!   *indeterminate* (defer and retry), not *bogus*.
//! * An upstream that strips RRSIGs makes every signed zone look bogus; that is reported as
//!   [`Failure::NoDnssec`] once a probe of the root DNSKEY shows the upstream returns no
//!   signatures at all.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hickory_net::dnssec::DnssecDnsHandle;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_net::{DnsError, NetError};
use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, Verifier};
use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query};
use hickory_proto::rr::{Name, RData, Record as HRecord, RecordType as HType};
use hickory_resolver::config::{NameServerConfig, ResolverOpts};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};
use tokio::sync::OnceCell;

use crate::answer::{build, hickory_name};
use crate::lookup::{Failure, Lookup, Outcome, RecordType};
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::status::Status;

type Pool = NameServerPool<TokioRuntimeProvider>;

/// A validated lookup may need several sequential key and DS fetches (root DNSKEY, TLD DS and
/// DNSKEY, zone DS and DNSKEY, …), each with its own timeout and a retry: the whole lookup is
/// bounded by this many per-query timeouts.
const VALIDATION_ROUNDS: u32 = 12;

/// Validates DNSSEC itself, asking upstream resolvers for the data.
pub struct Validating {
    pool: Counting,
    anchors: Arc<TrustAnchors>,
    validator: DnssecDnsHandle<Counting>,
    timeout: Duration,
    upstream_dnssec: OnceCell<bool>,
}

/// The validating back-end cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No upstream resolver is configured.
    #[error("no upstream resolver: /etc/resolv.conf lists none and none was given")]
    NoUpstream,
    /// /etc/resolv.conf cannot be read.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    /// The trust anchor file cannot be used.
    #[error("trust anchor {path}: {reason}")]
    TrustAnchor {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn status_of(proof: Proof) -> Status {
    match proof {
        Proof::Secure => Status::Secure,
        Proof::Insecure => Status::Insecure,
        Proof::Bogus => Status::Bogus,
        Proof::Indeterminate => Status::Indeterminate,
    }
}

impl Validating {
    /// A validator asking `upstreams` (UDP, TCP on truncation), trusting `anchors` (the IANA
    /// root keys by default, see [`TrustAnchors::default`]).
    pub fn new(
        upstreams: &[SocketAddr],
        anchors: TrustAnchors,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        if upstreams.is_empty() {
            return Err(SetupError::NoUpstream);
        }
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 2;
        options.edns0 = true;
        let servers = upstreams.iter().map(|addr| {
            let mut config = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut config.connections {
                c.port = addr.port();
            }
            config
        });
        let tls = TlsConfig::new().map_err(|e| SetupError::SystemConfig(e.to_string()))?;
        let context = Arc::new(PoolContext::new(options, tls));
        let pool = Counting {
            inner: NameServerPool::from_config(servers, context, TokioRuntimeProvider::default()),
            sent: Arc::default(),
            errors: Arc::default(),
        };
        let anchors = Arc::new(anchors);
        Ok(Self {
            validator: DnssecDnsHandle::with_trust_anchor(pool.clone(), anchors.clone()),
            pool,
            anchors,
            timeout,
            upstream_dnssec: OnceCell::new(),
        })
    }

    /// A validator asking the resolvers of /etc/resolv.conf.
    pub fn from_system(anchors: TrustAnchors, timeout: Duration) -> Result<Self, SetupError> {
        let (config, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| SetupError::SystemConfig(e.to_string()))?;
        let upstreams: Vec<SocketAddr> = config
            .name_servers()
            .iter()
            .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
            .collect();
        Self::new(&upstreams, anchors, timeout)
    }

    /// Replaces the trust anchors with those of a file in zone-file syntax: root DNSKEY
    /// records are used as they are; root DS records select the keys of the root DNSKEY
    /// RRset (fetched from the upstream) whose digest they match (RFC 4034 §5).
    pub async fn with_anchor_file(mut self, path: &Path) -> Result<Self, SetupError> {
        let err = |reason: String| SetupError::TrustAnchor {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let (ds, dnskey) = anchor_lines(&text).map_err(err)?;
        let mut anchors: TrustAnchors =
            dnskey.join("\n").parse().map_err(|e| err(format!("{e}")))?;
        if !ds.is_empty() {
            let query = Query::query(Name::root(), HType::DNSKEY);
            let response = self
                .pool
                .send(DnsRequest::from_query(query, options()))
                .first_answer()
                .await
                .map_err(|e| {
                    err(format!(
                        "cannot fetch the root DNSKEY RRset to match the DS records: {e}"
                    ))
                })?;
            for record in &response.answers {
                let RData::DNSSEC(DNSSECRData::DNSKEY(key)) = &record.data else {
                    continue;
                };
                let covered = ds
                    .iter()
                    .any(|d| d.covers(&Name::root(), key).unwrap_or(false));
                if covered && let Ok(public) = key.key() {
                    anchors.insert(&*public);
                }
            }
        }
        if anchors.is_empty() {
            return Err(err(
                "no usable root DNSKEY (or DS matching a root DNSKEY) in the file".into(),
            ));
        }
        self.anchors = Arc::new(anchors);
        self.validator =
            DnssecDnsHandle::with_trust_anchor(self.pool.clone(), self.anchors.clone());
        Ok(self)
    }

    /// Queries sent upstream so far, key and DS fetches included.
    pub fn queries_sent(&self) -> u64 {
        self.pool.sent.load(Ordering::Relaxed)
    }

    /// Whether the upstream returns RRSIGs at all: asked once, for the root DNSKEY RRset.
    pub async fn upstream_passes_dnssec(&self) -> bool {
        *self
            .upstream_dnssec
            .get_or_init(|| async {
                let query = Query::query(Name::root(), HType::DNSKEY);
                let mut request = DnsRequest::from_query(query, options());
                request
                    .edns
                    .get_or_insert_with(Default::default)
                    .enable_dnssec();
                match self.pool.send(request).first_answer().await {
                    Ok(r) => r.answers.iter().any(|a| a.record_type() == HType::RRSIG),
                    Err(_) => true, // unknown: do not blame the upstream for a network failure
                }
            })
            .await
    }

    async fn validate<H: DnsHandle>(
        &self,
        validator: &DnssecDnsHandle<H>,
        name: &DnsName,
        rtype: RecordType,
    ) -> Lookup {
        let query = match hickory_name(name) {
            Ok(n) => Query::query(n, rtype.to_hickory()),
            Err(f) => return Lookup::failed(name.clone(), rtype, f),
        };
        let result = tokio::time::timeout(
            self.timeout * VALIDATION_ROUNDS,
            validator.lookup(query, options()).first_answer(),
        )
        .await
        .unwrap_or(Err(NetError::Timeout));
        classify(name, rtype, result)
    }
}

fn options() -> DnsRequestOptions {
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.recursion_desired = true;
    options
}

/// The status of a denial in a response that hickory accepted: secure when a validated
/// NSEC/NSEC3 record proves it, else insecure (hickory proved an insecure delegation).
fn denial_status(response: &DnsResponse) -> Status {
    let proven = response.authorities.iter().any(|r| {
        r.proof == Proof::Secure
            && matches!(r.record_type(), HType::NSEC | HType::NSEC3 | HType::SOA)
    });
    if proven {
        Status::Secure
    } else {
        Status::Insecure
    }
}

/// Maps hickory's verdict on one response to a [`Lookup`].
fn classify(name: &DnsName, rtype: RecordType, result: Result<DnsResponse, NetError>) -> Lookup {
    let lookup = match result {
        Ok(response) => {
            let denial = denial_status(&response);
            build(
                name,
                rtype,
                response.metadata.response_code,
                &response.answers,
                |r: &HRecord| status_of(r.proof),
                denial,
            )
        }
        Err(NetError::Dns(DnsError::Nsec {
            response, proof, ..
        })) => build(
            name,
            rtype,
            response.metadata.response_code,
            &response.answers,
            |r: &HRecord| status_of(r.proof),
            status_of(proof),
        ),
        Err(NetError::Dns(DnsError::DnssecBogus)) => Lookup::failed(
            name.clone(),
            rtype,
            Failure::Bogus("answer did not validate".into()),
        ),
        Err(NetError::Timeout) => Lookup::failed(name.clone(), rtype, Failure::Timeout),
        Err(e) => Lookup::failed(name.clone(), rtype, Failure::Network(e.to_string())),
    };
    if lookup.status() == Status::Bogus && !matches!(lookup.answer().1, Outcome::Failed(_)) {
        let what = match lookup.answer().1 {
            Outcome::Records(_) => "records",
            _ => "denial of existence",
        };
        return with_failure(
            &lookup,
            Failure::Bogus(format!("{what} for {name} did not validate")),
        );
    }
    lookup
}

fn with_failure(lookup: &Lookup, failure: Failure) -> Lookup {
    Lookup::new(
        lookup.name().clone(),
        lookup.rtype(),
        lookup.status(),
        Outcome::Failed(failure),
        lookup.cnames().to_vec(),
        0,
    )
}

impl Resolver for Validating {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        let first = self.validate(&self.validator, name, rtype).await;
        if first.status() != Status::Bogus {
            return first;
        }
        // Check a bogus verdict again with a fresh validator (no cached key proofs) whose
        // transport counts network errors: a key fetch that failed is not an attack.
        let counting = self.pool.with_own_error_count();
        let errors = counting.errors.clone();
        let fresh = DnssecDnsHandle::with_trust_anchor(counting, self.anchors.clone());
        let second = self.validate(&fresh, name, rtype).await;
        if errors.load(Ordering::Relaxed) > 0 {
            // Indeterminate, not bogus: the CNAME links' own statuses are left out so that
            // a bogus link cannot turn this back into "bogus".
            return Lookup::new(
                name.clone(),
                rtype,
                Status::Indeterminate,
                Outcome::Failed(Failure::Network(
                    "a DNSKEY or DS lookup failed during validation".into(),
                )),
                Vec::new(),
                0,
            );
        }
        if second.status() == Status::Bogus && !self.upstream_passes_dnssec().await {
            // Not an attack on this zone: nothing can be validated through this upstream.
            return Lookup::new(
                name.clone(),
                rtype,
                Status::Indeterminate,
                Outcome::Failed(Failure::NoDnssec),
                Vec::new(),
                0,
            );
        }
        second
    }
}

/// The upstream pool, counting the queries sent through it (for benchmarks) and the
/// network errors among their answers (to tell a failed key fetch from a bogus answer).
#[derive(Clone)]
struct Counting {
    inner: Pool,
    sent: Arc<AtomicU64>,
    errors: Arc<AtomicUsize>,
}

impl Counting {
    /// The same transport and query count, with an error count of its own.
    fn with_own_error_count(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            sent: self.sent.clone(),
            errors: Arc::default(),
        }
    }
}

impl DnsHandle for Counting {
    type Response = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, request: DnsRequest) -> Self::Response {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let errors = self.errors.clone();
        Box::pin(self.inner.send(request).inspect(move |r| {
            if let Err(e) = r
                && !(e.is_no_records_found() || e.is_nx_domain())
            {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }))
    }
}

/// Splits a trust-anchor file into root DS records (parsed) and DNSKEY lines (for hickory's
/// own parser). Comments (`;`) and blank lines are skipped; other record types are errors.
fn anchor_lines(text: &str) -> Result<(Vec<DS>, Vec<String>), String> {
    let mut ds = Vec::new();
    let mut dnskey = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = fields
            .iter()
            .position(|f| f.eq_ignore_ascii_case("DS") || f.eq_ignore_ascii_case("DNSKEY"))
        else {
            return Err(format!(
                "line {}: neither a DS nor a DNSKEY record: {line:?}",
                number + 1
            ));
        };
        if fields[0] != "." {
            return Err(format!(
                "line {}: only root (\".\") anchors are supported: {line:?}",
                number + 1
            ));
        }
        if fields[at].eq_ignore_ascii_case("DNSKEY") {
            dnskey.push(line.to_owned());
            continue;
        }
        let bad = || {
            format!(
                "line {}: DS needs key tag, algorithm, digest type and hex digest: {line:?}",
                number + 1
            )
        };
        let [tag, alg, dtype, hex @ ..] = &fields[at + 1..] else {
            return Err(bad());
        };
        let digest = decode_hex(&hex.concat()).ok_or_else(bad)?;
        ds.push(DS::new(
            tag.parse().map_err(|_| bad())?,
            Algorithm::from_u8(alg.parse().map_err(|_| bad())?),
            DigestType::from(dtype.parse::<u8>().map_err(|_| bad())?),
            digest,
        ));
    }
    Ok((ds, dnskey))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_files_hold_root_ds_and_dnskey_records() {
        let text = "; IANA root KSK-2017\n\
                    . 86400 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n\
                    . IN DNSKEY 257 3 13 AAAA\n";
        let (ds, dnskey) = anchor_lines(text).unwrap();
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].key_tag(), 20326);
        assert_eq!(dnskey.len(), 1);
        assert!(
            anchor_lines("example. IN DS 1 8 2 00")
                .unwrap_err()
                .contains("only root")
        );
        assert!(
            anchor_lines(". IN A 192.0.2.1")
                .unwrap_err()
                .contains("neither")
        );
        assert!(
            anchor_lines(". IN DS 1 8 2 0")
                .unwrap_err()
                .contains("DS needs")
        );
    }
}
