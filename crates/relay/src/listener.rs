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
//!   store error is `451 4.3.0` (RFC 3463 §3.4), never `250`;
//! * every stored message starts with a `Received:` trace field (RFC 5321 §4.4).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp::reply::{EnhancedStatus, Reply};
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction, reply};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{self, IpNetwork};
use crate::metrics::{self, Rejection};
use crate::queue::{self, DsnParams, NewMessage, RecipientDsn, Store};
use crate::users::Users;

/// The default bound on concurrent SMTP sessions of one [`serve_listener`]: 100, Postfix's
/// `default_process_limit`. Connections past it wait in the kernel's accept backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

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

impl Acceptor for RelayAcceptor {
    /// On a submission listener, `530 5.7.0` until the client authenticated.
    async fn mail(&self, client: &Client, _: &MailFrom) -> Result<(), Reply> {
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
    async fn authenticate(&self, _: &Client, user: &str, password: &str) -> bool {
        let Some(users) = self.users.clone() else {
            return false;
        };
        let (user, password) = (user.to_owned(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        if !ok {
            metrics::rejection(Rejection::AuthFailed);
        }
        ok
    }

    /// Relay permission (RFC 5321 §3.6.2) and the `%`/`!` refusal; see the module docs.
    async fn rcpt(&self, client: &Client, _: &MailFrom, rcpt: &RcptTo) -> Result<(), Reply> {
        let (local, domain) = rcpt
            .recipient
            .rsplit_once('@')
            .unwrap_or((rcpt.recipient.as_str(), ""));
        if local.contains('%') || local.contains('!') {
            return Err(reply(
                550,
                EnhancedStatus::new(5, 7, 1),
                "Routing with % or ! in the local part is not supported",
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
    /// stable storage), `451 4.3.0` otherwise.
    async fn message(
        &self,
        client: &Client,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> Result<QueueId, Reply> {
        let envelope = transaction.envelope().map_err(|e| {
            tracing::error!(target: "relay", "refusing a message with an unusable envelope: {e}");
            temporary_failure()
        })?;
        let date = OffsetDateTime::now_utc().format(&Rfc2822).map_err(|e| {
            tracing::error!(target: "relay", "cannot format the Received: date: {e}");
            temporary_failure()
        })?;
        let id = queue::QueueId::generate();
        let received = self.received(client, transaction, id.as_str(), &date);
        let mut message = Vec::with_capacity(received.len() + body.len());
        message.extend_from_slice(received.as_bytes());
        message.extend_from_slice(&body);
        let dsn = dsn_params(transaction);
        let size = message.len() as u64;
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
                metrics::accepted(size);
                if let Some(wake) = &self.on_queued {
                    wake();
                }
                Ok(QueueId(id.to_string()))
            }
            // The client hears 451 and retries; the operator needs to know why.
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

/// The RFC 3461 parameters of a transaction, to store with its message.
fn dsn_params(transaction: &Transaction) -> DsnParams {
    DsnParams {
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

/// Runs the accept loop on `listener` for ever: one task per connection, each running
/// [`Server::serve`], at most `max_connections` at once ([`DEFAULT_MAX_CONNECTIONS`] is the
/// daemon's default; `0` is taken as 1). When the bound is reached, no more connections are
/// accepted until a session ends. An error from `accept` (e.g. out of file descriptors) is
/// waited out (100 ms) and the loop goes on.
pub async fn serve_listener<A>(
    listener: TcpListener,
    server: Arc<Server<A>>,
    max_connections: usize,
    label: &'static str,
) where
    A: Acceptor + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            // The semaphore is never closed.
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Replies are written whole and flushed at the end of a reply group: Nagle's
                // algorithm would only hold one back for the client's delayed ACK.
                let _ = stream.set_nodelay(true);
                metrics::session(label);
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let _ = server.serve(stream, Some(peer)).await;
                    drop(permit);
                });
            }
            Err(_) => {
                drop(permit);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
