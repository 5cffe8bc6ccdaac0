//! # danemta-smtp: SMTP with opportunistic DANE TLS, both sides
//!
//! Three parts: [`protocol`] (replies, EHLO, envelope, message: what both sides share),
//! [`client`] (sessions, TLS modes, delivery, outcomes) and [`server`] (the listener session
//! the relay runs: strict parsing with limits, smuggling-proof DATA, STARTTLS with the chain
//! chosen by SNI). The client's modules are also at the crate root by their short names.
//!
//! The SMTP client (RFC 5321, STARTTLS per RFC 3207) and the delivery logic above it: for each
//! candidate host of a route (from `danemta-dns`), the TLS policy level and the host's DANE
//! state decide how the connection must be secured ([`tls::Mode`]); DANE authentication
//! happens inside the rustls handshake. Every attempt is recorded with the evidence and the
//! rule that decided it ([`outcome`]), so logs, `--json` and the relay's queue are views of
//! the same value (typed, serializable both ways).
//!
//! The decisions are pure functions in [`mod@deliver`], and the async loop only performs them:
//! how to connect to a host (policy level × DANE state), the security label of a finished
//! handshake ([`deliver::security`]), the rule behind an attempt, and what follows it
//! ([`deliver::after_attempt`]: a plaintext retry, the next address or host, or each
//! recipient's fate).
//!
//! A session carries several transactions, RSET between them (RFC 5321 §4.1.1.5), and
//! streams bodies in blocks from any reader ([`Body`], dot-stuffed on the fly by
//! [`Stuffer`]); [`deliver_many`] sends a batch of messages to one next hop over as few
//! sessions as possible, and [`deliver_batch`] hands back the idle [`Connection`] for a
//! connection cache, reused only under the route and policy it was authenticated under.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod protocol;
pub mod server;

// The modules by their short names, as before the split (and as other crates use them).
pub use client::{deliver, dispatch, outcome, policy, resume, session, tls};
pub use protocol::{ehlo, envelope, message, reply, requiretls};

pub use deliver::{Batch, Connection, Outgoing, deliver_batch, deliver_many};
pub use deliver::{Config, Limits, deliver};
pub use dispatch::{Gate, Via, dispatch, dnssec_gate, next_hops};
pub use envelope::{Envelope, EnvelopeError, HeloName};
pub use message::{Body, BodySource, Stuffer};
pub use message::{Message, MessageError};
pub use outcome::{
    Attempt, Delivery, Failure, Fate, Mechanism, Outcome, RemoteMta, Response, Rule, Security,
    ServerReply,
};
pub use policy::{Level, fingerprint_records};
pub use requiretls::TlsRequest;
pub use resume::SessionCache;
pub use session::{Stage, Timeouts};
