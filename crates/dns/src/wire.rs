//! One DNS exchange on the wire: UDP, and TCP when the UDP answer is truncated (RFC 7766).
//!
//! hickory-net spawns each exchange's background task (the one that actually reads and
//! writes the socket) into the `JoinSet` of the [`TokioRuntimeProvider`] it was given, and a
//! `JoinSet` aborts its tasks when its last handle is dropped. A UDP stream keeps a clone of
//! its provider, so its task lives; a TCP stream does not, so a provider made for one TCP
//! exchange and then dropped kills the connection before it answers ("receiver was
//! canceled"). [`Upstream`] therefore owns its provider for as long as its exchanges live.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsExchange, DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query};
use tokio::sync::Mutex;

use crate::answer::hickory_name;
use crate::lookup::{Failure, RecordType};
use crate::name::DnsName;

/// A UDP exchange with `server`; must be created inside a tokio runtime.
pub(crate) fn udp(server: SocketAddr, timeout: Duration) -> DnsExchange<TokioRuntimeProvider> {
    udp_with(server, timeout, TokioRuntimeProvider::default())
}

fn udp_with(
    server: SocketAddr,
    timeout: Duration,
    provider: TokioRuntimeProvider,
) -> DnsExchange<TokioRuntimeProvider> {
    UdpClientStream::builder(server, provider)
        .with_timeout(Some(timeout))
        .exchange()
}

/// A query for `name`/`rtype`; `recursive` sets RD (a resolver) or not (an authority).
pub(crate) fn request(
    name: &DnsName,
    rtype: RecordType,
    recursive: bool,
) -> Result<DnsRequest, Failure> {
    let query = Query::query(hickory_name(name)?, rtype.to_hickory());
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.recursion_desired = recursive;
    Ok(DnsRequest::from_query(query, options))
}

/// Opens a TCP exchange with `server` whose background task lives in `provider`'s task set:
/// the caller must keep `provider` (or a clone) until it is done with the exchange.
async fn tcp(
    server: SocketAddr,
    timeout: Duration,
    provider: &TokioRuntimeProvider,
) -> Result<DnsExchange<TokioRuntimeProvider>, NetError> {
    TcpClientStream::exchange(server, None, timeout, None, provider.clone()).await
}

/// Sends `request` over `udp` to `server`, retrying over TCP when the answer is truncated
/// (RFC 7766 §5), on a connection opened for this one question. For a server asked many
/// questions, [`Upstream`] keeps one connection instead.
pub(crate) async fn exchange(
    udp: &DnsExchange<TokioRuntimeProvider>,
    server: SocketAddr,
    request: DnsRequest,
    timeout: Duration,
) -> Result<DnsResponse, NetError> {
    let response = udp.send(request.clone()).first_answer().await?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    // Kept until the answer is in: dropping it would abort the connection's task.
    let provider = TokioRuntimeProvider::default();
    let tcp = tcp(server, timeout, &provider).await?;
    tcp.send(request).first_answer().await
}

/// One upstream server asked many questions: over UDP, and over one TCP connection for
/// truncated answers (RFC 7766 §5), opened on the first truncated answer, shared by the
/// questions that follow (RFC 7766 §6.2.1 encourages reuse), and opened again when the server
/// has closed it (RFC 7766 §6.2.3: servers close idle connections).
pub(crate) struct Upstream {
    server: SocketAddr,
    timeout: Duration,
    /// Owns the background tasks of both exchanges (see the module documentation).
    provider: TokioRuntimeProvider,
    udp: DnsExchange<TokioRuntimeProvider>,
    tcp: Mutex<Tcp>,
}

/// The TCP connection of an [`Upstream`], numbered so that a failed one is dropped only if it
/// is still the current one.
#[derive(Default)]
struct Tcp {
    opened: u64,
    current: Option<(u64, DnsExchange<TokioRuntimeProvider>)>,
}

impl Upstream {
    /// Asks `server`, each question bounded by `timeout`. Must be called inside a tokio
    /// runtime (it spawns the UDP exchange's background task).
    pub(crate) fn new(server: SocketAddr, timeout: Duration) -> Self {
        let provider = TokioRuntimeProvider::default();
        Self {
            server,
            timeout,
            udp: udp_with(server, timeout, provider.clone()),
            provider,
            tcp: Mutex::new(Tcp::default()),
        }
    }

    /// Sends `request`, over TCP when the UDP answer is truncated.
    pub(crate) async fn exchange(&self, request: DnsRequest) -> Result<DnsResponse, NetError> {
        let response = self.udp.send(request.clone()).first_answer().await?;
        if !response.metadata.truncation {
            return Ok(response);
        }
        self.over_tcp(request).await
    }

    /// The current TCP connection, or a new one; and whether it was already open.
    async fn connection(&self) -> Result<(u64, DnsExchange<TokioRuntimeProvider>, bool), NetError> {
        // Held while connecting, so concurrent questions share one new connection.
        let mut state = self.tcp.lock().await;
        if let Some((id, tcp)) = state.current.as_ref() {
            return Ok((*id, tcp.clone(), true));
        }
        let tcp = tcp(self.server, self.timeout, &self.provider).await?;
        state.opened += 1;
        let id = state.opened;
        state.current = Some((id, tcp.clone()));
        Ok((id, tcp, false))
    }

    /// Forgets connection `id` if it is still the current one.
    async fn drop_connection(&self, id: u64) {
        let mut state = self.tcp.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            state.current = None;
        }
    }

    async fn over_tcp(&self, request: DnsRequest) -> Result<DnsResponse, NetError> {
        let (id, tcp, reused) = self.connection().await?;
        match tcp.send(request.clone()).first_answer().await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.drop_connection(id).await;
                // A connection that served earlier questions may have been closed by the
                // server since: one more try on a new one. A timeout is not retried, so a
                // question stays bounded by its timeouts.
                if !reused || matches!(e, NetError::Timeout) {
                    return Err(e);
                }
                let (_, tcp, _) = self.connection().await?;
                tcp.send(request).first_answer().await
            }
        }
    }
}
