//! [`PgStore`]: the queue on PostgreSQL, shared by several relay nodes (`[queue] store =
//! "postgres"`). Every node accepts into the same tables and claims from them; a node that
//! dies loses its claims when their leases run out, and the others deliver its mail.
//!
//! # What is where
//!
//! Everything a message is lives in the database, bodies included (`bytea`, one row per
//! message in `bodies`): no node's disk holds the only copy of anything, and a node can be
//! replaced by a fresh machine. The schema (versioned in `schema_version`, migrated at open
//! under an advisory lock so that nodes starting together migrate once):
//!
//! | table | one row per | notes |
//! |---|---|---|
//! | `messages` | message | envelope sender, arrival, size, DSN parameters (JSON), hold reason, and the lease: `lease_owner`, `lease_token`, `lease_until` |
//! | `bodies` | message | the content, `bytea`; deleted with its message (`ON DELETE CASCADE`) |
//! | `recipients` | recipient | `(message, position)` key; `state` pending / delivered / bounced, `attempts`, `next_attempt`, last reply, security, typed outcome (JSON); the partial index `recipients_due (next_attempt) WHERE state = 'pending'` is what claims walk |
//! | `attempts` | delivery try | the typed [`Attempt`] (JSON), in order (`seq`) |
//! | `sts_policies` | policy domain | the MTA-STS policy cache (RFC 8461 §5.1), shared by the nodes |
//! | `tls_counts`, `tls_reports` | TLS-RPT counter; (day, domain) report done | RFC 8460 session counters, added to by every node; the reports finished |
//!
//! Give danemta a database (or a schema, with `options=-c search_path=…` in the URL) of its
//! own: the tables have plain names.
//!
//! # Transactions, locks and leases
//!
//! Every method is one transaction at `READ COMMITTED` (the scan: one `REPEATABLE READ`
//! snapshot), committed before it returns; a failed call leaves nothing behind (the
//! transaction rolls back). What each guarantees:
//!
//! * [`Store::accept`]: the message, its recipients and its body in one transaction, committed
//!   with the server's `synchronous_commit` (forced `on` for the session when the server's
//!   default is `off`): when `accept` returns, the message is on the database's stable
//!   storage (and on its synchronous standbys, where the operator configured them). An id
//!   already queued is [`QueueError::Exists`], and nothing is written.
//! * [`Store::due_except`] (and so [`Store::due`]) claims with `SELECT … FOR NO KEY UPDATE OF
//!   m SKIP LOCKED`: candidate messages are read along `recipients_due` (earliest due first,
//!   neither held nor under a live lease, a destination not busy), then locked; a row another
//!   node is claiming or recording at this moment is skipped, not waited for, and a row
//!   another node claimed after this statement's snapshot is re-checked on its newest version
//!   (PostgreSQL re-evaluates the `WHERE` after taking the lock) and dropped. Each locked
//!   message gets a fresh `lease_token`, the caller's owner and `lease_until`, in the same
//!   transaction. So two nodes never hold a live claim on the same message, and a claim never
//!   returns more than `limit` messages (it may return fewer while others are being claimed).
//! * [`Store::record_attempt`], [`Store::renew`], [`Store::postpone`] and [`Store::complete`]
//!   begin with `SELECT lease_token … FOR NO KEY UPDATE`: the row is locked until the
//!   transaction ends, so no claim can slip in between the check and the writes, and they
//!   write only if the token is still the claim's. A node whose lease ran out and was taken by
//!   another claimer (a node that stalled, or came back after a network partition) gets
//!   [`QueueError::LeaseLost`] and writes nothing: it never records, renews or finishes a
//!   delivery it no longer owns. A message deleted meanwhile is [`QueueError::NotFound`]. As
//!   in the local store, an expired lease nobody has taken over is still its holder's: the
//!   token is the proof of ownership, the expiry only says when others may take it.
//! * [`Store::finish_attempt`] inserts the delivery status notifications a try owes, records
//!   the try and ends the claim in one transaction, after the lease check: a node that lost
//!   its lease queues none, and a crash queues all or none, so exactly one node writes each
//!   bounce.
//! * Operator actions (`hold`, `release`, `delete`, `flush`) need no lease (each one
//!   statement, or one transaction), as in the local store.
//!
//! Claims, lease renewals, delivery records and postponements commit with
//! `synchronous_commit = off` (as the local store commits them at `synchronous=NORMAL`): a
//! database crash may forget the last of them, which means one more delivery of a message (a
//! forgotten lease is simply free again; a node still holding it then gets `LeaseLost`),
//! never a lost message. Finishing a try ([`Store::finish_attempt`]: its bounces, its record,
//! the message's removal) and [`Store::complete`] are durable commits, and WAL order makes
//! everything before them durable too.
//!
//! # The node's session: connection slots and the leader
//!
//! Besides the pool, each store opens one session of its own on first use, and holds
//! session-level advisory locks on it, which PostgreSQL releases when the session ends (a
//! node killed, or cut off): nothing a dead node held needs a timeout to expire.
//!
//! * [`Store::take_connection_slot`]: slot `i` of a destination is the lock `(key, i)`, `key`
//!   a 32-bit FNV-1a hash of the destination's next hop, `i` below
//!   `max_connections_per_destination`; a node tries them in order with
//!   `pg_try_advisory_lock` (never waiting) and holds the first it gets while its connection
//!   is open. So the limit holds across the nodes. If the session is lost (a database
//!   restart), every slot is gone with it and the nodes count afresh: for a moment the nodes'
//!   connections may exceed the limit, never for longer.
//! * [`Store::leads_cluster`]: the node holding the lock `LEADER_LOCK` (one `bigint` key) leads (it sends the
//!   TLS-RPT reports, whose counters every node adds to); the first node to ask gets it and
//!   keeps it while its session lives.
//!
//! # Connections
//!
//! The store talks to PostgreSQL with `tokio-postgres` on a runtime thread of its own
//! (`danemta-pg`), through a bounded pool ([`PgOptions::connections`]). The [`Store`] methods
//! are synchronous and wait for their answer on the calling thread without needing a tokio
//! context of their own: the daemon calls them from `spawn_blocking`, `danemta queue` from
//! `main`, and the MTA-STS cache from async code, and none of these can make it panic (the
//! synchronous `postgres` crate would, being a runtime inside a runtime). Each call waits at
//! most [`PgOptions::timeout`] for a connection and for its answer; a connection that timed
//! out or failed below SQL is closed, never reused, and a new one is made for the next call.
//! So after a database restart the calls in flight fail (the listener answers `451`), and the
//! next ones reconnect. Sessions set `idle_in_transaction_session_timeout` so that a node
//! frozen in the middle of a transaction does not keep its row locks for ever.
//!
//! # The URL
//!
//! `postgres://user:password@host:port/database?param=…`, libpq's URI form, with libpq's
//! parameters as `tokio-postgres` knows them (`connect_timeout`, `target_session_attrs=
//! read-write` to find the primary among several hosts, `application_name`, …) and:
//!
//! * `sslmode=require`, `verify-ca` or `verify-full`: TLS (rustls, ring), always with the
//!   server's certificate verified against the roots, and its name against the host (all
//!   three are `verify-full` here: a relay that refuses unauthenticated TLS to mail servers
//!   does not hand them to a database over it);
//! * `sslrootcert=/path/ca.pem`: those roots, instead of the system's;
//! * no `sslmode`, `disable`, `allow` or `prefer`: plaintext, which is refused unless every
//!   host is on loopback (or a Unix socket directory): mail does not cross a network in
//!   the clear to its queue.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{Cursor, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use dns::DnsName;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use smtp::outcome::RecipientOutcome;
use smtp::{Attempt, Fate};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Claim, ConnectionSlot, Lease, NewMessage, Progress, QueueEntry, QueueError, QueueId, QueueName,
    QueueStats, RecipientState, RecipientView, Store, StsPolicyRecord, Timestamp, TlsCountRecord,
    name_of, new_token,
};

/// What can go wrong with the database, beyond the queue's own errors.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The client or the server failed (a SQL error, a lost connection, a refused login…).
    #[error("{0}")]
    Client(#[from] tokio_postgres::Error),
    /// No answer in time (the database, or the network to it, is stuck).
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// Every connection of the pool stayed busy.
    #[error("all {0} database connections stayed busy for {1:?}")]
    Busy(usize, Duration),
    /// The URL cannot be used.
    #[error("database URL: {0}")]
    Url(String),
    /// Plaintext to a host that is not on loopback.
    #[error(
        "refusing to reach the database at {0} in plaintext (not on loopback): add sslmode=verify-full to the URL"
    )]
    Plaintext(String),
    /// The roots of `sslrootcert` cannot be read.
    #[error("sslrootcert {path}: {reason}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS cannot be set up.
    #[error("TLS to the database: {0}")]
    Tls(String),
    /// The client's runtime thread cannot be started.
    #[error("cannot start the database client thread: {0}")]
    Runtime(std::io::Error),
}

impl PgError {
    /// Whether the database reported a full disk (SQLSTATE 53100): the listener answers
    /// `452 4.3.1`, as for a full local spool.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, PgError::Client(e) if e.code() == Some(&SqlState::DISK_FULL))
    }

    /// Whether the connection that saw this error must not be used again: anything but an
    /// error the server reported in SQL terms (which leaves the session usable).
    fn breaks_connection(&self) -> bool {
        match self {
            PgError::Client(e) => e.as_db_error().is_none() || e.is_closed(),
            PgError::Timeout(_) => true,
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueueError::Postgres(PgError::Client(e))
    }
}

/// How the store uses the database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The most connections the store opens (each call takes one for its duration).
    pub connections: usize,
    /// The longest a call waits for a free connection, and then for its answer.
    pub timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            connections: 16,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// A lock key (`pg_advisory_xact_lock`) held while the schema is checked and migrated, so
/// that nodes starting at the same moment do not migrate twice. "danemta" in ASCII.
const MIGRATION_LOCK: i64 = 0x0064_616e_656d_7461;

/// Version 1. Times are Unix seconds (`bigint`); JSON columns are `text` (written and read by
/// serde only). `recipients_due` is partial: delivered and bounced recipients, which stay
/// until their message is complete, are not in it.
const SCHEMA_V1: &str = "
CREATE TABLE messages (
    id          text PRIMARY KEY,
    sender      text NOT NULL,
    arrival     bigint NOT NULL,
    size        bigint NOT NULL,
    hold_reason text,
    dsn         text NOT NULL DEFAULT '{}',
    lease_owner text,
    lease_token text,
    lease_until bigint
);
CREATE INDEX messages_lease ON messages (lease_until) WHERE lease_until IS NOT NULL;
CREATE TABLE bodies (
    message text PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    body    bytea NOT NULL
);
CREATE TABLE recipients (
    message      text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position     integer NOT NULL,
    address      text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'bounced')),
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt bigint NOT NULL,
    delay_reason text,
    security     text,
    outcome      text,
    PRIMARY KEY (message, position)
);
CREATE INDEX recipients_due ON recipients (next_attempt) WHERE state = 'pending';
CREATE TABLE attempts (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt text NOT NULL
);
CREATE INDEX attempts_message ON attempts (message, seq);
CREATE TABLE sts_policies (
    domain     text PRIMARY KEY,
    policy     text NOT NULL,
    fetched_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX sts_policies_expiry ON sts_policies (expires_at);
CREATE TABLE tls_counts (
    day          bigint NOT NULL,
    domain       text NOT NULL,
    policy_type  text NOT NULL,
    policy       text NOT NULL,
    policy_mx    text NOT NULL,
    result       text NOT NULL,
    receiving_mx text NOT NULL,
    sending_ip   text NOT NULL,
    receiving_ip text NOT NULL,
    sessions     bigint NOT NULL,
    PRIMARY KEY (day, domain, policy_type, policy, policy_mx, result, receiving_mx,
                 sending_ip, receiving_ip)
);
CREATE TABLE tls_reports (
    day     bigint NOT NULL,
    domain  text NOT NULL,
    outcome text NOT NULL,
    at      bigint NOT NULL,
    PRIMARY KEY (day, domain)
);
";

/// Adds sessions to a TLS-RPT counter, making it if new (atomic against other nodes adding
/// to the same counter: `ON CONFLICT DO UPDATE` takes the row lock).
const ADD_TLS_COUNT: &str = "INSERT INTO tls_counts (day, domain, policy_type, policy, \
     policy_mx, result, receiving_mx, sending_ip, receiving_ip, sessions) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (day, domain, policy_type, policy, policy_mx, result, receiving_mx, \
     sending_ip, receiving_ip) DO UPDATE SET sessions = tls_counts.sessions + excluded.sessions";

/// One domain's counters on one day (a primary-key prefix).
const TLS_COUNTS: &str = "SELECT policy_type, policy, policy_mx, result, receiving_mx, \
     sending_ip, receiving_ip, sessions FROM tls_counts WHERE day = $1 AND domain = $2";

/// The domains with counters on a day and no finished report.
const TLS_REPORTS_DUE: &str = "SELECT DISTINCT c.domain FROM tls_counts c WHERE c.day = $1 \
     AND NOT EXISTS (SELECT 1 FROM tls_reports r WHERE r.day = $1 AND r.domain = c.domain) \
     ORDER BY c.domain";

/// The candidates of a claim: due recipients along `recipients_due` (`$1` now), of messages
/// neither held nor under a live lease, whose domain (after the first `@`, lower case) is not
/// in `$3`; at most `$4` recipient rows, earliest first. Then those messages, locked, earliest
/// due first (then by id), at most `$2`; rows locked by another transaction are skipped, and
/// the hold and lease conditions are checked again on the locked row.
const CLAIM: &str = "WITH candidates AS ( \
       SELECT r.message AS id, r.next_attempt AS due FROM recipients r \
       JOIN messages m ON m.id = r.message \
       WHERE r.state = 'pending' AND r.next_attempt <= $1 \
         AND m.hold_reason IS NULL AND (m.lease_until IS NULL OR m.lease_until <= $1) \
         AND NOT (lower(substr(r.address, strpos(r.address, '@') + 1)) = ANY ($3::text[])) \
       ORDER BY r.next_attempt LIMIT $4 \
     ), firsts AS (SELECT id, min(due) AS due FROM candidates GROUP BY id) \
     SELECT m.id, m.sender, m.arrival, m.dsn FROM messages m JOIN firsts f ON f.id = m.id \
     WHERE m.hold_reason IS NULL AND (m.lease_until IS NULL OR m.lease_until <= $1) \
     ORDER BY f.due, m.id LIMIT $2 \
     FOR NO KEY UPDATE OF m SKIP LOCKED";

/// The due recipients of the locked messages `$1` at `$2`, in envelope order.
const CLAIMED_RECIPIENTS: &str = "SELECT message, address, attempts FROM recipients \
     WHERE message = ANY ($1::text[]) AND state = 'pending' AND next_attempt <= $2 \
     ORDER BY message, position";

/// Leases messages `$1` to owner `$2` until `$3`, with tokens `$4` (same order as `$1`).
const LEASE: &str = "UPDATE messages m SET lease_owner = $2, lease_token = t.token, \
     lease_until = $3 FROM unnest($1::text[], $4::text[]) AS t(id, token) WHERE m.id = t.id";

/// A message's lease token, its row locked until the transaction ends.
const LEASE_TOKEN: &str = "SELECT lease_token FROM messages WHERE id = $1 FOR NO KEY UPDATE";

/// Ends a lease.
const RELEASE_LEASE: &str = "UPDATE messages SET lease_owner = NULL, lease_token = NULL, \
     lease_until = NULL WHERE id = $1";

/// The outcomes of a try, one element of the arrays per recipient (only while pending).
const RECORD_RECIPIENTS: &str = "UPDATE recipients r SET state = u.state, \
     attempts = r.attempts + 1, next_attempt = $2, delay_reason = u.reply, \
     security = coalesce($3, r.security), outcome = u.outcome \
     FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS u(address, state, reply, outcome) \
     WHERE r.message = $1 AND r.address = u.address AND r.state = 'pending'";

/// Queues a message in one statement: its row (nothing when the id exists: no row comes
/// back), its body and its recipients, due at its arrival.
const INSERT_MESSAGE: &str = "WITH m AS ( \
       INSERT INTO messages (id, sender, arrival, size, dsn) VALUES ($1, $2, $3, $4, $5) \
       ON CONFLICT (id) DO NOTHING RETURNING id \
     ), b AS ( \
       INSERT INTO bodies (message, body) SELECT id, $6 FROM m \
     ), r AS ( \
       INSERT INTO recipients (message, position, address, next_attempt) \
       SELECT m.id, (t.n - 1)::integer, t.a, $3 \
       FROM m, unnest($7::text[]) WITH ORDINALITY AS t(a, n) \
     ) SELECT count(*) FROM m";

/// The attempts of one try, in order.
const RECORD_ATTEMPTS: &str = "INSERT INTO attempts (message, attempt) \
     SELECT $1, a FROM unnest($2::text[]) WITH ORDINALITY AS t(a, n) ORDER BY n";

/// A message's recipients by state.
const STATE_COUNTS: &str =
    "SELECT state, count(*) FROM recipients WHERE message = $1 GROUP BY state";

/// A message's recipients still to deliver.
const PENDING_COUNT: &str =
    "SELECT count(*) FROM recipients WHERE message = $1 AND state = 'pending'";

/// When the earliest pending recipient of a message neither held nor leased is due.
const NEXT_FREE: &str = "SELECT r.next_attempt FROM recipients r \
     JOIN messages m ON m.id = r.message \
     WHERE r.state = 'pending' AND m.hold_reason IS NULL AND m.lease_until IS NULL \
     ORDER BY r.next_attempt LIMIT 1";

/// The earliest lease end (along `messages_lease`).
const NEXT_LEASE_END: &str = "SELECT min(lease_until) FROM messages WHERE lease_until IS NOT NULL";

/// Every message with its recipients, in id order, for the scan.
const SCAN: &str = "SELECT m.id, m.sender, m.arrival, m.size, m.hold_reason, m.lease_until, \
     r.address, r.attempts, r.next_attempt, r.delay_reason, r.security, r.state \
     FROM messages m LEFT JOIN recipients r ON r.message = m.id ORDER BY m.id, r.position";

/// Makes pending recipients of messages `$1` (every message when `$1` is null) that are not
/// held due at `$2` at the latest; returns how many messages were touched.
const FLUSH: &str = "WITH flushed AS ( \
       UPDATE recipients r SET next_attempt = least(r.next_attempt, $2) FROM messages m \
       WHERE m.id = r.message AND r.state = 'pending' AND m.hold_reason IS NULL \
         AND ($1::text[] IS NULL OR r.message = ANY ($1::text[])) \
       RETURNING r.message) \
     SELECT count(DISTINCT message) FROM flushed";

/// Caches a domain's policy, replacing the one before.
const PUT_STS_POLICY: &str = "INSERT INTO sts_policies (domain, policy, fetched_at, expires_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, \
     fetched_at = excluded.fetched_at, expires_at = excluded.expires_at";

/// The session's settings: a transaction left open by a frozen node ends (and frees its
/// row locks) after a minute; a statement runs at most two.
const SESSION: &str = "SET idle_in_transaction_session_timeout = '60s'; \
     SET statement_timeout = '120s'";

/// The queue on PostgreSQL (see the module documentation).
pub struct PgStore {
    pool: Pool,
    /// `host:port/database`, for messages (never the password).
    target: String,
    /// The node's own session: it holds the node's connection slots and, if the node leads
    /// the cluster, the leader's lock. Opened on first use.
    node: Mutex<Option<NodeSession>>,
    /// Node sessions opened so far (names each one).
    node_sessions: AtomicU64,
}

/// The node's own session: its connection slots ([`Store::take_connection_slot`]) and its
/// leadership ([`Store::leads_cluster`]) are session-level advisory locks, which PostgreSQL
/// releases when the session ends, so a node that dies (or loses its connection) holds
/// none. A session takes each lock once here (PostgreSQL would let it take one twice).
struct NodeSession {
    conn: Conn,
    id: u64,
    held: HashSet<(i32, i32)>,
    leader: bool,
}

/// The advisory lock (one `bigint` key, a space apart from the slots' two `int` keys) of
/// the cluster's leader. "dnmtlead" in ASCII.
const LEADER_LOCK: i64 = 0x646e_6d74_6c65_6164;

/// The advisory lock key of a destination's slots: FNV-1a of its name, the same on every
/// node and in every build (two destinations sharing a key share their slots: a tighter
/// limit, never a looser one).
fn slot_key(destination: &str) -> i32 {
    let hash = destination.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (see the module documentation for its form and TLS),
    /// with the default [`PgOptions`], and migrates the schema.
    pub fn open(url: &str) -> Result<Self, QueueError> {
        Self::open_with(url, &PgOptions::default())
    }

    /// [`PgStore::open`] with `options`. Fails when the URL is refused, the database cannot
    /// be reached (within `options.timeout`), or its schema is newer than this build
    /// ([`QueueError::SchemaTooNew`]).
    pub fn open_with(url: &str, options: &PgOptions) -> Result<Self, QueueError> {
        let (config, tls, target) = parse_url(url)?;
        let pool = Pool::new(config, tls, options)?;
        let store = Self {
            pool,
            target,
            node: Mutex::new(None),
            node_sessions: AtomicU64::new(0),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The node's session, opened (again) if it is not open.
    fn node_session(&self) -> Result<MutexGuard<'_, Option<NodeSession>>, QueueError> {
        let mut node = self.node.lock().map_err(|_| QueueError::Poisoned)?;
        if node.as_ref().is_none_or(|s| s.conn.client.is_closed()) {
            *node = Some(NodeSession {
                conn: self.pool.connect()?,
                id: self.node_sessions.fetch_add(1, Ordering::Relaxed) + 1,
                held: HashSet::new(),
                leader: false,
            });
        }
        Ok(node)
    }

    /// `host:port/database`: where the store is (for logs; never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Creates or upgrades the schema, under an advisory lock (nodes starting together
    /// migrate once); refuses a schema newer than this build.
    fn migrate(&self) -> Result<(), QueueError> {
        self.pool.run(async |conn| {
            let tx = conn.client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
            )
            .await?;
            let found: Option<i32> = tx
                .query_one("SELECT max(version) FROM schema_version", &[])
                .await?
                .get(0);
            let found = i64::from(found.unwrap_or(0));
            if found > SCHEMA_VERSION {
                return Err(QueueError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found < 1 {
                tx.batch_execute(SCHEMA_V1).await?;
            }
            if found < SCHEMA_VERSION {
                tx.execute("DELETE FROM schema_version", &[]).await?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

/// Checks `url` as [`PgStore::open`] would (its form, its TLS settings, plaintext only to
/// loopback, a readable `sslrootcert`) without connecting; returns where it points,
/// `host:port/database` (never the password), for messages.
pub fn check_url(url: &str) -> Result<String, QueueError> {
    parse_url(url).map(|(_, _, target)| target)
}

/// Takes the lease of `claim` in the transaction: the row stays locked until it ends. The
/// message must exist ([`QueueError::NotFound`]) and carry the claim's token
/// ([`QueueError::LeaseLost`]).
async fn check_lease<C: GenericClient>(
    tx: &C,
    statements: &mut Statements,
    claim: &Claim,
) -> Result<(), QueueError> {
    let stmt = statements.get(tx, LEASE_TOKEN).await?;
    let row = tx.query_opt(&stmt, &[&claim.id.as_str()]).await?;
    match row {
        None => Err(QueueError::NotFound(claim.id.clone())),
        Some(row) => match row.get::<_, Option<String>>(0) {
            Some(token) if token == claim.token => Ok(()),
            _ => Err(QueueError::LeaseLost(claim.id.clone())),
        },
    }
}

/// Commits at `synchronous_commit = off` (see the module documentation).
async fn relaxed<C: GenericClient>(tx: &C) -> Result<(), QueueError> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn attempts_of(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A message's row values, ready for [`insert_message`].
struct MessageRow<'a> {
    id: &'a QueueId,
    sender: &'a str,
    size: i64,
    dsn: String,
    body: &'a [u8],
    recipients: Vec<String>,
}

impl<'a> MessageRow<'a> {
    fn of(message: &NewMessage<'a>) -> Result<Self, QueueError> {
        Ok(Self {
            id: message.id,
            sender: message.envelope.sender(),
            size: i64::try_from(message.body.len()).unwrap_or(i64::MAX),
            dsn: serde_json::to_string(message.dsn)?,
            body: message.body,
            recipients: message.envelope.recipients().to_vec(),
        })
    }
}

/// Queues a message ([`INSERT_MESSAGE`]), refused if the id exists.
async fn insert_message<C: GenericClient>(
    client: &C,
    statements: &mut Statements,
    row: &MessageRow<'_>,
    now: Timestamp,
) -> Result<(), QueueError> {
    let stmt = statements.get(client, INSERT_MESSAGE).await?;
    let inserted: i64 = client
        .query_one(
            &stmt,
            &[
                &row.id.as_str(),
                &row.sender,
                &now,
                &row.size,
                &row.dsn,
                &row.body,
                &row.recipients,
            ],
        )
        .await?
        .get(0);
    if inserted == 0 {
        return Err(QueueError::Exists(row.id.clone()));
    }
    Ok(())
}

/// The outcomes of one try, ready for [`write_record`].
struct Record {
    history: Vec<String>,
    security: Option<String>,
    addresses: Vec<String>,
    states: Vec<&'static str>,
    replies: Vec<String>,
    outcomes: Vec<String>,
    next_attempt: Timestamp,
}

impl Record {
    fn of(
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
    ) -> Result<Self, QueueError> {
        let mut record = Record {
            history: attempts
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?,
            security: match attempts.last() {
                Some(a) => Some(serde_json::to_string(&a.security)?),
                None => None,
            },
            addresses: Vec::with_capacity(outcomes.len()),
            states: Vec::with_capacity(outcomes.len()),
            replies: Vec::with_capacity(outcomes.len()),
            outcomes: Vec::with_capacity(outcomes.len()),
            next_attempt,
        };
        for outcome in outcomes {
            let state = match outcome.outcome {
                Fate::Delivered => RecipientState::Delivered,
                Fate::Bounced => RecipientState::Bounced,
                Fate::Deferred => RecipientState::Pending,
            };
            record.addresses.push(outcome.address.clone());
            record.states.push(state.as_str());
            record.replies.push(outcome.reply.to_string());
            record.outcomes.push(serde_json::to_string(outcome)?);
        }
        Ok(record)
    }
}

/// Writes a try of message `id` in the transaction (its lease checked): the attempts, the
/// recipients' outcomes (one statement each); returns where its recipients stand.
async fn write_record<C: GenericClient>(
    tx: &C,
    statements: &mut Statements,
    id: &str,
    record: &Record,
) -> Result<Progress, QueueError> {
    if !record.history.is_empty() {
        let stmt = statements.get(tx, RECORD_ATTEMPTS).await?;
        tx.execute(&stmt, &[&id, &record.history]).await?;
    }
    if !record.addresses.is_empty() {
        let stmt = statements.get(tx, RECORD_RECIPIENTS).await?;
        tx.execute(
            &stmt,
            &[
                &id,
                &record.next_attempt,
                &record.security,
                &record.addresses,
                &record.states,
                &record.replies,
                &record.outcomes,
            ],
        )
        .await?;
    }
    let stmt = statements.get(tx, STATE_COUNTS).await?;
    let mut progress = Progress::default();
    for row in tx.query(&stmt, &[&id]).await? {
        let n = count(row.get(1));
        match RecipientState::parse(row.get(0)) {
            RecipientState::Pending => progress.pending = n,
            RecipientState::Delivered => progress.delivered = n,
            RecipientState::Bounced => progress.bounced = n,
        }
    }
    Ok(progress)
}

/// Ends the claim on message `id` in the transaction (its lease checked): removes it when
/// nothing is pending (`true`), else releases its lease.
async fn end_claim<C: GenericClient>(
    tx: &C,
    statements: &mut Statements,
    id: &str,
    pending: usize,
) -> Result<bool, QueueError> {
    let removed = pending == 0;
    let sql = if removed {
        "DELETE FROM messages WHERE id = $1"
    } else {
        RELEASE_LEASE
    };
    let stmt = statements.get(tx, sql).await?;
    tx.execute(&stmt, &[&id]).await?;
    Ok(removed)
}

impl Store for PgStore {
    /// One transaction: the message row (refused if the id exists), its body and its
    /// recipients; durable when it returns (module documentation).
    fn accept(&self, message: &NewMessage<'_>, now: Timestamp) -> Result<(), QueueError> {
        let row = MessageRow::of(message)?;
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            insert_message(&*client, statements, &row, now).await
        })
    }

    /// One transaction (module documentation: `FOR NO KEY UPDATE SKIP LOCKED`), committed at
    /// `synchronous_commit = off`.
    fn due_except(
        &self,
        now: Timestamp,
        limit: usize,
        lease: &Lease,
        busy_domains: &[String],
    ) -> Result<Vec<Claim>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let wanted = i64::try_from(limit).unwrap_or(i64::MAX);
        // Recipients read to find `limit` messages: several per message are common (one
        // message to many recipients), so read a margin; fewer messages than `limit` come
        // back only when many recipients share few messages, and the next claim goes on.
        let candidates = wanted.saturating_mul(8).saturating_add(64);
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            relaxed(&tx).await?;
            let stmt = statements.get(&tx, CLAIM).await?;
            let picked = tx
                .query(&stmt, &[&now, &wanted, &busy_domains, &candidates])
                .await?;
            if picked.is_empty() {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            let ids: Vec<String> = picked.iter().map(|r| r.get(0)).collect();
            let stmt = statements.get(&tx, CLAIMED_RECIPIENTS).await?;
            let mut due: HashMap<String, (Vec<String>, u32)> = HashMap::new();
            for row in tx.query(&stmt, &[&ids, &now]).await? {
                let entry = due.entry(row.get(0)).or_default();
                entry.0.push(row.get(1));
                entry.1 = entry.1.max(attempts_of(row.get(2)));
            }
            let mut claims = Vec::with_capacity(picked.len());
            for row in &picked {
                let id: String = row.get(0);
                // Locked, but its recipients changed since the candidates were read (a
                // claim that ended in between): not due after all.
                let Some((recipients, attempts)) = due.remove(&id) else {
                    continue;
                };
                claims.push(Claim {
                    id: QueueId::try_from(id)?,
                    token: new_token(&lease.owner),
                    lease: lease.clone(),
                    sender: row.get(1),
                    recipients,
                    arrival_time: row.get(2),
                    dsn: serde_json::from_str(row.get::<_, &str>(3))?,
                    attempts,
                });
            }
            let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
            let tokens: Vec<&str> = claims.iter().map(|c| c.token.as_str()).collect();
            let stmt = statements.get(&tx, LEASE).await?;
            tx.execute(&stmt, &[&ids, &lease.owner, &lease.until, &tokens])
                .await?;
            tx.commit().await?;
            Ok(claims)
        })
    }

    /// Two index reads: the earliest pending recipient of a message neither held nor leased,
    /// and the earliest end of a lease.
    fn next_due(&self) -> Result<Option<Timestamp>, QueueError> {
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let stmt = statements.get(&*client, NEXT_FREE).await?;
            let free: Option<i64> = client.query_opt(&stmt, &[]).await?.map(|r| r.get(0));
            let stmt = statements.get(&*client, NEXT_LEASE_END).await?;
            let lease: Option<i64> = client.query_one(&stmt, &[]).await?.get(0);
            Ok(match (free, lease) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        })
    }

    /// One transaction holding the message's row lock from the lease check to the commit
    /// (at `synchronous_commit = off`): nothing is written without the lease.
    fn record_attempt(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
    ) -> Result<Progress, QueueError> {
        let record = Record::of(outcomes, attempts, next_attempt)?;
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            relaxed(&tx).await?;
            check_lease(&tx, statements, claim).await?;
            let progress = write_record(&tx, statements, claim.id.as_str(), &record).await?;
            tx.commit().await?;
            Ok(progress)
        })
    }

    /// One durable transaction holding the message's row lock from the lease check to the
    /// commit: the notices, the record and the end of the claim are written all or none,
    /// and only with the lease.
    fn finish_attempt(
        &self,
        claim: &Claim,
        outcomes: &[RecipientOutcome],
        attempts: &[Attempt],
        next_attempt: Timestamp,
        notices: &[NewMessage<'_>],
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        let notices: Vec<MessageRow<'_>> = notices
            .iter()
            .map(MessageRow::of)
            .collect::<Result<_, _>>()?;
        let record = Record::of(outcomes, attempts, next_attempt)?;
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            check_lease(&tx, statements, claim).await?;
            for notice in &notices {
                insert_message(&tx, statements, notice, now).await?;
            }
            let id = claim.id.as_str();
            let progress = write_record(&tx, statements, id, &record).await?;
            let removed = end_claim(&tx, statements, id, progress.pending).await?;
            tx.commit().await?;
            Ok(removed)
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// The first free slot among `pg_try_advisory_lock(key, 0 … limit - 1)` on the node's
    /// session (one round trip per slot tried; never waits for a lock). A failure drops
    /// the session, and with it every slot it held.
    fn take_connection_slot(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Option<ConnectionSlot>, QueueError> {
        let key = slot_key(destination);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX).max(1);
        let mut slots = self.node_session()?;
        let Some(session) = slots.as_mut() else {
            return Err(QueueError::Internal("no node session"));
        };
        let NodeSession { conn, id, held, .. } = session;
        let tried = block_on(
            async {
                let stmt = conn
                    .statements
                    .get(&conn.client, "SELECT pg_try_advisory_lock($1, $2)")
                    .await?;
                for index in (0..limit).filter(|i| !held.contains(&(key, *i))) {
                    if conn.client.query_one(&stmt, &[&key, &index]).await?.get(0) {
                        return Ok(Some(index));
                    }
                }
                Ok::<_, tokio_postgres::Error>(None)
            },
            self.pool.timeout,
        );
        match flatten(tried) {
            Ok(Some(index)) => {
                held.insert((key, index));
                Ok(Some(ConnectionSlot {
                    key,
                    index,
                    session: *id,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                *slots = None;
                Err(e)
            }
        }
    }

    /// `pg_advisory_unlock` on the session that took the slot; a slot of an earlier session
    /// is gone already.
    fn release_connection_slot(&self, slot: &ConnectionSlot) -> Result<(), QueueError> {
        let mut slots = self.node.lock().map_err(|_| QueueError::Poisoned)?;
        let Some(session) = slots.as_mut() else {
            return Ok(());
        };
        if session.id != slot.session || !session.held.remove(&(slot.key, slot.index)) {
            return Ok(());
        }
        let conn = &mut session.conn;
        let released = block_on(
            async {
                let stmt = conn
                    .statements
                    .get(&conn.client, "SELECT pg_advisory_unlock($1, $2)")
                    .await?;
                conn.client
                    .query_one(&stmt, &[&slot.key, &slot.index])
                    .await
                    .map(|_| ())
            },
            self.pool.timeout,
        );
        let released = flatten(released);
        if released.is_err() {
            *slots = None;
        }
        released
    }

    /// `pg_try_advisory_lock` of `LEADER_LOCK` on the node's session, asked until this
    /// node gets it; then held until the session ends (the node dies, or loses the
    /// database), when the next node to ask takes over.
    fn leads_cluster(&self) -> Result<bool, QueueError> {
        let mut node = self.node_session()?;
        let Some(session) = node.as_mut() else {
            return Err(QueueError::Internal("no node session"));
        };
        if session.leader {
            return Ok(true);
        }
        let conn = &session.conn;
        let got = flatten(block_on(
            async {
                let row = conn
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                    .await?;
                Ok::<bool, tokio_postgres::Error>(row.get(0))
            },
            self.pool.timeout,
        ));
        match got {
            Ok(leader) => {
                session.leader = leader;
                Ok(leader)
            }
            Err(e) => {
                *node = None;
                Err(e)
            }
        }
    }

    /// The lease check and the new expiry in one transaction, committed at
    /// `synchronous_commit = off` (renewals must be quick; one forgotten in a database crash
    /// ends the lease early, which can only repeat a delivery).
    fn renew(&self, claim: &Claim, until: Timestamp) -> Result<Claim, QueueError> {
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            relaxed(&tx).await?;
            check_lease(&tx, statements, claim).await?;
            let stmt = statements
                .get(&tx, "UPDATE messages SET lease_until = $2 WHERE id = $1")
                .await?;
            tx.execute(&stmt, &[&claim.id.as_str(), &until]).await?;
            tx.commit().await?;
            Ok(())
        })?;
        let mut renewed = claim.clone();
        renewed.lease.until = until;
        Ok(renewed)
    }

    /// The lease check, the pending recipients moved to `until` and the lease ended, in one
    /// transaction (at `synchronous_commit = off`).
    fn postpone(&self, claim: &Claim, until: Timestamp) -> Result<(), QueueError> {
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            relaxed(&tx).await?;
            check_lease(&tx, statements, claim).await?;
            let stmt = statements
                .get(
                    &tx,
                    "UPDATE recipients SET next_attempt = $2 \
                     WHERE message = $1 AND state = 'pending'",
                )
                .await?;
            tx.execute(&stmt, &[&claim.id.as_str(), &until]).await?;
            let stmt = statements.get(&tx, RELEASE_LEASE).await?;
            tx.execute(&stmt, &[&claim.id.as_str()]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The lease check, then the message removed (with its body, recipients and history) if
    /// nothing is pending, else its lease ended; one durable transaction.
    fn complete(&self, claim: &Claim) -> Result<bool, QueueError> {
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            check_lease(&tx, statements, claim).await?;
            let id = claim.id.as_str();
            let stmt = statements.get(&tx, PENDING_COUNT).await?;
            let pending: i64 = tx.query_one(&stmt, &[&id]).await?.get(0);
            let removed = end_claim(&tx, statements, id, count(pending)).await?;
            tx.commit().await?;
            Ok(removed)
        })
    }

    /// One `REPEATABLE READ` snapshot, read through a portal 500 rows at a time (a queue of
    /// any size is never held in memory), handed to `visit` as each message is complete.
    fn scan(&self, now: Timestamp, visit: &mut dyn FnMut(QueueEntry)) -> Result<(), QueueError> {
        self.pool.run_for(Duration::from_secs(600), async |conn| {
            let Conn { client, statements } = conn;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let stmt = statements.get(&tx, SCAN).await?;
            let params: [&(dyn ToSql + Sync); 0] = [];
            let portal = tx.bind(&stmt, &params).await?;
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
            loop {
                let rows = tx.query_portal(&portal, 500).await?;
                if rows.is_empty() {
                    break;
                }
                for r in rows {
                    let id: &str = r.get(0);
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
                                queue_id: QueueId::try_from(id.to_owned())?,
                                arrival_time: r.get(2),
                                message_size: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                                sender: r.get(1),
                                recipients: Vec::new(),
                                hold_reason: r.get(4),
                                history: Vec::new(),
                            },
                            r.get(5),
                        ));
                    }
                    let Some(address) = r.get::<_, Option<String>>(6) else {
                        continue;
                    };
                    if r.get::<_, Option<&str>>(11) != Some(RecipientState::Pending.as_str()) {
                        continue;
                    }
                    let security = match r.get::<_, Option<&str>>(10) {
                        Some(s) => Some(serde_json::from_str(s)?),
                        None => None,
                    };
                    if let Some((entry, _)) = current.as_mut() {
                        entry.recipients.push(RecipientView {
                            address,
                            delay_reason: r.get(9),
                            state: RecipientState::Pending,
                            attempts: attempts_of(r.get(7)),
                            next_attempt: r.get(8),
                            security,
                        });
                    }
                }
            }
            if let Some(done) = current.take() {
                visit(finish(done));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// `count(*)` and `min(arrival)` of `messages`: a scan of that table (no bodies), cheap
    /// enough for the metrics' period.
    fn stats(&self) -> Result<QueueStats, QueueError> {
        self.pool.run(async |conn| {
            let row = conn
                .client
                .query_one("SELECT count(*), min(arrival) FROM messages", &[])
                .await?;
            Ok(QueueStats {
                messages: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                oldest_arrival: row.get(1),
            })
        })
    }

    /// One `REPEATABLE READ` snapshot of the message, its recipients and its history.
    fn show(&self, id: &QueueId, now: Timestamp) -> Result<QueueEntry, QueueError> {
        self.pool.run(async |conn| {
            let tx = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let Some(m) = tx
                .query_opt(
                    "SELECT sender, arrival, size, hold_reason, lease_until \
                     FROM messages WHERE id = $1",
                    &[&id.as_str()],
                )
                .await?
            else {
                return Err(QueueError::NotFound(id.clone()));
            };
            let mut recipients = Vec::new();
            for r in tx
                .query(
                    "SELECT address, state, attempts, next_attempt, delay_reason, security \
                     FROM recipients WHERE message = $1 ORDER BY position",
                    &[&id.as_str()],
                )
                .await?
            {
                let security = match r.get::<_, Option<&str>>(5) {
                    Some(s) => Some(serde_json::from_str(s)?),
                    None => None,
                };
                recipients.push(RecipientView {
                    address: r.get(0),
                    state: RecipientState::parse(r.get(1)),
                    attempts: attempts_of(r.get(2)),
                    next_attempt: r.get(3),
                    delay_reason: r.get(4),
                    security,
                });
            }
            let mut history = Vec::new();
            for r in tx
                .query(
                    "SELECT attempt FROM attempts WHERE message = $1 ORDER BY seq",
                    &[&id.as_str()],
                )
                .await?
            {
                history.push(serde_json::from_str(r.get::<_, &str>(0))?);
            }
            tx.commit().await?;
            let hold_reason: Option<String> = m.get(3);
            Ok(QueueEntry {
                queue_name: name_of(hold_reason.is_some(), m.get(4), &recipients, now),
                queue_id: id.clone(),
                arrival_time: m.get(1),
                message_size: u64::try_from(m.get::<_, i64>(2)).unwrap_or(0),
                sender: m.get(0),
                recipients,
                hold_reason,
                history,
            })
        })
    }

    /// One statement (durable); no lease needed.
    fn hold(&self, id: &QueueId, reason: &str) -> Result<(), QueueError> {
        let n = self.pool.run(async |conn| {
            Ok(conn
                .client
                .execute(
                    "UPDATE messages SET hold_reason = $2 WHERE id = $1",
                    &[&id.as_str(), &reason],
                )
                .await?)
        })?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        Ok(())
    }

    /// One statement (durable). The body is in the same database as the row, written in the
    /// same transaction: it cannot be missing, unlike a spool file.
    fn release(&self, id: &QueueId) -> Result<(), QueueError> {
        let n = self.pool.run(async |conn| {
            Ok(conn
                .client
                .execute(
                    "UPDATE messages SET hold_reason = NULL WHERE id = $1",
                    &[&id.as_str()],
                )
                .await?)
        })?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        Ok(())
    }

    /// One statement (durable): the row, and by cascade its body, recipients and history. A
    /// worker delivering it meanwhile gets [`QueueError::NotFound`] when it records.
    fn delete(&self, id: &QueueId) -> Result<(), QueueError> {
        let n = self.pool.run(async |conn| {
            Ok(conn
                .client
                .execute("DELETE FROM messages WHERE id = $1", &[&id.as_str()])
                .await?)
        })?;
        if n == 0 {
            return Err(QueueError::NotFound(id.clone()));
        }
        Ok(())
    }

    /// One statement (durable) over the given messages, or all.
    fn flush(&self, ids: &[QueueId], now: Timestamp) -> Result<usize, QueueError> {
        let ids: Option<Vec<&str>> = if ids.is_empty() {
            None
        } else {
            Some(ids.iter().map(QueueId::as_str).collect())
        };
        self.pool.run(async |conn| {
            let row = conn.client.query_one(FLUSH, &[&ids, &now]).await?;
            Ok(count(row.get(0)))
        })
    }

    /// Reads the whole body (one row) into memory.
    fn body(&self, id: &QueueId) -> Result<Box<dyn Read + Send>, QueueError> {
        let body: Option<Vec<u8>> = self.pool.run(async |conn| {
            let row = conn
                .client
                .query_opt(
                    "SELECT b.body, m.id IS NOT NULL FROM messages m \
                     LEFT JOIN bodies b ON b.message = m.id WHERE m.id = $1",
                    &[&id.as_str()],
                )
                .await?;
            match row {
                None => Err(QueueError::NotFound(id.clone())),
                Some(row) => Ok(row.get(0)),
            }
        })?;
        match body {
            Some(body) => Ok(Box::new(Cursor::new(body))),
            None => Err(QueueError::MissingBody(id.clone())),
        }
    }

    fn sts_policy(&self, domain: &DnsName) -> Result<Option<StsPolicyRecord>, QueueError> {
        self.pool.run(async |conn| {
            let row = conn
                .client
                .query_opt(
                    "SELECT policy, fetched_at, expires_at FROM sts_policies WHERE domain = $1",
                    &[&domain.as_str()],
                )
                .await?;
            Ok(row.map(|r: Row| StsPolicyRecord {
                policy: r.get(0),
                fetched_at: r.get(1),
                expires_at: r.get(2),
            }))
        })
    }

    /// One statement, durable (policy fetches are rare: no need to relax it).
    fn put_sts_policy(&self, domain: &DnsName, record: &StsPolicyRecord) -> Result<(), QueueError> {
        self.pool.run(async |conn| {
            conn.client
                .execute(
                    PUT_STS_POLICY,
                    &[
                        &domain.as_str(),
                        &record.policy,
                        &record.fetched_at,
                        &record.expires_at,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn remove_sts_policy(&self, domain: &DnsName) -> Result<(), QueueError> {
        self.pool.run(async |conn| {
            conn.client
                .execute(
                    "DELETE FROM sts_policies WHERE domain = $1",
                    &[&domain.as_str()],
                )
                .await?;
            Ok(())
        })
    }

    /// One `DELETE` along `sts_policies_expiry`.
    fn prune_sts_policies(&self, now: Timestamp) -> Result<usize, QueueError> {
        self.pool.run(async |conn| {
            let n = conn
                .client
                .execute("DELETE FROM sts_policies WHERE expires_at <= $1", &[&now])
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// One transaction at `synchronous_commit = off` (counters are statistics), the counters
    /// added in key order so that two nodes adding to the same ones cannot deadlock.
    fn add_tls_counts(&self, counts: &[TlsCountRecord]) -> Result<(), QueueError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(counts.len());
        for c in counts {
            rows.push((
                c.day,
                c.domain.as_str().to_owned(),
                c.policy_type.clone(),
                serde_json::to_string(&c.policy_strings)?,
                serde_json::to_string(&c.policy_mx)?,
                c.result.clone().unwrap_or_default(),
                c.receiving_mx.clone(),
                c.sending_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                c.receiving_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                i64::try_from(c.sessions).unwrap_or(i64::MAX),
            ));
        }
        rows.sort();
        self.pool.run(async |conn| {
            let Conn { client, statements } = conn;
            let tx = client.transaction().await?;
            relaxed(&tx).await?;
            let stmt = statements.get(&tx, ADD_TLS_COUNT).await?;
            for (day, domain, kind, policy, mx, result, rmx, sip, rip, n) in &rows {
                tx.execute(
                    &stmt,
                    &[day, domain, kind, policy, mx, result, rmx, sip, rip, n],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn tls_counts(
        &self,
        domain: &DnsName,
        day: Timestamp,
    ) -> Result<Vec<TlsCountRecord>, QueueError> {
        let rows = self.pool.run(async |conn| {
            Ok(conn
                .client
                .query(TLS_COUNTS, &[&day, &domain.as_str()])
                .await?)
        })?;
        let ip = |text: &str| -> Option<IpAddr> { text.parse().ok() };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let result: String = r.get(3);
            out.push(TlsCountRecord {
                day,
                domain: domain.clone(),
                policy_type: r.get(0),
                policy_strings: serde_json::from_str(r.get::<_, &str>(1))?,
                policy_mx: serde_json::from_str(r.get::<_, &str>(2))?,
                result: (!result.is_empty()).then_some(result),
                receiving_mx: r.get(4),
                sending_ip: ip(r.get(5)),
                receiving_ip: ip(r.get(6)),
                sessions: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn tls_reports_due(&self, day: Timestamp) -> Result<Vec<DnsName>, QueueError> {
        let rows = self
            .pool
            .run(async |conn| Ok(conn.client.query(TLS_REPORTS_DUE, &[&day]).await?))?;
        // Names were valid when written; one that no longer parses cannot get a report.
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<_, &str>(0).parse().ok())
            .collect())
    }

    /// One upsert at `synchronous_commit = off`: a record lost in a database crash means the
    /// report is built and sent once more (receivers tell repeats by the report id).
    fn finish_tls_report(
        &self,
        domain: &DnsName,
        day: Timestamp,
        outcome: &str,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.pool.run(async |conn| {
            let tx = conn.client.transaction().await?;
            relaxed(&tx).await?;
            tx.execute(
                "INSERT INTO tls_reports (day, domain, outcome, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (day, domain) DO UPDATE SET outcome = excluded.outcome, \
                 at = excluded.at",
                &[&day, &domain.as_str(), &outcome, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// One transaction: the counters and report records of days before `before`.
    fn prune_tls_counts(&self, before: Timestamp) -> Result<usize, QueueError> {
        self.pool.run(async |conn| {
            let tx = conn.client.transaction().await?;
            let n = tx
                .execute("DELETE FROM tls_counts WHERE day < $1", &[&before])
                .await?;
            tx.execute("DELETE FROM tls_reports WHERE day < $1", &[&before])
                .await?;
            tx.commit().await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

// ---------------------------------------------------------------------------------------
// Connections.

/// One connection and the statements prepared on it (a claim or a record costs one round
/// trip per statement, not two).
struct Conn {
    client: Client,
    statements: Statements,
}

#[derive(Default)]
struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// `sql` prepared on this connection (once).
    async fn get<C: GenericClient>(
        &mut self,
        client: &C,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.0.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = client.prepare(sql).await?;
        self.0.insert(sql, stmt.clone());
        Ok(stmt)
    }
}

/// TLS to the database, or none.
#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// A bounded pool of connections, driven by a runtime thread of its own.
struct Pool {
    config: Config,
    tls: Tls,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    timeout: Duration,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Conn>,
    /// Connections open or being opened (idle or lent).
    open: usize,
}

/// A connection lent to one call; back to the pool when dropped, unless broken.
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: bool,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let reusable = !self.broken && !conn.client.is_closed();
        if let Ok(mut state) = self.pool.state.lock() {
            if reusable {
                state.idle.push(conn);
            } else {
                state.open = state.open.saturating_sub(1);
            }
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    fn new(config: Config, tls: Tls, options: &PgOptions) -> Result<Self, QueueError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("danemta-pg")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        Ok(Self {
            config,
            tls,
            runtime: Some(runtime),
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            max: options.connections.max(1),
            timeout: options.timeout,
        })
    }

    /// Runs `op` on a connection, waiting at most the pool's timeout for one and then for the
    /// answer.
    fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        self.run_for(self.timeout, op)
    }

    /// [`Pool::run`], with `limit` for the answer.
    fn run_for<T>(
        &self,
        limit: Duration,
        op: impl AsyncFnOnce(&mut Conn) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut lent = self.get()?;
        let Some(conn) = lent.conn.as_mut() else {
            return Err(QueueError::Internal("a lent connection is missing"));
        };
        match block_on(op(conn), limit) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if let QueueError::Postgres(pg) = &e
                    && pg.breaks_connection()
                {
                    lent.broken = true;
                }
                Err(e)
            }
            Err(e) => {
                // The future was dropped half-way: the session's state is unknown.
                lent.broken = true;
                Err(e.into())
            }
        }
    }

    /// An idle connection, or a new one while fewer than `max` are open, or the first to be
    /// given back within the timeout.
    fn get(&self) -> Result<Lent<'_>, QueueError> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.state.lock().map_err(|_| QueueError::Poisoned)?;
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open = state.open.saturating_sub(1);
                    continue;
                }
                return Ok(Lent {
                    pool: self,
                    conn: Some(conn),
                    broken: false,
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(conn) => Ok(Lent {
                        pool: self,
                        conn: Some(conn),
                        broken: false,
                    }),
                    Err(e) => {
                        if let Ok(mut state) = self.state.lock() {
                            state.open = state.open.saturating_sub(1);
                        }
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PgError::Busy(self.max, self.timeout).into());
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .map_err(|_| QueueError::Poisoned)?
                .0;
        }
    }

    /// Opens a connection: the handshake and the connection's task run on the pool's
    /// runtime; then the session settings.
    fn connect(&self) -> Result<Conn, QueueError> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(QueueError::Internal("the database runtime is gone"));
        };
        let config = self.config.clone();
        let tls = self.tls.clone();
        let task = runtime.spawn(async move {
            let client = match tls {
                Tls::Plain => {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(drive(connection));
                    client
                }
                Tls::Rustls(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(drive(connection));
                    client
                }
            };
            client.batch_execute(SESSION).await?;
            let sync: String = client
                .query_one("SELECT current_setting('synchronous_commit')", &[])
                .await?
                .get(0);
            if sync == "off" {
                client.batch_execute("SET synchronous_commit = on").await?;
            }
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = match block_on(task, self.timeout)? {
            Ok(result) => result?,
            Err(_) => return Err(QueueError::Internal("the database connection task failed")),
        };
        Ok(Conn {
            client,
            statements: Statements::default(),
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Clients first (their connections' tasks end), then the runtime, without waiting
        // for it: the store may be dropped on a tokio thread, where blocking is forbidden.
        if let Ok(mut state) = self.state.lock() {
            state.idle.clear();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs a connection until it closes; a failure is logged (the calls waiting on it fail too,
/// and the pool drops the client).
async fn drive<F: Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!(target: "relay", "queue database connection lost: {e}");
    }
}

/// Wakes the thread blocked in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The result of a [`block_on`] of a client call, as a queue error.
fn flatten<T>(r: Result<Result<T, tokio_postgres::Error>, PgError>) -> Result<T, QueueError> {
    r.map_err(QueueError::from)?.map_err(QueueError::from)
}

/// Polls `future` on this thread until it is ready or `limit` has passed. Needs no runtime:
/// the client's futures only wait on channels to the connection tasks, which run on the
/// pool's runtime; so it works on any thread, a tokio one included.
fn block_on<F: Future>(future: F, limit: Duration) -> Result<F::Output, PgError> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let deadline = Instant::now() + limit;
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(PgError::Timeout(limit));
        }
        std::thread::park_timeout(deadline - now);
    }
}

// ---------------------------------------------------------------------------------------
// The URL.

/// The client configuration, the TLS to use and `host:port/database` of `url` (see the
/// module documentation).
fn parse_url(url: &str) -> Result<(Config, Tls, String), QueueError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| PgError::Url("it must begin with postgres:// or postgresql://".into()))?;
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut sslmode: Option<String> = None;
    let mut rootcert: Option<PathBuf> = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => sslmode = Some(percent_decode(value)?),
            "sslrootcert" => rootcert = Some(PathBuf::from(percent_decode(value)?)),
            _ => kept.push(pair),
        }
    }
    let tls = match sslmode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => {
            return Err(PgError::Url(format!("sslmode={other} is not a libpq mode")).into());
        }
    };
    let mut rebuilt = format!("postgres://{base}");
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    let mut config: Config = rebuilt
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    config.ssl_mode(if tls {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    if config.get_application_name().is_none() {
        config.application_name("danemta");
    }
    config.keepalives_idle(Duration::from_secs(30));
    let target = describe(&config);
    let tls = if tls {
        Tls::Rustls(rustls_connector(rootcert.as_deref())?)
    } else {
        if !on_loopback(&config) {
            return Err(PgError::Plaintext(target).into());
        }
        Tls::Plain
    };
    Ok((config, tls, target))
}

/// `host:port/database` (the first host; others after a comma).
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().or(config.get_user()).unwrap_or("")
    )
}

/// Whether every way to the server stays on this machine: loopback addresses, `localhost`,
/// Unix socket directories.
fn on_loopback(config: &Config) -> bool {
    let hosts_local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    hosts_local && config.get_hostaddrs().iter().all(IpAddr::is_loopback)
}

/// rustls with ring, verifying the server's chain against `rootcert` (else the system's
/// roots) and its name against the host.
fn rustls_connector(rootcert: Option<&Path>) -> Result<MakeRustlsConnect, QueueError> {
    let roots = match rootcert {
        Some(path) => {
            let bad = |reason: String| PgError::RootCert {
                path: path.to_owned(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| bad(e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("no usable certificate in it".into()).into());
            }
            roots
        }
        None => smtp::tls::roots(&[]),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `%XX` decoding of a URL query component (`+` is not a space in libpq URIs).
fn percent_decode(s: &str) -> Result<String, QueueError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Url(format!("bad %-escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Url(format!("{s:?} is not UTF-8")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<(Config, bool, String), QueueError> {
        parse_url(url).map(|(c, tls, t)| (c, matches!(tls, Tls::Rustls(_)), t))
    }

    #[test]
    fn plaintext_only_to_loopback() {
        for url in [
            "postgres://u@127.0.0.1:5432/q",
            "postgres://u@localhost/q",
            "postgres://u@[::1]:5433/q?sslmode=disable",
            "postgresql://u@%2Fvar%2Frun%2Fpostgresql/q",
        ] {
            let (_, tls, _) = parsed(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!tls, "{url}");
        }
        for url in [
            "postgres://u@db.example.org/q",
            "postgres://u@192.0.2.1/q?sslmode=prefer",
            "postgres://u@127.0.0.1,db.example.org/q",
        ] {
            assert!(
                matches!(
                    parsed(url),
                    Err(QueueError::Postgres(PgError::Plaintext(_)))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn tls_modes_verify_and_are_taken_out_of_the_url() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!(
                "postgres://u:secret@db.example.org:6432/q?sslmode={mode}&connect_timeout=3"
            );
            let (config, tls, target) = parsed(&url).unwrap();
            assert!(tls);
            assert_eq!(config.get_ssl_mode(), SslMode::Require);
            assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
            assert_eq!(target, "db.example.org:6432/q");
            assert!(!target.contains("secret"));
        }
        assert!(matches!(
            parsed("postgres://u@db.example.org/q?sslmode=bogus"),
            Err(QueueError::Postgres(PgError::Url(_)))
        ));
        assert!(matches!(
            parsed("mysql://u@db.example.org/q"),
            Err(QueueError::Postgres(PgError::Url(_)))
        ));
        assert!(matches!(
            parsed("postgres://u@db.example.org/q?sslmode=verify-full&sslrootcert=%2Fnonexistent"),
            Err(QueueError::Postgres(PgError::RootCert { .. }))
        ));
    }

    #[test]
    fn block_on_gives_up_at_the_limit() {
        let pending = std::future::pending::<()>();
        let t0 = Instant::now();
        assert!(matches!(
            block_on(pending, Duration::from_millis(50)),
            Err(PgError::Timeout(_))
        ));
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(block_on(async { 7 }, Duration::ZERO).unwrap(), 7);
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("%2Fa%20b").unwrap(), "/a b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%2").is_err());
    }
}
