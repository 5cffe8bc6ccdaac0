//! # danemta-sts: MTA-STS and TLS-RPT discovery
//!
//! This crate owns **MTA-STS** (RFC 8461) for a sending MTA, and the **TLS-RPT** DNS record
//! (RFC 8460 §3): everything from the DNS names a domain publishes to the [`Policy`] that
//! says which MX hosts may receive its mail and whether TLS with PKIX is mandatory. It sits
//! between the `dns` crate (lookups) and the `smtp` crate (which applies a policy to a
//! delivery); it does no SMTP and applies no policy itself.
//!
//! | module | holds | RFC |
//! |---|---|---|
//! | [`record`] | the `_mta-sts` and `_smtp._tls` TXT records | 8461 §3.1, 8460 §3 |
//! | [`policy`] | the policy file's parser and [`Policy`] | 8461 §3.2 |
//! | [`mx`] | `mx` patterns and MX host matching | 8461 §3.2, §4.1 |
//! | [`trust`] | the PKIX trust anchors for the policy fetch | 8461 §3.3 |
//! | [`fetch`] | the HTTPS fetch of the policy file | 8461 §3.3 |
//! | [`txt`] | the TXT lookup interface discovery needs | 8461 §3.1 |
//! | [`cache`] | the policy cache interface and an in-memory cache | 8461 §5.1 |
//! | [`discover`] | discovery: TXT record, cache and fetch together, downgrade-safe | 8461 §3.3, §5.1, §10.2 |
//! | [`report`] | TLS-RPT reports: JSON, gzip, file name, mail, HTTPS upload | 8460 §4, §5 |
//!
//! Parsers take bytes and never panic (fuzzed: `fuzz/fuzz_targets/sts_policy.rs`); every
//! failure is a typed error that says what is wrong, and discovery failures map onto the
//! TLS-RPT result types (`sts-policy-fetch-error`, `sts-policy-invalid`,
//! `sts-webpki-invalid`, [`ResultType`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use sts::{Discovery, Fetcher, MemoryStore, Sts, TxtAnswer, TxtResolver};
//! # struct MyTxt;
//! # impl TxtResolver for MyTxt {
//! #     async fn txt(&self, _: &dns::DnsName) -> TxtAnswer { TxtAnswer::NoRecords }
//! # }
//! # async fn run(resolver: Arc<dns::Backend>) -> Result<(), Box<dyn std::error::Error>> {
//! let roots = sts::trust::roots(None)?; // system roots (plus a --ca-file)
//! let sts = Sts::new(MyTxt, sts::ResolverAddresses(resolver), MemoryStore::new(), Fetcher::new(roots)?);
//! let domain: dns::DnsName = "example.com".parse()?;
//! match sts.policy_for(&domain, SystemTime::now()).await? {
//!     Discovery::Policy { policy, .. } => {
//!         let allowed = policy.matches_mx("mx1.example.com"); // RFC 8461 §4.1
//!         println!("mode {}, mx1 allowed: {allowed}", policy.mode());
//!     }
//!     Discovery::NoPolicy(why) => println!("no MTA-STS: {why}"),
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod discover;
pub mod fetch;
pub mod mx;
pub mod policy;
pub mod record;
pub mod report;
pub mod trust;
pub mod txt;

pub use cache::{CachedPolicy, MemoryStore, PolicyStore};
pub use discover::{Discovery, DiscoveryError, Source, Sts};
pub use fetch::{
    AddressError, AddressSource, FetchError, Fetcher, FixedAddresses, ResolverAddresses,
};
pub use mx::{MxPattern, MxPatternError};
pub use policy::{MAX_AGE_LIMIT, Mode, Policy, PolicyError};
pub use record::{RecordError, ReportUri, StsId, StsRecord, TlsRptRecord};
pub use report::{PolicyType, Report, ReportDay, ResultType, Uploader};
pub use txt::{ResolverTxt, TxtAnswer, TxtResolver};
