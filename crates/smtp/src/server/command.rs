//! SMTP commands as a server reads them (RFC 5321 §4.1), parsed strictly and without I/O.
//!
//! A command line arrives without its CRLF. Verbs are case-insensitive (RFC 5321 §2.4).
//! Paths are checked by the crate's envelope rules ([`crate::envelope::check_mailbox`]) and
//! ESMTP parameters by the RFC that defines each: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
//! (RFC 6531), RET and ENVID, NOTIFY and ORCPT (RFC 3461), REQUIRETLS (RFC 8689 §2). An unknown or repeated parameter is
//! an error, not something to ignore (RFC 5321 §4.1.1.11: `555`).

use crate::envelope::{EnvelopeError, Field, HeloName, check_mailbox};

/// RFC 3461 §4.4: ENVID is at most 100 characters.
pub const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2: ORCPT is at most 500 characters.
pub const MAX_ORCPT: usize = 500;

/// `BODY=` of MAIL (RFC 6152 §2, RFC 1652).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    /// `7BIT`, or no BODY parameter.
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// `RET=` of MAIL: what a failure DSN returns (RFC 3461 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    /// The whole message.
    Full,
    /// The headers only.
    Hdrs,
}

/// `NOTIFY=` of RCPT (RFC 3461 §4.1): `NEVER`, or any of the three others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub fn is_never(&self) -> bool {
        !(self.success || self.failure || self.delay)
    }
}

/// `MAIL FROM:<reverse-path> [params]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse path without brackets; empty for the null sender (RFC 5321 §4.5.5).
    pub sender: String,
    /// `SIZE=` (RFC 1870 §5).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152).
    pub body: Body,
    /// `SMTPUTF8` (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded (RFC 3461 §4.4).
    pub envid: Option<String>,
    /// `REQUIRETLS` (RFC 8689 §2: a keyword without a value). Parsed wherever it appears;
    /// the session accepts it only over TLS and when it advertised the extension.
    pub requiretls: bool,
}

impl MailFrom {
    /// Whether any ESMTP parameter was given (RFC 5321 §4.1.2 `Mail-parameters`).
    pub fn has_parameters(&self) -> bool {
        self.size.is_some()
            || self.body != Body::SevenBit
            || self.smtputf8
            || self.ret.is_some()
            || self.envid.is_some()
            || self.requiretls
    }
}

/// `RCPT TO:<forward-path> [params]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptTo {
    /// The forward path without brackets. `<Postmaster>` without a domain (RFC 5321
    /// §4.1.1.3) is returned as `postmaster` and completed by the session.
    pub recipient: String,
    /// `NOTIFY=` (RFC 3461 §4.1).
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;addr`, with the address xtext-decoded (RFC 3461 §4.2).
    pub orcpt: Option<(String, String)>,
}

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(HeloName),
    /// `HELO domain`.
    Helo(HeloName),
    /// `MAIL FROM:` (§4.1.1.2).
    Mail(MailFrom),
    /// `RCPT TO:` (§4.1.1.3).
    Rcpt(RcptTo),
    /// `DATA` (§4.1.1.4).
    Data,
    /// `RSET` (§4.1.1.5).
    Rset,
    /// `VRFY` (§4.1.1.6).
    Vrfy,
    /// `EXPN` (§4.1.1.7).
    Expn,
    /// `HELP` (§4.1.1.8).
    Help,
    /// `NOOP` (§4.1.1.9).
    Noop,
    /// `QUIT` (§4.1.1.10).
    Quit,
    /// `STARTTLS` (RFC 3207 §4).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// The mechanism, upper-case.
        mechanism: String,
        /// The initial response, as sent (base64 or `=`).
        initial: Option<String>,
    },
    /// `BDAT` (RFC 3030): known, not offered.
    Bdat,
}

/// Why a command line was not understood; each maps to one reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No such command (RFC 5321 §4.2.4: `500 5.5.2`).
    #[error("command not recognized")]
    Unknown,
    /// Bad arguments (RFC 5321 §4.2.2: `501 5.5.4`).
    #[error("syntax error in arguments: {0}")]
    Syntax(&'static str),
    /// An address the envelope rules refuse (`553 5.1.7` for MAIL, `553 5.1.3` for RCPT,
    /// RFC 3463 §3.2).
    #[error("{0}")]
    Address(EnvelopeError),
    /// A source route (`<@a,@b:user@c>`): RFC 5321 §4.1.2 says to accept and ignore it; we
    /// refuse it, as the relay never honours one (PRODUCT.md, relay rules).
    #[error("source routes are not accepted")]
    SourceRoute,
    /// An ESMTP parameter we do not know (RFC 5321 §4.1.1.11: `555 5.5.4`).
    #[error("unrecognized parameter {0}")]
    UnknownParameter(String),
    /// A known parameter with a bad value or given twice (`501 5.5.4`).
    #[error("bad parameter {0}")]
    BadParameter(&'static str),
}

/// Parses one command line (without CRLF). The line is ASCII except inside paths and
/// parameters, where UTF-8 is allowed (RFC 6531).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("not UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |c: Command| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("no arguments allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => helo_name(rest).map(Command::Ehlo),
        "HELO" => helo_name(rest).map(Command::Helo),
        "MAIL" => mail(rest).map(Command::Mail),
        "RCPT" => rcpt(rest).map(Command::Rcpt),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        // NOOP and HELP may carry an argument, which is ignored (§4.1.1.8, §4.1.1.9).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if !rest.trim().is_empty() => Ok(Command::Vrfy),
        "EXPN" if !rest.trim().is_empty() => Ok(Command::Expn),
        "VRFY" | "EXPN" => Err(ParseError::Syntax("an argument is required")),
        "AUTH" => {
            let mut words = rest.split(' ');
            let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
            let initial = words.next().map(str::to_owned);
            if mechanism.is_empty() || words.next().is_some() {
                return Err(ParseError::Syntax("AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "BDAT" => Ok(Command::Bdat),
        _ => Err(ParseError::Unknown),
    }
}

fn helo_name(arg: &str) -> Result<HeloName, ParseError> {
    // RFC 5321 §4.1.1.1: exactly one argument; anything after it is tolerated by many servers,
    // but a second word is a syntax error here.
    if arg.is_empty() || arg.contains(' ') {
        return Err(ParseError::Syntax(
            "EHLO/HELO need one domain or address literal",
        ));
    }
    HeloName::new(arg).map_err(|_| ParseError::Syntax("not a domain or address literal"))
}

/// Splits `FROM:<path> params` after the keyword: the path inside the brackets and the
/// parameters. A space after the colon is tolerated (common, RFC 5321 §4.1.2 has none).
fn path<'a>(rest: &'a str, keyword: &str) -> Result<(&'a str, &'a str), ParseError> {
    let head = rest
        .get(..keyword.len())
        .filter(|h| h.eq_ignore_ascii_case(keyword))
        .ok_or(ParseError::Syntax(
            "expected FROM:<address> or TO:<address>",
        ))?;
    let after = rest[head.len()..].trim_start_matches(' ');
    let inner = after
        .strip_prefix('<')
        .ok_or(ParseError::Syntax("the address must be in angle brackets"))?;
    let end = inner
        .find('>')
        .ok_or(ParseError::Syntax("no closing angle bracket"))?;
    let (addr, params) = (&inner[..end], &inner[end + 1..]);
    if !(params.is_empty() || params.starts_with(' ')) {
        return Err(ParseError::Syntax("text after the closing angle bracket"));
    }
    if addr.starts_with('@') {
        return Err(ParseError::SourceRoute);
    }
    Ok((addr, params.trim_start_matches(' ')))
}

/// `keyword=value` pairs (RFC 5321 §4.1.2 `esmtp-param`), the keyword upper-cased.
fn params(text: &str) -> Result<Vec<(String, Option<&str>)>, ParseError> {
    let mut seen: Vec<(String, Option<&str>)> = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ParseError::Syntax("malformed parameter"));
        }
        let key = key.to_ascii_uppercase();
        if seen.iter().any(|(k, _)| *k == key) {
            return Err(ParseError::BadParameter("given twice"));
        }
        seen.push((key, value));
    }
    Ok(seen)
}

/// RFC 3461 §4: `xtext`: printable ASCII except `+` and `=`, and `+XX` hex escapes.
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'!'..=b'~' if bytes[i] != b'=' => {
                out.push(bytes[i]);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn mail(rest: &str) -> Result<MailFrom, ParseError> {
    let (sender, text) = path(rest, "FROM:")?;
    if !sender.is_empty() {
        check_mailbox(Field::Sender, sender).map_err(ParseError::Address)?;
    }
    let mut mail = MailFrom {
        sender: sender.to_owned(),
        ..MailFrom::default()
    };
    for (key, value) in params(text)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                mail.size = Some(
                    (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| v.parse().ok())
                        .flatten()
                        .ok_or(ParseError::BadParameter("SIZE"))?,
                )
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mail.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                mail.body = Body::EightBitMime
            }
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            ("REQUIRETLS", None) => mail.requiretls = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => mail.ret = Some(Ret::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => mail.ret = Some(Ret::Hdrs),
            ("ENVID", Some(v)) => {
                mail.envid = Some(
                    xtext_decode(v)
                        .filter(|d| !d.is_empty() && v.len() <= MAX_ENVID)
                        .ok_or(ParseError::BadParameter("ENVID"))?,
                )
            }
            ("SIZE", _) => return Err(ParseError::BadParameter("SIZE")),
            ("BODY", _) => return Err(ParseError::BadParameter("BODY")),
            ("SMTPUTF8", _) => return Err(ParseError::BadParameter("SMTPUTF8")),
            ("REQUIRETLS", _) => return Err(ParseError::BadParameter("REQUIRETLS")),
            ("RET", _) => return Err(ParseError::BadParameter("RET")),
            ("ENVID", _) => return Err(ParseError::BadParameter("ENVID")),
            _ => return Err(ParseError::UnknownParameter(key)),
        }
    }
    Ok(mail)
}

fn rcpt(rest: &str) -> Result<RcptTo, ParseError> {
    let (recipient, text) = path(rest, "TO:")?;
    let recipient = if recipient.eq_ignore_ascii_case("postmaster") {
        "postmaster".to_owned()
    } else {
        if recipient.is_empty() {
            return Err(ParseError::Syntax("an empty forward path"));
        }
        check_mailbox(Field::Recipient, recipient).map_err(ParseError::Address)?;
        recipient.to_owned()
    };
    let mut rcpt = RcptTo {
        recipient,
        notify: None,
        orcpt: None,
    };
    for (key, value) in params(text)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => rcpt.notify = Some(notify(v)?),
            ("ORCPT", Some(v)) => {
                let (kind, addr) = v
                    .split_once(';')
                    .filter(|(k, a)| {
                        !k.is_empty()
                            && !a.is_empty()
                            && v.len() <= MAX_ORCPT
                            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
                    .ok_or(ParseError::BadParameter("ORCPT"))?;
                let addr = xtext_decode(addr).ok_or(ParseError::BadParameter("ORCPT"))?;
                rcpt.orcpt = Some((kind.to_ascii_lowercase(), addr));
            }
            ("NOTIFY", None) => return Err(ParseError::BadParameter("NOTIFY")),
            ("ORCPT", None) => return Err(ParseError::BadParameter("ORCPT")),
            _ => return Err(ParseError::UnknownParameter(key)),
        }
    }
    Ok(rcpt)
}

/// RFC 3461 §4.1: `NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY`.
fn notify(v: &str) -> Result<Notify, ParseError> {
    let bad = ParseError::BadParameter("NOTIFY");
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut n = Notify::default();
    for word in v.split(',') {
        let flag = match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut n.success,
            "FAILURE" => &mut n.failure,
            "DELAY" => &mut n.delay,
            _ => return Err(bad),
        };
        if *flag {
            return Err(bad);
        }
        *flag = true;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, ParseError> {
        parse(line.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive_and_strict_about_arguments() {
        assert_eq!(p("quit"), Ok(Command::Quit));
        assert_eq!(p("Data"), Ok(Command::Data));
        assert_eq!(p("NOOP anything"), Ok(Command::Noop));
        assert_eq!(p("HELP me"), Ok(Command::Help));
        assert_eq!(p("VRFY someone"), Ok(Command::Vrfy));
        assert!(matches!(p("VRFY"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("DATA now"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("STARTTLS x"), Err(ParseError::Syntax(_))));
        assert!(matches!(p("RSET x"), Err(ParseError::Syntax(_))));
        assert_eq!(p("FOO"), Err(ParseError::Unknown));
        assert_eq!(p(""), Err(ParseError::Unknown));
        assert_eq!(p("GET / HTTP/1.1"), Err(ParseError::Unknown));
        assert!(matches!(parse(b"\xff\xfe"), Err(ParseError::Syntax(_))));
        assert_eq!(
            p("auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            })
        );
    }

    #[test]
    fn ehlo_names() {
        assert!(
            matches!(p("EHLO client.test"), Ok(Command::Ehlo(n)) if n.as_str() == "client.test")
        );
        assert!(matches!(p("HELO [192.0.2.1]"), Ok(Command::Helo(_))));
        for bad in [
            "EHLO",
            "EHLO ",
            "EHLO a b",
            "EHLO a_b.test",
            "EHLO 192.0.2.1:25",
        ] {
            assert!(matches!(p(bad), Err(ParseError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn mail_from_and_its_parameters() {
        let Ok(Command::Mail(m)) =
            p("MAIL FROM:<a@x.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bx")
        else {
            panic!()
        };
        assert_eq!(
            m,
            MailFrom {
                sender: "a@x.test".into(),
                size: Some(1000),
                body: Body::EightBitMime,
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("QQ+x".into()),
                requiretls: false,
            }
        );
        // RFC 8689 §2: a keyword, case-insensitive, without a value, once.
        let Ok(Command::Mail(m)) = p("MAIL FROM:<a@x.test> requiretls") else {
            panic!()
        };
        assert!(m.requiretls && m.has_parameters());
        assert!(matches!(p("mail from:<> REQUIRETLS"), Ok(Command::Mail(m)) if m.requiretls));
        assert!(!matches!(p("MAIL FROM:<a@x.test>"), Ok(Command::Mail(m)) if m.requiretls));
        assert!(matches!(p("mail from:<>"), Ok(Command::Mail(m)) if m.sender.is_empty()));
        assert!(matches!(p("MAIL FROM: <a@x.test>"), Ok(Command::Mail(_))));
        for (bad, want) in [
            ("MAIL FROM:a@x.test", "syntax"),
            ("MAIL TO:<a@x.test>", "syntax"),
            ("MAIL FROM:<a@x.test", "syntax"),
            ("MAIL FROM:<a@x.test>SIZE=1", "syntax"),
            ("MAIL FROM:<a@x.test> SIZE=x", "bad"),
            ("MAIL FROM:<a@x.test> SIZE=99999999999999999999999", "bad"),
            ("MAIL FROM:<a@x.test> SIZE", "bad"),
            ("MAIL FROM:<a@x.test> BODY=BINARYMIME", "bad"),
            ("MAIL FROM:<a@x.test> SMTPUTF8=yes", "bad"),
            ("MAIL FROM:<a@x.test> RET=ALL", "bad"),
            ("MAIL FROM:<a@x.test> ENVID=a=b", "bad"),
            ("MAIL FROM:<a@x.test> SIZE=1 SIZE=2", "bad"),
            ("MAIL FROM:<a@x.test> REQUIRETLS=yes", "bad"),
            ("MAIL FROM:<a@x.test> REQUIRETLS=", "bad"),
            ("MAIL FROM:<a@x.test> REQUIRETLS REQUIRETLS", "bad"),
            ("MAIL FROM:<a@x.test> REQUIRE-TLS", "unknown"),
            ("MAIL FROM:<a@x.test> X-FOO=1", "unknown"),
            ("MAIL FROM:<a@x.test> AUTH=<>", "unknown"),
            ("MAIL FROM:<@relay.test:a@x.test>", "route"),
            ("MAIL FROM:<a b@x.test>", "address"),
            ("MAIL FROM:<no-domain>", "address"),
            ("MAIL FROM:<a@x..test>", "address"),
        ] {
            let got = match p(bad) {
                Err(ParseError::Syntax(_)) => "syntax",
                Err(ParseError::BadParameter(_)) => "bad",
                Err(ParseError::UnknownParameter(_)) => "unknown",
                Err(ParseError::SourceRoute) => "route",
                Err(ParseError::Address(_)) => "address",
                other => panic!("{bad}: {other:?}"),
            };
            assert_eq!(got, want, "{bad}");
        }
        let long = format!("MAIL FROM:<a@x.test> ENVID={}", "e".repeat(101));
        assert!(matches!(p(&long), Err(ParseError::BadParameter("ENVID"))));
    }

    #[test]
    fn rcpt_to_and_its_parameters() {
        let Ok(Command::Rcpt(r)) =
            p("RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40y.test")
        else {
            panic!()
        };
        assert_eq!(r.recipient, "b@y.test");
        assert_eq!(
            r.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(r.orcpt, Some(("rfc822".into(), "b@y.test".into())));
        assert!(
            matches!(p("RCPT TO:<b@y.test> NOTIFY=NEVER"), Ok(Command::Rcpt(r)) if r.notify.unwrap().is_never())
        );
        assert!(
            matches!(p("RCPT TO:<Postmaster>"), Ok(Command::Rcpt(r)) if r.recipient == "postmaster")
        );
        for bad in [
            "RCPT TO:<>",
            "RCPT TO:<b@y.test> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<b@y.test> NOTIFY=SUCCESS,SUCCESS",
            "RCPT TO:<b@y.test> NOTIFY=",
            "RCPT TO:<b@y.test> ORCPT=b@y.test",
            "RCPT TO:<b@y.test> ORCPT=rfc822;a+zz",
            "RCPT TO:<b@y.test> SIZE=1",
            "RCPT TO:<@a.test,@b.test:b@y.test>",
            "RCPT TO:<b@y.test\r\nRSET>",
            "RCPT FROM:<b@y.test>",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb+3D").as_deref(), Some("a+b="));
        for bad in ["a b", "a=b", "+2", "+zz", "+2b", "é"] {
            assert_eq!(xtext_decode(bad), None, "{bad}");
        }
    }
}
