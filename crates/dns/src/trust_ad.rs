//! The `trust-ad` back-end: a local validating resolver does the DNSSEC work, and we trust
//! the AD bit of its answers (the model of Postfix and Exim, RFC 6698 §4.1, RFC 7672 §2.1.1).
//!
//! The AD bit is only as trustworthy as the path to the resolver, so the resolver should be
//! on loopback; [`crate::ResolverSpec::trusts_ad_off_loopback`] lets callers warn when it is not. A validating
//! resolver answers SERVFAIL for bogus data, so SERVFAIL is reported as such and handled
//! like bogus (indeterminate). The high-level hickory resolver rebuilds its messages and loses
//! the upstream's AD flag, so this back-end speaks DNS over hickory-net directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_net::NetError;
use hickory_proto::op::{DnsRequest, DnsResponse};

use std::collections::HashMap;

use hickory_proto::rr::RecordType as HType;

use crate::answer::{build, dns_name};
use crate::lookup::{Failure, Lookup, RecordType};
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::status::Status;

/// Trusts the AD bit of the resolver at one address.
pub struct TrustAd {
    upstream: SocketAddr,
    /// UDP, and one TCP connection kept for truncated answers (RFC 7766 §5); boxed, since
    /// it is large and [`crate::Backend`] holds this back-end by value.
    wire: Box<crate::wire::Upstream>,
    timeout: Duration,
    sent: AtomicU64,
}

impl TrustAd {
    /// A back-end asking `upstream`, each query bounded by `timeout`. Must be called inside a
    /// tokio runtime (it spawns the UDP exchange's background task).
    pub fn new(upstream: SocketAddr, timeout: Duration) -> Self {
        Self {
            upstream,
            wire: Box::new(crate::wire::Upstream::new(upstream, timeout)),
            timeout,
            sent: AtomicU64::new(0),
        }
    }

    /// The resolver asked.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    fn request(name: &DnsName, rtype: RecordType) -> Result<DnsRequest, Failure> {
        let mut request = crate::wire::request(name, rtype, true)?;
        // RFC 6840 §5.7: setting AD in the query asks for AD in the answer, without DO.
        request.metadata.authentic_data = true;
        Ok(request)
    }

    /// Queries sent upstream so far.
    pub fn queries_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn exchange(&self, request: DnsRequest) -> Result<DnsResponse, NetError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.wire.exchange(request).await
    }
}

fn ad_status(response: &DnsResponse) -> Status {
    if response.metadata.authentic_data {
        Status::Secure
    } else {
        Status::Insecure
    }
}

impl Resolver for TrustAd {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        let request = match Self::request(name, rtype) {
            Ok(r) => r,
            Err(f) => return Lookup::failed(name.clone(), rtype, f),
        };
        let response = match tokio::time::timeout(self.timeout * 2, self.exchange(request)).await {
            Err(_) | Ok(Err(NetError::Timeout)) => {
                return Lookup::failed(name.clone(), rtype, Failure::Timeout);
            }
            Ok(Err(e)) => {
                return Lookup::failed(name.clone(), rtype, Failure::Network(e.to_string()));
            }
            Ok(Ok(response)) => response,
        };
        let status = ad_status(&response);
        // One AD bit covers the whole answer. When it is clear and CNAMEs were followed, ask
        // for each alias on its own: a secure CNAME into an insecure zone still makes the
        // expanded name the TLSA base domain (RFC 7672 §2.2.2), as Postfix does.
        let mut alias_status = HashMap::new();
        if status == Status::Insecure {
            for record in response
                .answers
                .iter()
                .filter(|r| r.record_type() == HType::CNAME)
            {
                let Some(alias) = dns_name(&record.name) else {
                    continue;
                };
                let own = match Self::request(&alias, RecordType::Cname) {
                    Ok(request) => match self.exchange(request).await {
                        Ok(r) => ad_status(&r),
                        Err(_) => Status::Indeterminate,
                    },
                    Err(_) => Status::Indeterminate,
                };
                alias_status.insert(record.name.clone(), own);
            }
        }
        build(
            name,
            rtype,
            response.metadata.response_code,
            &response.answers,
            |r| match r.record_type() {
                HType::CNAME => alias_status.get(&r.name).copied().unwrap_or(status),
                _ => status,
            },
            status,
        )
    }
}
