//! Active attackers between an SMTP client and a server: in-process proxies on loopback.
//!
//! * [`StripStartTls`] relays everything but hides STARTTLS: the `STARTTLS` line is removed
//!   from EHLO replies (continuation markers fixed: every line but the last `250-`, the last
//!   `250 `), and a `STARTTLS` command is answered `502 5.5.1 not implemented` by the proxy,
//!   never forwarded. A client that then goes on in plaintext sends MAIL, RCPT and DATA through.
//! * [`Mitm`] relays plaintext until the client sends `STARTTLS`, answers it itself
//!   (`220 2.0.0 Ready to start TLS`), does the TLS handshake with the client presenting the
//!   attacker's own certificate, and relays the decrypted client stream to the upstream server
//!   **in plaintext** (the upstream leg never does STARTTLS: what the server logs and delivers
//!   shows a plaintext session). Inside the client's TLS session, STARTTLS is removed from EHLO
//!   replies (a server must not offer it twice) and a second `STARTTLS` is refused with `554`.
//!   In the plaintext phase the Mitm makes sure the EHLO reply offers STARTTLS, adding it when
//!   the upstream does not, so it also lures clients in front of a server without TLS.
//!
//! Both record a transcript of everything the client sent (commands, and message content in
//! DATA/BDAT), one line per line, with CRLF shown as a newline; notes of the proxy itself are
//! lines starting with `* ` and never contain SMTP verbs other than STARTTLS.
//! [`client_sent_mail`](StripStartTls::client_sent_mail) says whether any `MAIL`, `RCPT`,
//! `DATA` or `BDAT` command reached the proxy, so a test can assert that none was sent.
//!
//! Each proxy runs a small single-threaded tokio runtime on a thread of its own; dropping the
//! proxy stops the runtime (every connection task is aborted, sockets closed), joins the thread
//! and closes the listener.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::LabError;
use crate::smtp::{PeerAddr, resolve_addr};

/// How long a proxy waits for the upstream connection and for a TLS handshake.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy records, shared with its connection tasks.
#[derive(Default)]
struct Shared {
    transcript: Mutex<String>,
    connections: AtomicUsize,
    client_hellos: AtomicUsize,
    handshakes: AtomicUsize,
    server_names: Mutex<Vec<Option<String>>>,
    mail_sent: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn note(&self, conn: usize, text: &str) {
        lock(&self.transcript).push_str(&format!("* [{conn}] {text}\n"));
    }

    fn client_line(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let mut t = lock(&self.transcript);
        t.push_str(text);
        t.push('\n');
    }

    fn client_bytes(&self, bytes: &[u8]) {
        lock(&self.transcript).push_str(&String::from_utf8_lossy(bytes));
    }
}

/// Which attack a proxy runs.
#[derive(Clone)]
enum Kind {
    Strip,
    Mitm(Arc<ServerConfig>),
}

/// The listener, runtime thread and records common to both proxies.
struct Proxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _claim: Option<PeerAddr>,
}

impl Proxy {
    fn start(listen: SocketAddr, upstream: SocketAddr, kind: Kind) -> Result<Proxy, LabError> {
        let listen_ip = listen.ip();
        if !(listen_ip.is_loopback() || listen_ip.is_unspecified()) || !upstream.ip().is_loopback()
        {
            return Err(LabError::Proxy {
                listen,
                detail: format!(
                    "listen and upstream addresses must be loopback (upstream {upstream})"
                ),
            });
        }
        let (listen, claim) = resolve_addr(listen, 25)?;
        let error = |detail: String| LabError::Proxy { listen, detail };
        let listener = crate::process::bind_listener(listen)
            .map_err(|e| error(format!("cannot listen: {e}")))?;
        let listen = listener
            .local_addr()
            .map_err(|e| error(format!("local address: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| error(format!("non-blocking listener: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| error(format!("tokio runtime: {e}")))?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("danemta-lab-proxy-{listen}"))
                .spawn(move || {
                    runtime.block_on(accept_loop(listener, upstream, kind, shared, stopped));
                    // Aborts every connection task and closes their sockets.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(|e| error(format!("proxy thread: {e}")))?
        };
        Ok(Proxy {
            listen,
            upstream,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            _claim: claim,
        })
    }

    fn transcript(&self) -> String {
        lock(&self.shared.transcript).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: StdListener,
    upstream: SocketAddr,
    kind: Kind,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((client, peer)) => {
                    let id = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                    shared.note(id, &format!("connection from {peer}"));
                    tokio::spawn(relay(client, id, upstream, kind.clone(), shared.clone()));
                }
                // E.g. too many open files: wait a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = stopped => {}
    }
}

async fn relay(
    client: TcpStream,
    id: usize,
    upstream: SocketAddr,
    kind: Kind,
    shared: Arc<Shared>,
) {
    let mut client = ClientIo::Plain(client);
    let server = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            shared.note(id, &format!("upstream {upstream} unreachable: {e}"));
            let _ = client
                .write_all(b"421 4.4.0 danemta-lab proxy: upstream unreachable\r\n")
                .await;
            return;
        }
        Err(_) => {
            shared.note(id, &format!("upstream {upstream} did not answer"));
            let _ = client
                .write_all(b"421 4.4.0 danemta-lab proxy: upstream timeout\r\n")
                .await;
            return;
        }
    };
    let mut conn = Conn {
        client,
        server,
        cbuf: Vec::new(),
        sbuf: Vec::new(),
        reply: Vec::new(),
        pending: VecDeque::from([Expect::Greeting]),
        mode: Mode::Command,
        tls_active: false,
        kind,
        shared,
        id,
    };
    let end = conn.run().await;
    conn.shared.note(id, &end);
    let _ = conn.client.shutdown().await;
    let _ = conn.server.shutdown().await;
}

/// The client side: plaintext, or the TLS session the Mitm terminates.
enum ClientIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl ClientIo {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientIo::Plain(s) => s.read(buf).await,
            ClientIo::Tls(s) => s.read(buf).await,
            ClientIo::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            ClientIo::Plain(s) => s.write_all(data).await,
            ClientIo::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            ClientIo::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            ClientIo::Plain(s) => s.shutdown().await,
            ClientIo::Tls(s) => s.shutdown().await,
            ClientIo::Gone => Ok(()),
        }
    }
}

/// What the next server reply answers, or something the proxy does itself in turn.
#[derive(Debug)]
enum Expect {
    Greeting,
    Ehlo,
    Data,
    Other,
    /// A reply the proxy sends itself.
    Reply(&'static str),
    /// The Mitm's STARTTLS: reply 220, then the handshake.
    StartTls,
}

/// How the client's bytes are read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// SMTP command lines.
    Command,
    /// Message content after `354`, up to the lone dot.
    Data,
    /// A BDAT chunk: this many bytes left.
    Bdat(usize),
}

struct Conn {
    client: ClientIo,
    server: TcpStream,
    /// Bytes from the client not handled yet.
    cbuf: Vec<u8>,
    /// Bytes from the server not handled yet.
    sbuf: Vec<u8>,
    /// Lines of the server reply being read.
    reply: Vec<Vec<u8>>,
    pending: VecDeque<Expect>,
    mode: Mode,
    tls_active: bool,
    kind: Kind,
    shared: Arc<Shared>,
    id: usize,
}

/// Takes the first line (up to and including `\n`) out of `buf`.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    Some(buf.drain(..=end).collect())
}

/// The first word of a command line, upper-cased.
fn verb(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// `(code, text)` of a reply line: `250-PIPELINING\r\n` → (`250`, `PIPELINING`).
fn reply_parts(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let code = text.get(..3).unwrap_or(text).to_string();
    let rest = text.get(4..).unwrap_or("").to_string();
    (code, rest)
}

/// Whether a reply line is the last of its reply (`250 …`, or a bare code).
fn is_last_reply_line(line: &[u8]) -> bool {
    line.get(3).is_none_or(|&b| b != b'-')
}

/// Rebuilds an EHLO reply: without the STARTTLS line (`with_starttls == false`), or with one
/// added at the end when a positive reply has none (`true`). Continuation markers are
/// rewritten: `-` on every line but the last.
fn rewrite_ehlo(lines: &[Vec<u8>], with_starttls: bool) -> Vec<u8> {
    let mut parts: Vec<(String, String)> = lines.iter().map(|l| reply_parts(l)).collect();
    let is_starttls = |text: &str| {
        text.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
    };
    if with_starttls {
        let positive = parts.first().is_some_and(|(code, _)| code.starts_with('2'));
        if positive && !parts.iter().skip(1).any(|(_, t)| is_starttls(t)) {
            let code = parts.first().map(|(c, _)| c.clone()).unwrap_or_default();
            let at = parts.len().max(1);
            parts.insert(at, (code, "STARTTLS".into()));
        }
    } else {
        let first = parts.first().cloned();
        parts = parts
            .into_iter()
            .enumerate()
            .filter(|(i, (_, t))| *i == 0 || !is_starttls(t))
            .map(|(_, p)| p)
            .collect();
        if parts.is_empty()
            && let Some(first) = first
        {
            parts.push(first);
        }
    }
    let last = parts.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, (code, text)) in parts.iter().enumerate() {
        let sep = if i == last { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{text}\r\n").as_bytes());
    }
    out
}

impl Conn {
    /// Relays until either side closes; returns why it ended.
    async fn run(&mut self) -> String {
        let mut ctmp = vec![0u8; 16 * 1024];
        let mut stmp = vec![0u8; 16 * 1024];
        loop {
            if let Err(end) = self.process().await {
                return end;
            }
            tokio::select! {
                r = self.client.read(&mut ctmp) => match r {
                    Ok(0) => return "the client closed the connection".into(),
                    Ok(n) => self.cbuf.extend_from_slice(&ctmp[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return "the client closed the connection (without TLS close_notify)".into();
                    }
                    Err(e) => return format!("client connection error: {e}"),
                },
                r = self.server.read(&mut stmp) => match r {
                    Ok(0) => {
                        // Pass on what the server said last (e.g. a 221 or 421).
                        if !self.sbuf.is_empty() {
                            let rest = std::mem::take(&mut self.sbuf);
                            let _ = self.client.write_all(&rest).await;
                        }
                        return "the server closed the connection".into();
                    }
                    Ok(n) => self.sbuf.extend_from_slice(&stmp[..n]),
                    Err(e) => return format!("server connection error: {e}"),
                },
            }
        }
    }

    /// Handles every complete unit in both buffers.
    async fn process(&mut self) -> Result<(), String> {
        loop {
            let mut progress = false;
            while let Some(line) = take_line(&mut self.sbuf) {
                progress = true;
                let last = is_last_reply_line(&line);
                self.reply.push(line);
                if last {
                    let reply = std::mem::take(&mut self.reply);
                    self.server_reply(reply).await?;
                }
            }
            if self.client_unit().await? {
                progress = true;
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Handles one unit of client input (a command line, a content line, a BDAT chunk);
    /// whether there was one.
    async fn client_unit(&mut self) -> Result<bool, String> {
        match self.mode {
            Mode::Bdat(left) => {
                if self.cbuf.is_empty() {
                    return Ok(false);
                }
                let n = left.min(self.cbuf.len());
                let chunk: Vec<u8> = self.cbuf.drain(..n).collect();
                self.shared.client_bytes(&chunk);
                self.send_server(&chunk).await?;
                self.mode = match left - n {
                    0 => {
                        self.shared.client_bytes(b"\n");
                        Mode::Command
                    }
                    rest => Mode::Bdat(rest),
                };
                Ok(true)
            }
            Mode::Data => {
                let Some(line) = take_line(&mut self.cbuf) else {
                    return Ok(false);
                };
                self.shared.client_line(&line);
                if line == b".\r\n" || line == b".\n" {
                    self.mode = Mode::Command;
                    self.pending.push_back(Expect::Other);
                }
                self.send_server(&line).await?;
                Ok(true)
            }
            Mode::Command => {
                let Some(line) = take_line(&mut self.cbuf) else {
                    return Ok(false);
                };
                self.shared.client_line(&line);
                self.command(line).await?;
                Ok(true)
            }
        }
    }

    async fn command(&mut self, line: Vec<u8>) -> Result<(), String> {
        let verb = verb(&line);
        if matches!(verb.as_str(), "MAIL" | "RCPT" | "DATA" | "BDAT") {
            self.shared.mail_sent.store(true, Ordering::Relaxed);
        }
        let expect = match verb.as_str() {
            "STARTTLS" => {
                let action = match (&self.kind, self.tls_active) {
                    (Kind::Strip, _) => Expect::Reply("502 5.5.1 not implemented\r\n"),
                    (Kind::Mitm(_), false) => Expect::StartTls,
                    (Kind::Mitm(_), true) => {
                        Expect::Reply("554 5.5.1 Error: TLS already active\r\n")
                    }
                };
                if let Expect::Reply(text) = action {
                    self.shared.note(
                        self.id,
                        &format!(
                            "STARTTLS answered {:?} by the proxy, not forwarded",
                            text.trim_end()
                        ),
                    );
                }
                return self.act(action).await;
            }
            "EHLO" => Expect::Ehlo,
            "DATA" => Expect::Data,
            "BDAT" => {
                let text = String::from_utf8_lossy(&line);
                let size = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                if size > 0 {
                    self.mode = Mode::Bdat(size);
                }
                Expect::Other
            }
            _ => Expect::Other,
        };
        self.pending.push_back(expect);
        self.send_server(&line).await
    }

    /// Does a proxy action now when no server reply is due before it, else queues it.
    async fn act(&mut self, action: Expect) -> Result<(), String> {
        if self.pending.is_empty() {
            self.perform(action).await
        } else {
            self.pending.push_back(action);
            Ok(())
        }
    }

    async fn perform(&mut self, action: Expect) -> Result<(), String> {
        match action {
            Expect::Reply(text) => self.send_client(text.as_bytes()).await,
            Expect::StartTls => self.start_tls().await,
            _ => Ok(()),
        }
    }

    async fn server_reply(&mut self, lines: Vec<Vec<u8>>) -> Result<(), String> {
        let expect = self.pending.pop_front().unwrap_or(Expect::Other);
        let out = match (&expect, &self.kind) {
            (Expect::Ehlo, Kind::Strip) => rewrite_ehlo(&lines, false),
            (Expect::Ehlo, Kind::Mitm(_)) => rewrite_ehlo(&lines, !self.tls_active),
            _ => lines.concat(),
        };
        if matches!(expect, Expect::Data) && lines.first().is_some_and(|l| l.starts_with(b"354")) {
            self.mode = Mode::Data;
        }
        self.send_client(&out).await?;
        while matches!(
            self.pending.front(),
            Some(Expect::Reply(_) | Expect::StartTls)
        ) {
            if let Some(action) = self.pending.pop_front() {
                self.perform(action).await?;
            }
        }
        Ok(())
    }

    async fn send_client(&mut self, data: &[u8]) -> Result<(), String> {
        self.client
            .write_all(data)
            .await
            .map_err(|e| format!("writing to the client: {e}"))
    }

    async fn send_server(&mut self, data: &[u8]) -> Result<(), String> {
        self.server
            .write_all(data)
            .await
            .map_err(|e| format!("writing to the server: {e}"))
    }

    /// The Mitm's STARTTLS: `220`, then the handshake with the attacker's certificate.
    async fn start_tls(&mut self) -> Result<(), String> {
        let Kind::Mitm(config) = self.kind.clone() else {
            return Ok(());
        };
        self.send_client(b"220 2.0.0 Ready to start TLS\r\n")
            .await?;
        if !self.cbuf.is_empty() {
            return Err("the client sent more after STARTTLS before the TLS handshake".into());
        }
        let ClientIo::Plain(tcp) = std::mem::replace(&mut self.client, ClientIo::Gone) else {
            return Err("internal: STARTTLS on a connection that is not plaintext".into());
        };
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let start = match tokio::time::timeout(IO_TIMEOUT, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => return Err(format!("no TLS ClientHello from the client: {e}")),
            Err(_) => return Err("no TLS ClientHello from the client in time".into()),
        };
        let sni = start.client_hello().server_name().map(str::to_string);
        self.shared.client_hellos.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.server_names).push(sni.clone());
        self.shared.note(
            self.id,
            &format!(
                "TLS ClientHello (SNI {}); presenting the attacker's certificate",
                sni.as_deref().unwrap_or("none")
            ),
        );
        let tls = match tokio::time::timeout(IO_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(format!("TLS handshake with the client failed: {e}")),
            Err(_) => return Err("TLS handshake with the client timed out".into()),
        };
        let (_, session) = tls.get_ref();
        let version = session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let cipher = session
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        self.shared.handshakes.fetch_add(1, Ordering::Relaxed);
        self.shared.note(
            self.id,
            &format!(
                "TLS handshake with the client done ({version}, {cipher}); relaying its \
                 decrypted commands to the upstream in plaintext"
            ),
        );
        self.client = ClientIo::Tls(Box::new(tls));
        self.tls_active = true;
        self.mode = Mode::Command;
        Ok(())
    }
}

/// An attacker that strips STARTTLS (see the [module documentation](self)).
pub struct StripStartTls {
    proxy: Proxy,
}

impl std::fmt::Debug for StripStartTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripStartTls")
            .field("listen", &self.proxy.listen)
            .field("upstream", &self.proxy.upstream)
            .finish()
    }
}

impl StripStartTls {
    /// Listens on `listen` (a loopback address; an unspecified IP claims a free one with
    /// [`claim_peer_addr`](crate::claim_peer_addr), port 0 then meaning 25) and relays each
    /// connection to `upstream` (loopback too).
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<Self, LabError> {
        Ok(StripStartTls {
            proxy: Proxy::start(listen, upstream, Kind::Strip)?,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.listen
    }

    /// Everything clients sent, with the proxy's notes (`* …` lines).
    pub fn transcript(&self) -> String {
        self.proxy.transcript()
    }

    /// Whether any client sent `MAIL`, `RCPT`, `DATA` or `BDAT`.
    pub fn client_sent_mail(&self) -> bool {
        self.proxy.shared.mail_sent.load(Ordering::Relaxed)
    }

    /// How many client connections it accepted.
    pub fn connections(&self) -> usize {
        self.proxy.shared.connections.load(Ordering::Relaxed)
    }
}

/// An attacker that terminates STARTTLS with its own certificate (see the
/// [module documentation](self)).
pub struct Mitm {
    proxy: Proxy,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm")
            .field("listen", &self.proxy.listen)
            .field("upstream", &self.proxy.upstream)
            .finish()
    }
}

impl Mitm {
    /// Listens on `listen` (as [`StripStartTls::start`]) and relays to `upstream`, presenting
    /// `chain_pem` (leaf first) with `key_pem` to clients that start TLS.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Self, LabError> {
        let config = server_config(chain_pem, key_pem)
            .map_err(|detail| LabError::Proxy { listen, detail })?;
        Ok(Mitm {
            proxy: Proxy::start(listen, upstream, Kind::Mitm(config))?,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.listen
    }

    /// How many TLS handshakes with clients completed (the client accepted the attacker's
    /// certificate, or did not check it).
    pub fn handshakes(&self) -> usize {
        self.proxy.shared.handshakes.load(Ordering::Relaxed)
    }

    /// How many TLS ClientHellos it answered with the attacker's certificate, completed or not
    /// (a client that rejects the certificate aborts the handshake: counted here, not in
    /// [`handshakes`](Self::handshakes)).
    pub fn client_hellos(&self) -> usize {
        self.proxy.shared.client_hellos.load(Ordering::Relaxed)
    }

    /// The SNI of each ClientHello, in order (`None`: no SNI sent).
    pub fn server_names(&self) -> Vec<Option<String>> {
        lock(&self.proxy.shared.server_names).clone()
    }

    /// Everything clients sent, decrypted, with the proxy's notes (`* …` lines).
    pub fn transcript(&self) -> String {
        self.proxy.transcript()
    }

    /// Whether any client sent `MAIL`, `RCPT`, `DATA` or `BDAT` (in plaintext or inside TLS).
    pub fn client_sent_mail(&self) -> bool {
        self.proxy.shared.mail_sent.load(Ordering::Relaxed)
    }

    /// How many client connections it accepted.
    pub fn connections(&self) -> usize {
        self.proxy.shared.connections.load(Ordering::Relaxed)
    }
}

fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("attacker chain PEM: {e}"))?;
    if chain.is_empty() {
        return Err("attacker chain PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("attacker key PEM: {e}"))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("attacker certificate: {e}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Vec<u8>> {
        text.split_inclusive('\n')
            .map(|l| l.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn strips_starttls_and_fixes_continuations() {
        let ehlo = lines("250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 CHUNKING\r\n");
        assert_eq!(
            rewrite_ehlo(&ehlo, false),
            b"250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        );
        let last = lines("250-mx.test\r\n250-SIZE 1000\r\n250 starttls\r\n");
        assert_eq!(
            rewrite_ehlo(&last, false),
            b"250-mx.test\r\n250 SIZE 1000\r\n"
        );
        let only = lines("250 mx.test\r\n");
        assert_eq!(rewrite_ehlo(&only, false), b"250 mx.test\r\n");
    }

    #[test]
    fn adds_starttls_when_missing() {
        let ehlo = lines("250-mx.test\r\n250 PIPELINING\r\n");
        assert_eq!(
            rewrite_ehlo(&ehlo, true),
            b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
        );
        let has = lines("250-mx.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
        assert_eq!(rewrite_ehlo(&has, true), has.concat());
        let refused = lines("550 no\r\n");
        assert_eq!(rewrite_ehlo(&refused, true), b"550 no\r\n");
    }

    #[test]
    fn parses_lines_and_verbs() {
        let mut buf = b"EHLO a\r\nMAIL FROM:<x>\r\npartial".to_vec();
        assert_eq!(take_line(&mut buf).as_deref(), Some(&b"EHLO a\r\n"[..]));
        assert_eq!(verb(b"mail FROM:<x>\r\n"), "MAIL");
        assert_eq!(
            take_line(&mut buf).as_deref(),
            Some(&b"MAIL FROM:<x>\r\n"[..])
        );
        assert_eq!(take_line(&mut buf), None);
        assert!(is_last_reply_line(b"250 ok\r\n"));
        assert!(is_last_reply_line(b"250\r\n"));
        assert!(!is_last_reply_line(b"250-ok\r\n"));
    }
}
