//! # danemta-relay: the relay daemon's library
//!
//! What `danemta serve` is made of, above the SMTP client and server of `danemta-smtp`:
//! the configuration ([`config`]: the TOML contract of PRODUCT.md and the embedded defaults),
//! the durable queue ([`queue`]: the `Store` trait and its embedded spool + SQLite
//! implementation) and the accepting side ([`listener`]: relay permission, `Received:`, `250`
//! only once the store has the message). The scheduler and the daemon's wiring come next
//! (issue 10).
//! The MTA-STS policy cache ([`sts_cache`], RFC 8461 §5.1) lives in the queue store, as do
//! the TLS-RPT session counters ([`tlsrpt`], RFC 8460), from which daily reports are sent.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certs;
pub mod config;
pub mod daemon;
pub mod dsn;
pub mod listener;
pub mod metrics;
pub mod own_tlsa;
pub mod queue;
pub mod scheduler;
pub mod sts_cache;
pub mod tlsrpt;
pub mod users;
pub mod wake;
