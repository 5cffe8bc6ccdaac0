//! # danemta-dane: the DANE verification core
//!
//! Pure DANE logic, no I/O: TLSA records ([`Tlsa`], RFC 6698 §2), which of them a client may
//! use ([`Profile`], RFC 7672 §3.1.3 and the digest agility of RFC 7671 §9), whether they
//! match a certificate, and the verdict on a whole presented chain ([`Authenticator`],
//! RFC 7671 §5, RFC 7672 §3). [`DaneServerVerifier`] plugs the verdict into a rustls
//! handshake, so DANE is decided *inside* the handshake for exactly one connection, and its
//! [`Verified`] proof is released only after the server's handshake signature verified.
//!
//! ```
//! use dane::{Authenticator, ReferenceName, Tlsa};
//! let rrset: Vec<Tlsa> = vec!["3 1 1 0000000000000000000000000000000000000000000000000000000000000000".parse().unwrap()];
//! let names: Vec<ReferenceName> = vec!["mx.example.com".parse().unwrap()];
//! let auth = Authenticator::smtp(&rrset, names);
//! assert!(auth.has_usable_records());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The code blocks of README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod cert;
pub mod matching;
pub mod name;
pub mod record;
pub mod verifier;
pub mod verify;

#[cfg(test)]
mod test_pki;

pub use matching::Profile;
pub use name::{NameError, ReferenceName};
pub use record::{Field, Matching, Selector, Tlsa, TlsaError, Usage};
pub use verifier::DaneServerVerifier;
pub use verify::{AnchorSource, Authenticator, PathProblem, Verified, VerifyError, rfc3339};

/// Re-exported so callers name the same pki types this crate uses.
pub use rustls::pki_types;
