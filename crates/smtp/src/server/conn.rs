//! One server session: the I/O and the state machine (RFC 5321 §4.1.4 command order).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, timeout, timeout_at};

use super::budget::Reservation;
use super::command::{self, Command, MailFrom, ParseError};
use super::data::{DataReader, Progress, Refusal};
use super::{Acceptor, Client, Closed, Config, ServerError, TlsState, Transaction, reply};
use crate::reply::{EnhancedStatus as Es, Reply};

/// The plaintext stream, or TLS over it after STARTTLS.
enum Stream<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Only while the handshake owns the stream.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream lost in a failed handshake",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, b),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A command line as read.
enum Line {
    /// The line, without CRLF.
    Ok(Vec<u8>),
    /// Longer than the limit (read to its end and dropped).
    TooLong,
    /// A bare CR or LF in it (read to the next CRLF and dropped).
    BareLineEnd,
}

/// Why reading stopped.
enum Stop {
    Eof,
    Timeout,
    Io(io::Error),
}

/// How far one read may go.
const READ_CHUNK: usize = 8192;

pub(super) struct Session<'a, A, S> {
    config: &'a super::Config,
    acceptor: &'a A,
    stream: Stream<S>,
    /// Received, not yet used.
    input: Vec<u8>,
    /// Replies not yet flushed.
    output: Vec<u8>,
    client: Client,
    mail: Option<MailFrom>,
    rcpts: Vec<command::RcptTo>,
    /// RCPT commands refused in this transaction (for DATA's reply, RFC 2920 §3.1).
    refused_rcpts: usize,
    errors: u32,
    /// NOOP, RSET, VRFY, EXPN, HELP so far.
    junk: u32,
}

impl<'a, A: Acceptor, S: AsyncRead + AsyncWrite + Unpin + Send> Session<'a, A, S> {
    pub(super) fn new(
        config: &'a Config,
        acceptor: &'a A,
        stream: S,
        addr: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            config,
            acceptor,
            stream: Stream::Plain(stream),
            input: Vec::new(),
            output: Vec::new(),
            client: Client {
                addr,
                ..Client::default()
            },
            mail: None,
            rcpts: Vec::new(),
            refused_rcpts: 0,
            errors: 0,
            junk: 0,
        }
    }

    fn host(&self) -> &str {
        self.config.hostname.as_str()
    }

    /// Queues a reply; text lines lose control characters and are cut to keep the line
    /// within 512 octets (RFC 5321 §4.5.3.1.5).
    fn say(&mut self, r: &Reply) {
        let code = if (200..600).contains(&r.code()) {
            r.code()
        } else {
            451
        };
        let lines = if r.lines().is_empty() {
            &[String::new()][..]
        } else {
            r.lines()
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let text: String = line
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .scan(0usize, |len, c| {
                    *len += c.len_utf8();
                    (*len <= 500).then_some(c)
                })
                .collect();
            self.output
                .extend_from_slice(format!("{code}{sep}{text}\r\n").as_bytes());
        }
    }

    /// Queues a reply and counts it when negative.
    fn answer(&mut self, r: Reply) {
        if r.code() >= 400 {
            self.errors += 1;
        }
        self.say(&r);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        let deadline = Instant::now() + self.config.timeouts.command;
        timeout_at(deadline, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "writing a reply"))?
    }

    /// Sends a last reply and closes.
    async fn close_with(&mut self, r: Reply, err: ServerError) -> Result<Closed, ServerError> {
        self.say(&r);
        let _ = self.flush().await;
        let _ = timeout(std::time::Duration::from_secs(1), self.stream.shutdown()).await;
        Err(err)
    }

    /// Reads more input, flushing pending replies first (RFC 2920 §3.2: replies wait only
    /// while more commands are already here).
    async fn fill(&mut self, deadline: Instant) -> Result<(), Stop> {
        self.flush().await.map_err(Stop::Io)?;
        let mut chunk = [0u8; READ_CHUNK];
        match timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Err(Stop::Timeout),
            Ok(Err(e)) => Err(Stop::Io(e)),
            Ok(Ok(0)) => Err(Stop::Eof),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The next command line, by `deadline`. Only CRLF ends a line (RFC 5321 §2.3.8).
    async fn line(&mut self, deadline: Instant) -> Result<Line, Stop> {
        let max = self.config.max_command_line;
        let mut too_long = false;
        let mut bare = false;
        let mut scanned = 0;
        loop {
            let mut i = scanned;
            while i < self.input.len() {
                match self.input[i] {
                    b'\r' if i + 1 == self.input.len() => break,
                    b'\r' if self.input[i + 1] == b'\n' => {
                        let line: Vec<u8> = self.input.drain(..i + 2).take(i).collect();
                        return Ok(if bare {
                            Line::BareLineEnd
                        } else if too_long || i + 2 > max {
                            Line::TooLong
                        } else {
                            Line::Ok(line)
                        });
                    }
                    b'\r' | b'\n' => bare = true,
                    _ => {}
                }
                i += 1;
            }
            scanned = i;
            if scanned > max {
                // Drop what is already too long, keeping a CR that may start the CRLF.
                too_long = true;
                self.input.drain(..scanned);
                scanned = 0;
            }
            self.fill(deadline).await?;
        }
    }

    pub(super) async fn run(mut self) -> Result<Closed, ServerError> {
        if self.config.implicit_tls {
            // RFC 8314 §3.3: TLS first; the greeting and everything after go over it.
            let Some(tls) = self.config.tls.clone() else {
                return Err(ServerError::Tls(
                    "implicit TLS without a certificate".into(),
                ));
            };
            self.handshake(tls).await?;
        }
        let host = self.host().to_owned();
        let delay = self.config.timeouts.greeting_delay;
        if !delay.is_zero() {
            self.output
                .extend_from_slice(format!("220-{host} ESMTP\r\n").as_bytes());
            let talked = matches!(self.fill(Instant::now() + delay).await, Ok(()));
            if talked {
                return self
                    .close_with(
                        reply(
                            554,
                            Es::new(5, 5, 1),
                            format!("{host} Error: SMTP protocol violation: client talked before the greeting (RFC 5321 §3.1)"),
                        ),
                        ServerError::PreGreeting,
                    )
                    .await;
            }
        }
        self.say(&Reply::new(220, vec![format!("{host} ESMTP")]));
        loop {
            if self.errors >= self.config.max_errors {
                return self
                    .close_with(
                        reply(
                            421,
                            Es::new(4, 7, 0),
                            format!("{host} Error: too many errors"),
                        ),
                        ServerError::TooManyErrors,
                    )
                    .await;
            }
            let deadline = Instant::now() + self.config.timeouts.command;
            let line = match self.line(deadline).await {
                Ok(line) => line,
                Err(stop) => return self.stopped(stop).await,
            };
            let line = match line {
                Line::Ok(line) => line,
                Line::TooLong => {
                    self.answer(reply(
                        500,
                        Es::new(5, 5, 2),
                        format!(
                            "Error: command line too long (RFC 5321 §4.5.3.1.4: at most {} octets)",
                            self.config.max_command_line
                        ),
                    ));
                    continue;
                }
                Line::BareLineEnd => {
                    self.answer(reply(
                        500,
                        Es::new(5, 5, 2),
                        "Error: bare CR or LF in a command line (RFC 5321 §2.3.8)",
                    ));
                    continue;
                }
            };
            let command = match command::parse(&line) {
                Ok(c) => c,
                Err(e) => {
                    let r = self.parse_error(&line, e);
                    self.answer(r);
                    continue;
                }
            };
            match command {
                Command::Quit => {
                    self.say(&reply(221, Es::new(2, 0, 0), format!("{host} Bye")));
                    let _ = self.flush().await;
                    let _ =
                        timeout(std::time::Duration::from_secs(1), self.stream.shutdown()).await;
                    return Ok(Closed::Quit);
                }
                Command::StartTls => {
                    if let Some(end) = self.starttls().await {
                        return end;
                    }
                }
                Command::Data => {
                    if let Some(end) = self.data().await {
                        return end;
                    }
                }
                Command::Auth { mechanism, initial } => {
                    if let Some(end) = self.auth(&mechanism, initial).await {
                        return end;
                    }
                }
                other => {
                    if matches!(
                        other,
                        Command::Noop
                            | Command::Rset
                            | Command::Vrfy
                            | Command::Expn
                            | Command::Help
                    ) {
                        // Postfix's smtpd_junk_command_limit: a client that only keeps the
                        // session busy runs into max_errors.
                        self.junk += 1;
                        if self.junk > self.config.max_junk_commands {
                            self.errors += 1;
                        }
                    }
                    let r = self.simple(other).await;
                    self.answer(r);
                }
            }
        }
    }

    /// The end of a session whose input stopped.
    async fn stopped(&mut self, stop: Stop) -> Result<Closed, ServerError> {
        match stop {
            Stop::Eof => Ok(Closed::Disconnected),
            Stop::Io(e) => Err(ServerError::Io(e)),
            Stop::Timeout => {
                let host = self.host().to_owned();
                self.close_with(
                    reply(
                        421,
                        Es::new(4, 4, 2),
                        format!("{host} Error: timeout exceeded"),
                    ),
                    ServerError::Timeout("waiting for a command"),
                )
                .await
            }
        }
    }

    fn parse_error(&self, line: &[u8], e: ParseError) -> Reply {
        let is_mail = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"MAIL");
        match e {
            ParseError::Unknown => reply(500, Es::new(5, 5, 2), "Error: command not recognized"),
            ParseError::Syntax(why) => reply(501, Es::new(5, 5, 4), format!("Syntax error: {why}")),
            ParseError::Address(e) => {
                let status = if is_mail {
                    Es::new(5, 1, 7)
                } else {
                    Es::new(5, 1, 3)
                };
                reply(553, status, e)
            }
            ParseError::SourceRoute => {
                let status = if is_mail {
                    Es::new(5, 1, 7)
                } else {
                    Es::new(5, 1, 3)
                };
                reply(553, status, "Error: source routes are not accepted")
            }
            ParseError::UnknownParameter(p) => reply(
                555,
                Es::new(5, 5, 4),
                format!("Error: unrecognized parameter {p}"),
            ),
            ParseError::BadParameter(p) => reply(
                501,
                Es::new(5, 5, 4),
                format!("Error: bad value or repeated parameter {p}"),
            ),
        }
    }

    /// Forgets the transaction (RSET, EHLO, after DATA; RFC 5321 §4.1.1.5).
    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
        self.refused_rcpts = 0;
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.host().to_owned(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "DSN".to_owned(),
        ];
        let tls = self.client.tls.is_some();
        // RFC 3207 §4.2: not offered again once TLS is up.
        if self.config.tls.is_some() && !tls {
            lines.push("STARTTLS".to_owned());
        }
        // RFC 4954 §4: never offered in plaintext here (passwords would travel in clear).
        if self.config.auth && tls && self.client.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        // RFC 8689 §2: the client looks for REQUIRETLS in the EHLO reply after STARTTLS;
        // in plaintext it would promise what the session cannot give.
        if tls && self.acceptor.requiretls() {
            lines.push("REQUIRETLS".to_owned());
        }
        Reply::new(250, lines)
    }

    /// Commands that need no more I/O than their reply.
    async fn simple(&mut self, command: Command) -> Reply {
        let sequence = |text: &str| reply(503, Es::new(5, 5, 1), format!("Error: {text}"));
        match command {
            Command::Ehlo(name) => {
                // RFC 5321 §4.1.4: EHLO resets the transaction.
                self.reset();
                self.client.helo = Some(name);
                self.client.esmtp = true;
                self.ehlo_reply()
            }
            Command::Helo(name) => {
                self.reset();
                self.client.helo = Some(name);
                self.client.esmtp = false;
                Reply::new(250, vec![self.host().to_owned()])
            }
            Command::Mail(mail) => {
                if self.client.helo.is_none() {
                    return sequence("send HELO/EHLO first");
                }
                if self.mail.is_some() {
                    return sequence("nested MAIL command");
                }
                if !self.client.esmtp && mail.has_parameters() {
                    // RFC 5321 §2.2.1: service extensions exist only after EHLO.
                    return reply(
                        555,
                        Es::new(5, 5, 4),
                        "Error: parameters need EHLO, not HELO",
                    );
                }
                if mail.size.is_some_and(|s| s > self.config.max_message_size) {
                    // RFC 1870 §6.1.
                    return reply(
                        552,
                        Es::new(5, 3, 4),
                        format!(
                            "Error: message size exceeds the limit of {} octets",
                            self.config.max_message_size
                        ),
                    );
                }
                if !mail.sender.is_ascii() && !mail.smtputf8 {
                    // RFC 6531 §3.7.4.1.
                    return reply(
                        553,
                        Es::new(5, 6, 7),
                        "Error: non-ASCII address without SMTPUTF8",
                    );
                }
                if mail.requiretls {
                    if !self.acceptor.requiretls() {
                        // Not offered: an unknown parameter (RFC 5321 §4.1.1.11).
                        return reply(
                            555,
                            Es::new(5, 5, 4),
                            "Error: unrecognized parameter REQUIRETLS",
                        );
                    }
                    if self.client.tls.is_none() {
                        // RFC 8689 §2: only in a session that employs TLS. 530 as RFC 3207
                        // §4 for "issue STARTTLS first", 5.7.10 "Encryption needed".
                        return reply(
                            530,
                            Es::new(5, 7, 10),
                            "REQUIRETLS needs a TLS connection: issue STARTTLS first (RFC 8689 §2)",
                        );
                    }
                }
                if let Err(r) = self.acceptor.mail(&self.client, &mail).await {
                    return r;
                }
                self.mail = Some(mail);
                reply(250, Es::new(2, 1, 0), "Ok")
            }
            Command::Rcpt(mut rcpt) => {
                let Some(mail) = self.mail.clone() else {
                    return sequence("need MAIL command");
                };
                if !self.client.esmtp && (rcpt.notify.is_some() || rcpt.orcpt.is_some()) {
                    return reply(
                        555,
                        Es::new(5, 5, 4),
                        "Error: parameters need EHLO, not HELO",
                    );
                }
                if self.rcpts.len() >= self.config.max_recipients {
                    // RFC 5321 §4.5.3.1.10; not counted as a client error.
                    self.errors = self.errors.saturating_sub(1);
                    return reply(452, Es::new(4, 5, 3), "Error: too many recipients");
                }
                if rcpt.recipient == "postmaster" {
                    rcpt.recipient = format!("postmaster@{}", self.host());
                }
                if !rcpt.recipient.is_ascii() && !mail.smtputf8 {
                    return reply(
                        553,
                        Es::new(5, 6, 7),
                        "Error: non-ASCII address without SMTPUTF8",
                    );
                }
                match self.acceptor.rcpt(&self.client, &mail, &rcpt).await {
                    Ok(()) => {
                        self.rcpts.push(rcpt);
                        reply(250, Es::new(2, 1, 5), "Ok")
                    }
                    Err(r) => {
                        self.refused_rcpts += 1;
                        r
                    }
                }
            }
            Command::Rset => {
                self.reset();
                reply(250, Es::new(2, 0, 0), "Ok")
            }
            Command::Noop => reply(250, Es::new(2, 0, 0), "Ok"),
            // RFC 5321 §3.5.3: 252 when we will not verify but accept.
            Command::Vrfy => reply(
                252,
                Es::new(2, 0, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Expn => reply(502, Es::new(5, 5, 1), "Error: EXPN is not offered"),
            Command::Help => reply(214, Es::new(2, 0, 0), "See RFC 5321"),
            Command::Bdat => reply(
                502,
                Es::new(5, 5, 1),
                "Error: BDAT (CHUNKING) is not offered",
            ),
            // Handled by run().
            Command::Quit | Command::StartTls | Command::Data | Command::Auth { .. } => {
                unreachable_reply()
            }
        }
    }

    /// STARTTLS (RFC 3207 §4). `Some` ends the session.
    async fn starttls(&mut self) -> Option<Result<Closed, ServerError>> {
        let Some(tls) = self.config.tls.clone() else {
            self.answer(reply(
                502,
                Es::new(5, 5, 1),
                "Error: STARTTLS is not offered",
            ));
            return None;
        };
        if self.client.tls.is_some() {
            self.answer(reply(503, Es::new(5, 5, 1), "Error: TLS is already active"));
            return None;
        }
        if self.mail.is_some() {
            self.answer(reply(
                503,
                Es::new(5, 5, 1),
                "Error: MAIL transaction in progress",
            ));
            return None;
        }
        if !self.input.is_empty() {
            // RFC 2920 §3.1: STARTTLS ends a group; plaintext after it would be read as if
            // it came over TLS (CVE-2011-0411).
            return Some(
                self.close_with(
                    reply(
                        554,
                        Es::new(5, 5, 1),
                        "Error: commands pipelined after STARTTLS; closing (RFC 3207 §4, CVE-2011-0411)",
                    ),
                    ServerError::StartTlsInjection,
                )
                .await,
            );
        }
        self.say(&reply(220, Es::new(2, 0, 0), "Ready to start TLS"));
        if let Err(e) = self.flush().await {
            return Some(Err(ServerError::Io(e)));
        }
        if let Err(e) = self.handshake(tls).await {
            return Some(Err(e));
        }
        None
    }

    /// The TLS handshake on the plaintext stream (after `220 Ready to start TLS`, or first
    /// thing for implicit TLS), then the session starts over (RFC 3207 §4.2).
    async fn handshake(&mut self, tls: Arc<rustls::ServerConfig>) -> Result<(), ServerError> {
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(ServerError::Tls("not a plaintext stream".into()));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let stream = match timeout(self.config.timeouts.tls, acceptor.accept(plain)).await {
            Err(_) => return Err(ServerError::Timeout("in the TLS handshake")),
            Ok(Err(e)) => return Err(ServerError::Tls(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let (_, conn) = stream.get_ref();
        let state = TlsState {
            sni: conn.server_name().map(str::to_owned),
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
                _ => "TLS".into(),
            },
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        };
        self.stream = Stream::Tls(Box::new(stream));
        // RFC 3207 §4.2: discard everything learnt from the client before TLS.
        self.input.clear();
        self.reset();
        self.client.helo = None;
        self.client.esmtp = false;
        self.client.user = None;
        self.client.tls = Some(state);
        Ok(())
    }

    /// DATA and the message (RFC 5321 §4.1.1.4). `Some` ends the session.
    async fn data(&mut self) -> Option<Result<Closed, ServerError>> {
        let host = self.host().to_owned();
        let Some(mail) = self.mail.clone() else {
            self.answer(reply(503, Es::new(5, 5, 1), "Error: need MAIL command"));
            return None;
        };
        if self.rcpts.is_empty() {
            // RFC 2920 §3.1: DATA after refused recipients gets 554.
            let r = if self.refused_rcpts > 0 {
                reply(554, Es::new(5, 5, 1), "Error: no valid recipients")
            } else {
                reply(503, Es::new(5, 5, 1), "Error: need RCPT command")
            };
            self.answer(r);
            return None;
        }
        self.say(&Reply::new(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".to_owned()],
        ));
        let mut reader = DataReader::new(self.config.max_message_size, self.config.max_text_line)
            .with_max_header(self.config.max_header_size);
        let total = Instant::now() + self.config.timeouts.data_total;
        let mut room = Reservation::default();
        loop {
            let fed = reader.feed(&self.input);
            if let Some(budget) = &self.config.content_budget
                && !room.cover(budget, reader.kept())
            {
                reader.stop_keeping();
                room.release();
            }
            match fed {
                Ok(Progress::Done { used }) => {
                    self.input.drain(..used);
                    break;
                }
                Ok(Progress::More) => self.input.clear(),
                Err(e) => {
                    self.input.clear();
                    return Some(
                        self.close_with(
                            reply(
                                554,
                                Es::new(5, 5, 2),
                                format!("{host} Error: bare CR or LF in the message content refused (SMTP smuggling protection, RFC 5321 §2.3.8); closing"),
                            ),
                            ServerError::Smuggling(e),
                        )
                        .await,
                    );
                }
            }
            let deadline = total.min(Instant::now() + self.config.timeouts.data_block);
            if let Err(stop) = self.fill(deadline).await {
                return Some(self.stopped(stop).await);
            }
        }
        let transaction = Transaction {
            mail,
            rcpts: std::mem::take(&mut self.rcpts),
        };
        self.reset();
        let r = match reader.finish() {
            Err(Refusal::TooBig { limit }) => reply(
                552,
                Es::new(5, 3, 4),
                format!("Error: message size exceeds the limit of {limit} octets"),
            ),
            Err(Refusal::HeaderTooBig { limit }) => reply(
                552,
                Es::new(5, 6, 0),
                format!("Error: message header section exceeds the limit of {limit} octets"),
            ),
            Err(Refusal::Nul) => reply(
                554,
                Es::new(5, 6, 0),
                "Error: NUL octet in the message (RFC 5322 §2.3)",
            ),
            Err(Refusal::LineTooLong { limit }) => reply(
                500,
                Es::new(5, 6, 0),
                format!(
                    "Error: line too long in the message (RFC 5321 §4.5.3.1.6: at most {limit} octets)"
                ),
            ),
            Err(Refusal::NoRoom) => {
                let from = self.client.addr.map(|a| a.ip());
                tracing::warn!(target: "smtp", "refusing a message from {from:?} for now: the memory for messages being received is used up");
                reply(
                    452,
                    Es::new(4, 3, 1),
                    "Error: insufficient system storage, try again later",
                )
            }
            Ok(body) => match self
                .acceptor
                .message(&self.client, &transaction, body)
                .await
            {
                Ok(id) => {
                    let id: String =
                        id.0.chars()
                            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                            .take(64)
                            .collect();
                    reply(250, Es::new(2, 0, 0), format!("Ok: queued as {id}"))
                }
                Err(r) => r,
            },
        };
        self.say(&r);
        None
    }

    /// AUTH PLAIN / LOGIN (RFC 4954, RFC 4616). `Some` ends the session.
    async fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> Option<Result<Closed, ServerError>> {
        if !self.config.auth {
            self.answer(reply(502, Es::new(5, 5, 1), "Error: AUTH is not offered"));
            return None;
        }
        if self.client.tls.is_none() {
            // RFC 4954 §6: 538 5.7.11 Encryption required.
            self.answer(reply(
                538,
                Es::new(5, 7, 11),
                "Error: authentication requires TLS (STARTTLS first)",
            ));
            return None;
        }
        if self.client.helo.is_none() || !self.client.esmtp {
            self.answer(reply(503, Es::new(5, 5, 1), "Error: send EHLO first"));
            return None;
        }
        if self.client.user.is_some() || self.mail.is_some() {
            // RFC 4954 §4: once authenticated, or during a transaction.
            self.answer(reply(503, Es::new(5, 5, 1), "Error: AUTH not allowed now"));
            return None;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let decoded = |s: &str| b64.decode(s).ok().and_then(|v| String::from_utf8(v).ok());
        let (user, password) = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) if r == "=" => String::new(),
                    Some(r) => r,
                    None => match self.challenge("").await {
                        Ok(Some(r)) => r,
                        Ok(None) => return None,
                        Err(end) => return Some(end),
                    },
                };
                // RFC 4616 §2: authzid NUL authcid NUL passwd.
                let Some(text) = decoded(&response) else {
                    self.answer(reply(501, Es::new(5, 5, 2), "Error: bad base64"));
                    return None;
                };
                let mut parts = text.split('\0');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(_), Some(u), Some(p), None) => (u.to_owned(), p.to_owned()),
                    _ => {
                        self.answer(reply(501, Es::new(5, 5, 2), "Error: bad PLAIN response"));
                        return None;
                    }
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => Some(r),
                    None => match self.challenge("VXNlcm5hbWU6").await {
                        Ok(r) => r,
                        Err(end) => return Some(end),
                    },
                };
                let user = user?;
                let password = match self.challenge("UGFzc3dvcmQ6").await {
                    Ok(Some(r)) => r,
                    Ok(None) => return None,
                    Err(end) => return Some(end),
                };
                match (decoded(&user), decoded(&password)) {
                    (Some(u), Some(p)) => (u, p),
                    _ => {
                        self.answer(reply(501, Es::new(5, 5, 2), "Error: bad base64"));
                        return None;
                    }
                }
            }
            _ => {
                self.answer(reply(
                    504,
                    Es::new(5, 5, 4),
                    "Error: unrecognized authentication mechanism",
                ));
                return None;
            }
        };
        if self
            .acceptor
            .authenticate(&self.client, &user, &password)
            .await
        {
            self.client.user = Some(user);
            self.answer(reply(235, Es::new(2, 7, 0), "Authentication successful"));
        } else {
            // Slows down password guessing; failures also count towards max_errors.
            tokio::time::sleep(self.config.auth_failure_delay).await;
            self.answer(reply(535, Es::new(5, 7, 8), "Error: authentication failed"));
        }
        None
    }

    /// A `334` challenge and the client's line; `Ok(None)` when it was cancelled or bad (the
    /// reply is queued).
    async fn challenge(
        &mut self,
        text: &str,
    ) -> Result<Option<String>, Result<Closed, ServerError>> {
        self.say(&Reply::new(334, vec![text.to_owned()]));
        let deadline = Instant::now() + self.config.timeouts.command;
        match self.line(deadline).await {
            Err(stop) => Err(self.stopped(stop).await),
            Ok(Line::Ok(l)) if l == b"*" => {
                // RFC 4954 §4: the client cancelled.
                self.answer(reply(501, Es::new(5, 0, 0), "Authentication cancelled"));
                Ok(None)
            }
            Ok(Line::Ok(l)) => Ok(Some(String::from_utf8_lossy(&l).into_owned())),
            Ok(_) => {
                self.answer(reply(500, Es::new(5, 5, 2), "Error: bad response line"));
                Ok(None)
            }
        }
    }
}

/// For the arms `run` handles before `simple` is called.
fn unreachable_reply() -> Reply {
    reply(451, Es::new(4, 3, 0), "Error: internal sequence error")
}

#[cfg(test)]
mod tests {
    use super::super::{QueueId, Server};
    use super::*;
    use crate::envelope::HeloName;
    use tokio::io::duplex;

    /// A relay whose replies carry CR/LF, as a careless one might (e.g. a reason from a
    /// database) and whose queue ids contain spaces and line ends.
    struct Careless;

    impl Acceptor for Careless {
        async fn rcpt(&self, _: &Client, _: &MailFrom, r: &command::RcptTo) -> Result<(), Reply> {
            if r.recipient.starts_with("bad") {
                return Err(Reply::new(
                    550,
                    vec!["5.1.1 no\r\n250 2.1.5 fake".into(), "second\nline".into()],
                ));
            }
            if r.recipient.starts_with("odd") {
                return Err(Reply::new(99, vec![]));
            }
            Ok(())
        }

        async fn message(&self, _: &Client, _: &Transaction, _: Vec<u8>) -> Result<QueueId, Reply> {
            Ok(QueueId("A B\r\n250 x".into()))
        }
    }

    /// Runs `input` through a session over an in-memory pipe and returns what it said.
    async fn transcript(input: &[u8]) -> String {
        let (mut client, server_end) = duplex(64 * 1024);
        let server = Server::new(
            Config::new(HeloName::new("mx.test").unwrap()),
            std::sync::Arc::new(Careless),
        );
        let task = tokio::spawn(async move { server.serve(server_end, None).await });
        client.write_all(input).await.unwrap();
        // The client sends nothing more (and may vanish).
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        let _ = task.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn reply_text_from_the_relay_cannot_add_reply_lines() {
        let out = transcript(
            b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bad@y.test>\r\n\
              RCPT TO:<odd@y.test>\r\nRCPT TO:<ok@y.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
        )
        .await;
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines.contains(&"550-5.1.1 no??250 2.1.5 fake"), "{out}");
        assert!(lines.contains(&"550 second?line"), "{out}");
        // A reply code outside 2xx–5xx becomes a transient failure.
        assert!(lines.contains(&"451 "), "{out}");
        assert!(lines.contains(&"250 2.0.0 Ok: queued as AB250x"), "{out}");
        // Every line is a well-formed reply line.
        for line in lines.iter().filter(|l| !l.is_empty()) {
            let b = line.as_bytes();
            assert!(
                b.len() >= 4
                    && b[..3].iter().all(u8::is_ascii_digit)
                    && matches!(b[3], b' ' | b'-'),
                "{line:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_session_works_over_any_stream() {
        let out = transcript(b"HELO c.test\r\nNOOP\r\nQUIT\r\n").await;
        assert_eq!(
            out,
            "220 mx.test ESMTP\r\n250 mx.test\r\n250 2.0.0 Ok\r\n221 2.0.0 mx.test Bye\r\n"
        );
        // The client vanishing mid-command or mid-message is an ordinary end.
        assert!(transcript(b"EHLO c.test\r\nNOO").await.ends_with("DSN\r\n"));
    }
}
