//! One SMTP connection: greeting, EHLO (HELO fallback), STARTTLS and EHLO again, mail
//! transactions with RSET between them (RFC 5321 §4.1.1.5), QUIT (RFC 5321 §3, §4.1; RFC
//! 3207).
//!
//! A [`Session`] can carry several transactions, so that a scheduler reuses a connection for
//! several messages to the same host: [`Session::transact_body`] says RSET before each one
//! after the first, and [`Session::is_reusable`] turns false for good after anything that
//! leaves the server's state unknown (a 421, a closed connection, a timeout, a body cut
//! short). Bodies are streamed in blocks ([`Body`]), each block under its own timeout (RFC
//! 5321 §4.5.3.2.5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::ehlo::Capabilities;
pub use crate::envelope::Envelope;
use crate::envelope::{EnvelopeError, HeloName};
use crate::message::{Body, Message, MessageError, Stuffer};
use crate::reply::{Reply, ReplyError};
use crate::resume::{Entry, SessionCache, SessionKey};
use crate::tls::{Auth, Mode, PeerAuth, Prepared, prepare, prepare_keyed};

/// RFC 5321 §4.5.3.2 timeouts, and the connect timeout.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Initial 220 greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// EHLO, STARTTLS, MAIL, RCPT, QUIT replies (§4.5.3.2.2–3: 5 minutes).
    pub command: Duration,
    /// The 354 reply to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each block of the message body: reading it from its source and writing it (§4.5.3.2.5:
    /// 3 minutes per block, not for the whole body).
    pub data_block: Duration,
    /// The reply after the final dot (§4.5.3.2.6: 10 minutes).
    pub data_end: Duration,
    /// The TLS handshake.
    pub tls: Duration,
}

impl Timeouts {
    /// The same limit for every step (tests, or an operator who wants to fail fast).
    pub fn uniform(limit: Duration) -> Self {
        Self {
            connect: limit,
            greeting: limit,
            command: limit,
            data_init: limit,
            data_block: limit,
            data_end: limit,
            tls: limit,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        Self {
            connect: Duration::from_secs(30),
            greeting: min(5),
            command: min(5),
            data_init: min(2),
            data_block: min(3),
            data_end: min(10),
            tls: Duration::from_secs(60),
        }
    }
}

/// A step of the SMTP session (RFC 5321 §3, §4.1; RFC 3207 for STARTTLS; RFC 4954 for AUTH):
/// where an error happened. `Display` names the step as the error messages do ("timed out
/// waiting for the greeting"); [`Stage::refused_label`] names it as a refusal does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The TCP connection (before any SMTP).
    Connect,
    /// The server's 220 greeting (RFC 5321 §3.1).
    Greeting,
    /// EHLO (RFC 5321 §4.1.1.1).
    Ehlo,
    /// HELO, the fallback when EHLO is not known (RFC 5321 §4.1.4).
    Helo,
    /// The STARTTLS command (RFC 3207 §4).
    StartTls,
    /// The TLS handshake after the server agreed to STARTTLS.
    TlsHandshake,
    /// AUTH (RFC 4954).
    Auth,
    /// MAIL FROM (RFC 5321 §4.1.1.2).
    Mail,
    /// RCPT TO (RFC 5321 §4.1.1.3).
    Rcpt,
    /// RSET (RFC 5321 §4.1.1.5).
    Rset,
    /// The DATA command and its 354 (RFC 5321 §4.1.1.4).
    Data,
    /// Sending the message body.
    Body,
    /// The reply after the final dot (RFC 5321 §4.5.3.2.6).
    EndOfData,
    /// QUIT.
    Quit,
    /// Writing a command line, whichever it was.
    Write,
}

impl Stage {
    /// The step as a refusal names it: "MAIL FROM refused", "the connection refused" (a
    /// greeting other than 220).
    pub fn refused_label(self) -> &'static str {
        match self {
            Stage::Greeting => "the connection",
            Stage::Mail => "MAIL FROM",
            other => other.label(),
        }
    }

    /// Whether the step comes before the server greeted: nothing of SMTP was seen yet.
    pub fn before_greeting(self) -> bool {
        matches!(self, Stage::Connect | Stage::Greeting)
    }

    fn label(self) -> &'static str {
        match self {
            Stage::Connect => "the TCP connection",
            Stage::Greeting => "the greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::TlsHandshake => "the TLS handshake",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Rset => "RSET",
            Stage::Data => "DATA",
            Stage::Body => "the server to accept the message",
            Stage::EndOfData => {
                "the reply to the final dot (the server may have kept the message: the retry may deliver it twice)"
            }
            Stage::Quit => "QUIT",
            Stage::Write => "the server to accept our command",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What went wrong on a connection, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// TCP connect failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No reply in time.
    #[error("timed out waiting for {0}")]
    Timeout(Stage),
    /// A reply that breaks the protocol.
    #[error("protocol error after {stage}: {error}")]
    Protocol {
        /// What we were waiting for.
        stage: Stage,
        /// The reply problem.
        error: ReplyError,
    },
    /// The server refused a step of the session (not a recipient).
    #[error("{} refused: {reply}", .stage.refused_label())]
    Refused {
        /// The step.
        stage: Stage,
        /// The server's reply.
        reply: Reply,
    },
    /// TLS was required but the server does not offer STARTTLS.
    #[error("STARTTLS is required but not offered")]
    StartTlsNotOffered,
    /// The server sent data right after agreeing to STARTTLS (a command-injection attempt,
    /// CVE-2011-0411 style).
    #[error("the server sent data after its STARTTLS reply, before the TLS handshake")]
    StartTlsInjection,
    /// The TLS handshake failed, or the peer was not authenticated.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The peer failed DANE (or fingerprint) authentication.
    #[error("DANE authentication failed: {0}")]
    Dane(dane::VerifyError),
    /// Writing failed.
    #[error("write error: {0}")]
    Io(String),
    /// Our HELO name cannot go into a command (checked before connecting: nothing is sent).
    #[error("refused before connecting: {0}")]
    InvalidInput(EnvelopeError),
    /// AUTH was not sent on this connection; see [`AuthUnavailable`]. This is no TLS
    /// handshake failure: a plaintext retry could not help and is never made.
    #[error("credentials not sent: {0}")]
    AuthUnavailable(AuthUnavailable),
    /// The addresses need SMTPUTF8 and the server does not offer it (RFC 6531 §3.2): nothing
    /// was sent; the refusal is ours, worded as the server's would be ([`Self::reply`]).
    #[error("MAIL FROM refused: {}", SessionError::smtputf8_reply())]
    SmtpUtf8Unsupported,
    /// The message is larger than the server's SIZE limit.
    #[error("message of {size} bytes exceeds the server's limit of {limit}")]
    TooBig {
        /// Our size.
        size: usize,
        /// The limit.
        limit: u64,
    },
    /// A streamed body turned out unsendable mid-DATA (a line over RFC 5321 §4.5.3.1.6's
    /// limit, a NUL): the data was cut short without its final dot, so the server discards it,
    /// and the connection is closed.
    #[error("the message cannot be sent: {0}")]
    Body(MessageError),
    /// Reading a streamed body from its source failed mid-DATA; as for [`Self::Body`], the
    /// data was cut short and the connection closed.
    #[error("reading the message failed: {0}")]
    Read(String),
    /// A transaction on a session that an earlier error left in an unknown state (or that the
    /// server closed, 421): nothing was sent; open a new connection (RFC 5321 §3.8).
    #[error("the connection cannot be reused: an earlier error left it in an unknown state")]
    Unusable,
    /// The message carries REQUIRETLS and this connection may not carry it (RFC 8689
    /// §4.2.1): nothing of the transaction was sent; the next host is tried.
    #[error("REQUIRETLS message not sent: {0}")]
    RequireTls(RequireTlsRefusal),
}

/// Why a connection may not carry a REQUIRETLS message (RFC 8689 §4.2.1, whose steps are
/// cited). Each is a property of the path, decided before anything of the transaction is
/// sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequireTlsRefusal {
    /// No TLS on the connection (step 4: "Establish a TLS-protected SMTP session").
    #[error("the connection is not protected by TLS (RFC 8689 §4.2.1 step 4)")]
    NoTls,
    /// TLS, but the peer was not authenticated by DANE or PKIX, or was not planned to be
    /// (step 4: the server's certificate is authenticated per RFC 6125 or RFC 7672).
    #[error("{0}: the server is not authenticated by DANE or PKIX (RFC 8689 §4.2.1 step 4)")]
    NotAuthenticated(String),
    /// The host's name was not vouched for: an MX lookup without DNSSEC, and no MTA-STS
    /// policy that lists it (step 2).
    #[error(
        "{0} was named by an MX lookup without a valid DNSSEC signature, and no MTA-STS policy lists it (RFC 8689 §4.2.1 step 2)"
    )]
    NameNotValidated(String),
    /// The EHLO reply after STARTTLS does not advertise REQUIRETLS (step 5).
    #[error("the server does not advertise REQUIRETLS after STARTTLS (RFC 8689 §4.2.1 step 5)")]
    NotAdvertised,
}

impl RequireTlsRefusal {
    /// The reply a bounce carries when no host was left (RFC 8689 §4.2.1): `5.7.10
    /// Encryption needed` when TLS could not be had, `5.7.30 REQUIRETLS support required`
    /// otherwise.
    pub fn reply(&self) -> Reply {
        match self {
            RequireTlsRefusal::NoTls => {
                crate::requiretls::encryption_needed_reply(&self.to_string())
            }
            _ => crate::requiretls::requiretls_reply(&self.to_string()),
        }
    }
}

impl SessionError {
    fn smtputf8_reply() -> Reply {
        Reply::new(
            553,
            vec!["5.6.7 the server does not support SMTPUTF8, which these addresses need (RFC 6531 §3.2)".into()],
        )
    }

    /// The reply we give in the server's stead for a refusal we decided ourselves, before
    /// sending anything: `553 5.6.7` for [`Self::SmtpUtf8Unsupported`] (RFC 6531 §3.2, RFC
    /// 3463 §3.7), `552 5.3.4` for [`Self::TooBig`] (RFC 1870 §6.1); and for a streamed body
    /// we cut short because SMTP cannot carry it ([`Self::Body`]), `554 5.6.0` (RFC 3463 §3.7:
    /// a content problem no other host would see differently).
    pub fn reply(&self) -> Option<Reply> {
        match self {
            SessionError::SmtpUtf8Unsupported => Some(Self::smtputf8_reply()),
            SessionError::TooBig { .. } => Some(Reply::new(552, vec![format!("5.3.4 {self}")])),
            SessionError::Body(_) => Some(Reply::new(554, vec![format!("5.6.0 {self}")])),
            SessionError::RequireTls(why) => Some(why.reply()),
            _ => None,
        }
    }

    /// Whether a plaintext retry is allowed after this error under opportunistic TLS: only a
    /// failure of the TLS handshake itself (RFC 7435 §4; Postfix "may"). A missing capability
    /// (no STARTTLS, no AUTH mechanism) is not one.
    pub fn is_tls_handshake(&self) -> bool {
        matches!(self, SessionError::Tls(_))
    }

    /// Whether nothing of the transaction reached the server: the session could not start it
    /// (already unusable, or the RSET before it failed), so the message can go over another
    /// connection as if this one had never been tried.
    pub fn before_transaction(&self) -> bool {
        match self {
            SessionError::Unusable => true,
            SessionError::Timeout(stage)
            | SessionError::Protocol { stage, .. }
            | SessionError::Refused { stage, .. } => *stage == Stage::Rset,
            _ => false,
        }
    }
}

/// Why credentials were not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthUnavailable {
    /// The connection is not encrypted: a password never crosses the network in the clear
    /// (RFC 4954 §4; RFC 4616 §6).
    #[error(
        "the connection is not protected by TLS (the server offers no STARTTLS, or the policy sends plaintext), and AUTH PLAIN is only sent over TLS (RFC 4954 §4, RFC 4616 §6)"
    )]
    NoTls,
    /// The server does not announce the mechanism in its EHLO reply (RFC 4954 §3).
    #[error("the server does not offer AUTH {0} (RFC 4954 §3)")]
    NotOffered(&'static str),
    /// The server is not authenticated as the next hop's: only a server proven to be the
    /// submission domain's gets the password (RFC 6186 §6, RFC 7673 §3).
    #[error(
        "{0}; credentials go only to a verified server: DANE under a secure SRV (or MX) lookup, or PKIX against the domain (RFC 6186 §6, RFC 7673 §3)"
    )]
    NotVerified(String),
}

/// The TLS parameters of an established connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Whether the handshake resumed an earlier session (RFC 8446 §2.2, RFC 5077): the peer
    /// was authenticated by that session's full handshake, under the same key (see
    /// [`crate::resume`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// What the server said to each recipient and to the message.
#[derive(Clone, Debug)]
pub struct Transaction {
    /// The reply to each RCPT, in envelope order.
    pub rcpt: Vec<Reply>,
    /// The final reply to the message (after the dot), if DATA was reached.
    pub data: Option<Reply>,
}

/// An established, greeted connection, possibly TLS-protected.
pub struct Session {
    io: BufReader<Box<dyn Io>>,
    caps: Capabilities,
    tls: Option<TlsInfo>,
    peer: Option<PeerAuth>,
    peer_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    timeouts: Timeouts,
    helo_name: HeloName,
    /// Every reply received, for the attempt's record.
    pub transcript: Vec<String>,
    /// False for good once the server's state is unknown (see [`Session::is_reusable`]).
    reusable: bool,
    /// A transaction began since the last RSET: the next one needs an RSET first.
    dirty: bool,
    /// Inside DATA, before the final dot: a QUIT now would be message text.
    in_data: bool,
    /// Transactions begun (MAIL sent) on this connection.
    transactions: usize,
    /// Replies of 400 and above received (see [`Session::is_reusable`]).
    refusals: usize,
}

/// Where a connection may resume a TLS session from, and the peer's host name, part of the
/// session key (see [`crate::resume`]).
#[derive(Clone, Copy, Debug)]
pub struct Resumption<'a> {
    /// The shared cache.
    pub cache: &'a SessionCache,
    /// The host name the address belongs to (the MX or SRV target, or the configured host).
    pub host: &'a str,
}

/// The session cache's entry for one connection: the key and what it holds.
struct Keyed<'a> {
    cache: &'a SessionCache,
    key: SessionKey,
    entry: Arc<Entry>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Session {
    /// Connects, reads the greeting, says EHLO and secures the connection as `mode` demands.
    /// `sni` is the TLSA base domain (RFC 7672 §8.1) or the host name. `helo_name` is checked
    /// first (a domain or an address literal, see [`HeloName`]); a bad one is refused before
    /// connecting.
    pub async fn open(
        addr: SocketAddr,
        sni: &str,
        helo_name: &str,
        mode: &Mode,
        provider: &Arc<CryptoProvider>,
        timeouts: &Timeouts,
    ) -> Result<Session, SessionError> {
        Self::open_resuming(addr, sni, helo_name, mode, provider, timeouts, None).await
    }

    /// [`Session::open`], resuming a TLS session from `resumption`'s cache when one was made
    /// under the same key (host, address, port, SNI, mode and everything its authentication
    /// depends on; RFC 8446 §2.2, RFC 5077, RFC 7672 §3.1), and storing this connection's
    /// session there after a full handshake that authenticated the peer as `mode` demands.
    /// A resumed connection carries the proof of the full handshake that made its session;
    /// without one, a mode that requires authentication fails ([`SessionError::Tls`]).
    pub async fn open_resuming(
        addr: SocketAddr,
        sni: &str,
        helo_name: &str,
        mode: &Mode,
        provider: &Arc<CryptoProvider>,
        timeouts: &Timeouts,
        resumption: Option<Resumption<'_>>,
    ) -> Result<Session, SessionError> {
        let helo_name = HeloName::new(helo_name).map_err(SessionError::InvalidInput)?;
        let tcp = timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| SessionError::Timeout(Stage::Connect))?
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        // Commands, pipelined groups and body blocks are written whole and flushed on
        // purpose: Nagle's algorithm would hold back the last small segment (the final
        // `.`, a lone RSET) until the server's delayed ACK, 40 ms per message.
        let _ = tcp.set_nodelay(true);
        let mut session = Session {
            io: BufReader::new(Box::new(tcp)),
            caps: Capabilities::default(),
            tls: None,
            peer: None,
            peer_chain: Vec::new(),
            timeouts: timeouts.clone(),
            helo_name,
            transcript: Vec::new(),
            reusable: true,
            dirty: false,
            in_data: false,
            transactions: 0,
            refusals: 0,
        };
        let greeting = session.read(Stage::Greeting, timeouts.greeting).await?;
        if greeting.code() != 220 {
            return Err(SessionError::Refused {
                stage: Stage::Greeting,
                reply: greeting,
            });
        }
        session.hello().await?;
        let auth = match mode {
            Mode::Plaintext => return Ok(session),
            Mode::Opportunistic if !session.caps.starttls => return Ok(session),
            Mode::Opportunistic => None,
            Mode::Required(_) if !session.caps.starttls => {
                return Err(SessionError::StartTlsNotOffered);
            }
            Mode::Required(auth) => Some(auth),
        };
        let auth = auth.unwrap_or(&Auth::None);
        let keyed = match resumption
            .and_then(|r| Some((r.cache, SessionKey::new(r.host, addr, sni, mode)?)))
        {
            Some((cache, key)) => Some(Keyed {
                entry: cache
                    .entry(&key, provider)
                    .map_err(|e| SessionError::Tls(e.to_string()))?,
                cache,
                key,
            }),
            None => None,
        };
        let prepared = match &keyed {
            Some(k) => prepare_keyed(auth, provider, k.entry.config().clone()),
            None => prepare(auth, provider),
        }
        .map_err(|e| SessionError::Tls(e.to_string()))?;
        session
            .starttls(sni, mode, &prepared, keyed.as_ref())
            .await?;
        session.hello().await?;
        Ok(session)
    }

    /// The extensions of the last EHLO.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// TLS version and cipher, when TLS is up.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The certificate chain the server presented, leaf first (empty without TLS).
    pub fn peer_chain(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        &self.peer_chain
    }

    /// How the peer was authenticated, when TLS is up.
    pub fn peer(&self) -> Option<&PeerAuth> {
        self.peer.as_ref()
    }

    /// Whether another transaction may go over this connection: false for good after a 421
    /// (the server is closing, RFC 5321 §3.8), a closed connection, a timeout, a protocol
    /// error, a failed write or a body cut short: anything after which the server's state is
    /// not known. A scheduler drops such a session and opens a new one.
    ///
    /// A session that collected [`MAX_REFUSALS`] refusals is not reused either: servers count
    /// a client's errors per session and answer slowly past a limit, then hang up (Postfix's
    /// `smtpd_soft_error_limit` 10, `smtpd_hard_error_limit` 20), so that a destination
    /// refusing many recipients would make every later message on the connection slow.
    pub fn is_reusable(&self) -> bool {
        self.reusable && self.refusals < MAX_REFUSALS
    }

    /// How many transactions were begun (MAIL sent) on this connection.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    async fn read(&mut self, stage: Stage, limit: Duration) -> Result<Reply, SessionError> {
        let read = timeout(limit, Reply::read(&mut self.io)).await;
        let reply = read
            .map_err(|_| SessionError::Timeout(stage))
            .and_then(|r| r.map_err(|error| SessionError::Protocol { stage, error }))
            .inspect_err(|_| self.reusable = false)?;
        if reply.code() == 421 {
            // The server is closing the transmission channel (RFC 5321 §3.8, §4.2.2).
            self.reusable = false;
        }
        if reply.code() >= 400 {
            self.refusals += 1;
        }
        self.transcript.push(reply.to_string());
        Ok(reply)
    }

    async fn send(&mut self, line: &[u8]) -> Result<(), SessionError> {
        let limit = self.timeouts.command;
        self.write(line, limit, Stage::Write).await
    }

    /// Writes and flushes `bytes` within `limit`; any failure leaves the state unknown.
    async fn write(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: Stage,
    ) -> Result<(), SessionError> {
        let io = self.io.get_mut();
        timeout(limit, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| SessionError::Timeout(stage))
        .and_then(|r| r.map_err(|e| SessionError::Io(e.to_string())))
        .inspect_err(|_| self.reusable = false)
    }

    async fn command(&mut self, line: String, stage: Stage) -> Result<Reply, SessionError> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read(stage, self.timeouts.command).await
    }

    /// EHLO, or HELO when the server does not know EHLO (RFC 5321 §4.1.4).
    async fn hello(&mut self) -> Result<(), SessionError> {
        let reply = self
            .command(format!("EHLO {}", self.helo_name), Stage::Ehlo)
            .await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(SessionError::Refused {
                stage: Stage::Ehlo,
                reply,
            });
        }
        let reply = self
            .command(format!("HELO {}", self.helo_name), Stage::Helo)
            .await?;
        if !reply.is_positive() {
            return Err(SessionError::Refused {
                stage: Stage::Helo,
                reply,
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// STARTTLS and the handshake (RFC 3207 §4). A full handshake's proof comes from the
    /// connection's verifier; a resumed one's (RFC 8446 §2.2: no certificate is sent) from the
    /// session cache, for the leaf certificate rustls restored with the session. A peer not
    /// authenticated as `mode` demands fails here, and its key's entry is dropped.
    async fn starttls(
        &mut self,
        sni: &str,
        mode: &Mode,
        prepared: &Prepared,
        keyed: Option<&Keyed<'_>>,
    ) -> Result<(), SessionError> {
        let reply = self.command("STARTTLS".into(), Stage::StartTls).await?;
        if reply.code() != 220 {
            return Err(SessionError::Refused {
                stage: Stage::StartTls,
                reply,
            });
        }
        // Nothing may follow the 220 in plaintext; anything that did would be injected.
        if !self.io.buffer().is_empty() {
            return Err(SessionError::StartTlsInjection);
        }
        let server_name = ServerName::try_from(sni.to_owned())
            .map_err(|_| SessionError::Tls(format!("{sni:?} is not a valid SNI name")))?;
        let plain = std::mem::replace(
            &mut self.io,
            BufReader::new(Box::new(tokio::io::duplex(1).0)),
        );
        let handshake = prepared.connect(server_name, plain.into_inner());
        let forget = || {
            if let Some(k) = keyed {
                k.cache.forget(&k.key, &k.entry);
            }
        };
        let stream = match timeout(self.timeouts.tls, handshake).await {
            Err(_) => return Err(SessionError::Timeout(Stage::TlsHandshake)),
            Ok(Err(e)) => {
                // A rejected certificate (or any failed handshake): nothing the key holds is
                // to be resumed any more.
                forget();
                return Err(match prepared.dane_failure() {
                    Some(failure) => SessionError::Dane(failure),
                    None => SessionError::Tls(e.to_string()),
                });
            }
            Ok(Ok(stream)) => stream,
        };
        let (_, conn) = stream.get_ref();
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        let peer = match (resumed, keyed, leaf) {
            (false, _, _) => Some(prepared.peer_auth()),
            (true, Some(k), Some(leaf)) => k.entry.proof(leaf),
            // Resumed without a cache (cannot happen: no session is stored then), or without
            // the certificate of the session: nothing is known about the peer.
            (true, _, _) => None,
        };
        let peer = match peer {
            Some(peer) if mode.satisfied_by(&peer) => peer,
            None if !mode.authenticates() => PeerAuth::Unchecked,
            _ => {
                forget();
                return Err(SessionError::Tls(if resumed {
                    "the resumed TLS session has no proof of the peer's authentication \
                     from the full handshake that made it"
                        .into()
                } else {
                    "the handshake completed without authenticating the peer".into()
                }));
            }
        };
        if let (false, Some(k), Some(leaf)) = (resumed, keyed, leaf) {
            // A full handshake that authenticated the peer as the key's mode demands: its
            // sessions (TLS 1.3 tickets arrive after the handshake) may now be resumed.
            k.entry.record(leaf, peer.clone());
        }
        self.tls = Some(TlsInfo {
            version: conn
                .protocol_version()
                .map_or_else(|| "TLS".into(), |v| version_name(v).to_owned()),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |s| format!("{:?}", s.suite())),
            resumed,
        });
        self.peer = Some(peer);
        self.peer_chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        self.io = BufReader::new(Box::new(stream));
        Ok(())
    }

    /// AUTH PLAIN (RFC 4954, RFC 4616), only over TLS: the password never crosses the
    /// network in the clear. Whether this peer deserves the password is the caller's decision
    /// (delivery sends it only to a verified peer).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), SessionError> {
        if self.tls.is_none() {
            return Err(SessionError::AuthUnavailable(AuthUnavailable::NoTls));
        }
        if !self.caps.auth.iter().any(|m| m == "PLAIN") {
            return Err(SessionError::AuthUnavailable(AuthUnavailable::NotOffered(
                "PLAIN",
            )));
        }
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(format!("AUTH PLAIN {token}\r\n").as_bytes())
            .await?;
        // The command line holds the credentials: keep it out of the transcript.
        let reply = self.read(Stage::Auth, self.timeouts.command).await?;
        if reply.code() != 235 {
            return Err(SessionError::Refused {
                stage: Stage::Auth,
                reply,
            });
        }
        Ok(())
    }

    /// One transaction with a message held in memory: see [`Session::transact_body`].
    pub async fn transact(
        &mut self,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<Transaction, SessionError> {
        self.transact_body(envelope, Body::from(message)).await
    }

    /// One transaction: RSET first when a transaction came before on this connection (RFC
    /// 5321 §4.1.1.5), MAIL, RCPT for each recipient (pipelined when offered, RFC 2920), then
    /// DATA with the body, streamed block by block, when at least one recipient was accepted.
    ///
    /// Refused without sending anything when the session is not reusable
    /// ([`SessionError::Unusable`]). An error from the RSET (the connection died while idle)
    /// is [`SessionError::before_transaction`]: the message can go over a new connection.
    pub async fn transact_body(
        &mut self,
        envelope: &Envelope,
        body: Body<'_>,
    ) -> Result<Transaction, SessionError> {
        if !self.reusable {
            return Err(SessionError::Unusable);
        }
        let size = body.size();
        if let (Some(limit), Some(size)) = (self.caps.size.filter(|l| *l > 0), size)
            && !self.caps.fits(usize::try_from(size).unwrap_or(usize::MAX))
        {
            return Err(SessionError::TooBig {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit,
            });
        }
        // The envelope was checked when it was made: no CR, LF, `<`, `>` or space can reach
        // these command lines (see crate::envelope).
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender());
        if let (true, Some(size)) = (self.caps.size.is_some(), size) {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if body.is_eight_bit() && self.caps.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        let needs_utf8 =
            !envelope.sender().is_ascii() || envelope.recipients().iter().any(|t| !t.is_ascii());
        if needs_utf8 && !self.caps.smtputf8 {
            // RFC 6531 §3.2: internationalised addresses go only to SMTPUTF8 servers.
            return Err(SessionError::SmtpUtf8Unsupported);
        }
        if needs_utf8 {
            mail.push_str(" SMTPUTF8");
        }
        if envelope.requires_tls() {
            // RFC 8689 §4.2.1 steps 4 and 5, checked here whatever the caller decided: TLS,
            // and REQUIRETLS in the EHLO reply after STARTTLS (the capabilities are those of
            // the last EHLO, which followed the handshake). Whether the peer is authenticated
            // enough is the delivery's decision (crate::deliver).
            if self.tls.is_none() {
                return Err(SessionError::RequireTls(RequireTlsRefusal::NoTls));
            }
            if !self.caps.requiretls {
                return Err(SessionError::RequireTls(RequireTlsRefusal::NotAdvertised));
            }
            mail.push_str(" REQUIRETLS");
        }
        if self.dirty {
            self.rset().await?;
        }
        let rcpts: Vec<String> = envelope
            .recipients()
            .iter()
            .map(|t| format!("RCPT TO:<{t}>\r\n"))
            .collect();
        let mail_reply;
        let mut rcpt_replies = Vec::with_capacity(rcpts.len());
        self.dirty = true;
        self.transactions += 1;
        if self.caps.pipelining {
            let batch = format!("{mail}\r\n{}", rcpts.concat());
            self.send(batch.as_bytes()).await?;
            mail_reply = self.read(Stage::Mail, self.timeouts.command).await?;
            for _ in &rcpts {
                // A 421 closes the connection (RFC 5321 §3.8): no more replies will come.
                if !self.reusable {
                    break;
                }
                let reply = self.read(Stage::Rcpt, self.timeouts.command).await?;
                if reply.code() == 421 && mail_reply.is_positive() {
                    return Err(SessionError::Refused {
                        stage: Stage::Rcpt,
                        reply,
                    });
                }
                rcpt_replies.push(reply);
            }
        } else {
            mail_reply = self.command(mail, Stage::Mail).await?;
            if mail_reply.is_positive() {
                for rcpt in &rcpts {
                    self.send(rcpt.as_bytes()).await?;
                    let reply = self.read(Stage::Rcpt, self.timeouts.command).await?;
                    if reply.code() == 421 {
                        return Err(SessionError::Refused {
                            stage: Stage::Rcpt,
                            reply,
                        });
                    }
                    rcpt_replies.push(reply);
                }
            }
        }
        if !mail_reply.is_positive() {
            return Err(SessionError::Refused {
                stage: Stage::Mail,
                reply: mail_reply,
            });
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            if self.reusable && self.rset().await.is_ok() {
                self.dirty = false;
            }
            return Ok(Transaction {
                rcpt: rcpt_replies,
                data: None,
            });
        }
        let go = self.command("DATA".into(), Stage::Data).await?;
        if go.code() != 354 {
            return Ok(Transaction {
                rcpt: rcpt_replies,
                data: Some(go),
            });
        }
        self.in_data = true;
        self.data(body).await?;
        self.in_data = false;
        let done = self.read(Stage::EndOfData, self.timeouts.data_end).await?;
        Ok(Transaction {
            rcpt: rcpt_replies,
            data: Some(done),
        })
    }

    /// RSET (RFC 5321 §4.1.1.5): anything but 250 leaves the state unknown.
    async fn rset(&mut self) -> Result<(), SessionError> {
        let reply = self.command("RSET".into(), Stage::Rset).await?;
        if !reply.is_positive() {
            self.reusable = false;
            return Err(SessionError::Refused {
                stage: Stage::Rset,
                reply,
            });
        }
        self.dirty = false;
        Ok(())
    }

    /// The body after the 354, in blocks of at most [`BLOCK`] bytes read from its source,
    /// dot-stuffed on the fly unless already in wire form, then the final `.` line. Reading
    /// and writing each block have [`Timeouts::data_block`] each (RFC 5321 §4.5.3.2.5), so a
    /// large body on a slow link is not cut short, and a source or a server that stalls is.
    /// On any error the final dot is never sent (the server discards the data) and the session
    /// is no longer reusable.
    async fn data(&mut self, mut body: Body<'_>) -> Result<(), SessionError> {
        let limit = self.timeouts.data_block;
        let mut input = vec![0u8; BLOCK];
        let mut output = Vec::with_capacity(BLOCK + BLOCK / 16);
        let mut stuffer = (!body.prepared).then(Stuffer::new);
        loop {
            let n = match timeout(limit, body.reader.read(&mut input)).await {
                Err(_) => Err(SessionError::Timeout(Stage::Body)),
                Ok(Err(e)) => Err(SessionError::Read(e.to_string())),
                Ok(Ok(n)) => Ok(n),
            }
            .inspect_err(|_| self.reusable = false)?;
            output.clear();
            let block = &input[..n];
            let prepared = match (&mut stuffer, n) {
                (Some(s), 0) => s.finish(&mut output).map(|()| &output[..]),
                (Some(s), _) => s.push(block, &mut output).map(|()| &output[..]),
                (None, _) => Ok(block),
            }
            .map_err(|e: MessageError| {
                self.reusable = false;
                SessionError::Body(e)
            })?;
            let io = self.io.get_mut();
            let written = timeout(limit, async {
                io.write_all(prepared).await?;
                if n == 0 {
                    io.write_all(b".\r\n").await?;
                }
                // Through TLS to the socket: the block's time covers its delivery to the
                // network, and nothing of it waits in a buffer.
                io.flush().await
            })
            .await;
            match written {
                Err(_) => Err(SessionError::Timeout(Stage::Body)),
                Ok(Err(e)) => Err(SessionError::Io(e.to_string())),
                Ok(Ok(())) => Ok(()),
            }
            .inspect_err(|_| self.reusable = false)?;
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// QUIT, politely; errors do not matter any more. A body cut short gets no QUIT (it would
    /// be message text): the connection is just closed, and the server discards the data.
    pub async fn quit(mut self) {
        if !self.in_data {
            let _ = timeout(
                Duration::from_secs(5),
                self.command("QUIT".into(), Stage::Quit),
            )
            .await;
        }
        let _ = timeout(Duration::from_secs(5), self.io.get_mut().shutdown()).await;
    }
}

/// Refused replies (4xx, 5xx) after which a session is not reused.
pub const MAX_REFUSALS: usize = 10;

/// The most bytes of a body read from its source at once: what the session holds of a body
/// (twice, once read and once prepared), whatever the body's size.
pub const BLOCK: usize = 64 * 1024;

fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_transaction_error_says_about_the_message() {
        let reply = |code| Reply::new(code, vec!["x".into()]);
        let refused = |stage, code| SessionError::Refused {
            stage,
            reply: reply(code),
        };
        // Nothing of the transaction reached the server: another connection, at no cost.
        for e in [
            SessionError::Unusable,
            refused(Stage::Rset, 421),
            SessionError::Timeout(Stage::Rset),
            SessionError::Protocol {
                stage: Stage::Rset,
                error: ReplyError::Closed,
            },
        ] {
            assert!(e.before_transaction(), "{e:?}");
        }
        for e in [
            refused(Stage::Mail, 421),
            refused(Stage::Rcpt, 421),
            SessionError::Timeout(Stage::Body),
            SessionError::Read("gone".into()),
            SessionError::Body(MessageError::Nul(3)),
        ] {
            assert!(!e.before_transaction(), "{e:?}");
        }
        // Our own refusals carry the reply a bounce gives.
        let body = SessionError::Body(MessageError::Nul(3));
        assert_eq!(body.reply().map(|r| r.code()), Some(554));
        assert!(body.reply().unwrap().to_string().contains("5.6.0"));
        assert_eq!(SessionError::Read("gone".into()).reply(), None);
    }
}
