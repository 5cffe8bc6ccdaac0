//! TXT lookups, which MTA-STS discovery needs (RFC 8461 §3.1): a small trait, so that tests
//! can answer without DNS, and [`ResolverTxt`], its implementation over a `dns`
//! [`Resolver`](dns::Resolver).
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

/// TXT lookups through a `dns` [`Resolver`](dns::Resolver): secure and insecure answers are
/// data; a bogus one is [`TxtAnswer::Failed`] (a forged record must not become a policy, nor
/// a forged denial a reason to forget one).
pub struct ResolverTxt<R>(pub std::sync::Arc<R>);

impl<R> Clone for ResolverTxt<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: dns::Resolver> TxtResolver for ResolverTxt<R> {
    async fn txt(&self, name: &DnsName) -> TxtAnswer {
        let lookup = self.0.lookup(name, dns::RecordType::Txt).await;
        match lookup.require(dns::Status::USABLE) {
            Ok(dns::Outcome::Records(records)) => TxtAnswer::Records(
                records
                    .iter()
                    .filter_map(|r| match r {
                        dns::Record::Txt(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            Ok(dns::Outcome::NoData | dns::Outcome::NxDomain) => TxtAnswer::NoRecords,
            Ok(dns::Outcome::Failed(f)) => TxtAnswer::Failed(f.clone()),
            Err(status) => TxtAnswer::Failed(lookup.failure().cloned().unwrap_or_else(|| {
                Failure::Bogus(format!("TXT {name}: the answer is {status:?}"))
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dns::{Outcome, Record, RecordType, Status, testing};

    use super::*;

    /// Answers every TXT question with one status and outcome.
    struct Fixed(Status, Outcome);

    impl dns::Resolver for Fixed {
        async fn lookup(&self, name: &DnsName, rtype: RecordType) -> dns::Lookup {
            testing::lookup(name.clone(), rtype, self.0, self.1.clone(), vec![], 60)
        }
    }

    async fn txt(status: Status, outcome: Outcome) -> TxtAnswer {
        let name: DnsName = "_mta-sts.example.com".parse().unwrap();
        ResolverTxt(Arc::new(Fixed(status, outcome)))
            .txt(&name)
            .await
    }

    #[tokio::test]
    async fn secure_and_insecure_answers_are_data_bogus_ones_are_failures() {
        let records = Outcome::Records(vec![Record::Txt(b"v=STSv1; id=1".to_vec())]);
        for status in [Status::Secure, Status::Insecure] {
            assert_eq!(
                txt(status, records.clone()).await,
                TxtAnswer::Records(vec![b"v=STSv1; id=1".to_vec()])
            );
            assert_eq!(txt(status, Outcome::NxDomain).await, TxtAnswer::NoRecords);
            assert_eq!(txt(status, Outcome::NoData).await, TxtAnswer::NoRecords);
        }
        // A forged record or a forged denial is neither data nor "no record".
        for outcome in [records, Outcome::NxDomain] {
            assert!(matches!(
                txt(Status::Bogus, outcome).await,
                TxtAnswer::Failed(Failure::Bogus(_))
            ));
        }
    }
}
