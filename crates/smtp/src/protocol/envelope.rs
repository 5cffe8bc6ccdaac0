//! The envelope of a transaction and our HELO name, checked before anything reaches the wire.
//!
//! Each of these values is written inside an SMTP command line (`MAIL FROM:<…>`,
//! `RCPT TO:<…>`, `EHLO …`). A CR or LF in one of them would end that line and start a command
//! of someone else's choosing (`a@x>\r\nRCPT TO:<victim@y` adds a recipient); a `>` or a space
//! would end the path early and add ESMTP parameters. The relay daemon fills these values from
//! the network, so the checks live here, in the constructors, and not in the command line: an
//! [`Envelope`] or a [`HeloName`] that exists is safe to write.
//!
//! The grammar is RFC 5321 §4.1.2 (with the UTF-8 of RFC 6531 §3.3 in mailboxes) and the
//! limits are those of RFC 5321 §4.5.3.1. Two choices go beyond the grammar: a space is
//! refused even inside a quoted local part (legal, but never needed and a classic parser
//! confusion), and so is every control character, C1 controls included.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::requiretls::TlsRequest;

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest reverse or forward path, in octets, the angle brackets included (RFC 5321
/// §4.5.3.1.3): a mailbox has at most 254.
pub const MAX_PATH: usize = 256;
/// Longest DNS label, in octets (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// How much of a refused value an error message repeats.
const SHOWN: usize = 80;

/// Which value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The reverse path (MAIL FROM).
    Sender,
    /// A forward path (RCPT TO).
    Recipient,
    /// Our name in EHLO/HELO.
    Helo,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Sender => "sender",
            Field::Recipient => "recipient",
            Field::Helo => "HELO name",
        })
    }
}

/// A sender, recipient or HELO name that cannot go into an SMTP command. The refused value is
/// repeated in `Debug` form (control characters escaped) and cut to 80 characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Nothing where a value is needed.
    #[error("the {field} is empty")]
    Empty {
        /// Which value.
        field: Field,
    },
    /// A control character (C0, DEL or C1): CR or LF would end the command line and start
    /// another one (RFC 5321 §2.3.8: lines end with CRLF, and nothing else may contain them).
    #[error(
        "{field} {value:?}: contains the control character {ch:?}, which could end the SMTP command and start another (RFC 5321 §2.3.8, §4.1.1)"
    )]
    Control {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
        /// The character.
        ch: char,
    },
    /// `<`, `>` or a space: the path would end early, and the rest be read as ESMTP
    /// parameters or a second argument (RFC 5321 §4.1.2).
    #[error(
        "{field} {value:?}: contains {ch:?}, which would end the path or the argument early (RFC 5321 §4.1.2)"
    )]
    Delimiter {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
        /// The character.
        ch: char,
    },
    /// Over an RFC 5321 §4.5.3.1 size limit.
    #[error(
        "{field} {value:?}: the {part} is {len} octets long; at most {max} are allowed ({rfc})"
    )]
    TooLong {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
        /// `local part`, `domain`, `label` or `path`.
        part: &'static str,
        /// Its length in octets.
        len: usize,
        /// The limit.
        max: usize,
        /// The rule.
        rfc: &'static str,
    },
    /// No `local-part@domain` shape.
    #[error("{field} {value:?}: not an address (local-part@domain, RFC 5321 §4.1.2)")]
    NotAnAddress {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
    },
    /// A local part that is neither a dot-string nor a quoted string.
    #[error("{field} {value:?}: bad local part: {why} (RFC 5321 §4.1.2)")]
    LocalPart {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A domain that is neither a domain name nor an address literal.
    #[error("{field} {value:?}: bad domain: {why} (RFC 5321 §4.1.2, §4.1.3)")]
    Domain {
        /// Which value.
        field: Field,
        /// The value, shortened.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A transaction needs at least one recipient (RFC 5321 §3.3).
    #[error("no recipient: a transaction needs at least one RCPT (RFC 5321 §3.3)")]
    NoRecipients,
}

/// The value as error messages repeat it.
fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN {
        value.to_owned()
    } else {
        value.chars().take(SHOWN).chain(['…']).collect()
    }
}

/// C0 controls (tab, CR and LF among them), DEL and the C1 controls.
fn is_control(ch: char) -> bool {
    ch.is_control()
}

/// The checks every value gets first: not empty, no control characters, no delimiters.
fn common(field: Field, value: &str) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::Empty { field });
    }
    if let Some(ch) = value.chars().find(|c| is_control(*c)) {
        return Err(EnvelopeError::Control {
            field,
            value: shown(value),
            ch,
        });
    }
    if let Some(ch) = value.chars().find(|c| matches!(c, '<' | '>' | ' ')) {
        return Err(EnvelopeError::Delimiter {
            field,
            value: shown(value),
            ch,
        });
    }
    Ok(())
}

/// RFC 5322 `atext`, extended by RFC 6531 §3.3 with UTF-8.
fn is_atext(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(ch) || !ch.is_ascii()
}

/// RFC 5321 `Local-part = Dot-string / Quoted-string` (UTF-8 allowed, RFC 6531 §3.3).
fn local_part(local: &str) -> Result<(), &'static str> {
    if let Some(inner) = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .filter(|_| local.len() >= 2)
    {
        let mut chars = inner.chars();
        while let Some(ch) = chars.next() {
            match ch {
                // quoted-pairSMTP = "\" %d32-126
                '\\' => match chars.next() {
                    Some(' '..='~') => {}
                    _ => return Err("a backslash must quote a printable character"),
                },
                '"' => return Err("an unescaped quote inside a quoted string"),
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126, and UTF-8.
                _ => {}
            }
        }
        return Ok(());
    }
    if local.is_empty() {
        return Err("it is empty");
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("a dot at the start or the end, or two dots in a row (quote it)");
        }
        if !atom.chars().all(is_atext) {
            return Err("a character that needs quoting, e.g. \" ( ) , : ; @ [ \\ ]");
        }
    }
    Ok(())
}

/// RFC 5321 `Domain`: LDH labels (RFC 6531 §3.3: or U-labels, when `utf8`), no trailing dot.
fn domain_name(domain: &str, utf8: bool) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("it is empty");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("an empty label (a dot at the start or the end, or two in a row)");
        }
        if label.len() > MAX_LABEL {
            return Err("a label longer than 63 octets (RFC 1035 §2.3.4)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with a hyphen");
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || (utf8 && !c.is_ascii());
        if !label.chars().all(ok) {
            return Err(if utf8 {
                "a label with a character other than letters, digits and hyphens"
            } else {
                "a label with a character other than ASCII letters, digits and hyphens"
            });
        }
    }
    Ok(())
}

/// RFC 5321 §4.1.3 address literals: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(text: &str) -> Option<Result<(), &'static str>> {
    let inner = text.strip_prefix('[')?;
    let Some(inner) = inner.strip_suffix(']') else {
        return Some(Err("an address literal without its closing bracket"));
    };
    let ok = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    Some(if ok {
        Ok(())
    } else {
        Err("an address literal that is neither [IPv4] nor [IPv6:address]")
    })
}

/// A domain or an address literal.
fn domain(field: Field, value: &str, domain: &str, utf8: bool) -> Result<(), EnvelopeError> {
    if domain.len() > MAX_DOMAIN {
        return Err(EnvelopeError::TooLong {
            field,
            value: shown(value),
            part: "domain",
            len: domain.len(),
            max: MAX_DOMAIN,
            rfc: "RFC 5321 §4.5.3.1.2",
        });
    }
    address_literal(domain)
        .unwrap_or_else(|| domain_name(domain, utf8))
        .map_err(|why| EnvelopeError::Domain {
            field,
            value: shown(value),
            why,
        })
}

/// Checks a mailbox (`local-part@domain`) for MAIL FROM or RCPT TO.
pub fn check_mailbox(field: Field, value: &str) -> Result<(), EnvelopeError> {
    common(field, value)?;
    if value.len() + 2 > MAX_PATH {
        return Err(EnvelopeError::TooLong {
            field,
            value: shown(value),
            part: "path",
            len: value.len() + 2,
            max: MAX_PATH,
            rfc: "RFC 5321 §4.5.3.1.3",
        });
    }
    let Some((local, dom)) = value
        .rsplit_once('@')
        .filter(|(l, d)| !l.is_empty() && !d.is_empty())
    else {
        return Err(EnvelopeError::NotAnAddress {
            field,
            value: shown(value),
        });
    };
    if local.len() > MAX_LOCAL_PART {
        return Err(EnvelopeError::TooLong {
            field,
            value: shown(value),
            part: "local part",
            len: local.len(),
            max: MAX_LOCAL_PART,
            rfc: "RFC 5321 §4.5.3.1.1",
        });
    }
    local_part(local).map_err(|why| EnvelopeError::LocalPart {
        field,
        value: shown(value),
        why,
    })?;
    domain(field, value, dom, true)
}

/// The envelope of one transaction: the reverse path and the forward paths (RFC 5321 §3.3),
/// each checked (see the [module documentation](self)). Recipients are kept in order.
///
/// It also carries the sender's TLS request for the message (RFC 8689 §4.1: the tag a
/// receiving MTA puts on it), [`TlsRequest::Default`] unless set with
/// [`Envelope::with_tls_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    from: String,
    to: Vec<String>,
    tls: TlsRequest,
}

impl Envelope {
    /// Checks `from` (`""` or `"<>"` for the null reverse path of RFC 5321 §4.5.5) and every
    /// recipient in `to` (at least one).
    pub fn new<S: Into<String>>(
        from: impl Into<String>,
        to: impl IntoIterator<Item = S>,
    ) -> Result<Self, EnvelopeError> {
        let mut from = from.into();
        if from == "<>" {
            from.clear();
        }
        if !from.is_empty() {
            check_mailbox(Field::Sender, &from)?;
        }
        let to: Vec<String> = to.into_iter().map(Into::into).collect();
        if to.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        for rcpt in &to {
            check_mailbox(Field::Recipient, rcpt)?;
        }
        Ok(Self {
            from,
            to,
            tls: TlsRequest::Default,
        })
    }

    /// The same envelope with the sender's TLS request `tls` (RFC 8689): `REQUIRETLS` is
    /// then sent on MAIL FROM, and delivery keeps to the paths RFC 8689 §4.2 allows.
    #[must_use]
    pub fn with_tls_request(mut self, tls: TlsRequest) -> Self {
        self.tls = tls;
        self
    }

    /// The sender's TLS request (RFC 8689 §4.1).
    pub fn tls_request(&self) -> TlsRequest {
        self.tls
    }

    /// Whether the message is sent with `REQUIRETLS` on MAIL FROM (RFC 8689 §2).
    pub fn requires_tls(&self) -> bool {
        self.tls == TlsRequest::Required
    }

    /// The reverse path without angle brackets; empty for the null sender.
    pub fn sender(&self) -> &str {
        &self.from
    }

    /// The forward paths, in order.
    pub fn recipients(&self) -> &[String] {
        &self.to
    }
}

/// Our name in EHLO/HELO: a domain name in ASCII or an address literal (RFC 5321 §4.1.1.1,
/// §4.1.3). Non-ASCII names are refused: EHLO comes before the server says whether it takes
/// UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeloName(String);

impl HeloName {
    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, EnvelopeError> {
        let name = name.into();
        common(Field::Helo, &name)?;
        domain(Field::Helo, &name, &name, false)?;
        Ok(Self(name))
    }

    /// The name as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HeloName {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, EnvelopeError> {
        Self::new(s)
    }
}

impl fmt::Display for HeloName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: &str, to: &[&str]) -> Result<Envelope, EnvelopeError> {
        Envelope::new(from, to.iter().copied())
    }

    #[test]
    fn crlf_injection_through_the_sender_is_refused() {
        let e = env("a@x.test>\r\nRCPT TO:<victim@y.test", &["b@y.test"]).unwrap_err();
        assert!(
            matches!(
                e,
                EnvelopeError::Control {
                    field: Field::Sender,
                    ch: '\r',
                    ..
                }
            ),
            "{e}"
        );
        // The message repeats the value with the control characters escaped.
        assert!(!e.to_string().contains('\r') && e.to_string().contains("\\r\\n"));
    }

    #[test]
    fn every_control_character_is_refused_anywhere() {
        for ch in ('\0'..=' ').chain(['\x7f', '\u{80}', '\u{85}', '\u{9b}', '\u{9f}']) {
            if ch == ' ' {
                continue;
            }
            for (i, value) in [format!("a{ch}@x.test"), format!("a@x{ch}.test")]
                .iter()
                .enumerate()
            {
                let e = env(value, &["b@y.test"]).unwrap_err();
                assert!(
                    matches!(e, EnvelopeError::Control { ch: c, .. } if c == ch),
                    "{i} {ch:?}: {e}"
                );
                let e = env("", &[value]).unwrap_err();
                assert!(
                    matches!(
                        e,
                        EnvelopeError::Control {
                            field: Field::Recipient,
                            ..
                        }
                    ),
                    "{ch:?}: {e}"
                );
                assert!(HeloName::new(value.replace('@', "")).is_err());
            }
        }
    }

    #[test]
    fn delimiters_that_end_the_path_early_are_refused() {
        for bad in [
            "a@x.test> SIZE=1",
            "a@x.test>",
            "<a@x.test",
            "a b@x.test",
            "\"a b\"@x.test",
            "a@x.test NOTIFY=NEVER",
        ] {
            assert!(
                matches!(
                    env(bad, &["b@y.test"]),
                    Err(EnvelopeError::Delimiter { .. })
                ),
                "{bad}"
            );
            assert!(
                matches!(env("", &[bad]), Err(EnvelopeError::Delimiter { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc_5321_size_limits() {
        let local = |n: usize| "l".repeat(n);
        // A domain of exactly `n` octets, in labels of 49 octets (the last one 50 at most).
        let dom = |n: usize| {
            let mut d: String = "ddddddddddddddddddddddddddddddddddddddddddddddddd."
                .repeat(n / 50 + 1)
                .chars()
                .take(n)
                .collect();
            if d.ends_with('.') {
                d.pop();
                d.push('d');
            }
            assert_eq!(d.len(), n);
            d
        };
        assert!(env(&format!("{}@x.test", local(64)), &["b@y.test"]).is_ok());
        assert!(matches!(
            env(&format!("{}@x.test", local(65)), &["b@y.test"]),
            Err(EnvelopeError::TooLong {
                part: "local part",
                ..
            })
        ));
        // 1 + 1 + 252 = 254 octets, 256 with the angle brackets: the longest path that fits.
        assert!(env("", &[&format!("l@{}", dom(252))]).is_ok());
        assert!(matches!(
            env("", &[&format!("ll@{}", dom(253))]),
            Err(EnvelopeError::TooLong { part: "path", .. })
        ));
        assert!(HeloName::new(dom(255)).is_ok());
        assert!(matches!(
            HeloName::new(dom(256)),
            Err(EnvelopeError::TooLong { part: "domain", .. })
        ));
        assert!(matches!(
            HeloName::new(format!("{}.test", "a".repeat(64))),
            Err(EnvelopeError::Domain { .. })
        ));
        // Error messages stay short, whatever the input.
        let e = env("", &[&format!("{}@x.test", local(10_000))]).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn valid_envelopes() {
        for ok in [
            "a@x.test",
            "first.last+tag@sub.x-y.test",
            "!#$%&'*+-/=?^_`{|}~@x.test",
            "\"a.b\"@x.test",
            "\"a@b\"@x.test",
            "\"a\\\"b\"@x.test",
            "jösé@bücher.test",
            "a@[192.0.2.1]",
            "a@[IPv6:2001:db8::1]",
        ] {
            let e = env(ok, &[ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!((e.sender(), e.recipients()), (ok, &[ok.to_owned()][..]));
        }
        // The null reverse path, written either way.
        assert_eq!(env("", &["b@y.test"]).unwrap().sender(), "");
        assert_eq!(env("<>", &["b@y.test"]).unwrap().sender(), "");
    }

    #[test]
    fn invalid_addresses() {
        for bad in [
            "no-at-sign",
            "@x.test",
            "a@",
            ".a@x.test",
            "a.@x.test",
            "a..b@x.test",
            "a(b)@x.test",
            "a@x..test",
            "a@x.test.",
            "a@-x.test",
            "a@x_y.test",
            "a@[192.0.2.300]",
            "a@[IPv6:nonsense]",
            "a@[192.0.2.1",
            "\"a\"b\"@x.test",
        ] {
            assert!(env(bad, &["b@y.test"]).is_err(), "{bad}");
            assert!(env("", &[bad]).is_err(), "{bad}");
        }
        assert_eq!(
            env("a@x.test", &[] as &[&str]),
            Err(EnvelopeError::NoRecipients)
        );
        assert_eq!(
            env("a@x.test", &[""]),
            Err(EnvelopeError::Empty {
                field: Field::Recipient
            })
        );
    }

    #[test]
    fn helo_names_are_domains_or_address_literals() {
        for ok in [
            "localhost",
            "client.test",
            "mx-1.example.org",
            "[192.0.2.1]",
            "[IPv6:::1]",
        ] {
            assert_eq!(HeloName::new(ok).unwrap().as_str(), ok);
            assert_eq!(ok.parse::<HeloName>().unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "client.test\r\nRSET",
            "client.test\nRSET",
            "two words",
            "a@b.test",
            "bücher.test",
            "client.test.",
            "under_score.test",
            "<client.test>",
            "[not an address]",
            "192.0.2.1:25",
        ] {
            assert!(HeloName::new(bad).is_err(), "{bad:?}");
        }
    }
}
