//! An attacker on the DNS path: [`DnsTamper`], a proxy between a DNS client and the lab's
//! resolver that rewrites chosen answers, and the reference validator to prove that each
//! rewrite is a forgery ([`Lab::validating_forwarder`]).
//!
//! ```text
//!   danemta (validating back-end) ──┐
//!                                   ├──> DnsTamper ──> plain Unbound ──> NSD (lab zones)
//!   validating Unbound (forwarder) ─┘    (rewrites answers to matching questions)
//! ```
//!
//! The proxy listens on UDP and TCP (RFC 7766: two-byte length prefix) on one address and
//! port, relays every query to its upstream (UDP, TCP when the reply is truncated), and
//! applies the [`Tampering`] of the first [`Rule`] whose [`Target`] matches the question:
//! the question type is one of the target's types, and the question name, or a name the
//! answer's CNAME chain leads to from it, is the target's name (or below it, for a subtree
//! target). Every other answer goes back byte for byte. The data an attack needs (the SOA of
//! an insecure zone, a real denial from another zone, another owner's signed RRset) is asked
//! from the upstream with DO=1 when first needed, over TCP.
//!
//! [`DnsTamper::fired`] counts the answers it rewrote: a test must check it, since a tampering
//! that never fired proves nothing. [`DnsTamper::log`] says what was done to each matching
//! answer. An answer over the client's UDP size (its EDNS payload size, else 512) is sent
//! truncated (TC=1), so the client asks again over TCP.
//!
//! To show that a tampering is a real forgery, point a validating Unbound at the proxy
//! ([`Lab::validating_forwarder`]: the lab's trust anchor, `forward-zone: "."` to the proxy,
//! a fresh process and cache each time) and check it answers SERVFAIL.
//!
//! ```no_run
//! use danemta_lab::dns::{self, rcode, rtype, QueryOptions};
//! use danemta_lab::{Lab, Rule, Target, Tampering};
//! let lab = Lab::builder().standard_zones().start()?;
//! let tamper = lab.dns_tamper([Rule::new(
//!     Target::exact("_25._tcp.mx1.secure.test", &[rtype::TLSA]),
//!     Tampering::ForgedNoDataForeignSoa { soa_zone: "insecure.test".into() },
//! )])?;
//! let unbound = lab.validating_forwarder(tamper.addr())?;
//! let r = dns::query(unbound.addr(), "_25._tcp.mx1.secure.test", rtype::TLSA, QueryOptions::recursive())?;
//! assert_eq!(r.rcode, rcode::SERVFAIL, "{}", unbound.log());
//! assert!(tamper.fired() > 0, "{}", tamper.log());
//! // … and the client under test, asking tamper.addr(), must not accept the forgery.
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! ## Tamperings
//!
//! | tampering | the forged answer |
//! |---|---|
//! | [`Identity`](Tampering::Identity) | the genuine answer, decoded and encoded again (a control: proves the proxy itself breaks nothing) |
//! | [`ForgedNoDataForeignSoa`](Tampering::ForgedNoDataForeignSoa) | NOERROR, no answer, authority: the unsigned SOA of another (insecure) zone |
//! | [`ForgedNxDomainForeignSoa`](Tampering::ForgedNxDomainForeignSoa) | the same with NXDOMAIN |
//! | [`ForgedDenialSignedSoaWithoutProof`](Tampering::ForgedDenialSignedSoaWithoutProof) | NODATA or NXDOMAIN with a genuine signed SOA (and its RRSIG) but no NSEC/NSEC3 |
//! | [`StripBehindCname`](Tampering::StripBehindCname) | the signed CNAME chain kept, the data at its (matching) target removed |
//! | [`StripRrsigs`](Tampering::StripRrsigs) | the answer RRset without its RRSIGs |
//! | [`TruncateRrsigs`](Tampering::TruncateRrsigs), [`CorruptRrsigs`](Tampering::CorruptRrsigs) | the RRSIGs' signatures cut to half their length / one bit flipped |
//! | [`ReplayOtherOwner`](Tampering::ReplayOtherOwner) | another owner's validly signed RRset of the queried type, as it is or renamed to the question |
//! | [`ForgedUnsignedData`](Tampering::ForgedUnsignedData) | another owner's RRset without signatures (e.g. from an insecure zone), renamed |
//! | [`ForeignNsecProof`](Tampering::ForeignNsecProof) | the whole denial (rcode, SOA, NSEC/NSEC3, RRSIGs) of another question, e.g. from another zone |
//! | [`ExpiredSignatures`](Tampering::ExpiredSignatures) | the genuine answer with RRSIGs of the same key whose validity ended 30 days ago |
//! | [`WildcardWithoutProof`](Tampering::WildcardWithoutProof) | a genuine wildcard expansion without the NSEC/NSEC3 proving the name does not exist |
//! | [`WildcardReplay`](Tampering::WildcardReplay) | the wildcard expansion of another name, renamed to a name that has its own data |
//! | [`ForgedCnameToInsecure`](Tampering::ForgedCnameToInsecure) | an unsigned CNAME to a name in an insecure zone, with that name's data |
//! | [`WithAdBit`](Tampering::WithAdBit) | another tampering, with AD=1 set in the header |

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine;
use hickory_proto::dnssec::Algorithm;
use hickory_proto::dnssec::rdata::{DNSSECRData, RRSIG, SigInput};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType, SerialNumber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::dns::{QueryOptions, rcode, rtype};
use crate::smtp::{PeerAddr, resolve_addr};
use crate::zone::Tier;
use crate::{Lab, LabAddr, LabError, Signing, ZoneSpec, config, fake_digest, process};

/// How long the proxy waits for its upstream, per attempt.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Which questions a [`Rule`] applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    name: String,
    subtree: bool,
    types: Vec<u16>,
}

impl Target {
    /// Questions of one of `types` for exactly `name` (or whose answer's CNAME chain leads to
    /// `name`). Names are case-insensitive; the trailing dot is optional.
    pub fn exact(name: &str, types: &[u16]) -> Target {
        Target {
            name: name.to_string(),
            subtree: false,
            types: types.to_vec(),
        }
    }

    /// Questions of one of `types` for `name` or any name below it (or whose CNAME chain leads
    /// there).
    pub fn subtree(name: &str, types: &[u16]) -> Target {
        Target {
            subtree: true,
            ..Target::exact(name, types)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<String> = self.types.iter().map(|t| rtype::name(*t)).collect();
        write!(
            f,
            "{}{} {}",
            if self.subtree { "*." } else { "" },
            self.name,
            types.join("/")
        )
    }
}

/// What the proxy does to an answer whose question matches a [`Target`]. Names are absolute
/// (the trailing dot is optional). Each variant is an attack an on-path attacker without the
/// zones' keys can mount; none of them may make a validator accept forged data or a forged
/// denial.
#[derive(Clone, Debug)]
pub enum Tampering {
    /// No attack: the answer is decoded and encoded again. A control that shows the proxy's
    /// re-encoding keeps signatures valid (counted as fired).
    Identity,
    /// Forged denial read as insecure: NOERROR with no answer (NODATA) and, in the authority
    /// section, the *unsigned* SOA of another, insecure zone (`soa_zone`, e.g.
    /// `insecure.test`). A validator that takes "no secure NSEC/NSEC3/SOA" for "insecure"
    /// drops DANE (issue 8, finding 1).
    ForgedNoDataForeignSoa {
        /// The insecure zone whose SOA is shown.
        soa_zone: String,
    },
    /// As [`ForgedNoDataForeignSoa`](Tampering::ForgedNoDataForeignSoa) with NXDOMAIN: the
    /// name "does not exist" (for an MX question, a bounce if believed).
    ForgedNxDomainForeignSoa {
        /// The insecure zone whose SOA is shown.
        soa_zone: String,
    },
    /// A denial whose authority holds a genuine, validly signed SOA (of `soa_zone`, with its
    /// RRSIG) but no NSEC/NSEC3 record proving anything.
    ForgedDenialSignedSoaWithoutProof {
        /// The zone whose signed SOA is shown (the zone of the question, to look right).
        soa_zone: String,
        /// NXDOMAIN instead of NODATA.
        nxdomain: bool,
    },
    /// Data stripped behind a signed CNAME: the answer's CNAMEs and their RRSIGs are kept, the
    /// records (and RRSIGs) of the queried type at the chain's name that matched the
    /// [`Target`] are removed, turning the answer into a NODATA at the target. A question for
    /// the target itself gets a plain NODATA. Authority: the unsigned SOA of `foreign_soa`,
    /// or nothing.
    StripBehindCname {
        /// An insecure zone whose SOA goes into the authority section; `None`: empty.
        foreign_soa: Option<String>,
    },
    /// The RRSIGs covering the queried type are removed from the answer section.
    StripRrsigs,
    /// The signature bytes of the RRSIGs covering the queried type are cut to half their
    /// length.
    TruncateRrsigs,
    /// One bit in the middle of the signature of each RRSIG covering the queried type is
    /// flipped.
    CorruptRrsigs,
    /// A validly signed RRset of another owner: the answer to `source`/(the queried type) with
    /// its RRSIGs replaces the answer, under its own owner name (`rename: false`) or renamed to
    /// the question (`rename: true`; the RRSIGs then sign another name).
    ReplayOtherOwner {
        /// The owner whose RRset is replayed, e.g. `_25._tcp.mx2.secure.test`.
        source: String,
        /// Rename the records (and their RRSIGs) to the question name.
        rename: bool,
    },
    /// Forged data without signatures: the RRset of `source` (e.g. the same host in an
    /// insecure zone) of the queried type, RRSIGs removed, renamed to the question.
    ForgedUnsignedData {
        /// The owner whose records are used.
        source: String,
    },
    /// A denial taken from another question: the upstream's answer to
    /// `source`/`source_type` (a real, validly signed NXDOMAIN or NODATA: its rcode, SOA,
    /// NSEC or NSEC3 records and their RRSIGs) is sent as the answer. From another zone it
    /// proves nothing about the question; from the child side of a zone cut it must not
    /// prove the absence of a DS; for another name of the same zone it does not cover the
    /// question.
    ForeignNsecProof {
        /// The name whose denial is used.
        source: String,
        /// The type asked for it (a type it does not have).
        source_type: u16,
    },
    /// Replayed old signatures: the genuine answer, each RRSIG replaced by the RRSIG over the
    /// same RRset made with the zone's real key but expired 30 days ago (from
    /// [`ExpiredSignatures`]).
    ExpiredSignatures(Arc<ExpiredSignatures>),
    /// A wildcard answer without the proof that the name does not exist: the NSEC/NSEC3
    /// records (and their RRSIGs) are removed from a genuine wildcard expansion (an answer
    /// whose RRSIG has fewer labels than its owner). Answers that are no expansion are left
    /// alone (not fired).
    WildcardWithoutProof,
    /// A wildcard expansion replayed over a name that has its own data: the (validly signed)
    /// expansion of the wildcard for `source`, a name that does not exist, renamed to the
    /// question. `keep_proof`: with the NSEC/NSEC3 records that proved `source` does not
    /// exist (they cannot cover the question); otherwise with no proof at all.
    WildcardReplay {
        /// A non-existent name the wildcard expands to, e.g. `zz.hosts.wild.test`.
        source: String,
        /// Keep the source's non-existence proof in the authority section.
        keep_proof: bool,
    },
    /// Redirection through an unsigned CNAME: the answer becomes `question CNAME target`
    /// (no RRSIG) followed by the upstream's answer for `target` (a name in an insecure zone,
    /// whose data is unsigned).
    ForgedCnameToInsecure {
        /// The name in an insecure zone, e.g. `_25._tcp.mx1.insecure.test`.
        target: String,
    },
    /// Another tampering, and the AD bit set in the forged answer's header.
    WithAdBit(Box<Tampering>),
}

impl Tampering {
    /// A short name for logs, e.g. `forged-nodata-foreign-soa`.
    pub fn label(&self) -> String {
        match self {
            Tampering::Identity => "identity".into(),
            Tampering::ForgedNoDataForeignSoa { .. } => "forged-nodata-foreign-soa".into(),
            Tampering::ForgedNxDomainForeignSoa { .. } => "forged-nxdomain-foreign-soa".into(),
            Tampering::ForgedDenialSignedSoaWithoutProof { .. } => {
                "forged-denial-signed-soa-without-proof".into()
            }
            Tampering::StripBehindCname { .. } => "strip-behind-cname".into(),
            Tampering::StripRrsigs => "strip-rrsigs".into(),
            Tampering::TruncateRrsigs => "truncate-rrsigs".into(),
            Tampering::CorruptRrsigs => "corrupt-rrsigs".into(),
            Tampering::ReplayOtherOwner { rename: false, .. } => "replay-other-owner".into(),
            Tampering::ReplayOtherOwner { rename: true, .. } => "replay-other-owner-renamed".into(),
            Tampering::ForgedUnsignedData { .. } => "forged-unsigned-data".into(),
            Tampering::ForeignNsecProof { .. } => "foreign-nsec-proof".into(),
            Tampering::ExpiredSignatures(_) => "expired-signatures".into(),
            Tampering::WildcardWithoutProof => "wildcard-without-proof".into(),
            Tampering::WildcardReplay { .. } => "wildcard-replay".into(),
            Tampering::ForgedCnameToInsecure { .. } => "forged-cname-to-insecure".into(),
            Tampering::WithAdBit(inner) => format!("{}+ad", inner.label()),
        }
    }

    /// The names the tampering refers to, checked when the proxy starts.
    fn names(&self) -> Vec<&str> {
        match self {
            Tampering::ForgedNoDataForeignSoa { soa_zone }
            | Tampering::ForgedNxDomainForeignSoa { soa_zone }
            | Tampering::ForgedDenialSignedSoaWithoutProof { soa_zone, .. } => vec![soa_zone],
            Tampering::StripBehindCname { foreign_soa } => {
                foreign_soa.iter().map(String::as_str).collect()
            }
            Tampering::ReplayOtherOwner { source, .. }
            | Tampering::ForgedUnsignedData { source }
            | Tampering::ForeignNsecProof { source, .. }
            | Tampering::WildcardReplay { source, .. } => vec![source],
            Tampering::ForgedCnameToInsecure { target } => vec![target],
            Tampering::WithAdBit(inner) => inner.names(),
            Tampering::Identity
            | Tampering::StripRrsigs
            | Tampering::TruncateRrsigs
            | Tampering::CorruptRrsigs
            | Tampering::ExpiredSignatures(_)
            | Tampering::WildcardWithoutProof => Vec::new(),
        }
    }
}

/// A [`Target`] and what to do to the answers it matches.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The questions.
    pub target: Target,
    /// The attack.
    pub tampering: Tampering,
}

impl Rule {
    /// A rule.
    pub fn new(target: Target, tampering: Tampering) -> Rule {
        Rule { target, tampering }
    }
}

/// A rule with its names parsed.
struct Compiled {
    rule: Rule,
    name: Name,
    types: Vec<RecordType>,
}

impl Compiled {
    /// The first name of `chain` (question name, then CNAME targets) the rule matches.
    fn hit<'a>(&self, qtype: RecordType, chain: &'a [Name]) -> Option<&'a Name> {
        if !self.types.contains(&qtype) {
            return None;
        }
        chain.iter().find(|n| {
            if self.rule.target.subtree {
                self.name.zone_of(n)
            } else {
                **n == self.name
            }
        })
    }
}

/// An absolute name from text (`"secure.test"`, `"secure.test."`, `"."`).
fn fqdn(text: &str) -> Result<Name, String> {
    let t = text.trim().trim_end_matches('.');
    if t.is_empty() {
        return Ok(Name::root());
    }
    Name::from_ascii(format!("{t}.")).map_err(|e| format!("bad name {text:?}: {e}"))
}

/// Counters and records of a proxy, shared with its tasks.
struct Shared {
    upstream: SocketAddr,
    /// The address upstream queries are sent from (the proxy's own, loopback).
    bind_ip: IpAddr,
    rules: Vec<Compiled>,
    queries: AtomicUsize,
    matched: AtomicUsize,
    fired: AtomicUsize,
    log: Mutex<Vec<String>>,
    fetched: Mutex<HashMap<(Name, RecordType), Message>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn note(&self, line: String) {
        lock(&self.log).push(line);
    }
}

/// An on-path DNS attacker: a UDP and TCP proxy to an upstream resolver that applies
/// [`Rule`]s to the answers (see the [module documentation](self)).
///
/// It runs a small single-threaded tokio runtime on a thread of its own; dropping it stops
/// the runtime, closes its sockets and joins the thread.
pub struct DnsTamper {
    listen: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _peer_claim: Option<PeerAddr>,
    _lab_claim: Option<LabAddr>,
}

impl fmt::Debug for DnsTamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsTamper")
            .field("listen", &self.listen)
            .field("upstream", &self.shared.upstream)
            .field("fired", &self.fired())
            .finish()
    }
}

impl DnsTamper {
    /// Starts a proxy on `listen` (UDP and TCP) relaying to `upstream`; both must be loopback.
    /// An unspecified `listen` IP (`0.0.0.0`) claims a free lab peer address
    /// ([`claim_peer_addr`](crate::claim_peer_addr); port 53 when `listen`'s is 0); a given IP
    /// with port 0 gets a free port (the same for UDP and TCP).
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        rules: impl IntoIterator<Item = Rule>,
    ) -> Result<DnsTamper, LabError> {
        if !(listen.ip().is_loopback() || listen.ip().is_unspecified())
            || !upstream.ip().is_loopback()
        {
            return Err(LabError::Proxy {
                listen,
                detail: format!(
                    "listen and upstream addresses must be loopback (upstream {upstream})"
                ),
            });
        }
        let (listen, claim) = resolve_addr(listen, 53)?;
        let mut proxy = Self::spawn(listen, upstream, rules.into_iter().collect())?;
        proxy._peer_claim = claim;
        Ok(proxy)
    }

    fn spawn(
        listen: SocketAddr,
        upstream: SocketAddr,
        rules: Vec<Rule>,
    ) -> Result<DnsTamper, LabError> {
        let error = |detail: String| LabError::Proxy { listen, detail };
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let name = fqdn(&rule.target.name).map_err(error)?;
            for n in rule.tampering.names() {
                fqdn(n).map_err(error)?;
            }
            let types = rule
                .target
                .types
                .iter()
                .map(|t| RecordType::from(*t))
                .collect();
            compiled.push(Compiled { rule, name, types });
        }
        let (udp, tcp) = bind_both(listen).map_err(|e| error(format!("cannot listen: {e}")))?;
        let listen = udp
            .local_addr()
            .map_err(|e| error(format!("local address: {e}")))?;
        for r in [udp.set_nonblocking(true), tcp.set_nonblocking(true)] {
            r.map_err(|e| error(format!("non-blocking socket: {e}")))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| error(format!("tokio runtime: {e}")))?;
        let shared = Arc::new(Shared {
            upstream,
            bind_ip: listen.ip(),
            rules: compiled,
            queries: AtomicUsize::new(0),
            matched: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            fetched: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("danemta-lab-dns-tamper-{listen}"))
                .spawn(move || {
                    runtime.block_on(serve(udp, tcp, shared, stopped));
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(|e| error(format!("proxy thread: {e}")))?
        };
        Ok(DnsTamper {
            listen,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            _peer_claim: None,
            _lab_claim: None,
        })
    }

    /// The address clients send queries to (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The resolver the proxy relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// Answers whose question matched a rule so far (tampered or not).
    pub fn matched(&self) -> usize {
        self.shared.matched.load(Ordering::Relaxed)
    }

    /// Answers the proxy rewrote so far.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::Relaxed)
    }

    /// One line per matching answer: the question, the tampering, what was done (or why
    /// nothing was), and upstream failures.
    pub fn log(&self) -> String {
        let log = lock(&self.shared.log);
        if log.is_empty() {
            return format!(
                "(dns tamper {}: {} queries, none matched)",
                self.listen,
                self.queries()
            );
        }
        log.join("\n")
    }
}

impl Drop for DnsTamper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds UDP and TCP on `addr`; with port 0, a port free for both.
fn bind_both(addr: SocketAddr) -> std::io::Result<(StdUdpSocket, StdListener)> {
    if addr.port() != 0 {
        // Retry a moment while the address is in use: a socket this process closed just now
        // may live on in a child another thread is spawning, until its `exec`.
        let mut tries = 0;
        let udp = loop {
            match StdUdpSocket::bind(addr) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 10 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                result => break result?,
            }
        };
        let tcp = process::bind_listener(addr)?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = StdUdpSocket::bind(addr)?;
        match StdListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

async fn serve(
    udp: StdUdpSocket,
    tcp: StdListener,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let (Ok(udp), Ok(tcp)) = (
        UdpSocket::from_std(udp),
        tokio::net::TcpListener::from_std(tcp),
    ) else {
        return;
    };
    let udp = Arc::new(udp);
    let udp_loop = {
        let shared = shared.clone();
        async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let query = buf[..n].to_vec();
                let (udp, shared) = (udp.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Some(reply) = answer(&shared, &query, Transport::Udp).await {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                });
            }
        }
    };
    let tcp_loop = async move {
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(tcp_client(stream, shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::select! {
        _ = udp_loop => {}
        _ = tcp_loop => {}
        _ = stopped => {}
    }
}

/// One TCP client: length-prefixed queries answered in turn (RFC 7766).
async fn tcp_client(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let mut len = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = answer(&shared, &query, Transport::Tcp).await else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Relays one query and tampers with the reply when a rule matches; `None`: no reply.
async fn answer(shared: &Shared, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    shared.queries.fetch_add(1, Ordering::Relaxed);
    let request = Message::from_vec(query).ok();
    let question = request
        .as_ref()
        .and_then(|r| r.queries.first())
        .map(|q| format!("{} {}", q.name, q.query_type))
        .unwrap_or_else(|| "(unparsable query)".into());
    let reply = match exchange(shared, query).await {
        Ok(reply) => reply,
        Err(e) => {
            shared.note(format!("{transport:?} {question}: upstream failed: {e}"));
            return None;
        }
    };
    let (Some(request), Ok(response)) = (request, Message::from_vec(&reply)) else {
        return Some(reply);
    };
    let Some(q) = request.queries.first() else {
        return Some(reply);
    };
    let chain = cname_chain(&response, &q.name);
    let Some((rule, hit)) = shared
        .rules
        .iter()
        .find_map(|r| r.hit(q.query_type, &chain).map(|hit| (r, hit.clone())))
    else {
        return Some(reply);
    };
    shared.matched.fetch_add(1, Ordering::Relaxed);
    let label = rule.rule.tampering.label();
    let forged = match tamper(shared, &rule.rule.tampering, q, &hit, response).await {
        Ok(Some((forged, detail))) => match forged.to_vec() {
            Ok(bytes) => {
                shared.fired.fetch_add(1, Ordering::Relaxed);
                shared.note(format!("{transport:?} {question}: {label}: {detail}"));
                (forged, bytes)
            }
            Err(e) => {
                shared.note(format!(
                    "{transport:?} {question}: {label}: cannot encode: {e}"
                ));
                return Some(reply);
            }
        },
        Ok(None) => {
            shared.note(format!(
                "{transport:?} {question}: {label}: nothing to tamper with, answer relayed"
            ));
            return Some(reply);
        }
        Err(e) => {
            shared.note(format!(
                "{transport:?} {question}: {label}: FAILED ({e}), answer relayed"
            ));
            return Some(reply);
        }
    };
    let (message, bytes) = forged;
    if transport == Transport::Udp {
        let limit = request
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload().max(512)));
        if bytes.len() > limit {
            shared.note(format!(
                "{transport:?} {question}: {} bytes over the client's {limit}: sent truncated",
                bytes.len()
            ));
            return message.truncate().to_vec().ok();
        }
    }
    Some(bytes)
}

/// The question name and every name the answer's CNAME chain leads to from it.
fn cname_chain(response: &Message, qname: &Name) -> Vec<Name> {
    let mut chain = vec![qname.clone()];
    while chain.len() < 16 {
        let last = &chain[chain.len() - 1];
        let next = response.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(CNAME(target)) if r.name == *last => Some(target.clone()),
            _ => None,
        });
        match next {
            Some(n) if !chain.contains(&n) => chain.push(n),
            _ => break,
        }
    }
    chain
}

/// The type an RRSIG covers.
fn covered(r: &Record) -> Option<RecordType> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(sig)) => Some(sig.input().type_covered),
        _ => None,
    }
}

/// Whether `r` is of type `t` or an RRSIG covering `t`.
fn of_type(r: &Record, t: RecordType) -> bool {
    r.record_type() == t || covered(r) == Some(t)
}

fn is_denial_record(r: &Record) -> bool {
    [RecordType::NSEC, RecordType::NSEC3]
        .iter()
        .any(|t| of_type(r, *t))
}

/// Whether an RRSIG signs a wildcard expansion (fewer labels than its owner).
fn is_expansion(r: &Record) -> bool {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(sig)) => sig.input().num_labels < r.name.num_labels(),
        _ => false,
    }
}

fn describe(records: &[Record]) -> String {
    if records.is_empty() {
        return "nothing".into();
    }
    let parts: Vec<String> = records
        .iter()
        .map(|r| match covered(r) {
            Some(t) => format!("{} RRSIG({t})", r.name),
            None => format!("{} {}", r.name, r.record_type()),
        })
        .collect();
    parts.join(", ")
}

/// Turns `m` into a denial: rcode, no answer, `authority`, no additional records.
fn denial(m: &mut Message, rcode: ResponseCode, authority: Vec<Record>) {
    m.metadata.response_code = rcode;
    m.answers.clear();
    m.authorities = authority;
    m.additionals.clear();
}

/// Applies one tampering to `m` (the upstream's answer to `q`; `hit` is the chain name the
/// target matched). `Ok(None)`: nothing to change.
async fn tamper(
    shared: &Shared,
    tampering: &Tampering,
    q: &Query,
    hit: &Name,
    mut m: Message,
) -> Result<Option<(Message, String)>, String> {
    let mut set_ad = false;
    let mut tampering = tampering;
    while let Tampering::WithAdBit(inner) = tampering {
        set_ad = true;
        tampering = inner;
    }
    let qtype = q.query_type;
    let detail = match tampering {
        Tampering::WithAdBit(_) => unreachable!("unwrapped above"),
        Tampering::Identity => "re-encoded only".to_string(),
        Tampering::ForgedNoDataForeignSoa { soa_zone }
        | Tampering::ForgedNxDomainForeignSoa { soa_zone } => {
            let soa = unsigned_soa(shared, soa_zone).await?;
            let rcode = match tampering {
                Tampering::ForgedNxDomainForeignSoa { .. } => ResponseCode::NXDomain,
                _ => ResponseCode::NoError,
            };
            let detail = format!("{rcode}, authority {}", describe(&soa));
            denial(&mut m, rcode, soa);
            detail
        }
        Tampering::ForgedDenialSignedSoaWithoutProof { soa_zone, nxdomain } => {
            let zone = fqdn(soa_zone)?;
            let fetched = fetch(shared, &zone, RecordType::SOA).await?;
            let soa: Vec<Record> = fetched
                .answers
                .into_iter()
                .filter(|r| r.name == zone && of_type(r, RecordType::SOA))
                .collect();
            if !soa.iter().any(|r| covered(r).is_some()) {
                return Err(format!("the SOA of {zone} is not signed"));
            }
            let rcode = if *nxdomain {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            let detail = format!("{rcode}, authority {}", describe(&soa));
            denial(&mut m, rcode, soa);
            detail
        }
        Tampering::StripBehindCname { foreign_soa } => {
            let before = m.answers.len();
            m.answers.retain(|r| !(r.name == *hit && of_type(r, qtype)));
            if m.answers.len() == before {
                return Ok(None);
            }
            let authority = match foreign_soa {
                Some(zone) => unsigned_soa(shared, zone).await?,
                None => Vec::new(),
            };
            let detail = format!(
                "{} {qtype} removed, kept {}, authority {}",
                hit,
                describe(&m.answers),
                describe(&authority)
            );
            m.metadata.response_code = ResponseCode::NoError;
            m.authorities = authority;
            m.additionals.clear();
            detail
        }
        Tampering::StripRrsigs => {
            let before = m.answers.len();
            m.answers.retain(|r| covered(r) != Some(qtype));
            if m.answers.len() == before {
                return Ok(None);
            }
            format!("{} RRSIG({qtype}) removed", before - m.answers.len())
        }
        Tampering::TruncateRrsigs | Tampering::CorruptRrsigs => {
            let mut changed = 0;
            for r in &mut m.answers {
                let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &r.data else {
                    continue;
                };
                if sig.input().type_covered != qtype {
                    continue;
                }
                let mut bytes = sig.sig().to_vec();
                if matches!(tampering, Tampering::TruncateRrsigs) {
                    bytes.truncate(bytes.len() / 2);
                } else {
                    let middle = bytes.len() / 2;
                    if let Some(b) = bytes.get_mut(middle) {
                        *b ^= 0x10;
                    }
                }
                r.data = RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(
                    sig.input().clone(),
                    bytes,
                )));
                changed += 1;
            }
            if changed == 0 {
                return Ok(None);
            }
            format!("{changed} RRSIG({qtype}) signature(s) damaged")
        }
        Tampering::ReplayOtherOwner { source, rename } => {
            let source = fqdn(source)?;
            let fetched = fetch(shared, &source, qtype).await?;
            let mut records: Vec<Record> = fetched
                .answers
                .into_iter()
                .filter(|r| r.name == source && of_type(r, qtype))
                .collect();
            if !records.iter().any(|r| r.record_type() == qtype) {
                return Err(format!("{source} has no {qtype} RRset upstream"));
            }
            if !records.iter().any(|r| covered(r).is_some()) {
                return Err(format!("the {qtype} RRset of {source} is not signed"));
            }
            if *rename {
                for r in &mut records {
                    r.name = q.name.clone();
                }
            }
            let detail = format!(
                "answer replaced by {}{}",
                describe(&records),
                if *rename {
                    format!(" (from {source})")
                } else {
                    String::new()
                }
            );
            denial(&mut m, ResponseCode::NoError, Vec::new());
            m.answers = records;
            detail
        }
        Tampering::ForgedUnsignedData { source } => {
            let source = fqdn(source)?;
            let fetched = fetch(shared, &source, qtype).await?;
            let mut records: Vec<Record> = fetched
                .answers
                .into_iter()
                .filter(|r| r.name == source && r.record_type() == qtype)
                .collect();
            if records.is_empty() {
                return Err(format!("{source} has no {qtype} RRset upstream"));
            }
            for r in &mut records {
                r.name = q.name.clone();
            }
            let detail = format!(
                "answer replaced by unsigned {} (from {source})",
                describe(&records)
            );
            denial(&mut m, ResponseCode::NoError, Vec::new());
            m.answers = records;
            detail
        }
        Tampering::ForeignNsecProof {
            source,
            source_type,
        } => {
            let source = fqdn(source)?;
            let source_type = RecordType::from(*source_type);
            let fetched = fetch(shared, &source, source_type).await?;
            let rcode = fetched.metadata.response_code;
            let positive = fetched
                .answers
                .iter()
                .any(|r| r.record_type() == source_type);
            if positive || !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                return Err(format!(
                    "{source} {source_type} is no denial upstream ({rcode})"
                ));
            }
            if !fetched.authorities.iter().any(is_denial_record) {
                return Err(format!(
                    "the denial of {source} {source_type} has no NSEC/NSEC3 records"
                ));
            }
            let detail = format!(
                "{rcode}, authority {} (the denial of {source} {source_type})",
                describe(&fetched.authorities)
            );
            denial(&mut m, rcode, fetched.authorities);
            detail
        }
        Tampering::ExpiredSignatures(expired) => {
            let mut replaced: Vec<(Name, RecordType, u32)> = Vec::new();
            for r in &m.answers {
                if let Some(t) = covered(r) {
                    let key = (r.name.to_lowercase(), t);
                    if expired.rrsigs.contains_key(&key)
                        && !replaced.iter().any(|(n, rt, _)| *n == key.0 && *rt == t)
                    {
                        replaced.push((key.0, t, r.ttl));
                    }
                }
            }
            if replaced.is_empty() {
                return Ok(None);
            }
            m.answers.retain(|r| {
                covered(r).is_none_or(|t| {
                    !replaced
                        .iter()
                        .any(|(n, rt, _)| *rt == t && *n == r.name.to_lowercase())
                })
            });
            let mut detail = Vec::new();
            for (name, t, ttl) in &replaced {
                for sig in expired
                    .rrsigs
                    .get(&(name.clone(), *t))
                    .into_iter()
                    .flatten()
                {
                    let mut sig = sig.clone();
                    sig.ttl = *ttl;
                    // Keep the owner's case as the answer has it.
                    if let Some(owner) = m.answers.iter().find(|r| r.name == *name) {
                        sig.name = owner.name.clone();
                    }
                    m.answers.push(sig);
                }
                detail.push(format!("{name} RRSIG({t})"));
            }
            format!("expired signatures for {}", detail.join(", "))
        }
        Tampering::WildcardWithoutProof => {
            if !m.answers.iter().any(is_expansion) {
                return Ok(None);
            }
            let before = m.authorities.len();
            m.authorities.retain(|r| !is_denial_record(r));
            if m.authorities.len() == before {
                return Ok(None);
            }
            format!(
                "{} NSEC/NSEC3 record(s) removed from a wildcard answer",
                before - m.authorities.len()
            )
        }
        Tampering::WildcardReplay { source, keep_proof } => {
            let source = fqdn(source)?;
            let fetched = fetch(shared, &source, qtype).await?;
            let mut records: Vec<Record> = fetched
                .answers
                .iter()
                .filter(|r| r.name == source && of_type(r, qtype))
                .cloned()
                .collect();
            if !records.iter().any(is_expansion) {
                return Err(format!(
                    "{source} {qtype} is no wildcard expansion upstream"
                ));
            }
            for r in &mut records {
                r.name = q.name.clone();
            }
            let proof: Vec<Record> = match keep_proof {
                true => fetched
                    .authorities
                    .into_iter()
                    .filter(is_denial_record)
                    .collect(),
                false => Vec::new(),
            };
            let detail = format!(
                "answer replaced by the expansion for {source}, renamed; authority {}",
                describe(&proof)
            );
            denial(&mut m, ResponseCode::NoError, proof);
            m.answers = records;
            detail
        }
        Tampering::ForgedCnameToInsecure { target } => {
            let target = fqdn(target)?;
            let fetched = fetch(shared, &target, qtype).await?;
            let mut answers = vec![Record::from_rdata(
                q.name.clone(),
                300,
                RData::CNAME(CNAME(target.clone())),
            )];
            answers.extend(
                fetched
                    .answers
                    .into_iter()
                    .filter(|r| r.record_type() != RecordType::RRSIG),
            );
            let detail = format!("answer replaced by {}", describe(&answers));
            denial(&mut m, fetched.metadata.response_code, Vec::new());
            m.answers = answers;
            detail
        }
    };
    if set_ad {
        m.metadata.authentic_data = true;
    }
    Ok(Some((m, detail)))
}

/// The SOA of `zone` without any RRSIG.
async fn unsigned_soa(shared: &Shared, zone: &str) -> Result<Vec<Record>, String> {
    let zone = fqdn(zone)?;
    let fetched = fetch(shared, &zone, RecordType::SOA).await?;
    let soa: Vec<Record> = fetched
        .answers
        .into_iter()
        .filter(|r| r.name == zone && r.record_type() == RecordType::SOA)
        .collect();
    if soa.is_empty() {
        return Err(format!("no SOA for {zone} upstream"));
    }
    Ok(soa)
}

/// The upstream's answer to `name`/`rtype` (RD, DO=1, over TCP), asked once per proxy.
async fn fetch(shared: &Shared, name: &Name, rtype: RecordType) -> Result<Message, String> {
    let key = (name.to_lowercase(), rtype);
    if let Some(m) = lock(&shared.fetched).get(&key) {
        return Ok(m.clone());
    }
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), rtype));
    query.metadata.recursion_desired = true;
    let mut edns = Edns::new();
    edns.set_max_payload(4096).set_dnssec_ok(true);
    query.set_edns(edns);
    let bytes = query
        .to_vec()
        .map_err(|e| format!("encoding {name} {rtype}: {e}"))?;
    let reply = tcp_exchange(shared, &bytes).await?;
    let m = Message::from_vec(&reply).map_err(|e| format!("{name} {rtype}: {e}"))?;
    if m.metadata.response_code == ResponseCode::ServFail {
        return Err(format!("{name} {rtype}: SERVFAIL upstream"));
    }
    lock(&shared.fetched).insert(key, m.clone());
    Ok(m)
}

/// One query to the upstream: UDP (two tries), TCP when truncated.
async fn exchange(shared: &Shared, query: &[u8]) -> Result<Vec<u8>, String> {
    let mut last = String::new();
    for _ in 0..2 {
        match udp_exchange(shared, query).await {
            Ok(reply) if reply.get(2).is_some_and(|b| b & 0x02 != 0) => {
                return tcp_exchange(shared, query).await;
            }
            Ok(reply) => return Ok(reply),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn udp_exchange(shared: &Shared, query: &[u8]) -> Result<Vec<u8>, String> {
    let socket = UdpSocket::bind((shared.bind_ip, 0))
        .await
        .map_err(|e| format!("udp bind: {e}"))?;
    socket
        .connect(shared.upstream)
        .await
        .map_err(|e| format!("udp connect: {e}"))?;
    socket
        .send(query)
        .await
        .map_err(|e| format!("udp send: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| format!("no UDP answer from {} in time", shared.upstream))?
            .map_err(|e| format!("udp recv: {e}"))?;
        // Only the answer to this query (same ID).
        if n >= 12 && buf[..2] == query[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

async fn tcp_exchange(shared: &Shared, query: &[u8]) -> Result<Vec<u8>, String> {
    let work = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("tcp socket: {e}"))?;
        socket
            .bind(SocketAddr::new(shared.bind_ip, 0))
            .map_err(|e| format!("tcp bind: {e}"))?;
        let mut stream = socket
            .connect(shared.upstream)
            .await
            .map_err(|e| format!("tcp connect: {e}"))?;
        let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("tcp write: {e}"))?;
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("tcp read: {e}"))?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| format!("tcp read: {e}"))?;
        Ok(reply)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT * 2, work)
        .await
        .map_err(|_| format!("no TCP answer from {} in time", shared.upstream))?
}

/// RRSIGs made with the lab zones' real keys whose validity window has passed, per RRset
/// (owner, covered type), read from the side files of
/// [`LabBuilder::expired_signature_copies`](crate::LabBuilder::expired_signature_copies).
#[derive(Default)]
pub struct ExpiredSignatures {
    rrsigs: HashMap<(Name, RecordType), Vec<Record>>,
}

impl fmt::Debug for ExpiredSignatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExpiredSignatures({} RRsets)", self.rrsigs.len())
    }
}

impl ExpiredSignatures {
    /// The expired RRSIGs of every signed zone of `lab`, which must have been built with
    /// [`LabBuilder::expired_signature_copies`](crate::LabBuilder::expired_signature_copies).
    pub fn from_lab(lab: &Lab) -> Result<ExpiredSignatures, LabError> {
        let files: Vec<PathBuf> = lab
            .zones()
            .filter_map(|z| lab.expired_zone_file(z))
            .collect();
        if files.is_empty() {
            return Err(LabError::zone(
                ".",
                "the lab has no expired signature copies: build it with \
                 LabBuilder::expired_signature_copies(true)",
            ));
        }
        Self::from_zone_files(&files)
    }

    /// The RRSIG records of signed zone files (ldns-signzone output, one record per line).
    pub fn from_zone_files(files: &[impl AsRef<Path>]) -> Result<ExpiredSignatures, LabError> {
        let mut all = ExpiredSignatures::default();
        for file in files {
            let path = file.as_ref();
            let text = fs::read_to_string(path)
                .map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
            for (i, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                if fields.len() < 5 || !fields[3].eq_ignore_ascii_case("RRSIG") {
                    continue;
                }
                let record = parse_rrsig(&fields).map_err(|e| {
                    LabError::zone(
                        path.display().to_string(),
                        format!("line {}: {e}: {line}", i + 1),
                    )
                })?;
                let key = (
                    record.name.to_lowercase(),
                    covered(&record).unwrap_or(RecordType::NULL),
                );
                all.rrsigs.entry(key).or_default().push(record);
            }
        }
        Ok(all)
    }

    /// How many RRsets have expired signatures.
    pub fn len(&self) -> usize {
        self.rrsigs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rrsigs.is_empty()
    }

    /// Whether the RRset `owner`/`rtype` has expired signatures.
    pub fn covers(&self, owner: &str, rtype: u16) -> bool {
        fqdn(owner).is_ok_and(|n| {
            self.rrsigs
                .contains_key(&(n.to_lowercase(), RecordType::from(rtype)))
        })
    }
}

/// An RRSIG record from its presentation fields: owner TTL class RRSIG covered algorithm
/// labels original-TTL expiration inception key-tag signer signature….
fn parse_rrsig(f: &[&str]) -> Result<Record, String> {
    if f.len() < 13 {
        return Err("too few fields".into());
    }
    let num = |s: &str, what: &str| -> Result<u64, String> {
        s.parse().map_err(|_| format!("bad {what} {s:?}"))
    };
    let owner = fqdn(f[0])?;
    let ttl = u32::try_from(num(f[1], "TTL")?).map_err(|_| "TTL too large")?;
    let type_covered: RecordType = f[4]
        .parse()
        .map_err(|_| format!("unknown type {:?}", f[4]))?;
    let algorithm =
        Algorithm::from_u8(u8::try_from(num(f[5], "algorithm")?).map_err(|_| "bad algorithm")?);
    let num_labels = u8::try_from(num(f[6], "labels")?).map_err(|_| "bad labels")?;
    let original_ttl = u32::try_from(num(f[7], "original TTL")?).map_err(|_| "bad TTL")?;
    let expiration = sig_time(f[8])?;
    let inception = sig_time(f[9])?;
    let key_tag = u16::try_from(num(f[10], "key tag")?).map_err(|_| "bad key tag")?;
    let signer_name = fqdn(f[11])?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(f[12..].concat())
        .map_err(|e| format!("bad signature: {e}"))?;
    let input = SigInput {
        type_covered,
        algorithm,
        num_labels,
        original_ttl,
        sig_expiration: SerialNumber::new(expiration),
        sig_inception: SerialNumber::new(inception),
        key_tag,
        signer_name,
    };
    Ok(Record::from_rdata(
        owner,
        ttl,
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
    ))
}

/// An RRSIG time: `YYYYMMDDHHmmSS` (UTC) or seconds since 1970 (RFC 4034 §3.2).
fn sig_time(text: &str) -> Result<u32, String> {
    let bad = || format!("bad signature time {text:?}");
    if text.len() != 14 {
        return text.parse().map_err(|_| bad());
    }
    let part = |range: std::ops::Range<usize>| -> Result<u32, String> {
        text.get(range).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    let month =
        time::Month::try_from(u8::try_from(part(4..6)?).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(part(0..4)?).map_err(|_| bad())?,
        month,
        u8::try_from(part(6..8)?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let stamp = date
        .with_hms(
            u8::try_from(part(8..10)?).map_err(|_| bad())?,
            u8::try_from(part(10..12)?).map_err(|_| bad())?,
            u8::try_from(part(12..14)?).map_err(|_| bad())?,
        )
        .map_err(|_| bad())?
        .assume_utc()
        .unix_timestamp();
    u32::try_from(stamp).map_err(|_| bad())
}

/// Zones with wildcards, for wildcard attacks: `wild.test` (NSEC, hosts `127.0.18.H`) and
/// `wild3.test` (NSEC3, `127.0.19.H`), each with the same records:
///
/// | owner | records | what it gives |
/// |---|---|---|
/// | `@` | MX 10 `mx1`, MX 20 `mx2` | |
/// | `mx1`, `mx2` | A, AAAA | |
/// | `_25._tcp.mx1` | TLSA 3 1 1 | its own TLSA |
/// | `*._tcp.mx1` | TLSA 3 1 1 (another digest) | expansions for other ports of `mx1` (`_99._tcp.mx1`) |
/// | `*._tcp.mx2` | TLSA 3 1 1 | `_25._tcp.mx2` exists only by expansion |
/// | `*.mail` | MX 10 `mx1` | `x.mail.<zone>` has MX by expansion |
/// | `exact.mail` | MX 10 `mx2` | its own MX |
/// | `*.hosts` | A, AAAA (`.9`) | `a.hosts.<zone>` has addresses by expansion |
/// | `exact.hosts` | A, AAAA (`.10`) | its own addresses |
/// | `viahosts` | MX 10 `a.hosts` | a domain whose MX host exists by expansion |
/// | `viaexact` | MX 10 `exact.hosts` | a domain whose MX host has its own addresses |
///
/// The wildcard attacks: strip the proof from an expansion ([`Tampering::WildcardWithoutProof`]
/// on `x.mail` MX, `a.hosts` A/AAAA, `_25._tcp.mx2` TLSA), or replay an expansion over a name
/// with its own data ([`Tampering::WildcardReplay`] from `zz.mail`, `zz.hosts`,
/// `_99._tcp.mx1` onto `exact.mail`, `exact.hosts`, `_25._tcp.mx1`).
pub fn wildcard_zones() -> Vec<ZoneSpec> {
    [
        ("wild.test", Signing::Secure, 18u8),
        ("wild3.test", Signing::Nsec3, 19),
    ]
    .into_iter()
    .map(|(zone, signing, k)| {
        let host = |owner: &str, h: u8| {
            format!("{owner} A 127.0.{k}.{h}\n{owner} AAAA ::ffff:127.0.{k}.{h}\n")
        };
        let tlsa = |owner: &str| {
            format!(
                "{owner} TLSA 3 1 1 {}\n",
                fake_digest(&format!("3:{owner}.{zone}"))
            )
        };
        let mut r = String::from("@ MX 10 mx1\n@ MX 20 mx2\n");
        r += &host("mx1", 1);
        r += &host("mx2", 2);
        r += &tlsa("_25._tcp.mx1");
        r += &tlsa("*._tcp.mx1");
        r += &tlsa("*._tcp.mx2");
        r += "*.mail MX 10 mx1\nexact.mail MX 10 mx2\n";
        r += &host("*.hosts", 9);
        r += &host("exact.hosts", 10);
        r += "viahosts MX 10 a.hosts\nviaexact MX 10 exact.hosts\n";
        ZoneSpec::new(zone, r, signing)
    })
    .collect()
}

/// A validating Unbound of the lab's own, forwarding every query to one address
/// ([`Lab::validating_forwarder`]). Dropping it stops the process and removes its files.
pub struct UnboundHandle {
    addr: SocketAddr,
    name: String,
    dir: PathBuf,
    child: Child,
    keep: bool,
    _claim: LabAddr,
}

impl fmt::Debug for UnboundHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundHandle")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish()
    }
}

impl UnboundHandle {
    /// Where it answers (port 53).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The tail of its log (with `val-log-level: 2`, why an answer was bogus).
    pub fn log(&self) -> String {
        let mut s = String::new();
        for ext in ["log", "out"] {
            let path = self.dir.join(format!("{}.{ext}", self.name));
            let t = process::tail(&path, 40);
            if !t.trim().is_empty() {
                s.push_str(&format!("--- {} ---\n{t}\n", path.display()));
            }
        }
        s
    }
}

impl Drop for UnboundHandle {
    fn drop(&mut self) {
        let pgid = self.child.id();
        process::terminate_groups(&[pgid], Duration::from_secs(3));
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_pgid(&self.dir, pgid);
        if !self.keep {
            for ext in ["conf", "log", "out", "pid"] {
                let _ = fs::remove_file(self.dir.join(format!("{}.{ext}", self.name)));
            }
        }
    }
}

/// Serialises edits of a lab's `pgids` file by forwarders (the lab's own servers write it
/// only while the lab starts, before any forwarder exists).
static PGIDS: Mutex<()> = Mutex::new(());

fn remember_pgid(dir: &Path, pgid: u32) -> Result<(), LabError> {
    let _guard = lock(&PGIDS);
    process::record_pgid(dir, pgid)
}

/// Removes a stopped forwarder's process group from the list the watchdog kills, so that the
/// watchdog never signals a group whose ID was reused.
fn forget_pgid(dir: &Path, pgid: u32) {
    let _guard = lock(&PGIDS);
    let path = dir.join("pgids");
    let Ok(text) = fs::read_to_string(&path) else {
        return;
    };
    let kept: String = text
        .lines()
        .filter(|l| l.trim() != pgid.to_string())
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = fs::write(&path, kept);
}

impl Lab {
    /// A [`DnsTamper`] on a claimed address of the lab's block ([`Lab::claim_addr`], port 53)
    /// in front of the lab's non-validating resolver ([`Lab::plain_resolver`]).
    pub fn dns_tamper(&self, rules: impl IntoIterator<Item = Rule>) -> Result<DnsTamper, LabError> {
        let claim = self.claim_addr()?;
        let listen = SocketAddr::new(IpAddr::V4(claim.ip()), 53);
        let mut proxy =
            DnsTamper::spawn(listen, self.plain_resolver(), rules.into_iter().collect())?;
        proxy._lab_claim = Some(claim);
        Ok(proxy)
    }

    /// Starts a fresh validating Unbound (empty cache, the lab's trust anchor, the lab's
    /// validating settings) on a claimed address of the lab's block ([`Lab::claim_addr`],
    /// port 53) that sends every query to `upstream` (`forward-zone: "."`), typically a
    /// [`DnsTamper`]: the reference that shows a tampering is a forgery (it answers SERVFAIL).
    /// Returns once it answers; dropping the handle stops it. Startup takes some 10-50 ms.
    pub fn validating_forwarder(&self, upstream: SocketAddr) -> Result<UnboundHandle, LabError> {
        if !upstream.ip().is_loopback() {
            return Err(LabError::Proxy {
                listen: upstream,
                detail: "a forwarder's upstream must be loopback".into(),
            });
        }
        // Another try on another address if Unbound exits at once (e.g. its address was still
        // held for a moment by a child process another thread was spawning).
        let mut tries = 0;
        loop {
            match self.start_forwarder(upstream) {
                Err(LabError::ServerExited { .. }) if tries < 2 => tries += 1,
                result => return result,
            }
        }
    }

    fn start_forwarder(&self, upstream: SocketAddr) -> Result<UnboundHandle, LabError> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let claim = self.claim_addr()?;
        let addr = SocketAddr::new(IpAddr::V4(claim.ip()), 53);
        let name = format!(
            "unbound-forwarder-{}-{}",
            claim.ip().octets()[3],
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let tlds: Vec<String> = self
            .zones
            .iter()
            .filter(|(_, tier)| *tier == Tier::Tld)
            .map(|(z, _)| z.clone())
            .collect();
        let conf = self.dir.join(format!("{name}.conf"));
        crate::write(
            &conf,
            &config::unbound_forwarder_conf(
                &self.dir,
                &name,
                claim.ip(),
                &self.trust_anchor,
                &tlds,
                upstream,
            ),
        )?;
        let child = process::spawn_server(
            &name,
            &self.unbound,
            &["-d".as_ref(), "-c".as_ref(), conf.as_os_str()],
            &self.dir,
        )?;
        let mut handle = UnboundHandle {
            addr,
            name,
            dir: self.dir.clone(),
            child,
            keep: self.keep,
            _claim: claim,
        };
        remember_pgid(&self.dir, handle.child.id())?;
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut last;
        loop {
            if let Ok(Some(status)) = handle.child.try_wait() {
                return Err(LabError::ServerExited {
                    server: handle.name.clone(),
                    status: status.to_string(),
                    logs: handle.log(),
                });
            }
            let options = QueryOptions::recursive().with_timeout(Duration::from_millis(250));
            match crate::dns::query(addr, "localhost.", rtype::A, options) {
                Ok(r) if r.rcode == rcode::NOERROR => return Ok(handle),
                Ok(r) => last = r.summary(),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    server: handle.name.clone(),
                    timeout: Duration::from_secs(8),
                    last,
                    logs: handle.log(),
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldns_rrsig_lines() {
        let line = "_25._tcp.mx1.secure.test.\t300\tIN\tRRSIG\tTLSA 13 5 300 20260101000000 \
                    20251202000000 12345 secure.test. AAECAwQFBgc=";
        let fields: Vec<&str> = line.split_whitespace().collect();
        let r = parse_rrsig(&fields).unwrap();
        assert_eq!(r.name, fqdn("_25._tcp.mx1.secure.test").unwrap());
        let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &r.data else {
            panic!("not an RRSIG: {r:?}");
        };
        assert_eq!(sig.input().type_covered, RecordType::TLSA);
        assert_eq!(sig.input().num_labels, 5);
        assert_eq!(sig.input().key_tag, 12345);
        assert_eq!(sig.input().sig_expiration.get(), 1_767_225_600);
        assert_eq!(sig.sig(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(sig_time("1767225600").unwrap(), 1_767_225_600);
        assert!(sig_time("2026013100000x").is_err());
    }

    #[test]
    fn targets_match_names_and_cname_chains() {
        let rule = |target| Compiled {
            rule: Rule::new(target, Tampering::Identity),
            name: fqdn("mx1.secure.test").unwrap(),
            types: vec![RecordType::A],
        };
        let chain = [
            fqdn("mail.cname-mx.test").unwrap(),
            fqdn("MX1.secure.test.").unwrap(),
        ];
        let exact = rule(Target::exact("mx1.secure.test", &[rtype::A]));
        assert_eq!(exact.hit(RecordType::A, &chain), Some(&chain[1]));
        assert_eq!(exact.hit(RecordType::AAAA, &chain), None);
        assert_eq!(exact.hit(RecordType::A, &chain[..1]), None);
        let sub = rule(Target::subtree("secure.test", &[rtype::A]));
        let sub = Compiled {
            name: fqdn("secure.test").unwrap(),
            ..sub
        };
        assert_eq!(sub.hit(RecordType::A, &chain), Some(&chain[1]));
        assert_eq!(
            Target::subtree("secure.test", &[rtype::A, rtype::AAAA]).to_string(),
            "*.secure.test A/AAAA"
        );
    }

    #[test]
    fn wildcard_zones_plan() {
        let zones = wildcard_zones();
        assert_eq!(zones.len(), 2);
        assert!(zones[0].records.contains("*.hosts A 127.0.18.9"));
        assert_eq!(zones[1].signing, Signing::Nsec3);
        crate::zone::plan(&zones).unwrap();
    }
}
