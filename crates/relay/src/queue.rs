//! The durable queue: the [`Store`] trait the daemon is written against, and [`LocalStore`],
//! its embedded implementation (bodies as spool files, envelopes and state in SQLite).
//!
//! # Sync, not async
//!
//! [`Store`] is a plain synchronous trait (`Send + Sync`, object safe). Every call is a short
//! transaction that must reach stable storage before it returns (fsync), which is blocking
//! work whatever the back-end; the daemon calls the store from `tokio::task::spawn_blocking`
//! (or a dedicated thread). This keeps the trait usable as `Arc<dyn Store>` without boxing
//! futures, and a PostgreSQL implementation can run its client on that blocking thread
//! (the synchronous `postgres` crate, or `Handle::block_on` for an async client).
//!
//! # Times
//!
//! Times are Unix seconds ([`Timestamp`]), passed in by the caller: the store never reads the
//! clock for scheduling decisions, so tests and several nodes agree on what "due" means.
//!
//! # Leases
//!
//! [`Store::due`] claims messages for one worker with a [`Lease`] (an owner name and an
//! expiry). A claimed message is not due for anyone else until the lease expires or the
//! claim ends with [`Store::complete`]. Each claim carries a fresh token; a worker whose lease
//! was taken over by another claimer gets [`QueueError::LeaseLost`] from
//! [`Store::record_attempt`] and [`Store::complete`] instead of silently writing over the new
//! owner's work. In SQLite a claim is one `BEGIN IMMEDIATE` transaction (a single writer); the
//! PostgreSQL store does the same with `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
//! RETURNING`.
//!
//! # The MTA-STS policy cache
//!
//! The store also keeps the MTA-STS policies the scheduler has fetched (RFC 8461 §5.1:
//! senders SHOULD cache a policy until its `max_age` runs out, and the cache survives
//! restarts), so that an `enforce` policy still protects mail after the daemon restarts, and
//! so that nodes sharing one store share the policies they have seen (RFC 8461 §10.2: a
//! policy once seen cannot be removed by an attacker who blocks its refresh). The store keeps
//! opaque [`StsPolicyRecord`]s by domain; `crate::sts_cache` turns them into
//! `sts::CachedPolicy` values and back.
//!
//! # TLS-RPT session counters
//!
//! TLS reports (RFC 8460 §4) are daily aggregates of sessions per policy domain, so the store
//! keeps counters, not attempts: one row per UTC day, policy domain, policy, receiving MX,
//! result and addresses ([`TlsCountRecord`]), added to after each delivery batch
//! ([`Store::add_tls_counts`], one small write) and read back per domain and day
//! ([`Store::tls_counts`]). Which (domain, day) reports are done is kept beside them
//! ([`Store::finish_tls_report`]), so that sending is idempotent across restarts and nodes.
//! As with the policy cache, the store does not interpret what it counts: `crate::tlsrpt`
//! does.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns::DnsName;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

mod group;
pub mod postgres;
mod spool;
use group::GroupCommit;
use serde::{Deserialize, Serialize};
use smtp::outcome::RecipientOutcome;
use smtp::server::{Notify, Ret};
use smtp::{Attempt, Envelope, Fate, Security, TlsRequest};
use spool::{Spool, fsync_dir, write_durably};

/// Unix seconds.
pub type Timestamp = i64;

/// Unix seconds now (0 if the clock is before 1970).
pub fn now() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Timestamp::try_from(d.as_secs()).unwrap_or(Timestamp::MAX)
    })
}

/// A queue id: unique (time in microseconds plus a random part, so that ids made on several
/// nodes do not collide), sortable by arrival, and safe as a file name (upper-case hex, 24
/// characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

/// The length of a queue id.
const ID_LEN: usize = 24;

impl QueueId {
    /// A new id, strictly greater than every id made before by this process.
    pub fn generate() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut prev = LAST.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(prev.saturating_add(1));
            match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(seen) => prev = seen,
            }
        };
        let mut h = RandomState::new().build_hasher();
        h.write_u64(micros);
        h.write_u32(std::process::id());
        let random = h.finish() & 0xFF_FFFF;
        Self(format!("{micros:018X}{random:06X}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueId {
    type Error = QueueError;
    fn try_from(s: String) -> Result<Self, QueueError> {
        if s.len() == ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            Ok(Self(s))
        } else {
            Err(QueueError::BadId(s))
        }
    }
}

impl std::str::FromStr for QueueId {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, QueueError> {
        Self::try_from(s.to_owned())
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.0
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What can go wrong in the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The database failed.
    #[error("queue database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL store's database failed (or cannot be reached).
    #[error("queue database: {0}")]
    Postgres(#[from] postgres::PgError),
    /// Stored JSON could not be written or read back.
    #[error("queue record: {0}")]
    Json(#[from] serde_json::Error),
    /// `PRAGMA integrity_check` did not answer `ok`.
    #[error("queue database {path} is damaged: {report}")]
    Integrity {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        report: String,
    },
    /// The database was written by a newer danemta.
    #[error("queue database schema version {found} is newer than this danemta ({supported})")]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// Not a queue id.
    #[error("{0:?} is not a queue id")]
    BadId(String),
    /// No message with this id.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// The group commit this operation was part of failed.
    #[error("{0}")]
    Batch(Arc<QueueError>),
    /// A message with this id is already queued.
    #[error("a message {0} is already in the queue")]
    Exists(QueueId),
    /// The claim's lease was taken over by another claimer (it had expired).
    #[error("the lease on {0} was lost to another claimer")]
    LeaseLost(QueueId),
    /// The message has no body (see [`Recovery::damaged_bodies`]).
    #[error("the body of {0} is missing or damaged")]
    MissingBody(QueueId),
    /// The store's lock was poisoned by a panic in another thread.
    #[error("queue store lock poisoned")]
    Poisoned,
    /// A bug in the store: the named invariant did not hold.
    #[error("internal error in the queue store: {0}")]
    Internal(&'static str),
    /// This store does not implement the named feature (a [`Store`] written before it
    /// existed): reported, never taken for an empty answer.
    #[error("the queue store does not support {0}")]
    Unsupported(&'static str),
}

impl QueueError {
    /// Whether the failure is a full file system (or a full quota): the spool or the
    /// database could not grow. The listener answers `452 4.3.1` (RFC 3463 §3.4: mail
    /// system full) instead of a generic `451`, as Postfix does.
    pub fn is_storage_full(&self) -> bool {
        match self {
            QueueError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
            }
            QueueError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            QueueError::Postgres(e) => e.is_storage_full(),
            QueueError::Batch(inner) => inner.is_storage_full(),
            _ => false,
        }
    }

    /// Whether the local queue could not be opened or written for lack of permission (the
    /// spool belongs to the daemon's user), rather than for a fault of the queue itself:
    /// `danemta sendmail` then hands the message to the daemon over SMTP.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            QueueError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            QueueError::Db(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::PermissionDenied
            ),
            QueueError::Batch(inner) => inner.is_permission_denied(),
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Who claims, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The claimer (node and worker), kept for the queue view and for debugging.
    pub owner: String,
    /// The lease ends at this time; after it, the message is due again for anyone.
    pub until: Timestamp,
}

/// The delivery status notification parameters of a message (RFC 3461), kept with it so
/// that its DSNs honour them: `RET` and `ENVID` of MAIL, `NOTIFY` and `ORCPT` of each RCPT.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnParams {
    /// `RET=`: what a failure DSN returns (§4.3); absent means the headers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// `ENVID=`, decoded (§4.4): repeated as `Original-Envelope-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// Per recipient that gave parameters (by address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<RecipientDsn>,
    /// The sender's TLS request (RFC 8689 §4.1: the tag the message got on receipt):
    /// `requiretls` (REQUIRETLS on MAIL FROM) or `tls-required-no` (the header field). Kept
    /// here, in the same JSON, because it is a per-message parameter like `RET`: absent (and
    /// read back as absent from older entries) means neither. No schema change.
    #[serde(default, skip_serializing_if = "is_default_request")]
    pub tls_request: TlsRequest,
}

fn is_default_request(r: &TlsRequest) -> bool {
    *r == TlsRequest::Default
}

/// One recipient's `NOTIFY` and `ORCPT` (RFC 3461 §4.1, §4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientDsn {
    /// The recipient (as in the envelope).
    pub address: String,
    /// `NOTIFY=`; absent means `FAILURE` (and, at our choice, no delay warnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;address`, decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<(String, String)>,
}

impl DsnParams {
    /// The parameters given for `address`, if any.
    pub fn recipient(&self, address: &str) -> Option<&RecipientDsn> {
        self.recipients.iter().find(|r| r.address == address)
    }
}

/// A message to queue with [`Store::accept`].
#[derive(Clone, Copy, Debug)]
pub struct NewMessage<'a> {
    /// Its id, chosen by the caller (so that it can appear in the `Received:` field written
    /// before the message is stored): [`QueueId::generate`].
    pub id: &'a QueueId,
    /// The envelope.
    pub envelope: &'a Envelope,
    /// Its DSN parameters.
    pub dsn: &'a DsnParams,
    /// The content, CRLF line ends.
    pub body: &'a [u8],
}

/// One cluster-wide connection slot of a destination, as the store that lent it names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionSlot {
    /// The destination's key in the store.
    pub key: i32,
    /// Which of its slots.
    pub index: i32,
    /// The store's session that holds it (a slot of an older session is gone already).
    pub session: u64,
}

/// A message claimed by [`Store::due`]: what a worker needs to attempt a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The message.
    pub id: QueueId,
    /// This claim's token: [`Store::record_attempt`] and [`Store::complete`] check it.
    pub token: String,
    /// The lease.
    pub lease: Lease,
    /// The envelope sender (empty for the null sender).
    pub sender: String,
    /// The recipients still to deliver whose next attempt is due, in envelope order.
    pub recipients: Vec<String>,
    /// When the message arrived.
    pub arrival_time: Timestamp,
    /// Its DSN parameters.
    pub dsn: DsnParams,
    /// Tries made so far (the most of any claimed recipient): 0 on the first.
    pub attempts: u32,
}

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientState {
    /// Not delivered yet (never tried, or deferred).
    Pending,
    /// Accepted by the next hop.
    Delivered,
    /// Failed permanently (or expired): a DSN is owed to the sender.
    Bounced,
}

impl RecipientState {
    fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Bounced => "bounced",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "delivered" => RecipientState::Delivered,
            "bounced" => RecipientState::Bounced,
            _ => RecipientState::Pending,
        }
    }
}

/// What [`Store::record_attempt`] left: how many recipients are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Still to deliver.
    pub pending: usize,
    /// Delivered.
    pub delivered: usize,
    /// Bounced.
    pub bounced: usize,
}

impl Progress {
    /// Every recipient is delivered or bounced: [`Store::complete`] removes the message.
    pub fn done(&self) -> bool {
        self.pending == 0
    }
}

/// The queue a message is in, as Postfix's `postqueue -j` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    /// Claimed by a worker (a live lease).
    Active,
    /// At least one attempt failed temporarily.
    Deferred,
    /// Held by the operator (or by recovery): never due until released.
    Hold,
    /// Accepted, not tried yet.
    Incoming,
}

/// One recipient in the queue view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientView {
    /// The address.
    pub address: String,
    /// Why it is still queued (the last reply or reason); absent before the first attempt.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delay_reason: Option<String>,
    /// Where it stands.
    pub state: RecipientState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is due next (Unix seconds).
    pub next_attempt: Timestamp,
    /// The security of the last attempt's connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub security: Option<Security>,
}

/// One message in the queue view: the fields of `postqueue -j` plus ours (PRODUCT.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// `active | deferred | hold | incoming`.
    pub queue_name: QueueName,
    /// The id.
    pub queue_id: QueueId,
    /// Unix seconds.
    pub arrival_time: Timestamp,
    /// Bytes of the body.
    pub message_size: u64,
    /// The envelope sender (empty for the null sender).
    pub sender: String,
    /// The recipients not yet delivered or bounced (all of them in [`Store::show`]).
    pub recipients: Vec<RecipientView>,
    /// Why the message is held, when it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hold_reason: Option<String>,
    /// Every attempt made, oldest first (only in [`Store::show`]).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<Attempt>,
}

/// The size of the queue, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages queued.
    pub messages: u64,
    /// When the oldest arrived, if any is queued.
    pub oldest_arrival: Option<Timestamp>,
}

/// One domain's cached MTA-STS policy as the store keeps it (RFC 8461 §5.1). The store does
/// not interpret `policy`: decoding it, and dropping an entry that no longer decodes, is the
/// business of `crate::sts_cache`. The times are copies of what `policy` says, in columns of
/// their own so that the store can find expired entries without reading them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsPolicyRecord {
    /// The cached policy and the time of its fetch, as JSON (`sts::CachedPolicy`).
    pub policy: String,
    /// When the policy was fetched (Unix seconds).
    pub fetched_at: Timestamp,
    /// When it stops applying: `fetched_at` plus its `max_age` (RFC 8461 §3.2), Unix
    /// seconds. [`Store::prune_sts_policies`] removes the entry from then on.
    pub expires_at: Timestamp,
}

/// One TLS-RPT session counter (RFC 8460 §4.4) as the store keeps it: the sessions of one
/// UTC day to one policy domain under one policy, with one result, between one pair of
/// addresses. The store adds and sums these without interpreting the text fields; their
/// meaning (and their check when read back) belongs to `crate::tlsrpt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCountRecord {
    /// The UTC day: Unix seconds of its 00:00:00Z.
    pub day: Timestamp,
    /// The policy domain (the recipient domain).
    pub domain: DnsName,
    /// `policy-type`: `tlsa`, `sts` or `no-policy-found`.
    pub policy_type: String,
    /// `policy-string`, one string per line (may be empty).
    pub policy_strings: Vec<String>,
    /// `mx-host` of the policy (may be empty).
    pub policy_mx: Vec<String>,
    /// The `result-type` of a failed session; `None` for a successful one.
    pub result: Option<String>,
    /// `receiving-mx-hostname`; empty when unknown.
    pub receiving_mx: String,
    /// `sending-mta-ip`, when known.
    pub sending_ip: Option<IpAddr>,
    /// `receiving-ip`, when a connection was made.
    pub receiving_ip: Option<IpAddr>,
    /// How many sessions.
    pub sessions: u64,
}

/// The durable queue, as the daemon and `danemta queue` use it. See the module documentation
/// for why it is synchronous, and how leases work.
pub trait Store: Send + Sync {
    /// Queues a message. Returns only when the body and the envelope are on stable storage:
    /// the listener answers `250` to end-of-data after this, never before. An id already in
    /// the queue is refused ([`QueueError::Exists`]).
    fn accept(&self, message: &NewMessage<'_>, now: Timestamp) -> Result<(), QueueError>;

    /// Claims up to `limit` messages with a recipient due at `now` that are neither held nor
    /// under a live lease, oldest due first, for `lease`.
    fn due(&self, now: Timestamp, limit: usize, lease: &Lease) -> Result<Vec<Claim>, QueueError> {
        self.due_except(now, limit, lease, &[])
    }

    /// [`Store::due`], except that recipients whose domain (lower case) is in `busy_domains`
    /// do not make a message due: the scheduler leaves the mail of destinations that already
    /// hold their share of the claimed messages in the queue, untouched, until they have
    /// room.
    fn due_except(
        &self,
        now: Timestamp,
        limit: usize,
        lease: &Lease,
        busy_domains: &[String],
    ) -> Result<Vec<Claim>, QueueError>;

    /// When to look for due messages next: the earliest `next_attempt` of a pending
    /// recipient of a message neither held nor leased, or the earliest end of a lease if
    /// sooner (never later than the next message falls due). `None` when nothing is queued.
    /// The scheduler sleeps until then (or until woken), never polling.
    fn next_due(&self) -> Result<Option<Timestamp>, QueueError>;

    /// Stores one delivery try of a claimed message: the typed outcomes per recipient and the
    /// attempts (connections) made. Delivered and bounced recipients are done; a deferred one
    /// counts one more attempt and is due again at `next_attempt` (the scheduler's back-off).
    /// The lease is kept: end the claim with [`Store::complete`].
    fn record_attempt(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
    ) -> Result<Progress, QueueError>;

    /// Finishes a try in one step: queues the delivery status notifications it owes
    /// (`notices`, as by [`Store::accept`] at `now`), records it ([`Store::record_attempt`])
    /// and ends the claim ([`Store::complete`]); `true` when the message left the queue. A
    /// store shared by several nodes does it in one transaction, under the lease check: only
    /// the node whose lease holds queues the notices, and a crash writes all or none, so
    /// exactly one node writes each bounce. The default, for a store of one node, queues the
    /// notices first, then records and completes: a crash in between sends them twice, never
    /// zero times.
    fn finish_attempt(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
        notices: &[NewMessage<'_>],
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        for notice in notices {
            self.accept(notice, now)?;
        }
        self.record_attempt(claim, outcomes, attempts, next_attempt)?;
        self.complete(claim)
    }

    /// Whether several nodes share this store (each one's scheduler then looks at the queue
    /// at least once per lease time, and counts connection slots through the store).
    fn is_shared(&self) -> bool {
        false
    }

    /// Takes one of the `limit` connection slots of `destination` (the next hop, as the
    /// scheduler names it) that every node sharing this store counts against, so that
    /// `max_connections_per_destination` holds across the cluster; `None` when every slot is
    /// held (by this node or others). A slot is held until
    /// [`Store::release_connection_slot`], or until the node's session with the store ends
    /// (a dead node holds none). Only a shared store ([`Store::is_shared`]) counts slots: for
    /// a store of one node the scheduler's own count is the limit, and the default refuses.
    fn take_connection_slot(
        &self,
        _destination: &str,
        _limit: usize,
    ) -> Result<Option<ConnectionSlot>, QueueError> {
        Err(QueueError::Internal(
            "connection slots are counted only by a store shared by several nodes",
        ))
    }

    /// Gives back a slot of [`Store::take_connection_slot`].
    fn release_connection_slot(&self, _slot: &ConnectionSlot) -> Result<(), QueueError> {
        Ok(())
    }

    /// Whether this node leads the nodes sharing the store: the leader does what must be
    /// done once for the whole queue (sending TLS-RPT reports). The first node to ask leads
    /// until it dies or loses the store; then the next to ask. A store of one node always
    /// leads.
    fn leads_cluster(&self) -> Result<bool, QueueError> {
        Ok(true)
    }

    /// Extends a claim's lease to `until` (a long delivery renews before its lease runs
    /// out). Fails with [`QueueError::LeaseLost`] when another claimer has taken it over.
    fn renew(&self, claim: &Claim, until: Timestamp) -> Result<Claim, QueueError>;

    /// Ends a claim untried: its pending recipients are due again at `until`, no attempt is
    /// counted (the scheduler had no room for its destination, which is busy).
    fn postpone(&self, claim: &Claim, until: Timestamp) -> Result<(), QueueError>;

    /// Ends a claim. A message whose recipients are all done leaves the queue (its body is
    /// removed) and `true` is returned; otherwise its lease is released and it is due again
    /// at its recipients' next attempt.
    fn complete(&self, claim: &Claim) -> Result<bool, QueueError>;

    /// Every message, in id (arrival) order, handed to `visit` one at a time as it is read
    /// (a queue of 100,000 messages is never held in memory at once); the view of `danemta
    /// queue list`.
    fn scan(&self, now: Timestamp, visit: &mut dyn FnMut(QueueEntry)) -> Result<(), QueueError>;

    /// Every message, in id (arrival) order, collected.
    fn list(&self, now: Timestamp) -> Result<Vec<QueueEntry>, QueueError> {
        let mut out = Vec::new();
        self.scan(now, &mut |e| out.push(e))?;
        Ok(out)
    }

    /// How many messages are queued and when the oldest arrived (cheap: for metrics).
    fn stats(&self) -> Result<QueueStats, QueueError>;

    /// One message with every recipient and the attempt history.
    fn show(&self, id: &QueueId, now: Timestamp) -> Result<QueueEntry, QueueError>;

    /// Holds a message: never due until released. Operator actions (`hold`, `release`,
    /// `delete`, `flush`) need no lease; a worker whose message was deleted meanwhile gets
    /// [`QueueError::NotFound`] when it records its attempt.
    fn hold(&self, id: &QueueId, reason: &str) -> Result<(), QueueError>;

    /// Releases a held message.
    fn release(&self, id: &QueueId) -> Result<(), QueueError>;

    /// Removes a message and its body without delivering it.
    fn delete(&self, id: &QueueId) -> Result<(), QueueError>;

    /// Makes the given messages (every message when `ids` is empty) due at `now`. Held
    /// messages stay held. Returns how many messages were flushed.
    fn flush(&self, ids: &[QueueId], now: Timestamp) -> Result<usize, QueueError>;

    /// Reads a message's body.
    fn body(&self, id: &QueueId) -> Result<Box<dyn Read + Send>, QueueError>;

    /// The MTA-STS policy cached for `domain` (RFC 8461 §5.1), expired or not; `None` when
    /// there is none. A failed read is an error, never `None`: taking a broken store for an
    /// empty cache would let an attacker who blocks the policy fetch downgrade a domain that
    /// enforces MTA-STS (RFC 8461 §10.2).
    ///
    /// The default, for stores written before the cache existed, fails with
    /// [`QueueError::Unsupported`]; every real store implements the four cache methods.
    fn sts_policy(&self, domain: &DnsName) -> Result<Option<StsPolicyRecord>, QueueError> {
        let _ = domain;
        Err(QueueError::Unsupported("the MTA-STS policy cache"))
    }

    /// Caches `record` as the MTA-STS policy of `domain`, replacing any other. One small
    /// write: the scheduler calls it after each policy fetch, which must not hold up the
    /// acceptance of messages. The cache is not the queue: a policy lost in a power failure
    /// is fetched again, so a store may commit it with less than full durability.
    fn put_sts_policy(&self, domain: &DnsName, record: &StsPolicyRecord) -> Result<(), QueueError> {
        let _ = (domain, record);
        Err(QueueError::Unsupported("the MTA-STS policy cache"))
    }

    /// Forgets the MTA-STS policy of `domain`, if any.
    fn remove_sts_policy(&self, domain: &DnsName) -> Result<(), QueueError> {
        let _ = domain;
        Err(QueueError::Unsupported("the MTA-STS policy cache"))
    }

    /// Removes the MTA-STS policies expired at `now` (`expires_at <= now`: RFC 8461 §5.1,
    /// an expired policy is not applied) and returns how many. Cheap (an index walk over the
    /// expired entries only); called by whoever wants, whenever.
    fn prune_sts_policies(&self, now: Timestamp) -> Result<usize, QueueError> {
        let _ = now;
        Err(QueueError::Unsupported("the MTA-STS policy cache"))
    }

    /// Adds `counts` to the TLS-RPT counters (RFC 8460 §4.4): each record's `sessions` is
    /// added to the counter with the same key (every field but `sessions`), made at zero if
    /// new. One small write, all or nothing: the scheduler calls it after each delivery
    /// batch. Counters are statistics, not mail: a store may commit them with less than
    /// full durability (a power failure may lose the last few).
    ///
    /// The default, for stores written before the counters existed, fails with
    /// [`QueueError::Unsupported`], as do the other TLS-RPT methods.
    fn add_tls_counts(&self, counts: &[TlsCountRecord]) -> Result<(), QueueError> {
        let _ = counts;
        Err(QueueError::Unsupported("TLS-RPT counters"))
    }

    /// The TLS-RPT counters of `domain` on the UTC day starting at `day` (Unix seconds of
    /// 00:00:00Z), in no particular order.
    fn tls_counts(
        &self,
        domain: &DnsName,
        day: Timestamp,
    ) -> Result<Vec<TlsCountRecord>, QueueError> {
        let _ = (domain, day);
        Err(QueueError::Unsupported("TLS-RPT counters"))
    }

    /// The domains with counters on the UTC day starting at `day` whose report is not
    /// finished ([`Store::finish_tls_report`]), in name order.
    fn tls_reports_due(&self, day: Timestamp) -> Result<Vec<DnsName>, QueueError> {
        let _ = day;
        Err(QueueError::Unsupported("TLS-RPT counters"))
    }

    /// Records that the report of `domain` for the day starting at `day` is done with, and
    /// how (`outcome`: e.g. sent, or no TLS-RPT record), at `now`: it is not due again.
    fn finish_tls_report(
        &self,
        domain: &DnsName,
        day: Timestamp,
        outcome: &str,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let _ = (domain, day, outcome, now);
        Err(QueueError::Unsupported("TLS-RPT counters"))
    }

    /// Removes the counters and report records of days starting before `before`; returns
    /// how many counters went.
    fn prune_tls_counts(&self, before: Timestamp) -> Result<usize, QueueError> {
        let _ = before;
        Err(QueueError::Unsupported("TLS-RPT counters"))
    }
}

/// What [`LocalStore::open`] found and repaired after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Spool files without a row (a crash between the body and the row: the client never got
    /// `250`), moved to `quarantine/` with a `.reason` file beside them.
    pub orphan_bodies: Vec<QueueId>,
    /// Rows whose body file is missing or not as long as the message accepted (a crash on a
    /// file system without a journal, a disk error, someone's hand), put on hold with the
    /// reason given here: never silently dropped, never delivered cut short.
    pub damaged_bodies: Vec<(QueueId, String)>,
    /// Half-written temporary files removed.
    pub temporary_files: usize,
    /// Expired leases released (messages that were being delivered go back to the queue).
    pub expired_leases: usize,
    /// Messages without a pending recipient that a crash left between their last delivery
    /// and their removal: removed now (by the owner only).
    pub finished: Vec<QueueId>,
    /// Whether the spool was scanned for orphan and temporary files: only by the process that
    /// holds the queue's lock (the daemon). Another process opening the same queue while it
    /// runs (`danemta queue`) must not take a body whose row is being written for an orphan.
    pub spool_scanned: bool,
}

// Statements about one message's recipients. `+state` keeps SQLite from answering them
// through the `recipients_due (state, next_attempt)` index, which would read every pending
// recipient of the whole queue for each message (quadratic in a queue of 100,000): they must
// go through the primary key `(message, position)`. A test checks the query plans.

/// Due recipients of messages that are neither held nor leased, earliest first (through the
/// `recipients_due` index: no sort).
const DUE_MESSAGES: &str = "SELECT m.id, m.sender, m.arrival, m.dsn FROM recipients r \
     JOIN messages m ON m.id = r.message \
     WHERE r.state = 'pending' AND r.next_attempt <= ?1 AND m.hold_reason IS NULL \
     AND (m.lease_until IS NULL OR m.lease_until <= ?1) \
     AND lower(substr(r.address, instr(r.address, '@') + 1)) \
         NOT IN (SELECT value FROM json_each(?2)) \
     ORDER BY r.next_attempt";

/// When the earliest pending recipient of a message neither held nor leased is due (along
/// the `recipients_due` index, stopping at the first).
const NEXT_FREE: &str = "SELECT r.next_attempt FROM recipients r \
     JOIN messages m ON m.id = r.message \
     WHERE r.state = 'pending' AND m.hold_reason IS NULL AND m.lease_until IS NULL \
     ORDER BY r.next_attempt LIMIT 1";

/// The earliest lease end (the `messages_lease` index).
const NEXT_LEASE_END: &str = "SELECT min(lease_until) FROM messages WHERE lease_until IS NOT NULL";

/// A claimed message's due recipients.
const DUE_RECIPIENTS: &str = "SELECT address, attempts FROM recipients WHERE message = ?1 \
     AND +state = 'pending' AND next_attempt <= ?2 ORDER BY position";

/// One recipient's outcome.
const RECORD_RECIPIENT: &str = "UPDATE recipients SET state = ?3, attempts = attempts + 1, \
     next_attempt = ?4, delay_reason = ?5, security = coalesce(?6, security), outcome = ?7 \
     WHERE message = ?1 AND address = ?2 AND +state = 'pending'";

/// A message's recipients by state.
const STATE_COUNTS: &str =
    "SELECT state, count(*) FROM recipients WHERE message = ?1 GROUP BY state";

/// A message's recipients still to deliver.
/// A message's pending recipients due again later, no attempt counted.
const POSTPONE_RECIPIENTS: &str =
    "UPDATE recipients SET next_attempt = ?2 WHERE message = ?1 AND +state = 'pending'";

/// Messages none of whose recipients is pending any more (finished, but not removed).
const FINISHED_MESSAGES: &str = "SELECT id FROM messages m WHERE NOT EXISTS \
     (SELECT 1 FROM recipients r WHERE r.message = m.id AND +r.state = 'pending')";

const PENDING_COUNT: &str =
    "SELECT count(*) FROM recipients WHERE message = ?1 AND +state = 'pending'";

/// Makes a message's pending recipients due now, unless it is held.
const FLUSH_MESSAGE: &str = "UPDATE recipients SET next_attempt = min(next_attempt, ?2) \
     WHERE message = ?1 AND +state = 'pending' \
     AND (SELECT hold_reason FROM messages WHERE id = ?1) IS NULL";

/// Makes every pending recipient of messages not held due now (one statement: the set of
/// messages is built once).
const FLUSH_ALL: &str = "UPDATE recipients SET next_attempt = min(next_attempt, ?1) \
     WHERE state = 'pending' AND message IN (SELECT id FROM messages WHERE hold_reason IS NULL)";

/// Every message with its recipients, in order, for [`Store::scan`]. The recipients' state
/// is tested by the caller: in the join it would bring in the `recipients_due` index.
const SCAN: &str = "SELECT m.id, m.sender, m.arrival, m.size, m.hold_reason, m.lease_until, \
     r.address, r.attempts, r.next_attempt, r.delay_reason, r.security, r.state \
     FROM messages m LEFT JOIN recipients r ON r.message = m.id ORDER BY m.id, r.position";

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 4;

/// Version 4: TLS-RPT (RFC 8460 §4.4) session counters, one row per UTC day (Unix seconds
/// of 00:00:00Z), policy domain, policy (type, JSON arrays of its strings and MX names),
/// result (`''` for success), receiving MX and addresses (`''` when unknown); and the
/// (day, domain) reports done with. Both keyed by day first, so that a day's rows, and the
/// days to prune, are found along the primary key.
const SCHEMA_V4: &str = "
CREATE TABLE tls_counts (
    day          INTEGER NOT NULL,
    domain       TEXT NOT NULL,
    policy_type  TEXT NOT NULL,
    policy       TEXT NOT NULL,
    policy_mx    TEXT NOT NULL,
    result       TEXT NOT NULL,
    receiving_mx TEXT NOT NULL,
    sending_ip   TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    sessions     INTEGER NOT NULL,
    PRIMARY KEY (day, domain, policy_type, policy, policy_mx, result, receiving_mx,
                 sending_ip, receiving_ip)
) WITHOUT ROWID;
CREATE TABLE tls_reports (
    day     INTEGER NOT NULL,
    domain  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (day, domain)
) WITHOUT ROWID;
";

/// Adds sessions to a counter, making it if new.
const ADD_TLS_COUNT: &str = "INSERT INTO tls_counts (day, domain, policy_type, policy, \
     policy_mx, result, receiving_mx, sending_ip, receiving_ip, sessions) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (day, domain, policy_type, policy, policy_mx, result, receiving_mx, \
     sending_ip, receiving_ip) DO UPDATE SET sessions = sessions + excluded.sessions";

/// One domain's counters on one day (a primary-key prefix).
const TLS_COUNTS: &str = "SELECT policy_type, policy, policy_mx, result, receiving_mx, \
     sending_ip, receiving_ip, sessions FROM tls_counts WHERE day = ?1 AND domain = ?2";

/// The domains with counters on a day and no finished report.
const TLS_REPORTS_DUE: &str = "SELECT DISTINCT c.domain FROM tls_counts c WHERE c.day = ?1 \
     AND NOT EXISTS (SELECT 1 FROM tls_reports r WHERE r.day = ?1 AND r.domain = c.domain) \
     ORDER BY c.domain";

/// Version 3: the MTA-STS policy cache (RFC 8461 §5.1), one row per policy domain (lower
/// case, no trailing dot: a [`DnsName`]). `policy` is the JSON of `sts::CachedPolicy`;
/// `fetched_at` and `expires_at` (Unix seconds) repeat its times, the latter indexed so that
/// pruning reads only the expired rows.
const SCHEMA_V3: &str = "
CREATE TABLE sts_policies (
    domain     TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sts_policies_expiry ON sts_policies (expires_at);
";

/// Caches a domain's policy, replacing the one before.
const PUT_STS_POLICY: &str = "INSERT INTO sts_policies (domain, policy, fetched_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, \
     fetched_at = excluded.fetched_at, expires_at = excluded.expires_at";

/// Removes the policies expired at `?1` (along the `sts_policies_expiry` index).
const PRUNE_STS_POLICIES: &str = "DELETE FROM sts_policies WHERE expires_at <= ?1";

/// Version 2: leases found without a scan (for [`Store::next_due`]).
const SCHEMA_V2: &str =
    "CREATE INDEX messages_lease ON messages (lease_until) WHERE lease_until IS NOT NULL;";

const SCHEMA_V1: &str = "
CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,
    arrival     INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    hold_reason TEXT,
    dsn         TEXT NOT NULL DEFAULT '{}',
    lease_owner TEXT,
    lease_token TEXT,
    lease_until INTEGER
);
CREATE TABLE recipients (
    message      TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    address      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    delay_reason TEXT,
    security     TEXT,
    outcome      TEXT,
    PRIMARY KEY (message, position)
);
CREATE INDEX recipients_due ON recipients (state, next_attempt);
CREATE TABLE attempts (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    attempt TEXT NOT NULL
);
CREATE INDEX attempts_message ON attempts (message);
";

/// The embedded store: bodies in `DIR/spool/ID`, envelopes and state in `DIR/queue.sqlite`
/// (WAL, `synchronous=FULL`).
pub struct LocalStore {
    conn: Mutex<Connection>,
    /// Accepted messages' rows, committed in groups.
    accepted: GroupCommit<Row>,
    /// Finished claims, committed in groups; the outcome says whether the message is gone.
    completed: GroupCommit<Claim, bool>,
    /// `DIR/lock`, held exclusively for the store's lifetime by the owning process.
    _lock: Option<File>,
    spool: Spool,
    quarantine: PathBuf,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

fn is_id(name: &str) -> Option<QueueId> {
    QueueId::try_from(name.to_owned()).ok()
}

impl LocalStore {
    /// Opens (or creates) the queue in `dir`, checks the database's integrity, migrates its
    /// schema and recovers what a crash left (see [`Recovery`]); `now` decides which leases
    /// have expired. The first process to open the queue holds `DIR/lock` until the store is
    /// dropped; only that process scans the spool for orphan files.
    pub fn open(dir: &Path, now: Timestamp) -> Result<(Self, Recovery), QueueError> {
        let quarantine = dir.join("quarantine");
        for d in [dir, &quarantine] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let db = dir.join("queue.sqlite");
        let mut conn = Connection::open(&db)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let report: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if report != "ok" {
            return Err(QueueError::Integrity { path: db, report });
        }
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        migrate(&mut conn)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = match lock.try_lock() {
            Ok(()) => Some(lock),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        };
        let owner = lock.is_some();
        let spool = Spool::open(dir, owner)?;
        fsync_dir(dir)?;
        let store = Self {
            conn: Mutex::new(conn),
            accepted: GroupCommit::new(),
            completed: GroupCommit::new(),
            _lock: lock,
            spool,
            quarantine,
        };
        let recovery = store.recover(now, owner)?;
        Ok((store, recovery))
    }

    /// Makes accepted messages durable: one fsync of the spool directory (their bodies'
    /// renames), then their rows in one SQLite transaction (one WAL fsync). A row is never
    /// committed before its body's name is durable.
    fn commit_rows(&self, rows: &[Row]) -> Result<Vec<()>, QueueError> {
        self.spool.sync()?;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut message = tx.prepare_cached(
                "INSERT INTO messages (id, sender, arrival, size, dsn) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut recipient = tx.prepare_cached(
                "INSERT INTO recipients (message, position, address, next_attempt) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for row in rows {
                message.execute(params![
                    row.id.as_str(),
                    row.sender,
                    row.arrival,
                    row.size,
                    row.dsn
                ])?;
                for (position, rcpt) in row.recipients.iter().enumerate() {
                    recipient.execute(params![
                        row.id.as_str(),
                        i64::try_from(position).unwrap_or(i64::MAX),
                        rcpt,
                        row.arrival
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(vec![(); rows.len()])
    }

    /// Ends `claims` in one transaction: a message without pending recipients is removed,
    /// any other goes back to the queue. Returns, per claim, whether its message is gone.
    fn commit_completions(&self, claims: &[Claim]) -> Result<Vec<bool>, QueueError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut removed = Vec::with_capacity(claims.len());
        for claim in claims {
            Self::check_lease(&tx, claim)?;
            let pending: i64 = tx
                .prepare_cached(PENDING_COUNT)?
                .query_row([claim.id.as_str()], |r| r.get(0))?;
            if pending == 0 {
                tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                    .execute([claim.id.as_str()])?;
            } else {
                tx.prepare_cached(
                    "UPDATE messages SET lease_owner = NULL, lease_token = NULL, \
                     lease_until = NULL WHERE id = ?1",
                )?
                .execute([claim.id.as_str()])?;
            }
            removed.push(pending == 0);
        }
        tx.commit()?;
        Ok(removed)
    }

    /// The connection for a transaction that may be lost in a power failure without harm:
    /// claims (a lost lease is released at the next start anyway) and delivery records (a
    /// lost record means one more delivery, never a lost message: at-least-once). It commits
    /// with `synchronous=NORMAL` (in WAL mode: durable against a crash of the process, and
    /// made durable by the next FULL commit or checkpoint), saving an fsync per message;
    /// accepting a message, removing a finished one and operator actions stay FULL.
    fn conn_relaxed(&self) -> Result<Relaxed<'_>, QueueError> {
        let conn = self.conn()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Relaxed(conn))
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, QueueError> {
        self.conn.lock().map_err(|_| QueueError::Poisoned)
    }

    fn recover(&self, now: Timestamp, owner: bool) -> Result<Recovery, QueueError> {
        let mut recovery = Recovery {
            spool_scanned: owner,
            ..Recovery::default()
        };
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Spool files first: a body whose row is missing was never acknowledged.
        let entries = if owner {
            fs::read_dir(self.spool.dir())
                .map_err(io_err(self.spool.dir()))?
                .collect()
        } else {
            Vec::new()
        };
        for entry in entries {
            let entry = entry.map_err(io_err(self.spool.dir()))?;
            let path = entry.path();
            if written_recently(&entry, now) {
                // `danemta sendmail` may be between this body and its row right now.
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            match is_id(&name) {
                Some(id) => {
                    let known: bool = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1)",
                        [id.as_str()],
                        |r| r.get(0),
                    )?;
                    if !known {
                        let target = self.quarantine.join(&name);
                        fs::rename(&path, &target).map_err(io_err(&path))?;
                        let reason = self.quarantine.join(format!("{name}.reason"));
                        write_durably(
                            &reason,
                            b"spool file without a queue entry, left by a crash: either before the message was \
                              acknowledged (no 250 was given) or just after it was finished\n",
                        )?;
                        recovery.orphan_bodies.push(id);
                    }
                }
                None => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    recovery.temporary_files += 1;
                }
            }
        }
        if owner {
            self.spool.sync()?;
            fsync_dir(&self.quarantine)?;
        }
        recovery.orphan_bodies.sort();
        // Messages whose every recipient is done, left by a crash between recording the last
        // delivery and removing the message: finish removing them (only the owner, which
        // delivers: another process could see a message between those two steps).
        if owner {
            let finished: Vec<String> = {
                let mut stmt = tx.prepare(FINISHED_MESSAGES)?;
                stmt.query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for id in &finished {
                tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
            }
            recovery.finished = finished.iter().filter_map(|id| is_id(id)).collect();
        }
        // Then rows whose body is gone or damaged (safe in any process: a body is written
        // before its row and removed after it): held with a reason, never dropped silently and
        // never delivered cut short.
        let rows: Vec<(String, i64)> = {
            let mut stmt = tx.prepare("SELECT id, size FROM messages ORDER BY id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (id, size) in rows {
            let Some(id) = is_id(&id) else { continue };
            let Some(reason) = self.body_problem(&id, size) else {
                continue;
            };
            tx.execute(
                "UPDATE messages SET hold_reason = ?2, \
                 lease_owner = NULL, lease_token = NULL, lease_until = NULL WHERE id = ?1",
                params![id.as_str(), reason],
            )?;
            recovery.damaged_bodies.push((id, reason));
        }
        // The owner is the only process that delivers from a local queue, so every lease it
        // finds was left by a daemon that is gone: those messages go back to the queue now.
        // Anyone else releases only leases that ran out.
        recovery.expired_leases = tx.execute(
            "UPDATE messages SET lease_owner = NULL, lease_token = NULL, lease_until = NULL \
             WHERE lease_until IS NOT NULL AND (?2 OR lease_until <= ?1)",
            params![now, owner],
        )?;
        tx.commit()?;
        drop(conn);
        for id in &recovery.finished {
            self.spool.remove(id)?;
        }
        Ok(recovery)
    }

    /// What is wrong with the body file of `id`, accepted with `size` bytes: missing, or
    /// not that long.
    fn body_problem(&self, id: &QueueId, size: i64) -> Option<String> {
        match fs::metadata(self.spool.path(id)) {
            Err(_) => Some("body file missing from the spool".to_owned()),
            Ok(m) if i64::try_from(m.len()).ok() != Some(size) => Some(format!(
                "body file damaged: {} bytes in the spool, {size} were accepted",
                m.len()
            )),
            Ok(_) => None,
        }
    }

    fn check_lease(tx: &rusqlite::Transaction<'_>, claim: &Claim) -> Result<(), QueueError> {
        let token: Option<Option<String>> = tx
            .query_row(
                "SELECT lease_token FROM messages WHERE id = ?1",
                [claim.id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        match token {
            None => Err(QueueError::NotFound(claim.id.clone())),
            Some(Some(t)) if t == claim.token => Ok(()),
            Some(_) => Err(QueueError::LeaseLost(claim.id.clone())),
        }
    }

    fn entry(
        conn: &Connection,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<QueueEntry>, QueueError> {
        let row = conn
            .query_row(
                "SELECT sender, arrival, size, hold_reason, lease_until FROM messages WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((sender, arrival, size, hold_reason, lease_until)) = row else {
            return Ok(None);
        };
        let queue_id = QueueId::try_from(id.to_owned())?;
        let mut stmt = conn.prepare(
            "SELECT address, state, attempts, next_attempt, delay_reason, security \
             FROM recipients WHERE message = ?1 ORDER BY position",
        )?;
        let mut recipients = Vec::new();
        for row in stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })? {
            let (address, state, attempts, next_attempt, delay_reason, security) = row?;
            let state = RecipientState::parse(&state);
            let security = match security {
                Some(s) => Some(serde_json::from_str(&s)?),
                None => None,
            };
            recipients.push(RecipientView {
                address,
                delay_reason,
                state,
                attempts,
                next_attempt,
                security,
            });
        }
        let queue_name = name_of(hold_reason.is_some(), lease_until, &recipients, now);
        let mut history = Vec::new();
        let mut stmt =
            conn.prepare("SELECT attempt FROM attempts WHERE message = ?1 ORDER BY seq")?;
        for json in stmt.query_map([id], |r| r.get::<_, String>(0))? {
            history.push(serde_json::from_str(&json?)?);
        }
        Ok(Some(QueueEntry {
            queue_name,
            queue_id,
            arrival_time: arrival,
            message_size: u64::try_from(size).unwrap_or(0),
            sender,
            recipients,
            hold_reason,
            history,
        }))
    }
}

/// How long a spool file without a row is left alone by recovery: another process (`danemta
/// sendmail`) may be about to write its row.
const WRITER_GRACE: Duration = Duration::from_secs(600);

/// Whether a spool entry was modified less than [`WRITER_GRACE`] before `now`.
fn written_recently(entry: &fs::DirEntry, now: Timestamp) -> bool {
    let modified = entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now.saturating_sub(modified) < i64::try_from(WRITER_GRACE.as_secs()).unwrap_or(i64::MAX)
}

/// The store's connection at `synchronous=NORMAL`, back to FULL when dropped.
struct Relaxed<'a>(MutexGuard<'a, Connection>);

impl std::ops::Deref for Relaxed<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Relaxed<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        // Should this fail, later FULL transactions would run at NORMAL: say so loudly.
        if let Err(e) = self.0.pragma_update(None, "synchronous", "FULL") {
            tracing::error!(target: "relay", "queue database: cannot restore synchronous=FULL: {e}");
        }
    }
}

/// A message's row, waiting for a group commit.
struct Row {
    id: QueueId,
    sender: String,
    arrival: Timestamp,
    size: i64,
    dsn: String,
    recipients: Vec<String>,
}

/// The queue a message is in: held, under a live lease (active), tried before (deferred),
/// or not yet tried (incoming).
fn name_of(
    held: bool,
    lease_until: Option<Timestamp>,
    recipients: &[RecipientView],
    now: Timestamp,
) -> QueueName {
    if held {
        QueueName::Hold
    } else if lease_until.is_some_and(|t| t > now) {
        QueueName::Active
    } else if recipients.iter().any(|r| r.attempts > 0) {
        QueueName::Deferred
    } else {
        QueueName::Incoming
    }
}

fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(QueueError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    // One step per version.
    if found < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    if found < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    if found < 3 {
        tx.execute_batch(SCHEMA_V3)?;
    }
    if found < 4 {
        tx.execute_batch(SCHEMA_V4)?;
    }
    if found < SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn new_token(owner: &str) -> String {
    format!("{owner}/{}", QueueId::generate())
}

impl Store for LocalStore {
    /// The body goes to its spool file (written, fsynced, renamed) by the calling thread;
    /// the spool directory's fsync and the row's SQLite commit are shared with the other
    /// messages being accepted at the same moment (group commit), so that concurrent SMTP
    /// sessions cost one directory fsync and one WAL fsync per batch, not per message.
    fn accept(&self, message: &NewMessage<'_>, now: Timestamp) -> Result<(), QueueError> {
        let NewMessage {
            id,
            envelope,
            dsn,
            body,
        } = *message;
        self.spool.write(id, body)?;
        let row = Row {
            id: id.clone(),
            sender: envelope.sender().to_owned(),
            arrival: now,
            size: i64::try_from(body.len()).unwrap_or(i64::MAX),
            dsn: serde_json::to_string(dsn)?,
            recipients: envelope.recipients().to_vec(),
        };
        if let Err(e) = self.accepted.submit(row, &|rows| self.commit_rows(rows)) {
            // Not acknowledged: the body must not linger as an orphan.
            let _ = self.spool.remove(id);
            return Err(e);
        }
        Ok(())
    }

    fn due_except(
        &self,
        now: Timestamp,
        limit: usize,
        lease: &Lease,
        busy_domains: &[String],
    ) -> Result<Vec<Claim>, QueueError> {
        let busy = serde_json::to_string(busy_domains)?;
        let mut conn = self.conn_relaxed()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Walks the due recipients in `next_attempt` order along the index and stops at
        // `limit` distinct messages: a claim costs what it takes, not a sort of every due
        // recipient in the queue.
        let mut picked: Vec<(String, String, i64, String)> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(DUE_MESSAGES)?;
            let mut rows = stmt.query(params![now, busy])?;
            while picked.len() < limit {
                let Some(r) = rows.next()? else { break };
                let id: String = r.get(0)?;
                if picked.iter().any(|(p, ..)| *p == id) {
                    continue;
                }
                picked.push((id, r.get(1)?, r.get(2)?, r.get(3)?));
            }
        }
        let mut claims = Vec::with_capacity(picked.len());
        for (id, sender, arrival_time, dsn) in picked {
            let token = new_token(&lease.owner);
            tx.execute(
                "UPDATE messages SET lease_owner = ?2, lease_token = ?3, lease_until = ?4 \
                 WHERE id = ?1",
                params![id, lease.owner, token, lease.until],
            )?;
            let due: Vec<(String, u32)> = {
                let mut stmt = tx.prepare_cached(DUE_RECIPIENTS)?;
                stmt.query_map(params![id, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let attempts = due.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let recipients = due.into_iter().map(|(a, _)| a).collect();
            claims.push(Claim {
                id: QueueId::try_from(id)?,
                token,
                lease: lease.clone(),
                sender,
                recipients,
                arrival_time,
                dsn: serde_json::from_str(&dsn)?,
                attempts,
            });
        }
        tx.commit()?;
        Ok(claims)
    }

    /// Two index walks, never a scan: the earliest pending recipient of a message neither
    /// held nor leased, and the earliest lease end (a leased message is due again then at the
    /// latest; one whose claim ends sooner wakes the scheduler itself).
    fn next_due(&self) -> Result<Option<Timestamp>, QueueError> {
        let conn = self.conn()?;
        let free: Option<i64> = conn
            .prepare_cached(NEXT_FREE)?
            .query_row([], |r| r.get(0))
            .optional()?;
        let lease: Option<i64> = conn
            .prepare_cached(NEXT_LEASE_END)?
            .query_row([], |r| r.get(0))?;
        Ok(match (free, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn record_attempt(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
    ) -> Result<Progress, QueueError> {
        let mut conn = self.conn_relaxed()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_lease(&tx, claim)?;
        for attempt in attempts {
            tx.execute(
                "INSERT INTO attempts (message, attempt) VALUES (?1, ?2)",
                params![claim.id.as_str(), serde_json::to_string(attempt)?],
            )?;
        }
        let security = match attempts.last() {
            Some(a) => Some(serde_json::to_string(&a.security)?),
            None => None,
        };
        for outcome in outcomes {
            let state = match outcome.outcome {
                Fate::Delivered => RecipientState::Delivered,
                Fate::Bounced => RecipientState::Bounced,
                Fate::Deferred => RecipientState::Pending,
            };
            tx.prepare_cached(RECORD_RECIPIENT)?.execute(params![
                claim.id.as_str(),
                outcome.address,
                state.as_str(),
                next_attempt,
                outcome.reply.to_string(),
                security,
                serde_json::to_string(outcome)?,
            ])?;
        }
        let mut progress = Progress::default();
        {
            let mut stmt = tx.prepare_cached(STATE_COUNTS)?;
            for row in stmt.query_map([claim.id.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (state, n) = row?;
                let n = usize::try_from(n).unwrap_or(0);
                match RecipientState::parse(&state) {
                    RecipientState::Pending => progress.pending = n,
                    RecipientState::Delivered => progress.delivered = n,
                    RecipientState::Bounced => progress.bounced = n,
                }
            }
        }
        tx.commit()?;
        Ok(progress)
    }

    fn renew(&self, claim: &Claim, until: Timestamp) -> Result<Claim, QueueError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_lease(&tx, claim)?;
        tx.execute(
            "UPDATE messages SET lease_until = ?2 WHERE id = ?1",
            params![claim.id.as_str(), until],
        )?;
        tx.commit()?;
        let mut renewed = claim.clone();
        renewed.lease.until = until;
        Ok(renewed)
    }

    fn postpone(&self, claim: &Claim, until: Timestamp) -> Result<(), QueueError> {
        let mut conn = self.conn_relaxed()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::check_lease(&tx, claim)?;
        tx.prepare_cached(POSTPONE_RECIPIENTS)?
            .execute(params![claim.id.as_str(), until])?;
        tx.prepare_cached(
            "UPDATE messages SET lease_owner = NULL, lease_token = NULL, lease_until = NULL \
             WHERE id = ?1",
        )?
        .execute([claim.id.as_str()])?;
        tx.commit()?;
        Ok(())
    }

    /// Ends the claims of concurrent workers in one transaction (group commit): one WAL
    /// fsync for all the messages finished at the same moment, not one each.
    fn complete(&self, claim: &Claim) -> Result<bool, QueueError> {
        let removed = self
            .completed
            .submit(claim.clone(), &|claims| self.commit_completions(claims))?;
        // The row goes first: a crash in between leaves an orphan body, which recovery
        // quarantines; never a row without its body.
        if removed {
            self.spool.remove(&claim.id)?;
        }
        Ok(removed)
    }

    /// One query over messages and their pending recipients, in id order, grouped as it
    /// goes.
    fn scan(&self, now: Timestamp, visit: &mut dyn FnMut(QueueEntry)) -> Result<(), QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(SCAN)?;
        let mut rows = stmt.query([])?;
        let mut current: Option<(QueueEntry, Option<Timestamp>)> = None;
        let finish = |(mut entry, lease_until): (QueueEntry, Option<Timestamp>)| {
            entry.queue_name = name_of(
                entry.hold_reason.is_some(),
                lease_until,
                &entry.recipients,
                now,
            );
            entry
        };
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if current
                .as_ref()
                .is_none_or(|(e, _)| e.queue_id.as_str() != id)
            {
                if let Some(done) = current.take() {
                    visit(finish(done));
                }
                current = Some((
                    QueueEntry {
                        queue_name: QueueName::Incoming,
                        queue_id: QueueId::try_from(id)?,
                        arrival_time: r.get(2)?,
                        message_size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        sender: r.get(1)?,
                        recipients: Vec::new(),
                        hold_reason: r.get(4)?,
                        history: Vec::new(),
                    },
                    r.get(5)?,
                ));
            }
            let Some(address) = r.get::<_, Option<String>>(6)? else {
                continue;
            };
            if r.get::<_, Option<String>>(11)?.as_deref() != Some(RecipientState::Pending.as_str())
            {
                continue;
            }
            let security = match r.get::<_, Option<String>>(10)? {
                Some(s) => Some(serde_json::from_str(&s)?),
                None => None,
            };
            if let Some((entry, _)) = current.as_mut() {
                entry.recipients.push(RecipientView {
                    address,
                    delay_reason: r.get(9)?,
                    state: RecipientState::Pending,
                    attempts: r.get(7)?,
                    next_attempt: r.get(8)?,
                    security,
                });
            }
        }
        if let Some(done) = current.take() {
            visit(finish(done));
        }
        Ok(())
    }

    fn stats(&self) -> Result<QueueStats, QueueError> {
        let conn = self.conn()?;
        let (messages, oldest) =
            conn.query_row("SELECT count(*), min(arrival) FROM messages", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
            })?;
        Ok(QueueStats {
            messages: u64::try_from(messages).unwrap_or(0),
            oldest_arrival: oldest,
        })
    }

    fn show(&self, id: &QueueId, now: Timestamp) -> Result<QueueEntry, QueueError> {
        let conn = self.conn()?;
        Self::entry(&conn, id.as_str(), now)?.ok_or_else(|| QueueError::NotFound(id.clone()))
    }

    fn hold(&self, id: &QueueId, reason: &str) -> Result<(), QueueError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE messages SET hold_reason = ?2 WHERE id = ?1",
            params![id.as_str(), reason],
        )?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        Ok(())
    }

    fn release(&self, id: &QueueId) -> Result<(), QueueError> {
        let conn = self.conn()?;
        let size: Option<i64> = conn
            .query_row(
                "SELECT size FROM messages WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(size) = size else {
            return Err(QueueError::NotFound(id.clone()));
        };
        // A message held because its body is gone or cut short stays held: delivering it would
        // fail, or send half a message.
        if self.body_problem(id, size).is_some() {
            return Err(QueueError::MissingBody(id.clone()));
        }
        let n = conn.execute(
            "UPDATE messages SET hold_reason = NULL WHERE id = ?1",
            [id.as_str()],
        )?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        Ok(())
    }

    fn delete(&self, id: &QueueId) -> Result<(), QueueError> {
        let n = self
            .conn()?
            .execute("DELETE FROM messages WHERE id = ?1", [id.as_str()])?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        self.spool.remove(id)
    }

    fn flush(&self, ids: &[QueueId], now: Timestamp) -> Result<usize, QueueError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let flushed = if ids.is_empty() {
            let messages: i64 = tx.query_row(
                "SELECT count(DISTINCT message) FROM recipients WHERE state = 'pending' \
                 AND message IN (SELECT id FROM messages WHERE hold_reason IS NULL)",
                [],
                |r| r.get(0),
            )?;
            tx.execute(FLUSH_ALL, [now])?;
            usize::try_from(messages).unwrap_or(0)
        } else {
            let mut flushed = 0;
            for id in ids {
                if tx.execute(FLUSH_MESSAGE, params![id.as_str(), now])? > 0 {
                    flushed += 1;
                }
            }
            flushed
        };
        tx.commit()?;
        Ok(flushed)
    }

    fn body(&self, id: &QueueId) -> Result<Box<dyn Read + Send>, QueueError> {
        let path = self.spool.path(id);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let known: bool = self.conn()?.query_row(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1)",
                    [id.as_str()],
                    |r| r.get(0),
                )?;
                Err(if known {
                    QueueError::MissingBody(id.clone())
                } else {
                    QueueError::NotFound(id.clone())
                })
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn sts_policy(&self, domain: &DnsName) -> Result<Option<StsPolicyRecord>, QueueError> {
        let conn = self.conn()?;
        let record = conn
            .prepare_cached(
                "SELECT policy, fetched_at, expires_at FROM sts_policies WHERE domain = ?1",
            )?
            .query_row([domain.as_str()], |r| {
                Ok(StsPolicyRecord {
                    policy: r.get(0)?,
                    fetched_at: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            })
            .optional()?;
        Ok(record)
    }

    /// One statement (its own transaction) at `synchronous=NORMAL`, like claims: in WAL mode
    /// it survives a crash of the process, and a power failure can only lose a policy, which
    /// is then fetched again; no fsync of its own, so it costs message acceptance no more
    /// than one small write holding the connection.
    fn put_sts_policy(&self, domain: &DnsName, record: &StsPolicyRecord) -> Result<(), QueueError> {
        let conn = self.conn_relaxed()?;
        conn.prepare_cached(PUT_STS_POLICY)?.execute(params![
            domain.as_str(),
            record.policy,
            record.fetched_at,
            record.expires_at
        ])?;
        Ok(())
    }

    /// At `synchronous=NORMAL`, as [`LocalStore::put_sts_policy`]: a removal lost in a power
    /// failure brings back a policy that was superseded or damaged, which discovery replaces
    /// or drops again.
    fn remove_sts_policy(&self, domain: &DnsName) -> Result<(), QueueError> {
        let conn = self.conn_relaxed()?;
        conn.prepare_cached("DELETE FROM sts_policies WHERE domain = ?1")?
            .execute([domain.as_str()])?;
        Ok(())
    }

    /// One `DELETE` along the `sts_policies_expiry` index, at `synchronous=NORMAL`.
    fn prune_sts_policies(&self, now: Timestamp) -> Result<usize, QueueError> {
        let conn = self.conn_relaxed()?;
        Ok(conn.prepare_cached(PRUNE_STS_POLICIES)?.execute([now])?)
    }

    /// One transaction at `synchronous=NORMAL`, like delivery records: it survives a crash
    /// of the process; a power failure can lose the last counts, never mail.
    fn add_tls_counts(&self, counts: &[TlsCountRecord]) -> Result<(), QueueError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn_relaxed()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut add = tx.prepare_cached(ADD_TLS_COUNT)?;
            for c in counts {
                add.execute(params![
                    c.day,
                    c.domain.as_str(),
                    c.policy_type,
                    serde_json::to_string(&c.policy_strings)?,
                    serde_json::to_string(&c.policy_mx)?,
                    c.result.as_deref().unwrap_or(""),
                    c.receiving_mx,
                    c.sending_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    c.receiving_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    i64::try_from(c.sessions).unwrap_or(i64::MAX),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn tls_counts(
        &self,
        domain: &DnsName,
        day: Timestamp,
    ) -> Result<Vec<TlsCountRecord>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(TLS_COUNTS)?;
        let rows = stmt.query_map(params![day, domain.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let ip = |text: &str| -> Option<IpAddr> { text.parse().ok() };
        let mut out = Vec::new();
        for row in rows {
            let (policy_type, policy, policy_mx, result, receiving_mx, sending, receiving, n) =
                row?;
            out.push(TlsCountRecord {
                day,
                domain: domain.clone(),
                policy_type,
                policy_strings: serde_json::from_str(&policy)?,
                policy_mx: serde_json::from_str(&policy_mx)?,
                result: (!result.is_empty()).then_some(result),
                receiving_mx,
                sending_ip: ip(&sending),
                receiving_ip: ip(&receiving),
                sessions: u64::try_from(n).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn tls_reports_due(&self, day: Timestamp) -> Result<Vec<DnsName>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(TLS_REPORTS_DUE)?;
        let names: Vec<String> = stmt
            .query_map([day], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        // Names were valid when written; one that no longer parses cannot get a report.
        Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
    }

    /// At `synchronous=NORMAL`: a record lost in a power failure means the report is
    /// built and sent once more (receivers tell repeats by the report id).
    fn finish_tls_report(
        &self,
        domain: &DnsName,
        day: Timestamp,
        outcome: &str,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let conn = self.conn_relaxed()?;
        conn.prepare_cached(
            "INSERT INTO tls_reports (day, domain, outcome, at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (day, domain) DO UPDATE SET outcome = excluded.outcome, at = excluded.at",
        )?
        .execute(params![day, domain.as_str(), outcome, now])?;
        Ok(())
    }

    fn prune_tls_counts(&self, before: Timestamp) -> Result<usize, QueueError> {
        let mut conn = self.conn_relaxed()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached("DELETE FROM tls_counts WHERE day < ?1")?
            .execute([before])?;
        tx.prepare_cached("DELETE FROM tls_reports WHERE day < ?1")?
            .execute([before])?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    pub(super) struct Dir(pub(super) PathBuf);

    impl Dir {
        pub(super) fn new(tag: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("danemta-queue-unit-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_trait_is_object_safe() {
        let dir = Dir::new("dyn");
        let (store, _) = LocalStore::open(&dir.0, 0).unwrap();
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
        assert!(store.list(0).unwrap().is_empty());
    }

    #[test]
    fn ids_are_unique_sorted_and_file_name_safe() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for id in &ids {
            assert_eq!(id.as_str().len(), ID_LEN);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(id.as_str().parse::<QueueId>().unwrap(), *id);
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in ["", "../../etc/passwd", "00000661a093094ea1e50e4b", "0123"] {
            assert!(matches!(bad.parse::<QueueId>(), Err(QueueError::BadId(_))));
        }
        let json = serde_json::to_string(&QueueId::generate()).unwrap();
        assert!(serde_json::from_str::<QueueId>(&json).is_ok());
        assert!(serde_json::from_str::<QueueId>("\"x/y\"").is_err());
    }

    #[test]
    fn per_message_statements_use_the_primary_key() {
        let dir = Dir::new("plans");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        migrate(&mut conn).unwrap();
        for sql in [
            DUE_RECIPIENTS,
            RECORD_RECIPIENT,
            PENDING_COUNT,
            FLUSH_MESSAGE,
            POSTPONE_RECIPIENTS,
            FINISHED_MESSAGES,
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter((0..n).map(|_| 0)), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let recipients: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains("recipients"))
                .collect();
            assert!(
                !recipients.is_empty()
                    && recipients
                        .iter()
                        .all(|step| step.contains("sqlite_autoindex_recipients_1")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// Claims and delivery records commit at NORMAL; everything else at FULL afterwards.
    #[test]
    fn relaxed_transactions_restore_full_sync() {
        let dir = Dir::new("sync");
        let (store, _) = LocalStore::open(&dir.0, 0).unwrap();
        let level = |store: &LocalStore| -> i64 {
            store
                .conn()
                .unwrap()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(level(&store), 2, "FULL");
        {
            let relaxed = store.conn_relaxed().unwrap();
            let n: i64 = relaxed
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1, "NORMAL");
        }
        assert_eq!(level(&store), 2, "FULL again");
        let lease = Lease {
            owner: "t".into(),
            until: 10,
        };
        store.due(0, 10, &lease).unwrap();
        assert_eq!(level(&store), 2);
    }

    /// Claiming walks the due index in order and sorts nothing.
    #[test]
    fn claiming_needs_no_sort() {
        let dir = Dir::new("plans");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE_MESSAGES}"))
            .unwrap()
            .query_map(params![0, "[]"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|s| s.contains("recipients_due")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|s| s.contains("TEMP B-TREE")), "{plan:?}");
        for (sql, index) in [
            (NEXT_FREE, "recipients_due"),
            (NEXT_LEASE_END, "messages_lease"),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|s| s.contains(index)), "{sql}: {plan:?}");
            assert!(
                !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// A queue written by a version-1 build gains the lease index.
    #[test]
    fn a_version_1_queue_is_migrated() {
        let dir = Dir::new("schema1");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); \
             INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'messages_lease'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
        let v: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    /// A queue written by a version-2 build keeps its messages and gains the MTA-STS policy
    /// cache, in one step.
    #[test]
    fn a_version_2_queue_is_migrated() {
        let dir = Dir::new("schema2");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch(SCHEMA_V2).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); \
             INSERT INTO schema_version VALUES (2); \
             INSERT INTO messages (id, sender, arrival, size) \
                 VALUES ('0000000000000000000000AA', 'a@example.org', 7, 3); \
             INSERT INTO recipients (message, position, address, next_attempt) \
                 VALUES ('0000000000000000000000AA', 0, 'b@example.com', 7);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM messages"), 1);
        assert_eq!(count("SELECT count(*) FROM recipients"), 1);
        assert_eq!(count("SELECT count(*) FROM sts_policies"), 0);
        assert_eq!(
            count("SELECT count(*) FROM sqlite_master WHERE name = 'sts_policies_expiry'"),
            1
        );
        assert_eq!(count("SELECT version FROM schema_version"), SCHEMA_VERSION);
        assert_eq!(count("SELECT count(*) FROM schema_version"), 1);
    }

    /// A queue written by a version-3 build keeps its messages and policy cache and gains
    /// the TLS-RPT counters.
    #[test]
    fn a_version_3_queue_is_migrated() {
        let dir = Dir::new("schema3");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch(SCHEMA_V2).unwrap();
        conn.execute_batch(SCHEMA_V3).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); \
             INSERT INTO schema_version VALUES (3); \
             INSERT INTO messages (id, sender, arrival, size) \
                 VALUES ('0000000000000000000000AA', 'a@example.org', 7, 3); \
             INSERT INTO sts_policies VALUES ('example.com', '{}', 1, 2);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM messages"), 1);
        assert_eq!(count("SELECT count(*) FROM sts_policies"), 1);
        assert_eq!(count("SELECT count(*) FROM tls_counts"), 0);
        assert_eq!(count("SELECT count(*) FROM tls_reports"), 0);
        assert_eq!(count("SELECT version FROM schema_version"), 4);
    }

    /// A day's counters, the reports due and pruning go along the primary keys: no scan of
    /// the whole table, no sort.
    #[test]
    fn tls_counter_statements_use_the_primary_keys() {
        let dir = Dir::new("plans-tls");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        migrate(&mut conn).unwrap();
        for sql in [
            TLS_COUNTS,
            TLS_REPORTS_DUE,
            "DELETE FROM tls_counts WHERE day < ?1",
            "DELETE FROM tls_reports WHERE day < ?1",
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter((0..n).map(|_| 0)), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .all(|s| !s.starts_with("SCAN") || s.contains("USING")),
                "{sql}: {plan:?}"
            );
            assert!(
                plan.iter().any(|s| s.contains("PRIMARY KEY")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// Counter writes commit at NORMAL and leave the connection at FULL for the queue.
    #[test]
    fn counter_writes_restore_full_sync() {
        let dir = Dir::new("tls-sync");
        let (store, _) = LocalStore::open(&dir.0, 0).unwrap();
        let domain: DnsName = "example.com".parse().unwrap();
        store
            .add_tls_counts(&[TlsCountRecord {
                day: 0,
                domain: domain.clone(),
                policy_type: "no-policy-found".into(),
                policy_strings: vec![],
                policy_mx: vec![],
                result: None,
                receiving_mx: String::new(),
                sending_ip: None,
                receiving_ip: None,
                sessions: 1,
            }])
            .unwrap();
        store.finish_tls_report(&domain, 0, "sent", 1).unwrap();
        store.prune_tls_counts(0).unwrap();
        let sync: i64 = store
            .conn()
            .unwrap()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    /// Pruning reads the expired rows through the expiry index, not the whole table.
    #[test]
    fn pruning_walks_the_expiry_index() {
        let dir = Dir::new("plans-sts");
        let mut conn = Connection::open(dir.0.join("q.sqlite")).unwrap();
        migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_STS_POLICIES}"))
            .unwrap()
            .query_map([0], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|s| s.contains("sts_policies_expiry")),
            "{plan:?}"
        );
    }

    /// Cache writes commit at NORMAL and leave the connection at FULL for the queue.
    #[test]
    fn cache_writes_restore_full_sync() {
        let dir = Dir::new("sts-sync");
        let (store, _) = LocalStore::open(&dir.0, 0).unwrap();
        let domain: DnsName = "example.com".parse().unwrap();
        let record = StsPolicyRecord {
            policy: "{}".into(),
            fetched_at: 1,
            expires_at: 2,
        };
        store.put_sts_policy(&domain, &record).unwrap();
        store.prune_sts_policies(0).unwrap();
        store.remove_sts_policy(&domain).unwrap();
        let sync: i64 = store
            .conn()
            .unwrap()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn the_schema_is_versioned_and_a_newer_one_refused() {
        let dir = Dir::new("schema");
        let db = dir.0.join("q.sqlite");
        let mut conn = Connection::open(&db).unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(QueueError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn open_sets_wal_and_full_sync() {
        let dir = Dir::new("pragmas");
        let (store, _) = LocalStore::open(&dir.0, 0).unwrap();
        let conn = store.conn().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
    }
}
