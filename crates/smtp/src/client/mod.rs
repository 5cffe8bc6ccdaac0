//! The sending side: SMTP client sessions with STARTTLS and DANE in the handshake
//! ([`session`], [`tls`]), policy levels ([`policy`]), the delivery decisions and loop
//! ([`deliver`]), one message to many next hops ([`dispatch`]), and the typed outcome of every
//! attempt ([`outcome`]).

pub mod deliver;
pub mod dispatch;
pub mod outcome;
pub mod policy;
pub mod session;
pub mod tls;
