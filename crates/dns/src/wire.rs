//! One DNS exchange on the wire: UDP, and TCP when the UDP answer is truncated (RFC 7766).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsExchange, DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query};

use crate::answer::hickory_name;
use crate::lookup::{Failure, RecordType};
use crate::name::DnsName;

/// A UDP exchange with `server`; must be created inside a tokio runtime.
pub(crate) fn udp(server: SocketAddr, timeout: Duration) -> DnsExchange<TokioRuntimeProvider> {
    UdpClientStream::builder(server, TokioRuntimeProvider::default())
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

/// Sends `request` over `udp` to `server`, retrying over TCP when the answer is truncated.
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
    let tcp =
        TcpClientStream::exchange(server, None, timeout, None, TokioRuntimeProvider::default())
            .await?;
    tcp.send(request).first_answer().await
}
