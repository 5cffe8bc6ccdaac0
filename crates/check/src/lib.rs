//! # danemta-check: DANE health reports
//!
//! What a domain owner runs before and after every change: the route (RFC 7672 §2.2), a
//! STARTTLS probe of every MX address, which TLSA records match what each presents, and
//! findings with the RFC behind each, summed up as `ok`, `warn` or `fail`. Probes are shared
//! between domains with the same MX host, so bulk scans cost one probe per host address.
//! [`rollover`] assesses a key rollover (RFC 7671 §8.1) from every authoritative server.
//! [`mta_sts`] reports MTA-STS (RFC 8461) next to DANE: the TXT record, the policy, whether
//! each MX host matches it and passes PKIX, and findings where the two disagree.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod mta_sts;
pub mod probe;
pub mod report;
pub mod rollover;

pub use mta_sts::{Pkix, PkixError, StsReport, StsStatus};
pub use probe::ProbeConfig;
pub use report::{DomainReport, Finding, Level, ProbeCache, check_domain};
