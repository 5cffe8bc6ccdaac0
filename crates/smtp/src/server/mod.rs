//! The listener side of SMTP (RFC 5321, RFC 3207, RFC 2920): the session the relay runs for
//! each accepted connection, as a library with no queue of its own.
//!
//! [`Server::serve`] runs one session over any `AsyncRead + AsyncWrite` stream: greeting,
//! EHLO/HELO, STARTTLS, AUTH, mail transactions, QUIT, with the limits and timeouts of
//! [`Config`]. What to accept is the relay's decision, asked through the [`Acceptor`] trait:
//! each recipient ([`Acceptor::rcpt`]), then the message ([`Acceptor::message`]); `250` after
//! the message is sent only once `message` returned, i.e. once the relay has made it durable.
//!
//! Rules kept here, each in one place:
//! * commands are parsed strictly ([`command`]); line ends are CRLF only (RFC 5321 §2.3.8);
//!   command lines are at most 512 octets (§4.5.3.1.4), text lines 1000 (§4.5.3.1.6);
//! * the message content ends exactly at `<CRLF>.<CRLF>`; a bare CR or LF in it closes the
//!   session with `554 5.5.2` (SMTP smuggling; see [`data`]);
//! * replies are answered in order and flushed when the client's input is used up, so a
//!   pipelining client (RFC 2920) gets every reply, and a client that waits gets each one;
//! * plaintext pipelined after STARTTLS is an injection (CVE-2011-0411): the session answers
//!   `554 5.5.1` and closes; after the handshake nothing from before survives (RFC 3207 §4.2);
//! * the certificate chain is chosen by SNI, the first for clients without it ([`tls`]).
//!
//! The body is handed to [`Acceptor::message`] whole, as bytes: memory per session is bounded
//! by [`Config::max_message_size`] (the reader stops keeping content past it), and all
//! sessions together by a [`ContentBudget`] when one is set ([`budget`]). Streaming to the
//! spool is a later step.
//!
//! # Choices where the RFCs leave room
//!
//! * Bare CR/LF in the content: **rejected** and the connection closed (`554 5.5.2`), never
//!   normalised (Postfix `smtpd_forbid_bare_newline = yes`). In a command line, a bare CR or
//!   LF makes the whole line, up to the next CRLF, a `500 5.5.2` syntax error: it never splits
//!   a line into two commands.
//! * Source routes (`<@a,@b:u@c>`) are refused with `553` (RFC 5321 §4.1.2 says accept and
//!   ignore; the relay never honours one). `%` and `!` local parts pass: they are valid
//!   addresses, and refusing to relay them is the relay's decision per recipient.
//! * `<Postmaster>` without a domain (RFC 5321 §4.1.1.3) becomes `postmaster@<hostname>`.
//! * EHLO/HELO names must be a domain or an address literal (`501 5.5.4` otherwise); ESMTP
//!   parameters after HELO get `555 5.5.4`.
//! * A text line over the limit: the message is read to its end and refused with
//!   `500 5.6.0` (RFC 5321 §4.5.3.1.10 suggests `500 Line too long`); the session goes on.
//! * 8-bit content without `BODY=8BITMIME` is accepted, as Postfix does.
//! * VRFY gets `252` (RFC 5321 §3.5.3); EXPN and BDAT (CHUNKING is not offered) get `502`.
//! * Enhanced status codes are sent on every reply but the greeting, `354` and EHLO/HELO.
//! * REQUIRETLS (RFC 8689) is advertised only once TLS is up, and only when the
//!   [`Acceptor::requiretls`] honours it. The parameter over plaintext gets `530 5.7.10`
//!   (RFC 3207's "must issue STARTTLS first" code, RFC 3463's "encryption needed" status);
//!   where the acceptor does not honour it, `555 5.5.4` as any unknown parameter.

pub mod budget;
pub mod command;
mod conn;
pub mod data;
pub mod tls;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use budget::ContentBudget;
pub use command::{Body, MailFrom, Notify, RcptTo, Ret};

use crate::envelope::{Envelope, EnvelopeError, HeloName};
use crate::reply::{EnhancedStatus, Reply};

/// The server's timeouts (RFC 5321 §4.5.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Reading one whole command line (§4.5.3.2.7: at least 5 minutes). A deadline for the
    /// line, not per read, so a client trickling octets is cut off all the same.
    pub command: Duration,
    /// Each read of message content (§4.5.3.2.5: 3 minutes per block, the client's side).
    pub data_block: Duration,
    /// The whole message content, from the `354` to the final dot: bounds a slow-loris
    /// client that sends an octet per block.
    pub data_total: Duration,
    /// The TLS handshake after `220` to STARTTLS.
    pub tls: Duration,
    /// Before the greeting is completed, listen this long for a client that talks first
    /// (RFC 5321 §3.1: the client waits for the greeting); zero turns the check off. With a
    /// delay, the greeting is sent as `220-` first and `220 ` after the delay, as Postfix's
    /// postscreen does, and a client that spoke in between gets `554 5.5.1` and is dropped.
    pub greeting_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_total: Duration::from_secs(1800),
            tls: Duration::from_secs(60),
            greeting_delay: Duration::ZERO,
        }
    }
}

impl Timeouts {
    /// The same limit for each step (tests), no greeting delay.
    pub fn uniform(limit: Duration) -> Self {
        Self {
            command: limit,
            data_block: limit,
            data_total: limit,
            tls: limit,
            greeting_delay: Duration::ZERO,
        }
    }
}

/// What a session allows.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name in the greeting and EHLO (RFC 5321 §4.1.1.1, §4.2).
    pub hostname: HeloName,
    /// Largest message, octets, announced with SIZE (RFC 1870).
    pub max_message_size: u64,
    /// Largest header section, octets (RFC 5322 §2.1: up to the first empty line); a bigger
    /// one is refused with `552 5.6.0` (a header flood), never truncated.
    pub max_header_size: u64,
    /// Memory for the content of messages being received, shared with every session given
    /// the same budget; a message that finds no room gets `452 4.3.1`. `None`: each session
    /// is bounded by [`Config::max_message_size`] only.
    pub content_budget: Option<Arc<ContentBudget>>,
    /// Most recipients per message (RFC 5321 §4.5.3.1.8: at least 100); more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: 512).
    pub max_command_line: usize,
    /// Longest line of message content, CRLF included (RFC 5321 §4.5.3.1.6: 1000).
    pub max_text_line: usize,
    /// Negative replies after which the session ends with `421 4.7.0` (default 20, as
    /// Postfix's `smtpd_hard_error_limit`); recipients the relay refuses count too, which
    /// slows down address harvesting.
    pub max_errors: u32,
    /// NOOP, RSET, VRFY, EXPN and HELP commands a session may send before each further one
    /// counts as an error (as Postfix's `smtpd_junk_command_limit`, default 100): bounds a
    /// client that holds a session open without sending mail.
    pub max_junk_commands: u32,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// STARTTLS is offered when set (see [`tls::SniResolver::into_server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Implicit TLS (RFC 8314 §3.3, submissions on port 465): the TLS handshake comes first,
    /// before the greeting, with [`Config::tls`] (a session without it is refused).
    pub implicit_tls: bool,
    /// AUTH PLAIN and LOGIN (RFC 4954) are offered, only once TLS is up, when set; the
    /// credentials go to [`Acceptor::authenticate`].
    pub auth: bool,
    /// Wait this long before answering a failed AUTH (`535 5.7.8`): slows down password
    /// guessing; failures also count towards [`Config::max_errors`].
    pub auth_failure_delay: Duration,
}

impl Config {
    /// The RFC defaults (512-octet commands, 1000-octet lines, 100 recipients, RFC 5321
    /// §4.5.3), 10 MB messages with at most 1 MB of header section, Postfix's error limits (20 errors, 100 junk commands), a
    /// second after a failed AUTH, RFC 5321 §4.5.3.2 timeouts, no TLS, no AUTH.
    pub fn new(hostname: HeloName) -> Self {
        Self {
            hostname,
            max_message_size: 10 * 1024 * 1024,
            max_header_size: 1024 * 1024,
            content_budget: None,
            max_recipients: 100,
            max_command_line: 512,
            max_text_line: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            timeouts: Timeouts::default(),
            tls: None,
            implicit_tls: false,
            auth: false,
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// The TLS state of a session once STARTTLS succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsState {
    /// The server name the client sent (SNI), if any.
    pub sni: Option<String>,
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
}

/// What the session knows about the client, for the relay's decisions and `Received:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// Its address, when the caller gave one.
    pub addr: Option<SocketAddr>,
    /// The EHLO/HELO name (cleared by STARTTLS, RFC 3207 §4.2).
    pub helo: Option<HeloName>,
    /// Whether it said EHLO (not HELO).
    pub esmtp: bool,
    /// TLS, once up.
    pub tls: Option<TlsState>,
    /// The user it authenticated as (RFC 4954), if any.
    pub user: Option<String>,
}

/// An accepted transaction: the MAIL command and the recipients the [`Acceptor`] accepted,
/// with their parameters (RFC 3461 RET, ENVID, NOTIFY, ORCPT), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// MAIL FROM and its parameters.
    pub mail: MailFrom,
    /// The accepted recipients. `<Postmaster>` without a domain arrives as
    /// `postmaster@<hostname>` (RFC 5321 §4.1.1.3).
    pub rcpts: Vec<RcptTo>,
}

impl Transaction {
    /// The envelope, checked again by the crate's rules (never fails for what the session
    /// accepted).
    pub fn envelope(&self) -> Result<Envelope, EnvelopeError> {
        Envelope::new(
            self.mail.sender.clone(),
            self.rcpts.iter().map(|r| r.recipient.clone()),
        )
    }
}

/// The relay's name for a stored message, repeated in `250 2.0.0 Ok: queued as ID`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueId(pub String);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The relay's side of a session. Futures must be `Send` so that sessions can be spawned.
pub trait Acceptor: Send + Sync {
    /// MAIL FROM, after the session's checks; refuse with a reply (e.g. `550 5.7.1`).
    fn mail(
        &self,
        client: &Client,
        mail: &MailFrom,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = (client, mail);
        async { Ok(()) }
    }

    /// One recipient, after the session's checks: relay permission and existence are the
    /// relay's (`554 5.7.1` for relay denied, PRODUCT.md).
    fn rcpt(
        &self,
        client: &Client,
        mail: &MailFrom,
        rcpt: &RcptTo,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// The message, after its end-of-data: store it durably and return its id, or refuse
    /// (e.g. `452 4.3.1` when the disk is full). The session says `250` only after `Ok`.
    /// `body` has CRLF line ends, dot-unstuffed, at most [`Config::max_message_size`] octets.
    fn message(
        &self,
        client: &Client,
        transaction: &Transaction,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<QueueId, Reply>> + Send;

    /// Whether this acceptor honours REQUIRETLS (RFC 8689): it stores the tag of
    /// [`MailFrom::requiretls`] with the message (§4.1) and relays such messages only as
    /// §4.2.1 allows. Only then does the session advertise `REQUIRETLS`, and only after
    /// STARTTLS (§2); without it the parameter is refused as unknown (`555`). Default: no.
    fn requiretls(&self) -> bool {
        false
    }

    /// AUTH credentials (RFC 4954), only asked over TLS when [`Config::auth`] is set.
    /// `true` accepts them.
    fn authenticate(
        &self,
        client: &Client,
        user: &str,
        password: &str,
    ) -> impl Future<Output = bool> + Send {
        let _ = (client, user, password);
        async { false }
    }
}

/// How a session ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// After QUIT.
    Quit,
    /// The client closed the connection.
    Disconnected,
}

/// How a session ended with the server closing it (after a last reply when one applies).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A timeout of [`Timeouts`] (`421 4.4.2`).
    #[error("timeout {0}")]
    Timeout(&'static str),
    /// [`Config::max_errors`] negative replies (`421 4.7.0`).
    #[error("too many errors")]
    TooManyErrors,
    /// A bare CR or LF in the message content (`554 5.5.2`, see [`data`]).
    #[error("{0}")]
    Smuggling(data::DataError),
    /// Plaintext pipelined after STARTTLS (`554 5.5.1`; RFC 3207 §4.2, CVE-2011-0411).
    #[error("plaintext pipelined after STARTTLS: possible command injection")]
    StartTlsInjection,
    /// The client talked before the greeting (RFC 5321 §3.1; `554 5.5.1`).
    #[error("the client talked before the greeting")]
    PreGreeting,
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A reply with an enhanced status code (RFC 2034, RFC 3463): `code status text`.
pub fn reply(code: u16, status: EnhancedStatus, text: impl fmt::Display) -> Reply {
    Reply::new(code, vec![format!("{status} {text}")])
}

/// The session runner: a configuration and the relay's [`Acceptor`]. Cheap to clone.
pub struct Server<A> {
    config: Arc<Config>,
    acceptor: Arc<A>,
}

impl<A> Clone for Server<A> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            acceptor: self.acceptor.clone(),
        }
    }
}

impl<A: Acceptor> Server<A> {
    /// A server with this configuration and acceptor.
    pub fn new(config: Config, acceptor: Arc<A>) -> Self {
        Self {
            config: Arc::new(config),
            acceptor,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs one session on `stream` (from `addr`, when known) until it ends.
    pub async fn serve<S>(&self, stream: S, addr: Option<SocketAddr>) -> Result<Closed, ServerError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        conn::Session::new(&self.config, &*self.acceptor, stream, addr)
            .run()
            .await
    }
}
