//! The sender's TLS request for a message (RFC 8689, "SMTP Require TLS Option"), as both
//! sides see it: the `REQUIRETLS` parameter of MAIL FROM (§2) and the `TLS-Required: No`
//! header field (§3).
//!
//! * [`TlsRequest`] is the tag a message carries from the server that received it to the
//!   client that relays it (§4.1: the receiving MTA "MUST tag that message"); it travels with
//!   the [`Envelope`](crate::envelope::Envelope).
//! * [`tls_required_no`] reads the header field from a header section, strictly: a message is
//!   relaxed only by exactly one well-formed `TLS-Required: No`.
//! * [`requiretls_reply`] and [`encryption_needed_reply`] are the replies a relay gives in the
//!   server's stead when no path meets the request (§4.2.1: `5.7.30`, `5.7.10`).
//!
//! The REQUIRETLS parameter wins over the header field: "If the REQUIRETLS MAIL FROM
//! parameter is specified, the TLS-Required header field MUST be ignored" (§4.1); see
//! [`TlsRequest::from_message`].

use serde::{Deserialize, Serialize};

use crate::reply::Reply;

/// The name of the header field of RFC 8689 §3.
pub const TLS_REQUIRED: &str = "TLS-Required";

/// What the sender asked for the TLS of a message's onward transfer (RFC 8689).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsRequest {
    /// Nothing: the relay's and the recipient domain's TLS policies apply as configured.
    #[default]
    Default,
    /// `REQUIRETLS` on MAIL FROM (§2, §4.2.1): relay only over TLS to a server authenticated
    /// by DANE or PKIX whose name a DNSSEC-signed MX lookup or an MTA-STS policy vouches for,
    /// and which advertises REQUIRETLS after STARTTLS; never in plaintext.
    #[serde(rename = "requiretls")]
    Required,
    /// `TLS-Required: No` without REQUIRETLS (§3, §4.2.2): the recipient domain's DANE and
    /// MTA-STS policies are to be ignored; TLS stays opportunistic.
    #[serde(rename = "tls-required-no")]
    Optional,
}

impl TlsRequest {
    /// The tag of a received message (§4.1): `Required` for the REQUIRETLS parameter,
    /// whatever the header says; else `Optional` for a `TLS-Required: No` header field in
    /// `header` (the message's header section, or the whole message); else `Default`.
    pub fn from_message(requiretls: bool, header: &[u8]) -> Self {
        if requiretls {
            TlsRequest::Required
        } else if tls_required_no(header) {
            TlsRequest::Optional
        } else {
            TlsRequest::Default
        }
    }

    /// The name in logs and JSON: `requiretls`, `tls-required-no`, or `default`.
    pub fn name(self) -> &'static str {
        match self {
            TlsRequest::Default => "default",
            TlsRequest::Required => "requiretls",
            TlsRequest::Optional => "tls-required-no",
        }
    }
}

impl std::fmt::Display for TlsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the header section of `message` (up to the first empty line; CRLF or LF line
/// ends) carries `TLS-Required: No` (RFC 8689 §3: `"TLS-Required:" [FWS] "No" CRLF`, the
/// name and the value case-insensitive, folding allowed).
///
/// Strict on purpose, since the field weakens delivery: exactly one `TLS-Required` field, and
/// its unfolded value is `No` and nothing else. Two fields (even both `No`), another value,
/// or trailing text leave the message as it is.
pub fn tls_required_no(message: &[u8]) -> bool {
    let mut found: Option<Vec<u8>> = None;
    let mut count = 0usize;
    let mut in_field = false;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // A continuation line (RFC 5322 §2.2.3) of the field before it.
            if in_field && let Some(value) = found.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        in_field = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        // RFC 5322 §2.2 / §3.6.8: the name ends at the colon; whitespace before it is the
        // obsolete syntax, accepted here too.
        let name = line[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(TLS_REQUIRED.as_bytes()) {
            count += 1;
            in_field = true;
            found = Some(line[colon + 1..].to_vec());
        }
    }
    count == 1 && found.is_some_and(|value| value.trim_ascii().eq_ignore_ascii_case(b"No"))
}

/// The reply a relay gives in the server's stead when no host of the destination can take a
/// REQUIRETLS message (RFC 8689 §4.2.1: "REQUIRETLS not supported by server: 5.7.30
/// REQUIRETLS needed"), with `why` as its text: `550 5.7.30 …`.
pub fn requiretls_reply(why: &str) -> Reply {
    Reply::new(
        550,
        vec![format!(
            "5.7.30 REQUIRETLS support required: {why} (RFC 8689 §4.2.1)"
        )],
    )
}

/// The reply when no TLS session could be had for a REQUIRETLS message (RFC 8689 §4.2.1:
/// "Unable to establish TLS-protected SMTP session: 5.7.10 Encryption needed"): `550 5.7.10 …`.
pub fn encryption_needed_reply(why: &str) -> Reply {
    Reply::new(
        550,
        vec![format!("5.7.10 Encryption needed: {why} (RFC 8689 §4.2.1)")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_field_is_read_strictly() {
        for yes in [
            &b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n"[..],
            b"tls-required:no\n\nbody",
            b"TLS-REQUIRED:   nO  \r\n\r\n",
            b"From: a@x\r\nTLS-Required:\r\n No\r\nTo: b@y\r\n\r\n",
            b"TLS-Required : No\r\n\r\n",
            // No empty line: the whole message is the header section.
            b"TLS-Required: No",
        ] {
            assert!(tls_required_no(yes), "{:?}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b"Subject: x\r\n\r\nTLS-Required: No\r\n"[..],
            b"TLS-Required: Yes\r\n\r\n",
            b"TLS-Required: No, please\r\n\r\n",
            b"TLS-Required: No\r\nTLS-Required: No\r\n\r\n",
            b"TLS-Required: No\r\nTLS-Required: Yes\r\n\r\n",
            b"X-TLS-Required: No\r\n\r\n",
            b"TLS-Required-Not: No\r\n\r\n",
            b"TLS-Required: \r\n\r\n",
            b"TLS-Required: N\r\n o\r\n\r\n",
            b"",
            b"\r\nTLS-Required: No\r\n",
        ] {
            assert!(!tls_required_no(no), "{:?}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn requiretls_wins_over_the_header_field() {
        let relaxed = b"TLS-Required: No\r\n\r\nx\r\n";
        assert_eq!(
            TlsRequest::from_message(true, relaxed),
            TlsRequest::Required
        );
        assert_eq!(
            TlsRequest::from_message(false, relaxed),
            TlsRequest::Optional
        );
        assert_eq!(
            TlsRequest::from_message(false, b"Subject: x\r\n\r\n"),
            TlsRequest::Default
        );
    }

    #[test]
    fn replies_carry_the_rfc_8689_codes() {
        let r = requiretls_reply("mx.example.test does not advertise REQUIRETLS");
        assert_eq!(r.code(), 550);
        assert_eq!(
            r.enhanced().map(|e| e.to_string()).as_deref(),
            Some("5.7.30")
        );
        let r = encryption_needed_reply("no STARTTLS");
        assert_eq!(
            r.enhanced().map(|e| e.to_string()).as_deref(),
            Some("5.7.10")
        );
        assert_eq!(
            serde_json::to_string(&TlsRequest::Required).unwrap(),
            "\"requiretls\""
        );
        assert_eq!(
            serde_json::from_str::<TlsRequest>("\"tls-required-no\"").unwrap(),
            TlsRequest::Optional
        );
    }
}
