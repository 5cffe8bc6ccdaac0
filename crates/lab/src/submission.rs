//! An in-process ESMTP server for the paths Postfix cannot take in the lab: a submission
//! server with AUTH PLAIN (Postfix needs a SASL back-end for that), and a server that records
//! the SNI name each client sent.
//!
//! It speaks just enough SMTP: greeting, EHLO (STARTTLS offered before TLS, `AUTH PLAIN`
//! after it), STARTTLS, AUTH PLAIN checked against one user and password, MAIL, RCPT, DATA
//! (the message is kept), RSET, QUIT. Like the proxies it runs a small tokio runtime on a
//! thread of its own, stopped on drop.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::LabError;
use crate::pki::TestCert;
use crate::smtp::{PeerAddr, resolve_addr};

/// What the server saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The SNI name of each TLS handshake (`None` when the client sent none).
    pub server_names: Vec<Option<String>>,
    /// Every command line, except that AUTH credentials are replaced by `AUTH PLAIN ***`.
    pub commands: Vec<String>,
    /// Whether the client authenticated with the right credentials.
    pub authenticated: bool,
    /// The messages received (DATA contents).
    pub messages: Vec<String>,
}

/// An in-process submission server. See the [module documentation](self).
pub struct SubmissionServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _claim: Option<PeerAddr>,
}

#[derive(Debug)]
struct RecordSni {
    key: Arc<CertifiedKey>,
    seen: Arc<Mutex<Seen>>,
}

impl ResolvesServerCert for RecordSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        lock(&self.seen)
            .server_names
            .push(hello.server_name().map(str::to_owned));
        Some(self.key.clone())
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one connection needs to know.
#[derive(Clone)]
struct Settings {
    tls: Option<TlsAcceptor>,
    credentials: Option<(String, String)>,
    seen: Arc<Mutex<Seen>>,
}

impl SubmissionServer {
    /// Listens on `listen` (an unspecified IP claims a free lab address; port 0 then means
    /// 587), presenting `cert` after STARTTLS (no STARTTLS when `None`), and accepting AUTH
    /// PLAIN for `credentials` (no AUTH offered when `None`).
    pub fn start(
        listen: SocketAddr,
        cert: Option<&TestCert>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, LabError> {
        let (listen, claim) = resolve_addr(listen, 587)?;
        let error = |detail: String| LabError::Proxy { listen, detail };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tls = match cert {
            None => None,
            Some(cert) => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                        .collect::<Result<_, _>>()
                        .map_err(|e| error(format!("chain PEM: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                    .map_err(|e| error(format!("key PEM: {e}")))?;
                let signer = provider
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| error(format!("key: {e}")))?;
                let resolver = RecordSni {
                    key: Arc::new(CertifiedKey::new(chain, signer)),
                    seen: seen.clone(),
                };
                let config = ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| error(format!("TLS versions: {e}")))?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(resolver));
                Some(TlsAcceptor::from(Arc::new(config)))
            }
        };
        let listener: StdListener = crate::process::bind_listener(listen)
            .map_err(|e| error(format!("cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| error(format!("local address: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| error(format!("non-blocking: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| error(format!("tokio runtime: {e}")))?;
        let settings = Settings {
            tls,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            seen: seen.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("danemta-lab-submission-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let accept = async {
                        while let Ok((tcp, _)) = listener.accept().await {
                            tokio::spawn(session(tcp, settings.clone()));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| error(format!("thread: {e}")))?;
        Ok(Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
            _claim: claim,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }
}

impl Drop for SubmissionServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn session(tcp: tokio::net::TcpStream, settings: Settings) {
    let mut io = BufReader::new(tcp);
    if io
        .get_mut()
        .write_all(b"220 submission.lab ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    if serve(&mut io, &settings, false).await
        && let Some(acceptor) = &settings.tls
        && let Ok(tls) = acceptor.accept(io.into_inner()).await
    {
        serve(&mut BufReader::new(tls), &settings, true).await;
    }
}

/// Serves commands until QUIT or STARTTLS (returns true for STARTTLS).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    settings: &Settings,
    in_tls: bool,
) -> bool {
    let mut authenticated = false;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        lock(&settings.seen)
            .commands
            .push(if upper.starts_with("AUTH") {
                "AUTH PLAIN ***".into()
            } else {
                command.clone()
            });
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = String::from("250-submission.lab\r\n250-PIPELINING\r\n");
            if !in_tls && settings.tls.is_some() {
                r.push_str("250-STARTTLS\r\n");
            }
            if in_tls && settings.credentials.is_some() {
                r.push_str("250-AUTH PLAIN\r\n");
            }
            r + "250 8BITMIME\r\n"
        } else if upper == "STARTTLS" && !in_tls && settings.tls.is_some() {
            let _ = io
                .get_mut()
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await;
            return true;
        } else if let Some(token) = command.strip_prefix("AUTH PLAIN ").filter(|_| in_tls) {
            let expected = settings
                .credentials
                .as_ref()
                .map(|(u, p)| plain_token(u, p));
            if expected.as_deref() == Some(token) {
                authenticated = true;
                lock(&settings.seen).authenticated = true;
                "235 2.7.0 Authentication successful\r\n".into()
            } else {
                "535 5.7.8 Authentication credentials invalid\r\n".into()
            }
        } else if upper.starts_with("MAIL") && settings.credentials.is_some() && !authenticated {
            "530 5.7.0 Authentication required\r\n".into()
        } else if upper == "DATA" {
            let _ = io.get_mut().write_all(b"354 go ahead\r\n").await;
            let mut message = String::new();
            loop {
                let mut body = String::new();
                if io.read_line(&mut body).await.unwrap_or(0) == 0 {
                    return false;
                }
                if body == ".\r\n" {
                    break;
                }
                message.push_str(&body);
            }
            lock(&settings.seen).messages.push(message);
            "250 2.0.0 queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
            return false;
        } else {
            "250 2.0.0 ok\r\n".into()
        };
        if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return false;
        }
    }
}

/// The AUTH PLAIN token for `user` and `password` (RFC 4616), base64 without a crate.
fn plain_token(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_tokens_are_rfc_4616_base64() {
        // "\0tim\0tanstaaftanstaaf" from RFC 4616 §4.
        assert_eq!(
            super::plain_token("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
    }
}
