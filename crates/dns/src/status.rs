//! The DNSSEC security status of a lookup (RFC 4035 §4.3, RFC 7672 §2.1.1).

use std::fmt;

use serde::Serialize;

/// How far an answer can be trusted. Every lookup carries one.
///
/// RFC 4035 §4.3 defines the four states; RFC 7672 §2.1.1 requires an SMTP client to treat
/// *indeterminate* like *bogus*: neither may be used, and neither may be downgraded to
/// "no DANE". The difference is only in what is reported: *bogus* means the data failed
/// validation (a possible attack), *indeterminate* that validation could not be completed
/// (a timeout, a server failure), so the message is deferred and retried later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[must_use]
pub enum Status {
    /// Validated from a trust anchor.
    Secure,
    /// Provably unsigned (an insecure delegation on the way).
    Insecure,
    /// Should have validated but did not.
    Bogus,
    /// Could not be determined (the lookup or a key fetch failed).
    Indeterminate,
}

impl Status {
    /// The statuses whose data may be used at all: validated, or proved unsigned. Bogus and
    /// indeterminate data must not be, nor their denials believed (checklist rule 1).
    pub const USABLE: &'static [Status] = &[Status::Secure, Status::Insecure];
    /// Only validated data: what may authenticate a peer or name a DANE host.
    pub const SECURE: &'static [Status] = &[Status::Secure];
    /// Every status: for reports that show what was found, whatever it is worth.
    pub const ANY: &'static [Status] = &[
        Status::Secure,
        Status::Insecure,
        Status::Bogus,
        Status::Indeterminate,
    ];

    /// Secure: the data may authenticate (RFC 7672 §2.1.1).
    pub fn is_secure(self) -> bool {
        self == Status::Secure
    }

    /// Bogus or indeterminate: the data must not be used, nor its absence assumed
    /// (PRODUCT.md checklist rule 1).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Bogus | Status::Indeterminate)
    }

    /// The status of a chain of answers (e.g. CNAME links): its weakest link. A failure
    /// dominates (bogus over indeterminate), then insecure, then secure.
    pub fn and(self, other: Status) -> Status {
        fn rank(s: Status) -> u8 {
            match s {
                Status::Secure => 0,
                Status::Insecure => 1,
                Status::Indeterminate => 2,
                Status::Bogus => 3,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Secure => "secure",
            Status::Insecure => "insecure",
            Status::Bogus => "bogus",
            Status::Indeterminate => "indeterminate",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;

    #[test]
    fn a_chain_is_as_strong_as_its_weakest_link() {
        assert_eq!(Secure.and(Secure), Secure);
        assert_eq!(Secure.and(Insecure), Insecure);
        assert_eq!(Insecure.and(Secure), Insecure);
        assert_eq!(Insecure.and(Indeterminate), Indeterminate);
        assert_eq!(Indeterminate.and(Bogus), Bogus);
        assert_eq!(Bogus.and(Secure), Bogus);
    }

    #[test]
    fn indeterminate_is_handled_as_a_failure() {
        assert!(Bogus.is_failure() && Indeterminate.is_failure());
        assert!(!Secure.is_failure() && !Insecure.is_failure());
        assert!(Secure.is_secure() && !Insecure.is_secure());
    }
}
