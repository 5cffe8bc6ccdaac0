//! The SMTP protocol as both sides speak it: replies and their RFC 3463 status codes
//! ([`reply`]), EHLO capabilities ([`ehlo`]), envelope addresses and HELO names checked
//! against RFC 5321 ([`envelope`]), and message bodies in their wire form ([`message`]).

pub mod ehlo;
pub mod envelope;
pub mod message;
pub mod reply;
