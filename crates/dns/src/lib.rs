//! # danemta-dns: DNSSEC-aware lookups and RFC 7672 route discovery
//!
//! Every lookup returns its DNSSEC [`Status`] with its data ([`Lookup`]); nothing above this
//! crate can read a record without it. The route module turns lookups into the ordered list of
//! hosts a message may be delivered to, with the DANE state of each (RFC 7672 §2.2) — as a pure
//! function of the lookup results, so every rule is testable without a network.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The code blocks of README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod answer;
pub mod authoritative;
pub mod backend;
pub mod discover;
mod dnssec;
pub mod doctor;
pub mod lookup;
pub mod name;
pub mod resolver;
pub mod route;
pub mod status;
pub mod tls;
pub mod trust_ad;
pub mod validating;
mod wire;

pub use backend::{Backend, ResolverSpec};
pub use discover::{Discovery, discover, discover_with};
#[cfg(feature = "testing")]
pub use lookup::testing;
pub use lookup::{CnameLink, Failure, Lookup, Mx, Outcome, Record, RecordType, Srv};
pub use name::{DnsName, DnsNameError};
pub use resolver::{Cached, Resolver};
pub use route::{Candidate, DaneState, DaneTrust, Limits, NextHop, NoMail, Route};
pub use status::Status;
pub use tls::{DaneTls, DaneTlsError};
pub use trust_ad::TrustAd;
pub use validating::{SetupError, Validating};
