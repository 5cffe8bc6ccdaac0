//! The sending side: SMTP client sessions with STARTTLS and DANE in the handshake
//! ([`session`], [`tls`]), TLS session resumption keyed by everything authentication depends
//! on ([`resume`]), policy levels ([`policy`]), the delivery decisions and loop
//! ([`deliver`]), one message to many next hops ([`dispatch`]), and the typed outcome of every
//! attempt ([`outcome`]).

pub mod deliver;
pub mod dispatch;
pub mod outcome;
pub mod policy;
pub mod resume;
pub mod session;
pub mod tls;
