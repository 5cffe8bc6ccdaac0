//! The scheduler: takes due messages from the [`Store`], delivers them with the DANE client
//! of `danemta-smtp`, and records what happened: delivered recipients leave the queue,
//! deferred ones are tried again with exponential back-off ([`retry`]), and permanent
//! failures and deferrals past the lifetime go back to the sender as RFC 3464 delivery
//! status notifications ([`crate::dsn`]).
//!
//! Rules kept here (PRODUCT.md, "The relay daemon"):
//! * a deferral, DANE failures included, is only ever a deferral: it becomes a bounce at the
//!   end of `lifetime`, never earlier, and the DANE client never falls back to plaintext
//!   where RFC 7672 forbids it (that decision is `danemta-smtp`'s, per destination level);
//! * never a DSN to the null sender (RFC 5321 §4.5.5, RFC 3464 §2): a failed bounce is
//!   dropped with a log line, so bounces cannot loop;
//! * a DSN is queued with the record of the attempt that caused it
//!   ([`Store::finish_attempt`]): on a store shared by several nodes in the same
//!   transaction, under the lease check, so exactly one node queues each bounce; on the local
//!   store just before it, so a crash in between sends it twice, never zero times;
//! * claims are leased for `[queue] lease_time` and renewed while they are worked on; a
//!   claim taken over by another node (this one was frozen past its lease) is not tried
//!   further here, and its record is refused ([`crate::queue::QueueError::LeaseLost`]);
//! * with a shared store, `max_connections_per_destination` is counted over every node
//!   ([`Store::take_connection_slot`]): a connection holds a slot while it is open or parked;
//! * recipients are grouped by destination (next hop and policy) into a backlog per
//!   destination, which delivery jobs drain over one connection each, message after message
//!   (RFC 5321 §4.1.1.5); another job (another connection) starts only when the backlog grows
//!   faster than the running jobs take it, as Postfix's connection cache on demand does.
//!   Connections are bounded overall (`max_connections`) and per destination
//!   (`max_connections_per_destination`);
//! * the scheduler sleeps until the next message is due or a new one is queued
//!   ([`Scheduler::wake`]); it never polls.

pub mod destination;
pub mod retry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns::{DnsName, Resolver, Route};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use smtp::outcome::{RecipientOutcome, Response};
use smtp::{
    Attempt, Connection, Delivery, Envelope, Fate, Gate, HeloName, Limits, Message, Outgoing,
    Security, Timeouts, TlsRequest, deliver_batch, dnssec_gate, fingerprint_records,
};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::dsn::{self, Action};
use crate::metrics;
use crate::queue::{
    Claim, ConnectionSlot, DsnParams, Lease, NewMessage, QueueError, QueueId, Store, Timestamp,
};
use crate::sts_cache::StorePolicies;
use crate::tlsrpt;
use destination::{Destination, Hop, destination, literal_route, without_self};
use retry::Retry;

/// A delivery job takes at most this many messages from its destination's backlog at once:
/// their bodies are read before the first is sent, and their outcomes are recorded after the
/// last, so this also bounds what a crash can make the daemon deliver twice (this many per
/// connection).
pub const MESSAGES_PER_BATCH: usize = 5;

/// A destination gets another delivery job (another connection) for every this many
/// messages waiting in its backlog, up to `max_connections_per_destination`: one connection
/// carries a steady stream, more only help a large backlog, and every one costs the receiver
/// a process (Postfix's smtpd) for as long as it is open.
const BACKLOG_PER_JOB: usize = 100;

/// How long a connection stays open, idle, for the next job to the same destination
/// (Postfix's `smtp_connection_cache_time_limit` is 2 s).
const IDLE_TIME: Duration = Duration::from_secs(2);

/// On SIGTERM, deliveries in flight get this long to finish; what is still running is then
/// abandoned and goes back to the queue at the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The fixed settings of a scheduler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Our name in EHLO and as the DSN's reporting MTA.
    pub hostname: HeloName,
    /// Back-off and lifetime.
    pub retry: Retry,
    /// Outgoing connections at once, overall.
    pub max_connections: usize,
    /// Outgoing connections at once, per destination.
    pub max_connections_per_destination: usize,
    /// Messages claimed from the queue at once (Postfix's active queue,
    /// `qmgr_message_active_limit`): a destination may hold half of them, so that a slow one
    /// leaves room for the others. The daemon claims 4 per connection: each claim pass walks
    /// the due recipients past the claimed ones, so the window is kept small.
    pub max_claimed: usize,
    /// SMTP client timeouts.
    pub timeouts: Timeouts,
    /// Our name on leases.
    pub owner: String,
    /// How long a claim lasts without renewal (`[queue] lease_time`): claims being
    /// delivered are renewed while at least half of it is left, so a delivery of any length
    /// keeps its claim, and a node that dies (whose claims nobody renews) leaves its mail to
    /// the others once it runs out.
    pub lease: Duration,
    /// The start-up probe of DNSSEC validation (`Err` with why it fails): `dane-only`
    /// destinations are deferred without it (RFC 7672 §2.1.1).
    pub dnssec: Result<(), String>,
}

/// What SIGHUP reloads: the policy table and the PKIX roots.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The configuration the policy table and `[delivery]` settings are read from.
    pub config: Arc<Config>,
    /// PKIX trust anchors for `verify`/`secure` (system roots plus `[delivery] ca_file`).
    pub roots: Arc<RootCertStore>,
}

/// The delivery loop. Share it in an [`Arc`]; [`Scheduler::run`] drives it.
pub struct Scheduler<R> {
    store: Arc<dyn Store>,
    resolver: Arc<R>,
    settings: Settings,
    policy: RwLock<Arc<Policy>>,
    provider: Arc<CryptoProvider>,
    doorbell: Notify,
    connections: Arc<Semaphore>,
    destinations: Mutex<HashMap<Destination, Arc<Semaphore>>>,
    /// Claimed parts waiting for a delivery job, per destination.
    backlog: Mutex<HashMap<Destination, Backlog>>,
    /// Claimed messages not finished yet (bounds how much is claimed at once).
    in_flight: Arc<Semaphore>,
    /// Parts one destination may hold before its mail is left in the queue: half the claimed
    /// messages.
    backlog_cap: usize,
    /// Set on shutdown: jobs not connected yet give their claims back untried.
    stopping: AtomicBool,
    /// Reusable connections between jobs, one per destination, with a generation number and
    /// the cluster-wide slot they hold.
    idle: Mutex<HashMap<Destination, Idle>>,
    /// Generations of parked connections.
    parked: AtomicU64,
    /// TLS sessions to resume, shared by all outgoing connections (smtp::resume).
    sessions: Arc<smtp::SessionCache>,
    /// MTA-STS discovery (RFC 8461), its policy cache in the queue store; rebuilt with the
    /// PKIX roots on reload. `None` when no TLS client can be built from the roots.
    mta_sts: RwLock<Option<Arc<MtaSts<R>>>>,
    /// The claims being worked on, for their lease renewals.
    claimed: Mutex<HashMap<QueueId, Weak<Tracker>>>,
}

/// A parked connection: its generation, the connection, its cluster-wide slot.
type Idle = (u64, Connection, Option<HeldSlot>);

/// A cluster-wide connection slot ([`Store::take_connection_slot`]) held by a connection;
/// given back when dropped.
struct HeldSlot {
    store: Arc<dyn Store>,
    slot: ConnectionSlot,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        let (store, slot) = (Arc::clone(&self.store), self.slot.clone());
        let release = move || {
            if let Err(e) = store.release_connection_slot(&slot) {
                tracing::warn!(target: "relay", "cannot give a connection slot back: {e}");
            }
        };
        // The store blocks: never on an async thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// Shutting down: a job waiting for a connection slot gives its parts back untried.
struct Stopping;

/// A destination's MTA-STS policy, or the TLS-RPT kind of the failure to get one.
type MtaStsFound = (Option<Arc<sts::Policy>>, Option<sts::ResultType>);

/// MTA-STS discovery through the daemon's resolver, cached in the queue store (RFC 8461
/// §5.1: the cache survives restarts).
type MtaSts<R> = sts::Sts<sts::ResolverTxt<R>, sts::ResolverAddresses<R>, StorePolicies>;

/// MTA-STS discovery over `resolver` and `store`, fetching with `roots`.
fn mta_sts<R: Resolver>(
    resolver: &Arc<R>,
    store: &Arc<dyn Store>,
    roots: &Arc<RootCertStore>,
) -> Option<Arc<MtaSts<R>>> {
    match sts::Fetcher::new(Arc::clone(roots)) {
        Ok(fetcher) => Some(Arc::new(sts::Sts::new(
            sts::ResolverTxt(Arc::clone(resolver)),
            sts::ResolverAddresses(Arc::clone(resolver)),
            StorePolicies::new(Arc::clone(store)),
            fetcher,
        ))),
        Err(e) => {
            tracing::error!(target: "relay", "MTA-STS is off: no TLS client for policy fetches: {e}");
            None
        }
    }
}

/// A claimed message while its destinations are being tried.
struct Tracker {
    claim: Claim,
    /// The end of its lease as last renewed (Unix seconds).
    until: AtomicI64,
    /// Set when a renewal found the lease taken over: parts not sent yet are not tried.
    lost: AtomicBool,
    /// Destinations not finished yet.
    remaining: AtomicUsize,
    results: Mutex<(Vec<RecipientOutcome>, Vec<Attempt>)>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// One destination's claimed parts not yet taken by a job, and its jobs.
#[derive(Default)]
struct Backlog {
    parts: VecDeque<Part>,
    jobs: usize,
    /// Parts taken by jobs and not delivered yet.
    in_jobs: usize,
    /// The recipient domains (lower case) its parts went to.
    domains: HashSet<String>,
}

impl Backlog {
    /// Parts claimed and not delivered yet: waiting, or taken by a job.
    fn claimed(&self) -> usize {
        self.parts.len() + self.in_jobs
    }
}

/// Some recipients of one claimed message, for one destination.
struct Part {
    tracker: Arc<Tracker>,
    recipients: Vec<String>,
}

pub use crate::queue::now as unix_now;

/// Seconds since `arrival`, with a tenth, for `delay=` in log lines.
fn delay_since(arrival: Timestamp) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (now - arrival as f64).max(0.0)
}

impl<R: Resolver + 'static> Scheduler<R> {
    /// A scheduler delivering from `store` with `resolver`.
    pub fn new(
        store: Arc<dyn Store>,
        resolver: Arc<R>,
        settings: Settings,
        policy: Policy,
    ) -> Self {
        let connections = settings.max_connections.max(1);
        let mta_sts = RwLock::new(mta_sts(&resolver, &store, &policy.roots));
        Scheduler {
            store,
            resolver,
            mta_sts,
            policy: RwLock::new(Arc::new(policy)),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            doorbell: Notify::new(),
            connections: Arc::new(Semaphore::new(connections)),
            destinations: Mutex::new(HashMap::new()),
            backlog: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(settings.max_claimed.max(1))),
            backlog_cap: (settings.max_claimed / 2).max(1),
            stopping: AtomicBool::new(false),
            idle: Mutex::new(HashMap::new()),
            parked: AtomicU64::new(0),
            sessions: Arc::new(smtp::SessionCache::default()),
            claimed: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// Wakes the scheduler: a message was queued or flushed. Cheap; a wake with nothing due
    /// costs one store query.
    pub fn wake(&self) {
        self.doorbell.notify_one();
    }

    /// Replaces the policy table and PKIX roots (SIGHUP), and pauses or resumes deliveries
    /// (`[delivery] paused`). Deliveries already running keep the policy they started with;
    /// queued mail is untouched.
    pub fn reload(&self, policy: Policy) {
        if let Ok(mut sts) = self.mta_sts.write() {
            *sts = mta_sts(&self.resolver, &self.store, &policy.roots);
        }
        if let Ok(mut p) = self.policy.write() {
            *p = Arc::new(policy);
        }
        self.wake();
    }

    fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Runs until `shutdown` turns true: claims due messages, starts their deliveries, and
    /// sleeps until the next is due or [`Scheduler::wake`] is called. On shutdown it stops
    /// claiming and waits up to [`SHUTDOWN_GRACE`] for deliveries in flight.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let renewing = tokio::spawn(Arc::clone(&self).renew_leases());
        // Expired MTA-STS policies (RFC 8461 §5.1: max_age) are forgotten at start.
        match StorePolicies::new(Arc::clone(&self.store)).prune(SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(target: "relay", "forgot {n} expired MTA-STS policies"),
            Err(e) => tracing::warn!(target: "relay", "cannot prune the MTA-STS policy cache: {e}"),
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            if self.policy().config.delivery.paused {
                // Nothing starts until a reload resumes (it wakes us).
                tokio::select! {
                    () = self.doorbell.notified() => {}
                    _ = shutdown.changed() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
                continue;
            }
            let started = self.pass(&mut tasks).await;
            while tasks.try_join_next().is_some() {}
            if started {
                // More may be due right away (the claim was bounded).
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self.until_next_due().await;
            tokio::select! {
                () = self.doorbell.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        self.stopping.store(true, Ordering::Release);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!(
                target: "relay",
                "deliveries still running after {}s were abandoned; they go back to the queue at the next start",
                SHUTDOWN_GRACE.as_secs()
            );
            tasks.abort_all();
        }
        renewing.abort();
        self.close_idle().await;
    }

    /// Renews the leases of the claims being worked on, forever: every quarter of the lease
    /// time, each claim with less than three quarters of it left gets a full lease again, so
    /// a lease is renewed while at least half of it is left (the store's times are whole
    /// seconds: the check is made in milliseconds, so that rounding cannot eat the margin).
    /// A claim found taken over ([`crate::queue::QueueError::LeaseLost`]: this node was
    /// frozen or cut off from the store for longer than the lease, and another node claimed
    /// the message) is marked lost: what of it is not sent yet is not tried here. Other
    /// failures (the store unreachable) are retried at the next round.
    async fn renew_leases(self: Arc<Self>) {
        let lease = self.settings.lease.max(Duration::from_secs(1));
        let lease_ms = i128::from(lease.as_secs()) * 1000;
        loop {
            tokio::time::sleep(lease / 4).await;
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i128::try_from(d.as_millis()).unwrap_or(i128::MAX));
            let due: Vec<Arc<Tracker>> = {
                let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
                claimed.retain(|_, t| t.strong_count() > 0);
                claimed
                    .values()
                    .filter_map(Weak::upgrade)
                    .filter(|t| !t.lost.load(Ordering::Acquire))
                    .filter(|t| {
                        let left = i128::from(t.until.load(Ordering::Acquire)) * 1000 - now_ms;
                        left < lease_ms * 3 / 4
                    })
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            self.renew(due).await;
        }
    }

    /// Renews the leases of `trackers` for a full lease time; a claim taken over by another
    /// node is marked lost (and logged), other failures are logged.
    async fn renew(&self, trackers: Vec<Arc<Tracker>>) {
        let store = Arc::clone(&self.store);
        let lease_secs =
            Timestamp::try_from(self.settings.lease.as_secs().max(1)).unwrap_or(Timestamp::MAX);
        let renewed = tokio::task::spawn_blocking(move || {
            for tracker in trackers {
                let until = unix_now().saturating_add(lease_secs);
                match store.renew(&tracker.claim, until) {
                    Ok(_) => tracker.until.store(until, Ordering::Release),
                    Err(QueueError::LeaseLost(id)) => {
                        tracker.lost.store(true, Ordering::Release);
                        tracing::warn!(
                            target: "relay",
                            queue_id = %id,
                            "{id}: lease lost: another node took the message over; what of it is not sent yet is left to that node"
                        );
                    }
                    Err(e) => tracing::warn!(
                        target: "relay",
                        "{}: cannot renew the lease: {e}; trying again",
                        tracker.claim.id
                    ),
                }
            }
        })
        .await;
        if let Err(e) = renewed {
            tracing::error!(target: "relay", "lease renewal failed: {e}");
        }
    }

    /// Before a batch is sent: the claims among `parts` whose lease has run out, or is about
    /// to, by this node's clock (it was frozen, or its renewals failed) are renewed first, so
    /// that one taken over meanwhile is marked lost and not sent (after a resume, the next
    /// batch may start before the renewal round has run).
    async fn confirm_leases(&self, parts: &[Part]) {
        let now = unix_now();
        let mut expired: Vec<Arc<Tracker>> = Vec::new();
        for part in parts {
            let t = &part.tracker;
            if !t.lost.load(Ordering::Acquire)
                && t.until.load(Ordering::Acquire) - now <= 1
                && !expired.iter().any(|e| Arc::ptr_eq(e, t))
            {
                expired.push(Arc::clone(t));
            }
        }
        if !expired.is_empty() {
            self.renew(expired).await;
        }
    }

    /// How long to sleep: until the next message is due, at most an hour (a store error is
    /// retried after a minute). With a store shared by several nodes, at most the lease
    /// time: mail another node accepted rings that node's doorbell only, and the claims of a
    /// node that died must be taken over, so an idle node looks at the queue that often.
    async fn until_next_due(&self) -> Duration {
        let store = Arc::clone(&self.store);
        let next = tokio::task::spawn_blocking(move || store.next_due()).await;
        let now = unix_now();
        let longest = if self.store.is_shared() {
            self.settings.lease.max(Duration::from_secs(1))
        } else {
            Duration::from_secs(3600)
        };
        match next {
            Ok(Ok(Some(t))) => {
                Duration::from_secs(u64::try_from(t - now).unwrap_or(0).max(1)).min(longest)
            }
            Ok(Ok(None)) => longest,
            Ok(Err(e)) => {
                tracing::error!(target: "relay", "queue: {e}");
                Duration::from_secs(60)
            }
            Err(_) => Duration::from_secs(60),
        }
    }

    /// One pass: claims what is due (as much as there is room for), groups it by
    /// destination into the destinations' backlogs and starts delivery jobs. Mail for a
    /// destination that already holds half the claimed messages is not claimed (it stays in
    /// the queue, untouched, until the destination has room), so that one slow destination
    /// cannot keep every place: the places it frees go to the others (Postfix's queue
    /// manager schedules destinations round-robin for the same reason). One pass may still
    /// claim past the half (what it claims is kept: giving it back would only churn).
    /// `true` when something was taken into delivery.
    async fn pass(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> bool {
        // A pass claims at most a quarter of a destination's share: a destination that turns
        // busy overshoots its share by that much at most.
        let room = self
            .in_flight
            .available_permits()
            .min((self.backlog_cap / 4).max(1));
        if room == 0 {
            return false;
        }
        let now = unix_now();
        let lease = Lease {
            owner: self.settings.owner.clone(),
            until: now.saturating_add(
                Timestamp::try_from(self.settings.lease.as_secs()).unwrap_or(Timestamp::MAX),
            ),
        };
        let store = Arc::clone(&self.store);
        let busy = self.busy_domains();
        let claims =
            match tokio::task::spawn_blocking(move || store.due_except(now, room, &lease, &busy))
                .await
            {
                Ok(Ok(claims)) => claims,
                Ok(Err(e)) => {
                    tracing::error!(target: "relay", "queue: cannot claim due mail: {e}");
                    return false;
                }
                Err(_) => return false,
            };
        if claims.is_empty() {
            return false;
        }
        let policy = self.policy();
        let mut groups: Vec<(Destination, Vec<Part>)> = Vec::new();
        let mut postponed: Vec<Claim> = Vec::new();
        let mut started = false;
        for claim in claims {
            let mut by_destination: Vec<(Destination, Vec<String>)> = Vec::new();
            let mut unroutable = Vec::new();
            for rcpt in &claim.recipients {
                match destination(&policy.config, rcpt) {
                    Ok(d) => match by_destination.iter_mut().find(|(k, _)| *k == d) {
                        Some((_, list)) => list.push(rcpt.clone()),
                        None => by_destination.push((d, vec![rcpt.clone()])),
                    },
                    Err(e) => unroutable.push(RecipientOutcome {
                        address: rcpt.clone(),
                        outcome: Fate::Bounced,
                        reply: Response::Local(e.to_string()),
                    }),
                }
            }
            let Ok(slot) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                // No room after all: the claim goes back to the queue untried.
                postponed.push(claim);
                continue;
            };
            started = true;
            if claim.attempts > 0 {
                metrics::retry();
            }
            let tracker = Arc::new(Tracker {
                remaining: AtomicUsize::new(by_destination.len()),
                results: Mutex::new((unroutable, Vec::new())),
                until: AtomicI64::new(claim.lease.until),
                lost: AtomicBool::new(false),
                claim,
                _slot: slot,
            });
            self.claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tracker.claim.id.clone(), Arc::downgrade(&tracker));
            if by_destination.is_empty() {
                let this = Arc::clone(self);
                tasks.spawn(async move { this.finish(tracker).await });
                continue;
            }
            for (dest, recipients) in by_destination {
                let part = Part {
                    tracker: Arc::clone(&tracker),
                    recipients,
                };
                match groups.iter_mut().find(|(k, _)| *k == dest) {
                    Some((_, parts)) => parts.push(part),
                    None => groups.push((dest, vec![part])),
                }
            }
        }
        if !postponed.is_empty() {
            let store = Arc::clone(&self.store);
            // Each claim on its own: one that cannot be given back (its lease runs out in an
            // hour, or at the next start) must not keep the others.
            let given_back = tokio::task::spawn_blocking(move || {
                for claim in &postponed {
                    if let Err(e) = store.postpone(claim, now) {
                        tracing::error!(target: "relay", "{}: cannot give the claim back: {e}", claim.id);
                    }
                }
            })
            .await;
            if let Err(e) = given_back {
                tracing::error!(target: "relay", "queue: giving claims back failed: {e}");
            }
        }
        for (dest, parts) in groups {
            let new_jobs = self.enqueue(&dest, parts);
            for _ in 0..new_jobs {
                let this = Arc::clone(self);
                let dest = dest.clone();
                tasks.spawn(async move { this.deliver(dest).await });
            }
        }
        started
    }

    /// The recipient domains of the destinations that hold their share of the claimed
    /// messages ([`Scheduler::backlog_cap`]): their mail stays in the queue until they have
    /// room.
    fn busy_domains(&self) -> Vec<String> {
        let backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy: Vec<String> = backlog
            .values()
            .filter(|b| b.claimed() >= self.backlog_cap)
            .flat_map(|b| b.domains.iter().cloned())
            .collect();
        busy.sort_unstable();
        busy.dedup();
        busy
    }

    /// Adds `parts` to `dest`'s backlog; returns how many jobs to start for it. A destination
    /// without a job gets one; one with jobs gets another only while more than
    /// [`BACKLOG_PER_JOB`] messages per job wait (the jobs are falling behind), up to
    /// `max_connections_per_destination`.
    fn enqueue(&self, dest: &Destination, parts: Vec<Part>) -> usize {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let b = backlog.entry(dest.clone()).or_default();
        for part in &parts {
            for rcpt in &part.recipients {
                if let Some((_, domain)) = rcpt.rsplit_once('@') {
                    b.domains.insert(domain.to_ascii_lowercase());
                }
            }
        }
        b.parts.extend(parts);
        let limit = self.settings.max_connections_per_destination.max(1);
        let wanted = b.parts.len().div_ceil(BACKLOG_PER_JOB).clamp(1, limit);
        let start = if b.jobs == 0 {
            1
        } else {
            wanted.saturating_sub(b.jobs).min(1)
        };
        b.jobs += start;
        start
    }

    /// The next batch of `dest`'s backlog for a job that just delivered `delivered` parts;
    /// empty when there is none, and then the job is counted out (under the same lock, so
    /// that no part is left without a job).
    fn next_batch(&self, dest: &Destination, delivered: usize) -> Vec<Part> {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = backlog.get_mut(dest) else {
            return Vec::new();
        };
        let was_busy = b.claimed() >= self.backlog_cap;
        b.in_jobs = b.in_jobs.saturating_sub(delivered);
        if was_busy && b.claimed() < self.backlog_cap {
            // The destination has room again: its mail may be claimed now.
            self.doorbell.notify_one();
        }
        let n = b.parts.len().min(MESSAGES_PER_BATCH);
        b.in_jobs += n;
        if n == 0 {
            b.jobs = b.jobs.saturating_sub(1);
            if b.jobs == 0 {
                backlog.remove(dest);
            }
            return Vec::new();
        }
        b.parts.drain(..n).collect()
    }

    /// The semaphore bounding connections to `dest`.
    fn destination_slots(&self, dest: &Destination) -> Arc<Semaphore> {
        let mut map = match self.destinations.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() > 10_000 {
            // Forget idle destinations (no task holds their semaphore).
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(map.entry(dest.clone()).or_insert_with(|| {
            Arc::new(Semaphore::new(
                self.settings.max_connections_per_destination.max(1),
            ))
        }))
    }

    /// A delivery job: takes batches from `dest`'s backlog until it is empty and delivers
    /// them, each over the connection the last one left (see [`Scheduler::park`]), then hands
    /// each message's part of the result to its tracker.
    async fn deliver(self: Arc<Self>, dest: Destination) {
        let slots = self.destination_slots(&dest);
        let (Ok(_dest_permit), Ok(_permit)) = (
            slots.acquire_owned().await,
            Arc::clone(&self.connections).acquire_owned().await,
        ) else {
            return;
        };
        // Messages being finished (recorded, DSNs queued) while the next batch goes out.
        let mut finishing = JoinSet::new();
        let mut delivered = 0;
        loop {
            while finishing.try_join_next().is_some() {}
            let parts = self.next_batch(&dest, delivered);
            if parts.is_empty() {
                break;
            }
            delivered = parts.len();
            // Parts of claims taken over by another node are not tried here.
            self.confirm_leases(&parts).await;
            let (live, lost): (Vec<Part>, Vec<Part>) = parts
                .into_iter()
                .partition(|p| !p.tracker.lost.load(Ordering::Acquire));
            let untried = || Delivery::new(Vec::new(), Vec::new());
            let deliveries = if self.stopping.load(Ordering::Acquire) || live.is_empty() {
                // Shutting down: give the claim back untried (finish records nothing for it).
                live.iter().map(|_| untried()).collect()
            } else {
                self.attempt(&dest, &live, &self.policy()).await
            };
            let results = live
                .into_iter()
                .zip(deliveries)
                .chain(lost.into_iter().map(|p| (p, untried())));
            for (part, delivery) in results {
                let tracker = part.tracker;
                if let Ok(mut results) = tracker.results.lock() {
                    results.0.extend(delivery.recipients);
                    results.1.extend(delivery.attempts);
                }
                if tracker.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let this = Arc::clone(&self);
                    finishing.spawn(async move { this.finish(tracker).await });
                }
            }
        }
        while finishing.join_next().await.is_some() {}
    }

    /// An idle connection to `dest` left by an earlier job, if one is parked, with its slot.
    fn take_idle(&self, dest: &Destination) -> Option<(Connection, Option<HeldSlot>)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.remove(dest).map(|(_, c, slot)| (c, slot))
    }

    /// A cluster-wide connection slot of `dest` ([`Store::take_connection_slot`],
    /// `max_connections_per_destination` counted over every node sharing the store): waits,
    /// polling, while all are held elsewhere. `None` when the store is not shared, or cannot
    /// count (logged; this node's own limit holds meanwhile).
    async fn connection_slot(&self, dest: &Destination) -> Result<Option<HeldSlot>, Stopping> {
        if !self.store.is_shared() {
            return Ok(None);
        }
        let key = dest.hop.to_string();
        let limit = self.settings.max_connections_per_destination.max(1);
        let mut pause = Duration::from_millis(50);
        loop {
            let (store, key2) = (Arc::clone(&self.store), key.clone());
            let taken =
                tokio::task::spawn_blocking(move || store.take_connection_slot(&key2, limit)).await;
            match taken {
                Ok(Ok(Some(slot))) => {
                    return Ok(Some(HeldSlot {
                        store: Arc::clone(&self.store),
                        slot,
                    }));
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "relay", "{key}: connection slots cannot be counted across nodes: {e}; this node's own limit applies");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(target: "relay", "{key}: counting connection slots failed: {e}; this node's own limit applies");
                    return Ok(None);
                }
            }
            if self.stopping.load(Ordering::Acquire) {
                return Err(Stopping);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Keeps a reusable connection for the next job to `dest` for [`IDLE_TIME`] (RFC 5321
    /// §4.1.1.5: several transactions per connection), then closes it with QUIT. At most one
    /// per destination; none while shutting down.
    async fn park(
        self: &Arc<Self>,
        dest: &Destination,
        connection: Connection,
        slot: Option<HeldSlot>,
    ) {
        if self.stopping.load(Ordering::Acquire) || !connection.is_reusable() {
            connection.close().await;
            return;
        }
        let generation = self.parked.fetch_add(1, Ordering::Relaxed);
        let replaced = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.insert(dest.clone(), (generation, connection, slot))
        };
        if let Some((_, old, _)) = replaced {
            old.close().await;
        }
        let this = Arc::clone(self);
        let dest = dest.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_TIME).await;
            let expired = {
                let mut idle = this.idle.lock().unwrap_or_else(|p| p.into_inner());
                match idle.get(&dest) {
                    Some((g, _, _)) if *g == generation => idle.remove(&dest),
                    _ => None,
                }
            };
            if let Some((_, connection, _)) = expired {
                connection.close().await;
            }
        });
    }

    /// Closes every parked connection (shutdown).
    async fn close_idle(&self) {
        let parked: Vec<Connection> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.drain().map(|(_, (_, c, _))| c).collect()
        };
        for connection in parked {
            connection.close().await;
        }
    }

    /// Route discovery and the SMTP deliveries of one job: one [`Delivery`] per part, in
    /// order.
    async fn attempt(
        self: &Arc<Self>,
        dest: &Destination,
        parts: &[Part],
        policy: &Policy,
    ) -> Vec<Delivery> {
        let deferred =
            |part: &Part, reason: &str| smtp::dispatch::deferred(&part.recipients, reason);
        if let Gate::Refuse(why) = dnssec_gate(dest.level, self.settings.dnssec.clone()) {
            let reason = format!("dane-only refused: {why}");
            return parts.iter().map(|p| deferred(p, &reason)).collect();
        }
        let fingerprints = match fingerprint_records(&dest.fingerprints) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("policy fingerprint: {e}");
                return parts.iter().map(|p| deferred(p, &reason)).collect();
            }
        };
        let first_domain: DnsName = parts
            .first()
            .and_then(|p| p.recipients.first())
            .and_then(|r| r.rsplit_once('@'))
            .and_then(|(_, d)| d.parse().ok())
            .unwrap_or_else(DnsName::root);
        let (mta_sts, sts_failure) = match self.mta_sts_policy(dest).await {
            Ok(found) => found,
            Err(why) => return parts.iter().map(|p| deferred(p, &why)).collect(),
        };
        let route: Route = match (&dest.hop, dest.next_hop()) {
            (Hop::Address(ip, port), _) => literal_route(*ip, *port),
            (Hop::Mx(domain, _), Some(hop)) => {
                let route = dns::discover(&*self.resolver, &hop).await;
                match self.settings.hostname.as_str().parse::<DnsName>() {
                    Ok(me) => without_self(route, domain, &me),
                    Err(_) => route,
                }
            }
            (_, Some(hop)) => dns::discover(&*self.resolver, &hop).await,
            (_, None) => literal_route([127, 0, 0, 1].into(), dest.hop.port()),
        };
        // Bodies and envelopes; a part whose body cannot be read is deferred on its own.
        let mut loaded: Vec<Result<(Envelope, Message), String>> = Vec::with_capacity(parts.len());
        for part in parts {
            loaded.push(self.load(&part.tracker.claim, &part.recipients).await);
        }
        let outgoing: Vec<Outgoing<'_>> = loaded
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .map(|(envelope, message)| Outgoing {
                envelope,
                body: message,
            })
            .collect();
        let cfg = smtp::Config {
            helo_name: self.settings.hostname.clone(),
            level: dest.level,
            timeouts: self.settings.timeouts.clone(),
            provider: Arc::clone(&self.provider),
            fingerprints,
            roots: Arc::clone(&policy.roots),
            match_names: dest.reference_names(),
            credentials: None,
            limits: Limits::default(),
            sessions: Some(Arc::clone(&self.sessions)),
            level_configured: dest.configured,
            mta_sts,
        };
        let next_hop_name = dest.hop.name(&first_domain).clone();
        let (reuse, slot) = match self.take_idle(dest) {
            Some((connection, slot)) => (Some(connection), slot),
            None => (None, None),
        };
        let slot = match slot {
            Some(slot) => Some(slot),
            None => match self.connection_slot(dest).await {
                Ok(slot) => slot,
                Err(Stopping) => {
                    if let Some(connection) = reuse {
                        connection.close().await;
                    }
                    return parts
                        .iter()
                        .map(|_| Delivery::new(Vec::new(), Vec::new()))
                        .collect();
                }
            },
        };
        let batch = deliver_batch(
            &route,
            &next_hop_name,
            dest.hop.looked_up(),
            &outgoing,
            &cfg,
            reuse,
        )
        .await;
        if let Some(connection) = batch.connection {
            self.park(dest, connection, slot).await;
        }
        if let Hop::Mx(domain, _) = &dest.hop {
            self.count_tls_sessions(domain, cfg.mta_sts.clone(), sts_failure, &batch.deliveries);
        }
        let mut delivered = batch.deliveries.into_iter();
        parts
            .iter()
            .zip(&loaded)
            .map(|(part, l)| match l {
                Ok(_) => delivered
                    .next()
                    .unwrap_or_else(|| deferred(part, "internal: no delivery result")),
                Err(why) => deferred(part, why),
            })
            .collect()
    }

    /// The MTA-STS policy for a destination it may apply to (RFC 8461; PRODUCT.md): MX
    /// delivery at level `dane` with no `[[policy]]` entry; or, when the domain announces one
    /// that cannot be had, the TLS-RPT kind of the failure (RFC 8460 §4.3.2.2). A failed
    /// discovery is no policy (§5.1; a cached policy still applies, see `sts::discover`); a
    /// policy cache that cannot be read defers, since it may hold an `enforce` policy.
    async fn mta_sts_policy(&self, dest: &Destination) -> Result<MtaStsFound, String> {
        let Hop::Mx(domain, _) = &dest.hop else {
            return Ok((None, None));
        };
        if dest.configured || dest.level != smtp::Level::Dane {
            return Ok((None, None));
        }
        let sts = match self.mta_sts.read() {
            Ok(sts) => sts.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(sts) = sts else {
            return Ok((None, None));
        };
        match sts.policy_for(domain, SystemTime::now()).await {
            Ok(sts::Discovery::Policy { policy, .. }) => Ok((Some(Arc::new(policy)), None)),
            Ok(sts::Discovery::NoPolicy(sts::DiscoveryError::NoRecord)) => Ok((None, None)),
            Ok(sts::Discovery::NoPolicy(why)) => {
                tracing::warn!(target: "relay", "MTA-STS for {domain}: {why}; delivering as without a policy");
                Ok((None, why.result_type()))
            }
            Err(e) => Err(format!("MTA-STS policy cache of {domain} unreadable: {e}")),
        }
    }

    /// Counts the batch's sessions for `domain`'s TLS-RPT report (RFC 8460 §4), off the
    /// async threads; a failure to count is logged and costs nothing else.
    fn count_tls_sessions(
        &self,
        domain: &DnsName,
        policy: Option<Arc<sts::Policy>>,
        failure: Option<sts::ResultType>,
        deliveries: &[Delivery],
    ) {
        let attempts: Vec<Attempt> = deliveries
            .iter()
            .flat_map(|d| d.attempts.iter().cloned())
            .collect();
        let (store, domain) = (Arc::clone(&self.store), domain.clone());
        tokio::task::spawn_blocking(move || {
            let state = match (&policy, failure) {
                (Some(p), _) => tlsrpt::StsState::Policy(p),
                (None, Some(kind)) => tlsrpt::StsState::Failed(kind),
                (None, None) => tlsrpt::StsState::None,
            };
            if let Err(e) = tlsrpt::record(&*store, &domain, state, &attempts, SystemTime::now()) {
                tracing::warn!(target: "relay", "TLS-RPT: cannot count the sessions to {domain}: {e}");
            }
        });
    }

    /// The PKIX trust anchors in force (system roots plus `[delivery] ca_file`, as last
    /// loaded).
    pub fn pkix_roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.policy().roots)
    }

    /// Reads a claimed message's body and makes the envelope for `recipients`.
    async fn load(
        &self,
        claim: &Claim,
        recipients: &[String],
    ) -> Result<(Envelope, Message), String> {
        // RFC 8689: the tag stored on receipt goes with the envelope to the delivery.
        let envelope = Envelope::new(claim.sender.clone(), recipients.iter().cloned())
            .map_err(|e| format!("bad envelope in the queue: {e}"))?
            .with_tls_request(claim.dsn.tls_request);
        let raw = self.read_body(&claim.id).await?;
        let message = Message::new(&raw).map_err(|e| format!("queued message unusable: {e}"))?;
        Ok((envelope, message))
    }

    async fn read_body(&self, id: &QueueId) -> Result<Vec<u8>, String> {
        let store = Arc::clone(&self.store);
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let mut raw = Vec::new();
            store
                .body(&id)
                .and_then(|mut r| {
                    std::io::Read::read_to_end(&mut r, &mut raw).map_err(|e| {
                        crate::queue::QueueError::Io {
                            path: id.as_str().into(),
                            source: e,
                        }
                    })
                })
                .map(|_| raw)
                .map_err(|e| format!("cannot read the queued message: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err("cannot read the queued message".into()))
    }

    /// Everything about one claimed message is known: expire what is past its lifetime,
    /// log each recipient, queue the DSNs owed, record the try and end the claim.
    async fn finish(&self, tracker: Arc<Tracker>) {
        let claim = &tracker.claim;
        let (mut outcomes, attempts) = match tracker.results.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        let now = unix_now();
        let expired = self.settings.retry.expired(claim.arrival_time, now);
        let mut expired_recipients = Vec::new();
        for o in &mut outcomes {
            if o.outcome == Fate::Deferred && expired {
                o.outcome = Fate::Bounced;
                expired_recipients.push(o.address.clone());
            }
        }
        let delay = delay_since(claim.arrival_time);
        for o in &outcomes {
            let is_expired = expired_recipients.contains(&o.address);
            log_recipient(claim, o, &attempts, delay, is_expired);
            let security = o
                .reply
                .smtp()
                .and_then(|r| r.mta.as_ref())
                .and_then(|mta| {
                    attempts
                        .iter()
                        .rev()
                        .find(|a| a.address == Some(mta.address))
                })
                .or(attempts.last())
                .map(|a| a.security);
            metrics::delivery(
                match (o.outcome, is_expired) {
                    (Fate::Delivered, _) => metrics::Outcome::Sent,
                    (Fate::Deferred, _) => metrics::Outcome::Deferred,
                    (Fate::Bounced, true) => metrics::Outcome::Expired,
                    (Fate::Bounced, false) => metrics::Outcome::Bounced,
                },
                security,
            );
        }
        for a in &attempts {
            if is_dane_failure(a) {
                metrics::dane_failure(a.rule);
            }
            // A handshake per connection, not per message carried over it.
            if let Some(tls) = &a.tls
                && !a.reused
            {
                metrics::tls_handshake(tls.resumed);
            }
        }
        let notices = self
            .notices(claim, &outcomes, &expired_recipients, now)
            .await;
        let next = self.settings.retry.next_attempt(claim.arrival_time, now);
        let store = Arc::clone(&self.store);
        let claim = claim.clone();
        let queued: Vec<QueueId> = notices.iter().map(|n| n.id.clone()).collect();
        let recorded = tokio::task::spawn_blocking(move || {
            let notices: Vec<NewMessage<'_>> = notices.iter().map(Notice::as_new).collect();
            store
                .finish_attempt(&claim, &outcomes, &attempts, next, &notices, now)
                .map(|_| ())
        })
        .await;
        let id = &tracker.claim.id;
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match recorded {
            Ok(Ok(())) => {
                for dsn in &queued {
                    tracing::info!(
                        target: "relay",
                        queue_id = %id,
                        "{id}: sender delivery status notification: {dsn}"
                    );
                }
                if !queued.is_empty() {
                    self.wake();
                }
            }
            Ok(Err(QueueError::LeaseLost(_))) => tracing::warn!(
                target: "relay",
                queue_id = %id,
                "{id}: lease lost: another node took the message over; this try is not recorded and its notifications are not sent (the other node's are)"
            ),
            Ok(Err(e)) => tracing::error!(
                target: "relay",
                "{id}: cannot record the delivery attempt: {e}; it will be tried again"
            ),
            Err(e) => tracing::error!(
                target: "relay",
                "{id}: recording the delivery attempt failed: {e}; it will be tried again"
            ),
        }
    }

    /// The DSNs owed for this try (RFC 3461 §4.1 NOTIFY decides which): failures (bounces
    /// and expiries) by default, successes when asked. Never to the null sender. They are
    /// queued with the try's record ([`Store::finish_attempt`]).
    async fn notices(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        expired: &[String],
        now: Timestamp,
    ) -> Vec<Notice> {
        let failed: Vec<&RecipientOutcome> = outcomes
            .iter()
            .filter(|o| o.outcome == Fate::Bounced)
            .collect();
        if claim.sender.is_empty() {
            for o in failed {
                tracing::info!(
                    target: "relay",
                    queue_id = %claim.id,
                    "{}: to=<{}>: undeliverable bounce (null sender) dropped: {}",
                    claim.id, o.address, o.reply
                );
            }
            return Vec::new();
        }
        let wanted = |o: &&RecipientOutcome, action| dsn::wanted(&claim.dsn, &o.address, action);
        let failures: Vec<dsn::Reported<'_>> = failed
            .iter()
            .filter(|o| wanted(o, Action::Failed))
            .map(|o| dsn::Reported {
                outcome: o,
                action: Action::Failed,
                expired: expired.contains(&o.address),
            })
            .collect();
        let successes: Vec<dsn::Reported<'_>> = outcomes
            .iter()
            .filter(|o| o.outcome == Fate::Delivered)
            .filter(|o| wanted(o, Action::Relayed))
            .map(|o| dsn::Reported {
                outcome: o,
                action: Action::Relayed,
                expired: false,
            })
            .collect();
        let mut notices = Vec::new();
        for reported in [failures, successes] {
            if reported.is_empty() {
                continue;
            }
            let original = match self.read_body(&claim.id).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(target: "relay", "{}: DSN without the original: {e}", claim.id);
                    Vec::new()
                }
            };
            let hostname = self.settings.hostname.as_str().to_owned();
            let report = dsn::Report {
                reporting_mta: &hostname,
                queue_id: claim.id.as_str(),
                arrival: claim.arrival_time,
                sender: &claim.sender,
                dsn: &claim.dsn,
                recipients: reported,
                original: &original,
                now,
            };
            let body = match dsn::build(&report) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(target: "relay", "{}: cannot build a DSN: {e}", claim.id);
                    continue;
                }
            };
            let Ok(envelope) = Envelope::new("", [claim.sender.clone()]) else {
                tracing::error!(target: "relay", "{}: the sender cannot receive a DSN", claim.id);
                continue;
            };
            // RFC 8689 §5: the DSN of a REQUIRETLS message is sent with REQUIRETLS too (from
            // the null sender, it still goes where REQUIRETLS cannot: see smtp::deliver).
            let dsn = DsnParams {
                tls_request: match claim.dsn.tls_request {
                    TlsRequest::Required => TlsRequest::Required,
                    _ => TlsRequest::Default,
                },
                ..DsnParams::default()
            };
            notices.push(Notice {
                id: QueueId::generate(),
                envelope: envelope.with_tls_request(dsn.tls_request),
                dsn,
                body,
            });
        }
        notices
    }
}

/// A delivery status notification to queue with the try that owes it.
struct Notice {
    id: QueueId,
    envelope: Envelope,
    dsn: DsnParams,
    body: Vec<u8>,
}

impl Notice {
    fn as_new(&self) -> NewMessage<'_> {
        NewMessage {
            id: &self.id,
            envelope: &self.envelope,
            dsn: &self.dsn,
            body: &self.body,
        }
    }
}

/// Whether an attempt failed on DANE's account: a host skipped or a connection refused by
/// the RFC 7672 rules (for the DANE failures metric).
fn is_dane_failure(a: &Attempt) -> bool {
    use smtp::outcome::Rule;
    !a.delivered
        && (a.failure.is_some() || a.address.is_none())
        && matches!(
            a.rule,
            Rule::DaneMandatory
                | Rule::DaneAuth
                | Rule::DaneUnusableRecords
                | Rule::HostUnusable
                | Rule::DaneOnly
        )
}

/// The Postfix-style line of one recipient: `ID: to=<b@x>, relay=mx.x[192.0.2.1]:25,
/// delay=0.4, dsn=2.0.0, status=sent (250 2.0.0 Ok)`.
fn log_recipient(
    claim: &Claim,
    o: &RecipientOutcome,
    attempts: &[Attempt],
    delay: f64,
    expired: bool,
) {
    let (status, class) = match o.outcome {
        Fate::Delivered => ("sent", 2),
        Fate::Deferred => ("deferred", 4),
        Fate::Bounced => ("bounced", 5),
    };
    let reply = o.reply.smtp();
    let relay = match reply.and_then(|r| r.mta.as_ref()) {
        Some(mta) => {
            let port = attempts
                .iter()
                .rev()
                .find(|a| a.address == Some(mta.address))
                .map_or(25, |a| a.port);
            format!("{}[{}]:{port}", mta.host, mta.address)
        }
        None => match attempts.last() {
            Some(a) => match a.address {
                Some(ip) => format!("{}[{ip}]:{}", a.host, a.port),
                None => a.host.to_string(),
            },
            None => "none".into(),
        },
    };
    let dsn = match reply.and_then(|r| r.enhanced) {
        Some(e) if !expired => e.to_string(),
        _ if expired => "4.4.7".into(),
        _ => format!("{class}.0.0"),
    };
    let text = if expired {
        format!("delivery time expired: {}", o.reply)
    } else {
        o.reply.to_string()
    };
    let security = attempts.last().map_or(Security::None, |a| a.security);
    tracing::info!(
        target: "relay",
        queue_id = %claim.id,
        to = %o.address,
        relay = %relay,
        delay = delay,
        dsn = %dsn,
        status = status,
        security = %security,
        "{}: to=<{}>, relay={relay}, delay={delay:.1}, dsn={dsn}, status={status} ({text})",
        claim.id,
        o.address,
    );
}
