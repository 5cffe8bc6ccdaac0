//! An in-process HTTPS server on loopback, for tests of HTTPS clients such as the MTA-STS
//! policy fetch (RFC 8461 §3.3): policy hosts with test certificates, and the ways they can
//! misbehave.
//!
//! * The certificate is chosen by SNI from a map (host name → [`TestCert`]); a client that
//!   sends no SNI, or an unknown name, gets a failed handshake. The certificate need not be
//!   valid for the name it is served under (a "wrong name" test).
//! * Each host has routes, path → [`Reply`]: content with a status and media type, a redirect,
//!   an endless body, or a stall (the request is read and never answered). Unknown paths get
//!   `404 text/plain`. Routes can be changed while the server runs ([`HttpsServer::set_reply`]).
//! * It records what clients asked ([`HttpsServer::requests`]) and the SNI of every
//!   handshake ([`HttpsServer::server_names`]).
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use danemta_lab::https::{HttpsServer, HttpsSpec, Reply};
//! use danemta_lab::pki::{TestCa, TestCert};
//! let ca = TestCa::new("Policy CA")?;
//! let cert = TestCert::ca_signed(&["mta-sts.example.test"], &ca, true)?;
//! let server = HttpsServer::start(
//!     HttpsSpec::new(SocketAddr::from(([0, 0, 0, 0], 443))) // a claimed 127.0.4x.y:443
//!         .host("mta-sts.example.test", &cert)
//!         .route(
//!             "mta-sts.example.test",
//!             "/.well-known/mta-sts.txt",
//!             Reply::text("version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"),
//!         ),
//! )?;
//! // … fetch from server.addr() trusting ca.cert_der() …
//! assert!(server.requests().is_empty());
//! # Ok::<(), danemta_lab::LabError>(())
//! ```
//!
//! Like the attack proxies, the server runs a small single-threaded tokio runtime on a thread
//! of its own; dropping it stops the runtime (stalled connections included), joins the thread
//! and closes the listener.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, LOCATION};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::LabError;
use crate::pki::TestCert;
use crate::smtp::{PeerAddr, resolve_addr};

/// How long the server waits for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The chunk an [`Reply::Endless`] body repeats.
static CHUNK: [u8; 16 * 1024] = [b'#'; 16 * 1024];

/// What the server answers on one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A complete answer (with `Content-Length`).
    Content {
        /// The status code.
        status: u16,
        /// The `Content-Type`, if any.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// A redirect to `location`.
    Redirect {
        /// The status code (3xx).
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// `200 text/plain` with a body that never ends (chunked, no `Content-Length`): a client
    /// must stop reading at its own limit.
    Endless,
    /// The request is read and never answered: a client must time out.
    Stall,
}

impl Reply {
    /// `200`, `text/plain; charset=utf-8`, `body`.
    pub fn text(body: &str) -> Reply {
        Reply::content(200, Some("text/plain; charset=utf-8"), body)
    }

    /// An answer with this status, media type and body.
    pub fn content(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Content {
            status,
            content_type: content_type.map(str::to_owned),
            body: body.into(),
        }
    }

    /// `301 Moved Permanently` to `location`.
    pub fn redirect(location: &str) -> Reply {
        Reply::Redirect {
            status: 301,
            location: location.to_owned(),
        }
    }
}

/// What a server serves: where it listens, and its hosts with their certificates and routes.
#[derive(Clone, Debug)]
pub struct HttpsSpec {
    listen: SocketAddr,
    certs: BTreeMap<String, TestCert>,
    routes: Routes,
}

/// Host (lower-case) → path → reply.
type Routes = BTreeMap<String, BTreeMap<String, Reply>>;

impl HttpsSpec {
    /// A server on `listen`: an unspecified IP (`0.0.0.0:443`) claims a free lab address
    /// `127.0.4x.y` (see [`claim_peer_addr`](crate::claim_peer_addr)); port 0 then means 443.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            certs: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }

    /// Serves `cert` to clients asking for `name` by SNI (whatever names the certificate holds).
    pub fn host(mut self, name: &str, cert: &TestCert) -> Self {
        self.certs.insert(name.to_ascii_lowercase(), cert.clone());
        self
    }

    /// Answers `reply` on `path` of host `host` (the SNI name).
    pub fn route(mut self, host: &str, path: &str, reply: Reply) -> Self {
        self.routes
            .entry(host.to_ascii_lowercase())
            .or_default()
            .insert(path.to_owned(), reply);
        self
    }
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsRequest {
    /// The SNI of the connection.
    pub server_name: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
}

/// What the server saw, and its routes (shared with the connection tasks).
#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<HttpsRequest>>,
    server_names: Mutex<Vec<Option<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Chooses the certificate by SNI and records the name asked for.
#[derive(Debug)]
struct BySni {
    keys: BTreeMap<String, Arc<CertifiedKey>>,
    shared: Arc<Shared>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        lock(&self.shared.server_names).push(name.clone());
        self.keys.get(name.as_deref()?).cloned()
    }
}

/// A running HTTPS server. See the [module documentation](self).
pub struct HttpsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _claim: Option<PeerAddr>,
}

impl std::fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpsServer {
    /// Starts serving `spec`. Fails when a certificate or key does not load, or the address
    /// cannot be bound.
    pub fn start(spec: HttpsSpec) -> Result<Self, LabError> {
        let (listen, claim) = resolve_addr(spec.listen, 443)?;
        let io_error = |context: &str, source| LabError::Io {
            context: format!("HTTPS server on {listen}: {context}"),
            source,
        };
        let shared = Arc::new(Shared {
            routes: Mutex::new(spec.routes),
            ..Shared::default()
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut keys = BTreeMap::new();
        for (name, cert) in &spec.certs {
            keys.insert(
                name.clone(),
                Arc::new(certified_key(&provider, name, cert)?),
            );
        }
        let resolver = BySni {
            keys,
            shared: shared.clone(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LabError::Certificate {
                detail: format!("HTTPS server TLS versions: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener: StdListener =
            crate::process::bind_listener(listen).map_err(|e| io_error("cannot listen", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io_error("local address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error("non-blocking listener", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| io_error("tokio runtime", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("danemta-lab-https-{addr}"))
                .spawn(move || {
                    runtime.block_on(accept_loop(listener, acceptor, shared, stopped));
                    // Aborts every connection task (stalled ones too) and closes their sockets.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(|e| io_error("thread", e))?
        };
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
            _claim: claim,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `reply` on `path` of `host` from now on.
    pub fn set_reply(&self, host: &str, path: &str, reply: Reply) {
        lock(&self.shared.routes)
            .entry(host.to_ascii_lowercase())
            .or_default()
            .insert(path.to_owned(), reply);
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<HttpsRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The SNI name of every TLS handshake so far (`None`: the client sent none).
    pub fn server_names(&self) -> Vec<Option<String>> {
        lock(&self.shared.server_names).clone()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The chain and key of `cert`, ready for rustls.
fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    name: &str,
    cert: &TestCert,
) -> Result<CertifiedKey, LabError> {
    let error = |what: &str, e: &dyn std::fmt::Display| LabError::Certificate {
        detail: format!("HTTPS host {name}: {what}: {e}"),
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| error("chain PEM", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| error("key PEM", &e))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error("key", &e))?;
    Ok(CertifiedKey::new(chain, signer))
}

async fn accept_loop(
    listener: StdListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(tcp, acceptor.clone(), shared.clone()));
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

/// One connection: the TLS handshake, then HTTP/1.1 requests until the client closes.
async fn connection(tcp: tokio::net::TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    let server_name = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
    let service = service_fn(move |request| {
        let reply = record(&shared, server_name.clone(), &request);
        respond(reply)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// Records the request and finds its reply (by SNI, else by `Host` without a port).
fn record(shared: &Shared, server_name: Option<String>, request: &Request<Incoming>) -> Reply {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let site = server_name
        .clone()
        .or_else(|| {
            host.as_deref()
                .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
        })
        .unwrap_or_default();
    let reply = lock(&shared.routes)
        .get(&site)
        .and_then(|routes| routes.get(request.uri().path()))
        .cloned()
        .unwrap_or_else(|| Reply::content(404, Some("text/plain"), "not found\n"));
    lock(&shared.requests).push(HttpsRequest {
        server_name,
        host,
        method: request.method().to_string(),
        path,
    });
    reply
}

type ReplyBody = BoxBody<Bytes, Infallible>;

async fn respond(reply: Reply) -> Result<Response<ReplyBody>, Infallible> {
    let status_of = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match reply {
        Reply::Content {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
            *response.status_mut() = status_of(status);
            if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Reply::Redirect { status, location } => {
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            *response.status_mut() = status_of(status);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, value);
            }
            response
        }
        Reply::Endless => {
            let mut response = Response::new(Endless.boxed());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        Reply::Stall => std::future::pending().await,
    };
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("danemta-lab"));
    Ok(response)
}

/// A body that never ends.
struct Endless;

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_handy_constructors() {
        assert_eq!(
            Reply::text("x"),
            Reply::Content {
                status: 200,
                content_type: Some("text/plain; charset=utf-8".into()),
                body: b"x".to_vec()
            }
        );
        assert_eq!(
            Reply::redirect("https://a.test/"),
            Reply::Redirect {
                status: 301,
                location: "https://a.test/".into()
            }
        );
    }

    #[test]
    fn a_bad_key_is_an_error_not_a_panic() {
        let mut cert = TestCert::self_signed(&["a.test"]).unwrap();
        cert.key_pem = "garbage".into();
        let spec = HttpsSpec::new(SocketAddr::from(([127, 0, 0, 1], 0))).host("a.test", &cert);
        assert!(matches!(
            HttpsServer::start(spec),
            Err(LabError::Certificate { .. })
        ));
    }
}
