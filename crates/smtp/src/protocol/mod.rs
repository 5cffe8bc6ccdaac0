//! The SMTP protocol as both sides speak it: replies and their RFC 3463 status codes
//! ([`reply`]), EHLO capabilities ([`ehlo`]), envelope addresses and HELO names checked
//! against RFC 5321 ([`envelope`]), message bodies in their wire form ([`message`]), and the
//! sender's TLS request of RFC 8689, REQUIRETLS and `TLS-Required: No` ([`requiretls`]).

pub mod ehlo;
pub mod envelope;
pub mod message;
pub mod reply;
pub mod requiretls;
