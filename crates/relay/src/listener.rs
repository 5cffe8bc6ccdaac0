//! The listener: what the relay answers an SMTP client ([`RelayAcceptor`], the relay's side of
//! [`smtp::server::Acceptor`]) and the accept loop that runs one session per connection
//! ([`serve_listener`]).
//!
//! Rules kept here (PRODUCT.md, "The relay daemon"):
//! * **never an open relay**: a recipient is accepted when the client is in
//!   `relay_networks`, or authenticated (RFC 4954), or when the recipient's domain is one of
//!   `accept_domains` (exact, case-insensitive). Anything else is `554 5.7.1 Relay access
//!   denied` and nothing is queued (RFC 5321 §3.6.2: relaying is the server's choice);
//! * `%` and `!` in a recipient's local part (the old percent hack and UUCP bang paths, RFC
//!   5321 §3.6.1 and §2.3.11) are refused with `550 5.7.1` for every client: the relay never
//!   routes on them. Source routes are already refused by the session (`553`);
//! * **`250` only after fsync**: [`Acceptor::message`] returns the queue id only once
//!   [`Store::accept`] returned `Ok`, i.e. once body and envelope are on stable storage; a
//!   store error is `451 4.3.0` (RFC 3463 §3.4), a full file system `452 4.3.1`, never `250`;
//! * every stored message starts with a `Received:` trace field (RFC 5321 §4.4);
//! * REQUIRETLS (RFC 8689): the relay honours it ([`Acceptor::requiretls`]), so the session
//!   advertises it after STARTTLS and takes the parameter only over TLS; each message is
//!   stored with its tag (§4.1: REQUIRETLS, else a `TLS-Required: No` header field), which
//!   delivery obeys (`smtp::deliver`) and which survives restarts in the queue.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp::reply::{EnhancedStatus, Reply};
use smtp::requiretls::TlsRequest;
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction, reply};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{self, IpNetwork};
use crate::metrics::{self, Rejection};
use crate::queue::{self, DsnParams, NewMessage, RecipientDsn, Store};
use crate::users::Users;

/// The relay's decisions for the SMTP server session: relay permission per recipient, and
/// durable storage of each message.
pub struct RelayAcceptor {
    store: Arc<dyn Store>,
    hostname: String,
    relay_networks: Vec<IpNetwork>,
    /// Lower case, without a trailing dot.
    accept_domains: Vec<String>,
    /// Submission listeners: MAIL only after AUTH (RFC 6409 §4.3).
    require_auth: bool,
    /// Who may authenticate (`[auth] users_file`).
    users: Option<Arc<Users>>,
    /// Failed AUTH attempts per client address, shared by the daemon's listeners.
    auth_failures: Arc<AuthFailures>,
    /// The queue's directory and the free space its file system must keep.
    min_free: Option<(PathBuf, u64)>,
    /// Called after each message is queued (wakes the scheduler).
    on_queued: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for RelayAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayAcceptor")
            .field("hostname", &self.hostname)
            .field("relay_networks", &self.relay_networks)
            .field("accept_domains", &self.accept_domains)
            .finish_non_exhaustive()
    }
}

/// The canonical form of a domain for comparison: lower case, no trailing dot (domain names
/// compare case-insensitively, RFC 5321 §2.4).
fn canonical_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

impl RelayAcceptor {
    /// An acceptor storing into `store`, naming itself `hostname` in `Received:`, with the
    /// relay permissions of `server` (`relay_networks`, `accept_domains`).
    pub fn new(
        store: Arc<dyn Store>,
        hostname: impl Into<String>,
        server: &config::Server,
    ) -> Self {
        RelayAcceptor {
            store,
            hostname: hostname.into(),
            relay_networks: server.relay_networks.clone(),
            accept_domains: server
                .accept_domains
                .iter()
                .map(|d| canonical_domain(d.as_str()))
                .collect(),
            require_auth: false,
            users: None,
            auth_failures: Arc::default(),
            min_free: None,
            on_queued: None,
        }
    }

    /// A submission listener's acceptor: `MAIL` is refused with `530 5.7.0` until the client
    /// authenticated (RFC 6409 §4.3, RFC 4954 §6).
    pub fn requiring_auth(mut self) -> Self {
        self.require_auth = true;
        self
    }

    /// Checks AUTH credentials against `users`.
    pub fn with_users(mut self, users: Arc<Users>) -> Self {
        self.users = Some(users);
        self
    }

    /// Refuses new mail with `452 4.3.1` at MAIL FROM while the file system of `queue_dir`
    /// has less than `bytes` free (Postfix's smtpd does the same with 1.5 × its message size
    /// limit): the queue never fills its disk, so deliveries, which write to the queue
    /// database, go on and free space.
    pub fn with_min_free(mut self, queue_dir: PathBuf, bytes: u64) -> Self {
        self.min_free = Some((queue_dir, bytes));
        self
    }

    /// Counts failed AUTH attempts in `failures`, shared with other listeners (by default
    /// each acceptor counts its own).
    pub fn with_auth_failures(mut self, failures: Arc<AuthFailures>) -> Self {
        self.auth_failures = failures;
        self
    }

    /// Calls `wake` after each message is on stable storage (the scheduler's doorbell).
    pub fn on_queued(mut self, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_queued = Some(wake);
        self
    }

    /// Whether `client` may relay to any domain: its address is in `relay_networks`, or it
    /// authenticated (RFC 4954).
    pub fn may_relay(&self, client: &Client) -> bool {
        client.user.is_some()
            || client
                .addr
                .is_some_and(|a| self.relay_networks.iter().any(|n| n.contains(a.ip())))
    }

    /// Whether `domain` is one of `accept_domains` (exact, case-insensitive).
    pub fn accepts_domain(&self, domain: &str) -> bool {
        let domain = canonical_domain(domain);
        self.accept_domains.contains(&domain)
    }

    /// The `Received:` field (RFC 5321 §4.4) for a message from `client`, with CRLF:
    /// `from <helo> ([<ip>]) by <hostname> with <protocol> id <id> [for <rcpt>]; <date>`.
    /// The protocol is `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848); `for` is
    /// given only with a single recipient, so as not to disclose the others.
    pub fn received(
        &self,
        client: &Client,
        transaction: &Transaction,
        id: &str,
        date: &str,
    ) -> String {
        let helo = client.helo.as_ref().map_or("unknown", |h| h.as_str());
        let ip = match client.addr {
            Some(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Some(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            None => "unknown".to_owned(),
        };
        let protocol = match (client.esmtp, client.tls.is_some(), client.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let mut field = format!(
            "Received: from {helo} ({ip})\r\n\tby {} with {protocol} id {id}",
            self.hostname
        );
        if let [rcpt] = transaction.rcpts.as_slice() {
            field.push_str(&format!("\r\n\tfor <{}>", rcpt.recipient));
        }
        field.push_str(&format!(";\r\n\t{date}\r\n"));
        field
    }
}

fn temporary_failure() -> Reply {
    reply(
        451,
        EnhancedStatus::new(4, 3, 0),
        "Requested action aborted: local error in processing",
    )
}

/// The bytes an unprivileged writer may still use on the file system of `dir` (`None` when
/// it cannot be told: the write itself will say).
fn free_space(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The queue's file system is full: RFC 3463 §3.4 `4.3.1`, and `452` (RFC 5321 §4.2.2,
/// insufficient system storage), what Postfix answers too.
fn insufficient_storage() -> Reply {
    reply(
        452,
        EnhancedStatus::new(4, 3, 1),
        "Insufficient system storage",
    )
}

impl Acceptor for RelayAcceptor {
    /// The scheduler delivers REQUIRETLS messages as RFC 8689 §4.2.1 demands and returns
    /// their DSNs as §5 does: the relay offers the extension.
    fn requiretls(&self) -> bool {
        true
    }

    /// On a submission listener, `530 5.7.0` until the client authenticated.
    async fn mail(&self, client: &Client, _: &MailFrom) -> Result<(), Reply> {
        if let Some((dir, min_free)) = &self.min_free
            && let Some(free) = free_space(dir)
            && free < *min_free
        {
            metrics::rejection(Rejection::InsufficientStorage);
            tracing::warn!(
                target: "relay",
                "{}: {free} bytes free, {min_free} needed ([queue] min_free): 452 to new mail",
                dir.display()
            );
            return Err(insufficient_storage());
        }
        if self.require_auth && client.user.is_none() {
            return Err(reply(
                530,
                EnhancedStatus::new(5, 7, 0),
                "Authentication required",
            ));
        }
        Ok(())
    }

    /// Checks the password against `[auth] users_file` on a blocking thread (password hashes
    /// are slow on purpose). No users file: nobody authenticates.
    /// After [`MAX_AUTH_FAILURES`] failures from one address within [`AUTH_FAILURE_WINDOW`],
    /// every attempt from it fails without a look at the password, so that guessing gains
    /// nothing (besides the server's delay after each failure).
    async fn authenticate(&self, client: &Client, user: &str, password: &str) -> bool {
        let Some(users) = self.users.clone() else {
            return false;
        };
        let ip = client.addr.map(|a| a.ip());
        if let Some(ip) = ip
            && self.auth_failures.locked_out(ip, Instant::now())
        {
            metrics::rejection(Rejection::AuthFailed);
            tracing::warn!(target: "relay", "AUTH from {ip} refused unchecked: {MAX_AUTH_FAILURES} failures in {} minutes", AUTH_FAILURE_WINDOW.as_secs() / 60);
            return false;
        }
        let (user, password) = (user.to_owned(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        if !ok {
            metrics::rejection(Rejection::AuthFailed);
            if let Some(ip) = ip {
                self.auth_failures.failed(ip, Instant::now());
            }
        }
        ok
    }

    /// Relay permission (RFC 5321 §3.6.2) and the `%`/`!` refusal; see the module docs.
    async fn rcpt(&self, client: &Client, _: &MailFrom, rcpt: &RcptTo) -> Result<(), Reply> {
        let (local, domain) = rcpt
            .recipient
            .rsplit_once('@')
            .unwrap_or((rcpt.recipient.as_str(), ""));
        // Sender-specified routing (user%remote@site, remote!user@site, "user@remote"@site):
        // a next hop that honours it would relay for us (Postfix's allow_untrusted_routing =
        // no, here for every client).
        if local.contains(['%', '!', '@']) {
            return Err(reply(
                550,
                EnhancedStatus::new(5, 7, 1),
                "Routing with %, ! or @ in the local part is not supported",
            ));
        }
        if self.may_relay(client) || (!domain.is_empty() && self.accepts_domain(domain)) {
            return Ok(());
        }
        metrics::rejection(Rejection::RelayDenied);
        Err(reply(
            554,
            EnhancedStatus::new(5, 7, 1),
            "Relay access denied",
        ))
    }

    /// Prepends `Received:` (with the queue id, as Postfix does) and stores the message with
    /// its DSN parameters; `Ok` only after [`Store::accept`] returned `Ok` (the message is on
    /// stable storage), `452 4.3.1` when the queue's file system is full, `451 4.3.0` for any
    /// other failure.
    async fn message(
        &self,
        client: &Client,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> Result<QueueId, Reply> {
        let hops = received_count(&body);
        if hops >= MAX_HOPS {
            metrics::rejection(Rejection::Other);
            tracing::warn!(target: "relay", "refusing a message with {hops} Received: fields (a mail loop?)");
            return Err(reply(
                554,
                EnhancedStatus::new(5, 4, 6),
                format!("Too many hops ({hops} Received: header fields): mail forwarding loop"),
            ));
        }
        let envelope = transaction.envelope().map_err(|e| {
            tracing::error!(target: "relay", "refusing a message with an unusable envelope: {e}");
            temporary_failure()
        })?;
        let date = OffsetDateTime::now_utc().format(&Rfc2822).map_err(|e| {
            tracing::error!(target: "relay", "cannot format the Received: date: {e}");
            temporary_failure()
        })?;
        let id = queue::QueueId::generate();
        // RFC 8689 §4.1: tag the message before our own trace field goes on top.
        let dsn = dsn_params(transaction, &body);
        let received = self.received(client, transaction, id.as_str(), &date);
        // In place: no second copy of a big message in memory.
        let mut message = body;
        message.splice(0..0, received.bytes());
        let size = message.len() as u64;
        // What Postfix's cleanup and qmgr log at intake, to trace a message from here on.
        let intake = format!(
            "from=<{}>, nrcpt={}, size={size}, client={}",
            envelope.sender(),
            envelope.recipients().len(),
            client
                .addr
                .map_or_else(|| "local".to_owned(), |a| a.ip().to_string()),
        );
        let store = Arc::clone(&self.store);
        let now = queue::now();
        let queued = id.clone();
        let stored = tokio::task::spawn_blocking(move || {
            store.accept(
                &NewMessage {
                    id: &queued,
                    envelope: &envelope,
                    dsn: &dsn,
                    body: &message,
                },
                now,
            )
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                tracing::info!(target: "relay", "{id}: queued {intake}");
                metrics::accepted(size);
                if let Some(wake) = &self.on_queued {
                    wake();
                }
                Ok(QueueId(id.to_string()))
            }
            // The client hears 452 or 451 and retries; the operator needs to know why.
            Ok(Err(e)) if e.is_storage_full() => {
                tracing::error!(target: "relay", "{id}: cannot queue the message, the queue's file system is full (452 to the client): {e}");
                Err(insufficient_storage())
            }
            Ok(Err(e)) => {
                tracing::error!(target: "relay", "{id}: cannot queue the message (451 to the client): {e}");
                Err(temporary_failure())
            }
            Err(e) => {
                tracing::error!(target: "relay", "{id}: the queue writer failed (451 to the client): {e}");
                Err(temporary_failure())
            }
        }
    }
}

/// The RFC 3461 parameters of a transaction, to store with its message, and the RFC 8689
/// tag of the message (`body`): REQUIRETLS from MAIL FROM, else `TLS-Required: No` from
/// the header section (§4.1: the header field is ignored when REQUIRETLS was given).
fn dsn_params(transaction: &Transaction, body: &[u8]) -> DsnParams {
    DsnParams {
        tls_request: TlsRequest::from_message(transaction.mail.requiretls, body),
        ret: transaction.mail.ret,
        envid: transaction.mail.envid.clone(),
        recipients: transaction
            .rcpts
            .iter()
            .filter(|r| r.notify.is_some() || r.orcpt.is_some())
            .map(|r| RecipientDsn {
                address: r.recipient.clone(),
                notify: r.notify,
                orcpt: r.orcpt.clone(),
            })
            .collect(),
    }
}

/// A message that already passed this many relays (`Received:` fields) is refused with
/// `554 5.4.6`: a mail loop between misconfigured relays must end (RFC 5321 §6.3; Postfix's
/// `hopcount_limit` is 50 too).
pub const MAX_HOPS: usize = 50;

/// The `Received:` fields in the header section of `message` (up to the first empty line).
fn received_count(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

/// Failed AUTH attempts from one address that lock it out for the rest of the window.
pub const MAX_AUTH_FAILURES: u32 = 10;

/// The window [`MAX_AUTH_FAILURES`] is counted in, from the first failure.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// Addresses tracked at most; past it, expired windows are forgotten first, then the oldest.
const AUTH_FAILURE_ADDRESSES: usize = 100_000;

/// Failed AUTH attempts per client: the first failure's time and the count. An IPv6 client
/// is its /64 (one host usually holds a whole /64, and would otherwise pick a fresh address
/// for every ten guesses); an IPv4-mapped address is its IPv4 address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    map: std::sync::Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The key a client's failures are counted under: its address, or its /64 for IPv6.
fn guesser(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)).into(),
        },
    }
}

impl AuthFailures {
    /// Whether `ip` used up its failures in the current window.
    fn locked_out(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = guesser(ip);
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).is_some_and(|(since, n)| {
            *n >= MAX_AUTH_FAILURES && now.duration_since(*since) < AUTH_FAILURE_WINDOW
        })
    }

    /// Counts a failure of `ip`.
    fn failed(&self, ip: IpAddr, now: Instant) {
        let ip = guesser(ip);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= AUTH_FAILURE_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, (since, _)| now.duration_since(*since) < AUTH_FAILURE_WINDOW);
            if map.len() >= AUTH_FAILURE_ADDRESSES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= AUTH_FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// Bounds on one listener's sessions (RFC 5321 §4.3.2: `421` when the service cannot take
/// the client now).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Sessions at once; a connection past it gets `421 4.3.2` and is closed.
    pub overall: usize,
    /// Sessions at once from one client address; past it `421 4.7.0`.
    pub per_client: usize,
    /// Clients the per-client bound does not apply to (the relay networks).
    pub exempt: Vec<IpNetwork>,
    /// Whether a refusal is written in plaintext; not on an implicit-TLS listener, whose
    /// clients speak TLS first: there the connection is just closed.
    pub plaintext_refusal: bool,
}

impl ConnectionLimits {
    /// At most `n` sessions at once, from any clients (a sink in a test, a private listener).
    pub fn overall(n: usize) -> Self {
        ConnectionLimits {
            overall: n,
            per_client: n,
            exempt: Vec::new(),
            plaintext_refusal: true,
        }
    }

    /// The limits `server` configures for a listener (`implicit_tls`: a `submissions` one).
    pub fn from_config(server: &config::Server, implicit_tls: bool) -> Self {
        ConnectionLimits {
            overall: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
            per_client: usize::try_from(server.max_connections_per_client).unwrap_or(usize::MAX),
            exempt: server.relay_networks.clone(),
            plaintext_refusal: !implicit_tls,
        }
    }
}

/// Sessions open per client address, for [`ConnectionLimits::per_client`].
type PerClient = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// One session's place in the per-client count, given back when dropped.
struct ClientSlot {
    counts: PerClient,
    ip: IpAddr,
}

impl ClientSlot {
    /// A place for `ip`, unless it already has `limit` sessions.
    fn take(counts: &PerClient, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Says `421` (when the listener speaks plaintext first) and closes: the client is to try
/// again later. A client that does not read gets a second, then is dropped.
async fn refuse(mut stream: TcpStream, plaintext: bool, line: String) {
    if plaintext {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(line.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// Runs the accept loop on `listener` for ever: one task per connection, each running
/// [`Server::serve`], within `limits`: a connection past the overall bound or past its
/// client's bound is accepted, told `421` and closed, so that neither thousands of
/// connections nor one client can take the listener (their cost is one short task each).
/// An error from `accept` (e.g. out of file descriptors) is waited out (100 ms) and the loop
/// goes on.
pub async fn serve_listener<A>(
    listener: TcpListener,
    server: Arc<Server<A>>,
    limits: ConnectionLimits,
    label: &'static str,
) where
    A: Acceptor + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.overall.max(1)));
    let per_client: PerClient = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::rejection(Rejection::TooManyConnections);
            tracing::warn!(target: "relay", "{label}: too many connections ({}): 421 to {}", limits.overall, peer.ip());
            tokio::spawn(refuse(
                stream,
                limits.plaintext_refusal,
                "421 4.3.2 Too many connections, try again later\r\n".into(),
            ));
            continue;
        };
        let ip = peer.ip();
        let slot = if limits.exempt.iter().any(|n| n.contains(ip)) {
            None
        } else {
            match ClientSlot::take(&per_client, ip, limits.per_client.max(1)) {
                Some(slot) => Some(slot),
                None => {
                    metrics::rejection(Rejection::TooManyConnections);
                    tracing::warn!(target: "relay", "{label}: too many connections from {ip} ({}): 421", limits.per_client);
                    drop(permit);
                    tokio::spawn(refuse(
                        stream,
                        limits.plaintext_refusal,
                        format!("421 4.7.0 Too many connections from {ip}\r\n"),
                    ));
                    continue;
                }
            }
        };
        // Replies are written whole and flushed at the end of a reply group: Nagle's
        // algorithm would only hold one back for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        metrics::session(label);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let _ = server.serve(stream, Some(peer)).await;
            drop((permit, slot));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_fields_are_counted_in_the_header_section_only() {
        let m = b"Received: from a\r\n\tby b\r\nRECEIVED:from c\r\nSubject: x\r\n\r\nReceived: in the body\r\n";
        assert_eq!(received_count(m), 2);
        assert_eq!(received_count(b"Subject: x\n\nReceived: body\n"), 0);
        assert_eq!(received_count(b"X-Received: no\r\n\r\n"), 0);
    }

    #[test]
    fn an_address_is_locked_out_after_its_failures_until_the_window_ends() {
        let f = AuthFailures::default();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let t0 = Instant::now();
        for _ in 0..MAX_AUTH_FAILURES - 1 {
            f.failed(a, t0);
        }
        assert!(!f.locked_out(a, t0));
        f.failed(a, t0);
        assert!(f.locked_out(a, t0));
        assert!(!f.locked_out(b, t0), "per address");
        assert!(
            !f.locked_out(a, t0 + AUTH_FAILURE_WINDOW),
            "until the window ends"
        );
        f.failed(a, t0 + AUTH_FAILURE_WINDOW);
        assert!(
            !f.locked_out(a, t0 + AUTH_FAILURE_WINDOW),
            "a new window counts anew"
        );
    }

    /// A guesser cannot escape the lockout by moving within its IPv6 /64, and no number of
    /// guessing addresses grows the table past its bound.
    #[test]
    fn ipv6_guessers_are_counted_per_64_and_the_table_is_bounded() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..MAX_AUTH_FAILURES {
            let ip: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i as u16).into();
            f.failed(ip, t0);
        }
        let other_host: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(f.locked_out(other_host, t0), "same /64");
        let next_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(!f.locked_out(next_net, t0));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        f.failed(mapped, t0);
        assert_eq!(f.map.lock().unwrap()[&IpAddr::from([192, 0, 2, 7])].1, 1);

        for i in 0..AUTH_FAILURE_ADDRESSES as u32 + 10 {
            f.failed(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(1));
        }
        assert_eq!(f.map.lock().unwrap().len(), AUTH_FAILURE_ADDRESSES);
    }
}
