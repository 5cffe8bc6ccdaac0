//! # danemta-lab: a private DNSSEC hierarchy on loopback, for tests
//!
//! Test support only (`publish = false`). This crate owns the **DNSSEC test lab**: it starts,
//! from Rust, a private DNS tree served by real software, so that danemta's DNSSEC back-ends and
//! its DANE route logic (RFC 7672) are tested against real validators and real signed zones,
//! never against the Internet:
//!
//! * three **NSD** authoritative servers: the private root `.`, the top-level domains
//!   (`test.`), and every deeper zone (`secure.test.`, …);
//! * zones signed by **ldns-signzone** (one ECDSAP256SHA256 key per zone, flags 257, as a
//!   combined signing key), DS records of signed children in their parents, NS and glue
//!   generated, and some zones broken on purpose ([`Signing`]);
//! * two **Unbound** recursive resolvers iterating from the lab root: a *validating* one using
//!   the lab root's trust anchor ([`Lab::validating_resolver`], for the "trust the AD bit"
//!   back-end) and a *non-validating* one (`module-config: "iterator"`,
//!   [`Lab::plain_resolver`]) that hands RRSIG/NSEC/NSEC3 records to clients asking with DO=1,
//!   for the in-process validating back-end;
//! * a trust-anchor file ([`Lab::trust_anchor_file`]): the root DNSKEY in zone-file syntax,
//!   readable by hickory (`TrustAnchors::from_file`) and Unbound; the DS form is in
//!   [`Lab::trust_anchor_ds_file`].
//!
//! It also has a tiny DNS client ([`dns`]) to probe servers and check answers, an **attacker on
//! the DNS path** (see [DNS tampering](#dns-tampering)): a proxy that forges answers
//! ([`tamper`]) and a fresh validating Unbound behind it as the reference, and the **SMTP
//! peers** a DANE client meets (see [SMTP peers](#smtp-peers)): real Postfix receivers
//! ([`smtp`]), attackers in the path ([`attack`]) and test certificates with their TLSA records
//! ([`pki`]).
//!
//! Needs the Debian packages `nsd`, `unbound` and `ldnsutils` (and `postfix` for receivers), and
//! root (port 53: Unbound only iterates to port 53; port 25). Nothing is sent anywhere but
//! 127.0.0.0/8.
//!
//! ```no_run
//! use danemta_lab::dns::{self, rcode, rtype, QueryOptions};
//! // One standard lab per test process, torn down when the process exits.
//! let lab = danemta_lab::shared().expect("DNSSEC lab");
//! let r = dns::query(lab.validating_resolver(), "secure.test", rtype::MX, QueryOptions::recursive())?;
//! assert!(r.rcode == rcode::NOERROR && r.authentic_data);
//!
//! // A lab of your own, e.g. with TLSA records matching your test server's certificate.
//! use danemta_lab::{Lab, ZoneSpec};
//! let lab = Lab::builder()
//!     .standard_zones()
//!     .zone(ZoneSpec::secure("mine.test", "@ MX 10 mx\nmx A 127.0.0.1\n_25._tcp.mx TLSA 3 1 1 ab12…"))
//!     .start()?;
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! ## Addresses
//!
//! Each lab claims a free block `127.53.N.0/24` (N = 1…254; checked by binding port 53 on its
//! addresses, and held by a lock file), so labs of concurrent test processes do not collide and
//! a system resolver on 127.0.0.1:53 does not matter. In the block, all on port 53:
//!
//! | address | server | serves |
//! |---|---|---|
//! | 127.53.N.1 | NSD `nsd-root` | the root zone `.` (server name `ns.`) |
//! | 127.53.N.2 | NSD `nsd-tld` | `test.` and any other TLD (`ns.test.`) |
//! | 127.53.N.3 | NSD `nsd-leaf` | every zone below a TLD (`ns.<zone>`) |
//! | 127.53.N.4 | Unbound `unbound-validating` | [`Lab::validating_resolver`] |
//! | 127.53.N.5 | Unbound `unbound-plain` | [`Lab::plain_resolver`] |
//! | 127.53.N.16 … 127.53.N.254 | claimed by tests ([`Lab::claim_addr`]): [`DnsTamper`] proxies ([`Lab::dns_tamper`]), validating forwarders ([`Lab::validating_forwarder`]) | whatever they are given |
//!
//! Hosts in the standard zones have addresses `127.0.K.H` (K = the row below, H = host) and
//! AAAA `::ffff:127.0.K.H` (IPv4-mapped, so even IPv6 connections stay on loopback); nothing
//! listens there. Zones you add may point anywhere in 127.0.0.0/8, e.g. at your own test
//! servers.
//!
//! SMTP peers live elsewhere in 127.0.0.0/8, on port 25 by default (a DANE client connects to
//! port 25 of the MX address):
//!
//! | range | for |
//! |---|---|
//! | 127.53.N.0/24 | the DNS labs (above) |
//! | 127.0.1.0/24 … 127.0.17.0/24 | hosts of the standard zones (nothing listens there) |
//! | 127.0.30.0/24 … 127.0.39.0/24 | SMTP peers at addresses a test chooses itself, e.g. `127.0.30.1:25`; the test must keep them unique across tests that run at the same time (`cargo nextest` runs every test in a process of its own, in parallel) |
//! | 127.0.40.0/24 … 127.0.49.0/24 | SMTP peers with claimed addresses: give an unspecified IP (`0.0.0.0:25`, [`ReceiverSpec::new`]) and the receiver or proxy claims the first free `127.0.K.H:port` ([`claim_peer_addr`]: a lock file per address and port in `/tmp/danemta-lab`, so concurrent tests and processes never collide) |
//!
//! ## DNS tampering
//!
//! An on-path attacker between a DNS client and the lab's resolver, and the reference that
//! proves each attack is a forgery (module [`tamper`]; the tests of danemta are in
//! `crates/dns/tests/tampering.rs`):
//!
//! | item | what it is |
//! |---|---|
//! | [`DnsTamper`] ([`Lab::dns_tamper`], [`DnsTamper::start`]) | an in-process DNS proxy (UDP and TCP, its own tokio runtime) in front of [`Lab::plain_resolver`] that applies a [`Tampering`] to answers whose question matches a [`Target`] (name or subtree, types; CNAME chains followed); counts what it rewrote ([`DnsTamper::fired`]) and logs it |
//! | [`Tampering`] | the attacks: forged NODATA/NXDOMAIN with a foreign unsigned SOA or a signed SOA without proof, data stripped behind a signed CNAME, RRSIGs stripped, truncated or corrupted, another owner's signed RRset (as is or renamed), unsigned data, NSEC/NSEC3 denials of another zone or name, expired signatures, wildcard answers without proof or replayed over a name with its own data, an unsigned CNAME into an insecure zone, the AD bit set; and `Identity` (re-encode only), the control |
//! | [`Lab::validating_forwarder`] → [`UnboundHandle`] | a fresh validating Unbound (empty cache, the lab's trust anchor) forwarding every query to an address, e.g. the proxy: a real forgery makes it answer SERVFAIL |
//! | [`LabBuilder::expired_signature_copies`], [`Lab::expired_zone_file`], [`ExpiredSignatures`] | every signed zone signed again with the same key and signatures that expired 30 days ago (a side file no server serves), and its RRSIGs per RRset, for [`Tampering::ExpiredSignatures`] |
//! | [`tamper::wildcard_zones`] | `wild.test` (NSEC) and `wild3.test` (NSEC3): wildcard MX, A/AAAA and TLSA next to names with their own data (hosts `127.0.18.H`, `127.0.19.H`), for the wildcard attacks |
//!
//! ```no_run
//! use danemta_lab::dns::{self, rcode, rtype, QueryOptions};
//! use danemta_lab::{Lab, Rule, Target, Tampering};
//! let lab = danemta_lab::shared().expect("DNSSEC lab");
//! let tamper = lab.dns_tamper([Rule::new(
//!     Target::exact("_25._tcp.mx1.secure.test", &[rtype::TLSA]),
//!     Tampering::ForgedNoDataForeignSoa { soa_zone: "insecure.test".into() },
//! )])?;
//! let reference = lab.validating_forwarder(tamper.addr())?;
//! let r = dns::query(reference.addr(), "_25._tcp.mx1.secure.test", rtype::TLSA, QueryOptions::recursive())?;
//! assert_eq!(r.rcode, rcode::SERVFAIL);
//! assert!(tamper.fired() > 0);
//! // … the client under test asks tamper.addr() and must not accept the forgery.
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! ## SMTP peers
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use danemta_lab::pki::{self, TestCert};
//! use danemta_lab::{Lab, Mitm, Receiver, ReceiverSpec, StripStartTls, ZoneSpec};
//!
//! // A Postfix receiver offering STARTTLS with a self-signed certificate, on a claimed address.
//! let cert = TestCert::self_signed(&["mx.mine.test"])?;
//! let rx = Receiver::start(ReceiverSpec::new("mx.mine.test", &["mine.test"]).with_tls(&cert))?;
//! // A signed zone pointing at it, with the matching DANE-EE record.
//! let lab = Lab::builder()
//!     .zone(ZoneSpec::secure(
//!         "mine.test",
//!         format!("@ MX 10 mx\nmx A {}\n_25._tcp.mx TLSA {}\n", rx.addr().ip(), pki::tlsa_3_1_1(&cert)),
//!     ))
//!     .start()?;
//! // … run the client under test against lab.validating_resolver() …
//! let mail = rx.wait_delivered(1, Duration::from_secs(10)); // full message texts
//! assert!(mail[0].contains("(using TLSv1.3 with cipher"));
//! assert!(rx.log().contains("TLS connection established from"));
//!
//! // Attackers in front of it: STARTTLS stripped, or TLS terminated with another certificate.
//! let any = SocketAddr::from(([0, 0, 0, 0], 25));
//! let strip = StripStartTls::start(any, rx.addr())?;
//! let attacker = TestCert::self_signed(&["mx.mine.test"])?;
//! let mitm = Mitm::start(any, rx.addr(), &attacker.chain_pem, &attacker.key_pem)?;
//! // … point MX records at strip.addr() / mitm.addr(), run the client …
//! assert!(!strip.client_sent_mail(), "{}", strip.transcript());
//! assert!(mitm.client_hellos() >= 1 && !mitm.client_sent_mail());
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! * [`Receiver`] (module [`smtp`]): a Postfix instance of its own (config, queue, data
//!   directory, Maildir and log under `/tmp/danemta-lab/smtp-…`), its `master` a child of the
//!   test process, its `smtpd` bound to exactly [`Receiver::addr`]. STARTTLS is offered only with
//!   [`ReceiverTls::Cert`]. Recipients in [`ReceiverSpec::accept_domains`] are delivered to a
//!   Maildir ([`Receiver::delivered`], [`Receiver::wait_delivered`]); others are refused with
//!   `554 5.7.1 … Relay access denied`. [`Receiver::log`] is Postfix's log, complete up to the
//!   call (TLS lines such as `Anonymous TLS connection established from …: TLSv1.3 with cipher
//!   …`); delivered messages carry `Received: … (using TLSv1.3 with cipher …)` when TLS was
//!   used. Startup takes 20-200 ms. Needs the Debian package `postfix` (its system instance
//!   need not run; it is never touched).
//! * [`StripStartTls`] and [`Mitm`] (module [`attack`]): in-process proxies (a small tokio
//!   runtime each) that relay to an upstream address. The first hides STARTTLS (removed from
//!   EHLO, the command answered `502 5.5.1 not implemented`); the second answers STARTTLS
//!   itself, presents the attacker's certificate and relays the decrypted session to the
//!   upstream **in plaintext**. Both keep a transcript of what clients sent and say whether any
//!   `MAIL`/`RCPT`/`DATA`/`BDAT` came through ([`StripStartTls::client_sent_mail`]).
//! * [`pki`]: [`pki::TestCert`] (self-signed, CA-signed with or without the CA in the chain,
//!   expired) and [`pki::TestCa`], with [`pki::tlsa_3_1_1`] and [`pki::tlsa_2_x_1`].
//! * [`https::HttpsServer`] (module [`https`]): an in-process HTTPS server (MTA-STS policy
//!   hosts) choosing its certificate by SNI, with per-host routes that answer, redirect, send
//!   an endless body or stall.
//! * [`mta_sts::MtaSts`] (module [`mta_sts`]): MTA-STS domains in one call: a private CA with
//!   its PEM file for `--ca-file`, the policy host of several domains on one HTTPS server, the
//!   zone records each domain needs, and MX certificates that pass or fail PKIX.
//! * [`postgres::Postgres`] (module [`postgres`]): a private PostgreSQL server (`initdb` in
//!   `/tmp/danemta-lab/pg-…`, 127.0.0.1 on a free port, run as the `postgres` user when the
//!   tests run as root) with a fresh database per test ([`postgres::Postgres::create_database`]),
//!   stopped, killed and restarted on demand, stopped by PID on drop: the shared queue store of
//!   the relay is tested on it. Needs the Debian package `postgresql`.
//!
//! Dropping a receiver kills its processes (by process group; a watchdog does it when the test
//! process dies without dropping it, as for the DNS lab) and removes its directory
//! (`DANEMTA_LAB_KEEP=1` keeps it as `/tmp/danemta-lab/kept-smtp-…`). Dropping a proxy stops its
//! runtime, closing the listener and every relayed connection.
//!
//! ## Standard scenarios ([`Lab::standard`], [`standard_zones`])
//!
//! `mx1`/`mx2` have A and AAAA records unless noted; TLSA records are `3 1 1` with made-up
//! digests ([`fake_digest`]). "AD" means the validating resolver answers NOERROR/NXDOMAIN with
//! AD=1 (secure); "bogus" means it answers SERVFAIL; the plain resolver answers everything.
//!
//! | K | zone | signing | contents | what a validator sees |
//! |---|---|---|---|---|
//! | 1 | `secure.test` | NSEC | MX 10 `mx1`, 20 `mx2`; TLSA `_25._tcp.mx1`, `_25._tcp.mx2` | all secure (AD); other names secure NXDOMAIN |
//! | 2 | `nsec3.test` | NSEC3 (no salt, 0 iterations) | as `secure.test` | all secure, denials by NSEC3 |
//! | 3 | `insecure.test` | unsigned, no DS | as `secure.test`, plus `target` (no TLSA) and `cname-target` (TLSA) | insecure (AD=0) |
//! | 4 | `expired.test` | all RRSIGs expired 30 days ago | as `secure.test` | bogus |
//! | 5 | `badds.test` | DS in `test.` matches no DNSKEY | as `secure.test` | bogus |
//! | 6 | `badsig.test` | `mx1` A record changed after signing | as `secure.test` | `mx1` A bogus; MX, `mx2`, TLSA secure |
//! | 7 | `striptlsa.test` | RRSIG of `_25._tcp.mx1` TLSA removed | as `secure.test` | that TLSA bogus; the rest secure |
//! | 8 | `cname-mx.test` | NSEC | MX 10 `mail`; `mail` CNAME `mx1.secure.test.` | secure; TLSA base `mx1.secure.test` |
//! | 9 | `shared-tlsa.test` | NSEC | MX `mx1`, `mx2`; `_25._tcp.mx1` and `_25._tcp.mx2` CNAME `_tlsa`, which has TLSA `3 1 1` and `2 1 1` | secure TLSA via CNAME |
//! | 10 | `alias.test` | NSEC | `mail` CNAME `secure.test.` (cross-zone); `www` CNAME `target`, `target` MX 10 `mx1`, TLSA `_25._tcp.mx1` | initial names `mail.alias.test`, `www.alias.test` are secure CNAMEs to domains with MX |
//! | 11 | `implicit.test` | NSEC | no MX; A+AAAA at the apex; TLSA `_25._tcp.implicit.test` | secure NODATA for MX (implicit MX) |
//! | 12 | `nullmx.test` | NSEC | `MX 0 .` (RFC 7505) | secure null MX |
//! | 13 | `unexpanded.test` | NSEC | MX 10 `mx`; `mx` CNAME `target.insecure.test.`; TLSA only at `_25._tcp.mx.unexpanded.test` | CNAME secure, target addresses insecure: DANE does not apply (RFC 7672 §2.2.2), so neither TLSA RRset is used |
//! | 14 | `cname-insecure.test` | NSEC | MX 10 `mx`; `mx` CNAME `cname-target.insecure.test.` | CNAME secure, target addresses insecure: no DANE; the insecure TLSA at `_25._tcp.cname-target.insecure.test` must not be used |
//! | 15 | `noaaaa-broken.test` | RRSIG of the NSEC at `mx1` removed | MX 10 `mx1`; `mx1` A only; TLSA `_25._tcp.mx1` | `mx1` A and TLSA secure; `mx1` AAAA (denied by that NSEC) bogus |
//! | 16 | `notlsa.test` | NSEC | MX `mx1`, `mx2`; no TLSA; `_25._tcp.mx2` has only a TXT | `_25._tcp.mx1` TLSA secure NXDOMAIN, `_25._tcp.mx2` TLSA secure NODATA |
//! | 17 | `mx-bogus-host.test` | NSEC | MX 10 `mx1.expired.test.`, MX 20 `mx1.secure.test.` | MX secure; first host bogus, second secure |
//!
//! Every scenario of the requested set could be built with these tools; none is skipped.
//!
//! ## Life cycle
//!
//! [`LabBuilder::start`] cleans up labs left by killed test runs, claims a block, generates keys
//! and signs zones in parallel, starts the five servers, and waits until each answers a real
//! query (every NSD zone's SOA, authoritatively; each Unbound; then a validated root SOA). It
//! takes well under a second for the standard set. Dropping the [`Lab`] kills every process
//! (SIGTERM, then SIGKILL) and removes its directory. Each lab also has a watchdog shell that
//! does the same when the test process exits without dropping it (a static, a crash, a
//! timeout kill); that is what tears down [`shared`]. Set `DANEMTA_LAB_KEEP=1` (or
//! [`LabBuilder::keep_dir`]) to keep the directory with configs, zones and logs after a normal
//! drop: it is renamed to `/tmp/danemta-lab/kept-…`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attack;
mod config;
pub mod dns;
mod error;
pub mod https;
pub mod mta_sts;
pub mod pki;
pub mod postgres;
mod process;
pub mod smtp;
mod standard;
pub mod submission;
pub mod tamper;
mod zone;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use attack::{Mitm, StripStartTls};
pub use error::LabError;
pub use process::{BLOCK_OCTET, LAB_ROOT, is_alive};
pub use smtp::{PeerAddr, Receiver, ReceiverSpec, ReceiverTls, claim_peer_addr};
pub use standard::{fake_digest, standard_zones};
pub use submission::SubmissionServer;
pub use tamper::{DnsTamper, ExpiredSignatures, Rule, Tampering, Target, UnboundHandle};
pub use zone::{Signing, ZoneSpec};

use dns::{QueryOptions, rcode, rtype};
use zone::{Key, Tier, Tools, Zone};

/// Host octet of the validating Unbound in a lab block.
const VALIDATING_HOST: u8 = 4;
/// Host octet of the plain (iterator-only) Unbound in a lab block.
const PLAIN_HOST: u8 = 5;
/// Host octets [`Lab::claim_addr`] hands out (the first and the last).
const CLAIMABLE_HOSTS: (u8, u8) = (16, 254);

/// An address of a lab's block claimed by [`Lab::claim_addr`]; released when dropped.
#[derive(Debug)]
pub struct LabAddr {
    ip: Ipv4Addr,
    host: u8,
    pool: Arc<Mutex<Claims>>,
}

/// The addresses of a block handed out by [`Lab::claim_addr`].
#[derive(Debug, Default)]
struct Claims {
    /// Host octets in use.
    used: BTreeSet<u8>,
    /// The last host octet handed out: the next claim starts after it, so an address just
    /// released is not reused at once (a socket closed a moment ago may still be open in a
    /// child process another thread is spawning, until its `exec`).
    last: u8,
}

impl LabAddr {
    /// The claimed address, `127.53.N.H`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Drop for LabAddr {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .used
            .remove(&self.host);
    }
}

/// One standard lab per test process, started on first use.
///
/// The lab lives in a static and is never dropped; its watchdog tears it down when the process
/// exits. A failed start is remembered: every call returns the same error.
pub fn shared() -> Result<&'static Lab, &'static LabError> {
    static SHARED: OnceLock<Result<Lab, LabError>> = OnceLock::new();
    SHARED.get_or_init(Lab::standard).as_ref()
}

/// What kind of process a lab server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Authoritative(Tier),
    Validating,
    Plain,
}

struct Server {
    name: String,
    role: Role,
    addr: SocketAddr,
    child: Child,
}

/// A running lab: NSD and Unbound processes on a private 127.53.N.0/24 block.
///
/// Dropping it kills every process (SIGTERM, then SIGKILL, by process group) and removes its
/// directory.
pub struct Lab {
    dir: PathBuf,
    block: u8,
    servers: Vec<Server>,
    watchdog: Option<Child>,
    lock: Option<File>,
    zones: Vec<(String, Tier)>,
    trust_anchor: PathBuf,
    trust_anchor_ds: PathBuf,
    keep: bool,
    startup: Duration,
    /// The Unbound program the lab runs (a copy out of AppArmor's reach where needed).
    unbound: PathBuf,
    /// Whether every signed zone was also signed with expired signatures
    /// ([`LabBuilder::expired_signature_copies`]).
    expired_copies: bool,
    /// Host octets of the block claimed by [`Lab::claim_addr`].
    claimed: Arc<Mutex<Claims>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.dir)
            .field("validating_resolver", &self.validating_resolver())
            .field("plain_resolver", &self.plain_resolver())
            .field("zones", &self.zones.len())
            .field("startup", &self.startup)
            .finish()
    }
}

/// Builds a lab: add zones, then [`start`](LabBuilder::start) it.
#[derive(Clone, Debug)]
pub struct LabBuilder {
    zones: Vec<ZoneSpec>,
    keep_dir: bool,
    timeout: Duration,
    expired_copies: bool,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            zones: Vec::new(),
            keep_dir: false,
            timeout: Duration::from_secs(8),
            expired_copies: false,
        }
    }
}

impl LabBuilder {
    /// Adds a zone. Its parent zones need not be given: the root and missing TLDs are added
    /// (secure, empty); a zone's parent is the longest suffix of its name that is a lab zone.
    pub fn zone(mut self, spec: ZoneSpec) -> Self {
        self.zones.push(spec);
        self
    }

    /// Adds several zones.
    pub fn zones(mut self, specs: impl IntoIterator<Item = ZoneSpec>) -> Self {
        self.zones.extend(specs);
        self
    }

    /// Adds the standard scenarios (see the crate documentation).
    pub fn standard_zones(self) -> Self {
        self.zones(standard_zones())
    }

    /// Keeps the lab directory after a normal drop (renamed to `/tmp/danemta-lab/kept-…`).
    /// `DANEMTA_LAB_KEEP=1` in the environment does the same.
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// How long to wait for the servers to answer (default 8 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also signs every signed zone a second time, with the same key, with signatures that
    /// expired 30 days ago (`ldns-signzone -i <now-90d> -e <now-30d>`), into a side file that no
    /// server serves ([`Lab::expired_zone_file`]). Its RRSIGs are what an attacker replaying
    /// old signatures would send ([`Tampering::ExpiredSignatures`],
    /// [`ExpiredSignatures::from_lab`]). Off by default (it doubles the signing work).
    pub fn expired_signature_copies(mut self, on: bool) -> Self {
        self.expired_copies = on;
        self
    }

    /// Signs the zones and starts the servers; returns once every server answers.
    pub fn start(self) -> Result<Lab, LabError> {
        let t0 = Instant::now();
        let tools = process::find_tools()?;
        let zones = zone::plan(&self.zones)?;
        let keep = self.keep_dir
            || std::env::var("DANEMTA_LAB_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
        let claim = process::claim_block(Path::new(LAB_ROOT))?;
        let mut lab = Lab {
            trust_anchor: claim.dir.join("root.key"),
            trust_anchor_ds: claim.dir.join("root.ds"),
            dir: claim.dir,
            block: claim.block,
            servers: Vec::new(),
            watchdog: None,
            lock: Some(claim.lock),
            zones: zones.iter().map(|z| (z.fqdn.clone(), z.tier)).collect(),
            keep,
            startup: Duration::ZERO,
            unbound: tools.unbound.clone(),
            expired_copies: self.expired_copies,
            claimed: Arc::default(),
        };
        // From here on, errors drop `lab`, which cleans up whatever was started.
        lab.watchdog = Some(process::spawn_watchdog(&lab.dir, keep)?);
        lab.boot(&tools, &zones, self.timeout)?;
        lab.startup = t0.elapsed();
        Ok(lab)
    }
}

impl Lab {
    /// A lab with the standard scenarios (see the crate documentation).
    pub fn standard() -> Result<Lab, LabError> {
        Self::builder().standard_zones().start()
    }

    /// A builder for a lab with zones of your choice.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The validating Unbound (127.53.N.4:53): trust its AD bit; bogus answers are SERVFAIL.
    pub fn validating_resolver(&self) -> SocketAddr {
        self.addr(VALIDATING_HOST)
    }

    /// The non-validating Unbound (127.53.N.5:53): iterator only; with DO=1 it returns RRSIGs and
    /// NSEC/NSEC3 records, bogus data included, for a validator of your own.
    pub fn plain_resolver(&self) -> SocketAddr {
        self.addr(PLAIN_HOST)
    }

    /// The trust anchor: the lab root's DNSKEY (`. 3600 IN DNSKEY 257 3 13 …`), zone-file syntax.
    pub fn trust_anchor_file(&self) -> &Path {
        &self.trust_anchor
    }

    /// The same anchor as a DS record (`. 3600 IN DS <tag> 13 2 …`).
    pub fn trust_anchor_ds_file(&self) -> &Path {
        &self.trust_anchor_ds
    }

    /// The lab directory: configs, zone files (`*.zone`), keys, and logs (`*.log`, `*.out`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lab's block number N (its addresses are 127.53.N.0/24).
    pub fn block(&self) -> u8 {
        self.block
    }

    /// The authoritative server (NSD) of a lab zone, e.g. `"secure.test"` or `"."`.
    pub fn authoritative_server(&self, zone: &str) -> Option<SocketAddr> {
        let fqdn = zone::normalize_zone_name(zone).ok()?;
        let (_, tier) = self.zones.iter().find(|(z, _)| *z == fqdn)?;
        Some(self.addr(tier.host()))
    }

    /// The names of all lab zones (absolute: `"."`, `"test."`, `"secure.test."`, …).
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|(z, _)| z.as_str())
    }

    /// How long [`LabBuilder::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The process IDs of every live lab process: servers, their forked children, the watchdog.
    pub fn pids(&self) -> Vec<u32> {
        let groups: Vec<u32> = self
            .servers
            .iter()
            .map(|s| s.child.id())
            .chain(self.watchdog.iter().map(Child::id))
            .collect();
        let mut pids = process::group_members(&groups);
        pids.sort_unstable();
        pids
    }

    /// The last lines of every server's log, for failure messages.
    pub fn logs(&self) -> String {
        self.log_tails(20)
    }

    /// The side file of a signed lab zone signed with expired signatures (same key), e.g.
    /// `"secure.test"`; `None` unless the lab was built with
    /// [`LabBuilder::expired_signature_copies`] and the zone is signed.
    pub fn expired_zone_file(&self, zone: &str) -> Option<PathBuf> {
        let fqdn = zone::normalize_zone_name(zone).ok()?;
        let stem = if fqdn == "." {
            "root".to_string()
        } else {
            fqdn.trim_end_matches('.').to_string()
        };
        let path = self.dir.join(format!("{stem}.expired.zone"));
        (self.expired_copies && path.is_file()).then_some(path)
    }

    /// Claims a free address of the lab's block for a server of a test (a [`DnsTamper`], a
    /// [`Lab::validating_forwarder`]): `127.53.N.H`, H from 16 to 254, any port. The block is
    /// the lab's own, so nothing else binds there; the address is free again when the
    /// returned claim is dropped.
    pub fn claim_addr(&self) -> Result<LabAddr, LabError> {
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (first, last) = CLAIMABLE_HOSTS;
        let start = claimed.last.clamp(first, last);
        let host = (start + 1..=last)
            .chain(first..=start)
            .find(|h| !claimed.used.contains(h))
            .ok_or_else(|| LabError::NoFreeBlock {
                detail: format!(
                    "all {} test addresses of lab block {} are claimed",
                    CLAIMABLE_HOSTS.1 - CLAIMABLE_HOSTS.0 + 1,
                    self.block
                ),
            })?;
        claimed.used.insert(host);
        claimed.last = host;
        Ok(LabAddr {
            ip: self.ip(host),
            host,
            pool: self.claimed.clone(),
        })
    }

    fn addr(&self, host: u8) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(process::block_addr(self.block, host), 53))
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        process::block_addr(self.block, host)
    }

    fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        for server in &self.servers {
            for ext in ["log", "out"] {
                let path = self.dir.join(format!("{}.{ext}", server.name));
                let t = process::tail(&path, lines);
                if !t.trim().is_empty() {
                    s.push_str(&format!("--- {} ---\n{t}\n", path.display()));
                }
            }
        }
        if s.is_empty() {
            s.push_str("(no server logs)\n");
        }
        if !self.keep {
            s.push_str("(set DANEMTA_LAB_KEEP=1 to keep the lab directory for inspection)");
        }
        s
    }

    fn boot(&mut self, tools: &Tools, zones: &[Zone], timeout: Duration) -> Result<(), LabError> {
        let dir = self.dir.clone();
        let keys_dir = dir.join("keys");

        // Keys first (a DS depends only on the key), then every zone can be signed at once.
        let signed: Vec<&Zone> = zones.iter().filter(|z| z.signing.is_signed()).collect();
        let keys = par_map(&signed, |z| {
            zone::keygen(tools, z, &keys_dir.join(z.file_stem()))
        })?;
        let keys: BTreeMap<String, Key> = signed.iter().map(|z| z.fqdn.clone()).zip(keys).collect();
        let block_base = self.ip(0);
        let expired_copies = self.expired_copies;
        let work: Vec<&Zone> = zones.iter().collect();
        par_map(&work, |z| {
            let text = zone::zone_text(z, zones, &keys, block_base);
            let scratch = keys_dir.join(z.file_stem());
            fs::create_dir_all(&scratch)
                .map_err(|e| LabError::io(format!("creating {}", scratch.display()), e))?;
            let out = dir.join(format!("{}.zone", z.file_stem()));
            zone::write_zone(tools, z, &text, keys.get(&z.fqdn), &scratch, &out)?;
            if let (true, Some(key)) = (expired_copies, keys.get(&z.fqdn)) {
                let out = dir.join(format!("{}.expired.zone", z.file_stem()));
                zone::write_expired_copy(tools, z, &text, key, &scratch, &out)?;
            }
            Ok(())
        })?;

        // Trust anchor and root hints.
        let root_key = keys
            .get(".")
            .ok_or_else(|| LabError::zone(".", "internal: the root has no key"))?;
        let (dnskey, ds) = zone::anchor_lines(root_key);
        write(&self.trust_anchor, &format!("{dnskey}\n"))?;
        write(&self.trust_anchor_ds, &format!("{ds}\n"))?;
        write(
            &dir.join("root.hints"),
            &config::root_hints(self.ip(Tier::Root.host())),
        )?;

        // NSD: one instance per tier that has zones.
        for tier in Tier::ALL {
            let served: Vec<(String, String)> = zones
                .iter()
                .filter(|z| z.tier == tier)
                .map(|z| (z.fqdn.clone(), format!("{}.zone", z.file_stem())))
                .collect();
            if served.is_empty() {
                continue;
            }
            let name = tier.name();
            let conf = dir.join(format!("{name}.conf"));
            write(
                &conf,
                &config::nsd_conf(&dir, name, self.ip(tier.host()), &served),
            )?;
            self.spawn(
                name,
                Role::Authoritative(tier),
                &tools.nsd,
                &[OsStr::new("-d"), OsStr::new("-c"), conf.as_os_str()],
            )?;
        }

        // Unbound, validating and plain.
        let unbound = process::unconfined_copy(&tools.unbound, &dir)?;
        self.unbound = unbound.clone();
        let tlds: Vec<String> = zones
            .iter()
            .filter(|z| z.tier == Tier::Tld)
            .map(|z| z.fqdn.clone())
            .collect();
        for (name, role, host) in [
            ("unbound-validating", Role::Validating, VALIDATING_HOST),
            ("unbound-plain", Role::Plain, PLAIN_HOST),
        ] {
            let anchor = (role == Role::Validating).then_some(self.trust_anchor.as_path());
            let conf = dir.join(format!("{name}.conf"));
            write(
                &conf,
                &config::unbound_conf(&dir, name, self.ip(host), anchor, &tlds),
            )?;
            self.spawn(
                name,
                role,
                &unbound,
                &[OsStr::new("-d"), OsStr::new("-c"), conf.as_os_str()],
            )?;
        }

        self.wait_ready(zones, timeout)?;
        self.sanity_check()
    }

    fn spawn(
        &mut self,
        name: &str,
        role: Role,
        program: &Path,
        args: &[&OsStr],
    ) -> Result<(), LabError> {
        let child = process::spawn_server(name, program, args, &self.dir)?;
        let pgid = child.id();
        let host = match role {
            Role::Authoritative(tier) => tier.host(),
            Role::Validating => VALIDATING_HOST,
            Role::Plain => PLAIN_HOST,
        };
        self.servers.push(Server {
            name: name.to_string(),
            role,
            addr: self.addr(host),
            child,
        });
        process::record_pgid(&self.dir, pgid)
    }

    /// Polls every server with real queries until all answer: each NSD must serve each of its
    /// zones' SOA authoritatively; each Unbound must answer `localhost. A` (a built-in local
    /// zone, so nothing is iterated, and no server is marked down before NSD is up).
    fn wait_ready(&mut self, zones: &[Zone], timeout: Duration) -> Result<(), LabError> {
        struct Probe {
            server: usize,
            name: String,
            qtype: u16,
            options: QueryOptions,
            authoritative: bool,
            last: String,
            /// Since when an NSD has been answering this probe with an error.
            refused_since: Option<Instant>,
        }
        let mut probes = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            match server.role {
                Role::Authoritative(tier) => {
                    for z in zones.iter().filter(|z| z.tier == tier) {
                        probes.push(Probe {
                            server: i,
                            name: z.fqdn.clone(),
                            qtype: rtype::SOA,
                            options: QueryOptions::authoritative(),
                            authoritative: true,
                            last: "no answer yet".into(),
                            refused_since: None,
                        });
                    }
                }
                Role::Validating | Role::Plain => probes.push(Probe {
                    server: i,
                    name: "localhost.".into(),
                    qtype: rtype::A,
                    options: QueryOptions::recursive(),
                    authoritative: false,
                    last: "no answer yet".into(),
                    refused_since: None,
                }),
            }
        }
        let deadline = deadline(timeout);
        loop {
            for server in &mut self.servers {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let name = server.name.clone();
                    return Err(LabError::ServerExited {
                        server: name,
                        status: status.to_string(),
                        logs: self.log_tails(30),
                    });
                }
            }
            let servers = &self.servers;
            probes.retain_mut(|p| {
                let server = &servers[p.server];
                let options = p.options.with_timeout(Duration::from_millis(250));
                match dns::query(server.addr, &p.name, p.qtype, options) {
                    Ok(r) if r.rcode == rcode::NOERROR && (r.authoritative || !p.authoritative) => {
                        false
                    }
                    Ok(r) => {
                        p.last = format!("{} {}: {}", p.name, rtype::name(p.qtype), r.summary());
                        if p.authoritative {
                            // EDE 14, "Not Ready" (RFC 8914): NSD's "configured but not loaded".
                            let not_loaded = r.extended_error.as_ref().is_some_and(|e| e.0 == 14);
                            let now = Instant::now();
                            let since = match not_loaded {
                                true => now.checked_sub(Duration::from_secs(2)).unwrap_or(now),
                                false => now,
                            };
                            p.refused_since = Some(p.refused_since.map_or(since, |t| t.min(since)));
                        }
                        true
                    }
                    Err(e) => {
                        p.last = e.to_string();
                        true
                    }
                }
            });
            let Some(p) = probes.first() else {
                return Ok(());
            };
            // NSD reads its zones before it answers: a zone still not served a second after NSD
            // first answered failed to load (its log says why). No need to wait for the timeout.
            if let Some(p) = probes.iter().find(|p| {
                p.refused_since
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
            }) {
                return Err(LabError::SanityCheck {
                    detail: format!(
                        "{} does not serve {} ({}): the zone did not load",
                        self.servers[p.server].name, p.name, p.last
                    ),
                    logs: self.log_tails(30),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    server: self.servers[p.server].name.clone(),
                    timeout,
                    last: p.last.clone(),
                    logs: self.log_tails(30),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The root SOA must validate through the validating resolver and resolve through the plain
    /// one: this proves hints, trust anchor and the Unbound settings for a private root.
    fn sanity_check(&self) -> Result<(), LabError> {
        for (server, want_ad) in [
            (self.validating_resolver(), true),
            (self.plain_resolver(), false),
        ] {
            let result = dns::query(server, ".", rtype::SOA, QueryOptions::recursive_dnssec());
            let problem = match result {
                Ok(r) if r.rcode == rcode::NOERROR && (r.authentic_data || !want_ad) => None,
                Ok(r) => Some(r.summary()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(problem) = problem {
                return Err(LabError::SanityCheck {
                    detail: format!(
                        ". SOA via {server} (expected NOERROR{}): {problem}",
                        if want_ad { " with AD" } else { "" }
                    ),
                    logs: self.log_tails(30),
                });
            }
        }
        Ok(())
    }

    /// Stops everything and removes (or keeps) the directory. Idempotent.
    fn shutdown(&mut self) {
        // The watchdog first: its pipe closes when it is dropped, and it would start cleaning.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let pgids: Vec<u32> = self.servers.iter().map(|s| s.child.id()).collect();
        process::terminate_groups(&pgids, Duration::from_secs(3));
        for server in &mut self.servers {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        self.servers.clear();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if self.keep {
            if let Some(name) = self.dir.file_name() {
                let kept = Path::new(LAB_ROOT).join(format!("kept-{}", name.to_string_lossy()));
                if fs::rename(&self.dir, &kept).is_ok() {
                    eprintln!("danemta-lab: kept the lab directory at {}", kept.display());
                }
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        self.dir = PathBuf::new();
        self.lock = None;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `now + limit`, saturating at a day ahead instead of overflowing on absurd limits.
pub(crate) fn deadline(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit.min(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

/// Runs `f` on every item on a few threads (the work is mostly waiting for child processes);
/// results in input order, the first error wins.
fn par_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, LabError> + Sync,
) -> Result<Vec<R>, LabError> {
    let threads = thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 8)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<R, LabError>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let result = f(item);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(LabError::zone("?", "internal: a worker thread failed")))
        })
        .collect()
}
