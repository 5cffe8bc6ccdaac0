//! TXT lookups, which MTA-STS discovery needs (RFC 8461 §3.1) and the `dns` crate's
//! [`Resolver`](dns::Resolver) does not offer: a small trait of their own, for the caller to
//! implement over its resolver.
//!
//! DNSSEC is not required for MTA-STS (the policy is authenticated by PKIX), so secure and
//! insecure answers are both usable; bogus or indeterminate ones are failures, never data.

use std::future::Future;

use dns::{DnsName, Failure};

/// The answer to a TXT lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The TXT records at the name (DNSSEC secure or insecure), each the concatenation of its
    /// character-strings without separators (RFC 8461 §3.1, RFC 8460 §3).
    Records(Vec<Vec<u8>>),
    /// The name has no TXT records, or does not exist (a secure or insecure denial).
    NoRecords,
    /// No usable answer: a network failure, or data that did not validate (bogus).
    Failed(Failure),
}

/// A source of TXT lookups.
pub trait TxtResolver: Send + Sync {
    /// Looks up the TXT records of `name`, following CNAMEs. Never fails: a failure is
    /// [`TxtAnswer::Failed`].
    fn txt(&self, name: &DnsName) -> impl Future<Output = TxtAnswer> + Send;
}

impl<T: TxtResolver> TxtResolver for std::sync::Arc<T> {
    fn txt(&self, name: &DnsName) -> impl Future<Output = TxtAnswer> + Send {
        (**self).txt(name)
    }
}

impl<T: TxtResolver> TxtResolver for &T {
    fn txt(&self, name: &DnsName) -> impl Future<Output = TxtAnswer> + Send {
        (**self).txt(name)
    }
}
