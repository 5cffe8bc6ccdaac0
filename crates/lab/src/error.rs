//! The lab's error type.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong while building, starting or querying a lab.
///
/// Startup errors carry the tail of the relevant server logs, so a failing test shows why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A program the lab runs is not installed.
    #[error(
        "the DNSSEC test lab needs {missing}, which is not installed; \
         install the Debian package(s): apt-get install {packages}"
    )]
    MissingPrograms {
        /// The missing programs, comma-separated.
        missing: String,
        /// The Debian packages that provide them, space-separated.
        packages: String,
    },

    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the lab was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program (ldns-keygen, ldns-signzone, …) failed.
    #[error("{program} failed ({status}) while {context}:\n{output}")]
    Tool {
        /// The program.
        program: String,
        /// What it was asked to do.
        context: String,
        /// Its exit status.
        status: String,
        /// Its standard error and output.
        output: String,
    },

    /// A [`ZoneSpec`](crate::ZoneSpec) is invalid (bad name, duplicate, tamper target missing…).
    #[error("invalid zone {zone}: {reason}")]
    Zone {
        /// The zone name as given.
        zone: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No lab address block was free (or port 53 cannot be bound at all).
    #[error("no free lab address block (127.53.N.0/24, port 53): {detail}")]
    NoFreeBlock {
        /// Why the blocks were rejected.
        detail: String,
    },

    /// A server process exited while the lab was starting.
    #[error("{server} exited during lab startup ({status})\n{logs}")]
    ServerExited {
        /// Which server.
        server: String,
        /// Its exit status.
        status: String,
        /// The tail of its logs.
        logs: String,
    },

    /// A server did not answer in time.
    #[error("{server} did not become ready within {timeout:?} (last: {last})\n{logs}")]
    Timeout {
        /// Which server.
        server: String,
        /// The startup timeout.
        timeout: Duration,
        /// The last probe failure.
        last: String,
        /// The tail of the server logs.
        logs: String,
    },

    /// The servers run but the hierarchy does not resolve/validate as it must.
    #[error("lab sanity check failed: {detail}\n{logs}")]
    SanityCheck {
        /// What was wrong.
        detail: String,
        /// The tail of the server logs.
        logs: String,
    },

    /// A Postfix [`Receiver`](crate::Receiver) has an invalid spec, or did not start (its log
    /// tail is attached).
    #[error("SMTP receiver {addr}: {detail}\n{log}")]
    Receiver {
        /// The receiver's address.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
        /// The tail of its Postfix log and output ("" when it never ran).
        log: String,
    },

    /// An attack proxy ([`StripStartTls`](crate::StripStartTls), [`Mitm`](crate::Mitm)) could
    /// not be started.
    #[error("attack proxy on {listen}: {detail}")]
    Proxy {
        /// The address it was to listen on.
        listen: SocketAddr,
        /// What went wrong.
        detail: String,
    },

    /// No free SMTP peer address could be claimed (see [`claim_peer_addr`](crate::claim_peer_addr)).
    #[error("no free SMTP peer address (127.0.40.1-127.0.49.254, port {port}): {detail}")]
    NoFreePeerAddr {
        /// The port asked for.
        port: u16,
        /// Why the addresses were rejected.
        detail: String,
    },

    /// Another lab receiver or proxy (of this or another test process) has this address.
    #[error(
        "SMTP peer address {addr} is taken by another lab receiver or proxy (in this or another \
         test process); pick another, or let the lab claim one (an unspecified IP, 0.0.0.0)"
    )]
    PeerAddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },

    /// A test certificate ([`pki`](crate::pki)) could not be made or used.
    #[error("test certificate: {detail}")]
    Certificate {
        /// What went wrong.
        detail: String,
    },

    /// A DNS query of [`dns::query`](crate::dns::query) failed (timeout, malformed reply…).
    #[error("DNS query {what} to {server}: {detail}")]
    Query {
        /// The question, e.g. `secure.test. MX`.
        what: String,
        /// The server asked.
        server: SocketAddr,
        /// What went wrong.
        detail: String,
    },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn zone(zone: impl Into<String>, reason: impl Into<String>) -> Self {
        LabError::Zone {
            zone: zone.into(),
            reason: reason.into(),
        }
    }
}
