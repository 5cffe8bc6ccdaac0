//! Fetching a policy file over HTTPS (RFC 8461 §3.3):
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, PKIX-authenticated for that host name,
//! no redirects followed, nothing cached by HTTP, within a time and a size limit.
//!
//! The HTTP client is a bare HTTP/1.1 connection (`hyper`) over a TLS stream of our own
//! (`tokio-rustls` with rustls' WebPKI verifier over the caller's trust anchors, SNI the
//! policy host), so the addresses, the verifier and every limit stay in this module.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dns::{DnsName, Failure, Record, RecordType, Resolver, Status};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// The path of the policy file on the policy host (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// The time a whole fetch may take by default: the one minute RFC 8461 §3.3 suggests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest policy accepted by default: the 64 KiB RFC 8461 §3.3 suggests.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// The HTTPS port.
pub const DEFAULT_PORT: u16 = 443;

/// Why the policy host has no usable address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// A lookup failed (network, SERVFAIL, data that did not validate).
    #[error("{rtype:?} lookup failed: {failure}")]
    Lookup {
        /// A or AAAA.
        rtype: RecordType,
        /// Why.
        failure: Failure,
    },
    /// A lookup answered with a DNSSEC status that makes its data unusable (bogus,
    /// indeterminate). DNSSEC is not required here, but forged data is never used.
    #[error("{rtype:?} lookup is DNSSEC-{status}")]
    Unusable {
        /// A or AAAA.
        rtype: RecordType,
        /// The status.
        status: Status,
    },
    /// Neither A nor AAAA records.
    #[error("no A or AAAA records")]
    NoAddresses,
}

/// Where the policy host's addresses come from.
pub trait AddressSource: Send + Sync {
    /// The addresses of `host`, in the order to try them.
    fn addresses(
        &self,
        host: &DnsName,
    ) -> impl Future<Output = Result<Vec<IpAddr>, AddressError>> + Send;
}

impl<S: AddressSource> AddressSource for Arc<S> {
    fn addresses(
        &self,
        host: &DnsName,
    ) -> impl Future<Output = Result<Vec<IpAddr>, AddressError>> + Send {
        (**self).addresses(host)
    }
}

impl<S: AddressSource> AddressSource for &S {
    fn addresses(
        &self,
        host: &DnsName,
    ) -> impl Future<Output = Result<Vec<IpAddr>, AddressError>> + Send {
        (**self).addresses(host)
    }
}

/// The same addresses for every policy host (tests, or a configured override).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedAddresses(pub Vec<IpAddr>);

impl AddressSource for FixedAddresses {
    async fn addresses(&self, _host: &DnsName) -> Result<Vec<IpAddr>, AddressError> {
        if self.0.is_empty() {
            return Err(AddressError::NoAddresses);
        }
        Ok(self.0.clone())
    }
}

/// A and AAAA lookups through a [`Resolver`]. Secure and insecure answers are used (the
/// policy host is authenticated by PKIX, RFC 8461 §3.3); bogus and indeterminate ones are not.
/// IPv6 addresses are tried first, then IPv4.
#[derive(Debug)]
pub struct ResolverAddresses<R>(pub Arc<R>);

impl<R> Clone for ResolverAddresses<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: Resolver> AddressSource for ResolverAddresses<R> {
    async fn addresses(&self, host: &DnsName) -> Result<Vec<IpAddr>, AddressError> {
        let (aaaa, a) = tokio::join!(
            self.0.lookup(host, RecordType::Aaaa),
            self.0.lookup(host, RecordType::A)
        );
        let mut addresses = Vec::new();
        let mut first_error = None;
        for lookup in [aaaa, a] {
            match lookup.records_if(Status::USABLE) {
                Ok(records) => addresses.extend(records.iter().filter_map(|r| match r {
                    Record::Address(ip) => Some(*ip),
                    _ => None,
                })),
                Err(status) => {
                    let error = match lookup.failure() {
                        Some(failure) => AddressError::Lookup {
                            rtype: lookup.rtype(),
                            failure: failure.clone(),
                        },
                        None => AddressError::Unusable {
                            rtype: lookup.rtype(),
                            status,
                        },
                    };
                    first_error.get_or_insert(error);
                }
            }
        }
        match (addresses.is_empty(), first_error) {
            (false, _) => Ok(addresses),
            (true, Some(error)) => Err(error),
            (true, None) => Err(AddressError::NoAddresses),
        }
    }
}

/// Why a policy could not be fetched. [`FetchError::is_webpki`] tells the failures to
/// authenticate the policy host (TLS-RPT `sts-webpki-invalid`, RFC 8460 §4.3.2.2) from the
/// others (`sts-policy-fetch-error`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// `mta-sts.<domain>` is not a valid host name (too long, or odd characters).
    #[error("mta-sts.{domain} is not a valid host name")]
    PolicyHost {
        /// The policy domain.
        domain: String,
    },
    /// The policy host has no usable address.
    #[error("no address for {host}: {source}")]
    Addresses {
        /// The policy host.
        host: String,
        /// Why.
        source: AddressError,
    },
    /// No address accepted a TCP connection.
    #[error("cannot connect to {host} (last tried {addr}): {source}")]
    Connect {
        /// The policy host.
        host: String,
        /// The last address tried.
        addr: SocketAddr,
        /// Its error.
        source: io::Error,
    },
    /// The certificate does not authenticate the policy host: untrusted chain, wrong name,
    /// expired, none at all (RFC 8461 §3.3; TLS-RPT `sts-webpki-invalid`).
    #[error("{host} at {addr}: the certificate is not valid for it: {source}")]
    Certificate {
        /// The policy host.
        host: String,
        /// The address.
        addr: SocketAddr,
        /// rustls' verdict.
        source: rustls::Error,
    },
    /// Any other TLS failure (handshake refused, protocol error, connection lost).
    #[error("TLS with {host} at {addr}: {source}")]
    Tls {
        /// The policy host.
        host: String,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// An HTTP protocol error, or the connection closed before the answer was complete.
    #[error("HTTP with {host}: {source}")]
    Http {
        /// The policy host.
        host: String,
        /// The error.
        source: hyper::Error,
    },
    /// A 3xx answer: RFC 8461 §3.3 forbids following redirects.
    #[error("HTTP {status} redirect to {location:?}, not followed (RFC 8461 §3.3)")]
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header, if any and readable.
        location: Option<String>,
    },
    /// Any other status than 200.
    #[error("HTTP status {0} (200 required)")]
    Status(u16),
    /// The media type is not `text/plain` (RFC 8461 §3.2).
    #[error("media type {0:?}, not text/plain")]
    ContentType(Option<String>),
    /// The body is over the size limit.
    #[error("the policy is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The whole fetch took longer than the limit.
    #[error("no complete policy within {0:?}")]
    Timeout(Duration),
}

impl FetchError {
    /// Whether the policy host failed PKIX authentication (TLS-RPT `sts-webpki-invalid`).
    pub fn is_webpki(&self) -> bool {
        matches!(self, FetchError::Certificate { .. })
    }
}

/// `mta-sts.<domain>`, the policy host (RFC 8461 §3.3).
pub fn policy_host(domain: &DnsName) -> Option<DnsName> {
    format!("mta-sts.{domain}").parse().ok()
}

/// Fetches policy files: the TLS settings and the limits, built once and shared.
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
    timeout: Duration,
    port: u16,
    body_limit: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .field("port", &self.port)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// A task aborted when this is dropped (the HTTP connection's driver).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetcher {
    /// A fetcher that trusts `roots` (see [`crate::trust`]), with the default timeout, port
    /// and size limit. An error only when rustls' ring provider supports no TLS version.
    pub fn new(roots: impl Into<Arc<RootCertStore>>) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout: DEFAULT_TIMEOUT,
            port: DEFAULT_PORT,
            body_limit: DEFAULT_BODY_LIMIT,
        })
    }

    /// The time a whole fetch may take: address lookup, connection, TLS, request, body.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The port to connect to (443 unless a test says otherwise).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The largest body accepted, in bytes.
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Fetches the policy file of `domain` (RFC 8461 §3.3) from the addresses `addresses`
    /// gives for `mta-sts.<domain>`, tried in order until one accepts a connection. The body
    /// is returned unparsed (see [`Policy::parse`](crate::Policy::parse)).
    pub async fn fetch(
        &self,
        domain: &DnsName,
        addresses: &impl AddressSource,
    ) -> Result<Vec<u8>, FetchError> {
        let host = policy_host(domain).ok_or_else(|| FetchError::PolicyHost {
            domain: domain.to_string(),
        })?;
        tokio::time::timeout(self.timeout, self.fetch_from(&host, domain, addresses))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn fetch_from(
        &self,
        host: &DnsName,
        domain: &DnsName,
        addresses: &impl AddressSource,
    ) -> Result<Vec<u8>, FetchError> {
        let bad_host = || FetchError::PolicyHost {
            domain: domain.to_string(),
        };
        let server_name = ServerName::try_from(host.as_str().to_owned()).map_err(|_| bad_host())?;
        let host_header = HeaderValue::from_str(host.as_str()).map_err(|_| bad_host())?;
        let ips = addresses
            .addresses(host)
            .await
            .map_err(|source| FetchError::Addresses {
                host: host.to_string(),
                source,
            })?;
        match connect_first(&ips, self.port).await {
            Ok((addr, tcp)) => {
                self.exchange(host, addr, server_name, host_header, tcp)
                    .await
            }
            Err(Some((addr, source))) => Err(FetchError::Connect {
                host: host.to_string(),
                addr,
                source,
            }),
            Err(None) => Err(FetchError::Addresses {
                host: host.to_string(),
                source: AddressError::NoAddresses,
            }),
        }
    }

    /// TLS, then `GET /.well-known/mta-sts.txt`, then the checks of RFC 8461 §3.2 and §3.3 on
    /// the answer.
    async fn exchange(
        &self,
        host: &DnsName,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        host_header: HeaderValue,
        tcp: TcpStream,
    ) -> Result<Vec<u8>, FetchError> {
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_error(host, addr, e))?;
        let http = |source| FetchError::Http {
            host: host.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = Uri::from_static(POLICY_PATH);
        let headers = request.headers_mut();
        headers.insert(HOST, host_header);
        headers.insert(USER_AGENT, HeaderValue::from_static("danemta"));
        let response = sender.send_request(request).await.map_err(http)?;

        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect {
                status: status.as_u16(),
                location: header_text(response.headers().get(LOCATION)),
            });
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        let content_type = response.headers().get(CONTENT_TYPE);
        if !content_type.is_some_and(is_text_plain) {
            return Err(FetchError::ContentType(header_text(content_type)));
        }
        let too_large = FetchError::TooLarge {
            limit: self.body_limit,
        };
        let declared = header_text(response.headers().get(CONTENT_LENGTH))
            .and_then(|length| length.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.body_limit as u64) {
            return Err(too_large);
        }
        match Limited::new(response.into_body(), self.body_limit)
            .collect()
            .await
        {
            Ok(body) => Ok(body.to_bytes().to_vec()),
            Err(e) if e.is::<LengthLimitError>() => Err(too_large),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => Err(http(*e)),
                // Limited wraps only the body's own errors (hyper's) and its limit.
                Err(_) => Err(too_large),
            },
        }
    }
}

/// A TLS failure: a certificate rustls refused is `Certificate`, anything else `Tls`.
/// How long one address may take to accept a TCP connection, so that an address that
/// swallows packets does not use up the whole fetch's time before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to the first of `ips` that accepts one on `port`, each tried for at most
/// [`CONNECT_TIMEOUT`]; else the last address's error (`None`: no address at all).
pub(crate) async fn connect_first(
    ips: &[IpAddr],
    port: u16,
) -> Result<(SocketAddr, TcpStream), Option<(SocketAddr, io::Error)>> {
    let mut last_error = None;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok((addr, tcp)),
            Ok(Err(e)) => last_error = Some((addr, e)),
            Err(_) => last_error = Some((addr, io::ErrorKind::TimedOut.into())),
        }
    }
    Err(last_error)
}

fn tls_error(host: &DnsName, addr: SocketAddr, e: io::Error) -> FetchError {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(
            source @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) => FetchError::Certificate {
            host: host.to_string(),
            addr,
            source: source.clone(),
        },
        _ => FetchError::Tls {
            host: host.to_string(),
            addr,
            source: e,
        },
    }
}

/// A header's value as text, if it is visible ASCII.
fn header_text(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether a `Content-Type` is `text/plain`, with any parameters (RFC 8461 §3.2; RFC 9110
/// §8.3.1: type and subtype are case-insensitive).
fn is_text_plain(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let media_type = text.split(';').next().unwrap_or_default();
    media_type.trim().eq_ignore_ascii_case("text/plain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_type_must_be_text_plain() {
        for ok in [
            "text/plain",
            "TEXT/Plain",
            "text/plain; charset=utf-8",
            " text/plain ;charset=\"us-ascii\"",
        ] {
            assert!(is_text_plain(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "text/html",
            "text/plain-ish",
            "text/plainx; a=b",
            "application/octet-stream",
            "",
            "text",
        ] {
            assert!(!is_text_plain(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn the_policy_host_is_mta_sts_below_the_domain() {
        let domain: DnsName = "Example.COM".parse().unwrap();
        assert_eq!(
            policy_host(&domain).unwrap().as_str(),
            "mta-sts.example.com"
        );
        // 247 characters: the host name would be 255.
        let long: DnsName = vec!["a".repeat(61); 4].join(".").parse().unwrap();
        assert!(policy_host(&long).is_none());
    }

    #[test]
    fn only_certificate_failures_are_webpki_failures() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 443));
        let host: DnsName = "mta-sts.example.com".parse().unwrap();
        let cert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(tls_error(&host, addr, cert).is_webpki());
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert!(!tls_error(&host, addr, alert).is_webpki());
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(!tls_error(&host, addr, reset).is_webpki());
        assert!(!FetchError::Status(404).is_webpki());
    }

    #[tokio::test]
    async fn fixed_addresses_must_not_be_empty() {
        let host: DnsName = "mta-sts.example.com".parse().unwrap();
        assert_eq!(
            FixedAddresses(vec![]).addresses(&host).await,
            Err(AddressError::NoAddresses)
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            FixedAddresses(vec![ip]).addresses(&host).await,
            Ok(vec![ip])
        );
    }
}
