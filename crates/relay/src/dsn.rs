//! Delivery status notifications (RFC 3464): the bounce, delay and success reports the relay
//! sends from the null sender `<>` to a message's envelope sender.
//!
//! Pure functions, no I/O: [`wanted`] says whether a recipient's `NOTIFY` (RFC 3461 §4.1) asks
//! for a report of an [`Action`], and [`build`] makes the report, a complete RFC 5322 message
//! with CRLF line ends, ready to be queued. Its structure (RFC 6522 `multipart/report`):
//!
//! 1. `text/plain`: a human explanation in the style of Postfix's bounce daemon;
//! 2. `message/delivery-status` (RFC 3464 §2): the per-message and per-recipient fields;
//! 3. `text/rfc822-headers` (RFC 6522 §4) with the original's header section, or
//!    `message/rfc822` with the whole original when `RET=FULL` asked for it (RFC 3461 §4.3)
//!    and the original did not carry REQUIRETLS (RFC 8689 §5: "If a REQUIRETLS message is
//!    bounced, the server MUST behave as if RET=HDRS was present"). Such a DSN is itself
//!    queued with REQUIRETLS (the scheduler's business).
//!
//! # Hostile input
//!
//! Reply texts come from remote servers, the returned message from anyone: nothing of either
//! reaches the output unchecked. Control characters of texts (CR and LF included) become
//! spaces; the returned message gets CRLF line ends, loses its NULs and has lines longer than
//! 998 octets broken (RFC 5322 §2.1.1); the MIME boundary is checked against every part. The
//! output has no bare CR or LF, so a downstream server sees the same message boundaries as we
//! do (the listener's SMTP smuggling rule, applied to our own mail).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use smtp::outcome::{RecipientOutcome, Response};
use smtp::reply::EnhancedStatus;
use smtp::requiretls::TlsRequest;
use smtp::server::Ret;

use crate::queue::{DsnParams, Timestamp};

/// The largest original returned whole (`RET=FULL`): a larger one is returned as its headers,
/// and the text says so.
pub const MAX_RETURNED_MESSAGE: usize = 10 * 1024 * 1024;

/// The largest header section returned; a longer one is cut at a line end (Postfix's
/// `header_size_limit` is 100 KiB).
pub const MAX_RETURNED_HEADERS: usize = 256 * 1024;

/// Where header-like lines of our own are folded (RFC 5322 §2.1.1 "SHOULD" limit).
const FOLD_AT: usize = 78;

/// The hard line limit of RFC 5322 §2.1.1 and RFC 5321 §4.5.3.1.6, without the CRLF.
const MAX_LINE: usize = 998;

/// The longest unbroken word of a folded line: a longer one is cut (at a character boundary),
/// so that a continuation line (one space, then the word) stays within [`MAX_LINE`].
const MAX_WORD: usize = 900;

/// Why a recipient is reported: the `Action` field of RFC 3464 §2.3.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The message could not be delivered (a permanent failure, or deferred past its lifetime).
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Delivered to a server that took responsibility for it and offered DSN.
    Delivered,
    /// Passed on to a server that did not offer the DSN extension (RFC 3461 §5.2.2).
    Relayed,
}

impl Action {
    /// The field value: `failed`, `delayed`, `delivered` or `relayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// The status class this action implies when a reply gives none (RFC 3463 §3.1).
    fn class(self) -> u8 {
        match self {
            Action::Failed => 5,
            Action::Delayed => 4,
            Action::Delivered | Action::Relayed => 2,
        }
    }

    /// Orders the kinds of report: failures first, then delays, then successes.
    fn rank(self) -> u8 {
        match self {
            Action::Failed => 0,
            Action::Delayed => 1,
            Action::Delivered | Action::Relayed => 2,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a DSN reports about one message (RFC 3464 §2.2) and its recipients (§2.3).
#[derive(Clone, Debug)]
pub struct Report<'a> {
    /// Our host name (`[server] hostname`): `Reporting-MTA: dns; NAME`, the `From:` domain and
    /// the `Message-ID:` domain. Letters, digits, dots and hyphens only.
    pub reporting_mta: &'a str,
    /// The message's queue id: `X-Danemta-Queue-ID:` (as Postfix's `X-Postfix-Queue-ID:`).
    /// Letters and digits only.
    pub queue_id: &'a str,
    /// When the message arrived (Unix seconds): `Arrival-Date:`.
    pub arrival: Timestamp,
    /// The original envelope sender, to which the DSN goes; never empty (no DSN
    /// to the null sender, RFC 3461 §6.1).
    pub sender: &'a str,
    /// The message's DSN parameters: `RET`, `ENVID`, and per recipient `NOTIFY` and `ORCPT`.
    pub dsn: &'a DsnParams,
    /// The recipients reported on; those whose `NOTIFY` does not ask for their action
    /// ([`wanted`]) are left out.
    pub recipients: Vec<Reported<'a>>,
    /// The original message (header section and body).
    pub original: &'a [u8],
    /// Now (Unix seconds): `Date:` and `Last-Attempt-Date:`.
    pub now: Timestamp,
}

/// One recipient of a [`Report`].
#[derive(Clone, Debug)]
pub struct Reported<'a> {
    /// Its address and what decided it: a typed SMTP reply (with the remote MTA), or our own
    /// reason.
    pub outcome: &'a RecipientOutcome,
    /// What is reported.
    pub action: Action,
    /// Deferred past the message's lifetime: `Status: 4.4.7` (RFC 3463 §3.5, "delivery time
    /// expired") unless the last reply gave a more precise 4.x.x or 5.x.x, and the text says
    /// "delivery time expired".
    pub expired: bool,
}

/// Why no DSN was built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// The envelope sender is the null sender: a DSN is never sent to it (RFC 3461 §6.1,
    /// RFC 5321 §4.5.5), lest two MTAs bounce bounces at each other.
    #[error("no delivery status notification to the null sender (RFC 3461 §6.1)")]
    NullSender,
    /// The envelope sender cannot go into a `To:` field (control characters, angle brackets).
    #[error("the envelope sender is not a usable address for a delivery status notification")]
    InvalidSender,
    /// The reporting MTA's name is not a host name.
    #[error("the reporting MTA name is not a host name")]
    InvalidReportingMta,
    /// The queue id is not letters and digits.
    #[error("the queue id is not letters and digits")]
    InvalidQueueId,
    /// No recipient is left to report on (none given, or `NOTIFY` asked for none of them).
    #[error("no recipient to report on")]
    NothingToReport,
    /// Every MIME boundary tried occurs in the content (a crafted message; practically never).
    #[error("no MIME boundary found that the content does not contain")]
    Boundary,
}

/// Whether a DSN is owed for `address` and `action`, given its `NOTIFY` (RFC 3461 §4.1):
/// `NEVER`, none; no `NOTIFY`, failures only (§4.1 allows delay reports too, at the MTA's
/// choice: we send none); otherwise `FAILURE` for [`Action::Failed`], `DELAY` for
/// [`Action::Delayed`], `SUCCESS` for [`Action::Delivered`] and [`Action::Relayed`] (§5.2.2).
pub fn wanted(dsn: &DsnParams, address: &str, action: Action) -> bool {
    match dsn.recipient(address).and_then(|r| r.notify) {
        None => action == Action::Failed,
        Some(notify) => match action {
            Action::Failed => notify.failure,
            Action::Delayed => notify.delay,
            Action::Delivered | Action::Relayed => notify.success,
        },
    }
}

/// Builds the DSN for `report` (RFC 3464, in the RFC 6522 `multipart/report` container): the
/// whole message, CRLF line ends, to be sent from `<>` to `report.sender`.
///
/// Recipients whose `NOTIFY` does not ask for their action are left out ([`wanted`]). The
/// original is returned whole only when `RET=FULL` was given, the report has a failure
/// (RFC 3461 §4.3: a report without one returns the headers only) and the original is at most
/// [`MAX_RETURNED_MESSAGE`] octets; otherwise its header section is.
///
/// # Errors
///
/// [`DsnError::NullSender`] for an empty sender, [`DsnError::NothingToReport`] when no
/// recipient is left; the other variants for names that cannot go into the message.
pub fn build(report: &Report<'_>) -> Result<Vec<u8>, DsnError> {
    if report.sender.is_empty() {
        return Err(DsnError::NullSender);
    }
    if report
        .sender
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>')
    {
        return Err(DsnError::InvalidSender);
    }
    if !is_host_name(report.reporting_mta) {
        return Err(DsnError::InvalidReportingMta);
    }
    if report.queue_id.is_empty()
        || report.queue_id.len() > 64
        || !report.queue_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(DsnError::InvalidQueueId);
    }
    let mut recipients: Vec<&Reported<'_>> = report
        .recipients
        .iter()
        .filter(|r| wanted(report.dsn, &r.outcome.address, r.action))
        .collect();
    if recipients.is_empty() {
        return Err(DsnError::NothingToReport);
    }
    // Failures first, then delays, then successes; stable, so each group keeps its order.
    recipients.sort_by_key(|r| r.action.rank());
    let worst = recipients
        .iter()
        .map(|r| r.action)
        .min_by_key(|a| a.rank())
        .unwrap_or(Action::Failed);

    let returned = Returned::of(report, worst == Action::Failed);
    let text = human_text(report, &recipients, worst, &returned);
    let status = delivery_status(report, &recipients);
    let boundary = boundary(report, &[text.as_bytes(), &status, returned.content()])?;

    let text_part = MimePart::new(
        ContentType::new("text/plain").attribute("charset", charset(text.as_bytes())),
        BodyPart::Binary(text.as_bytes().into()),
    )
    .header("Content-Description", Raw::new("Notification"))
    .transfer_encoding(transfer_encoding(text.as_bytes()));
    let status_part = MimePart::new(
        ContentType::new("message/delivery-status"),
        BodyPart::Binary(status.as_slice().into()),
    )
    .header("Content-Description", Raw::new("Delivery report"))
    .transfer_encoding("7bit");
    let returned_part = MimePart::new(
        ContentType::new(returned.content_type()),
        BodyPart::Binary(returned.content().into()),
    )
    .header("Content-Description", Raw::new(returned.description()))
    .transfer_encoding(transfer_encoding(returned.content()));

    let body = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary),
        vec![text_part, status_part, returned_part],
    );
    let message = MessageBuilder::new()
        .from(Address::new_address(
            Some("Mail Delivery System"),
            format!("MAILER-DAEMON@{}", report.reporting_mta),
        ))
        .to(Address::new_address(None::<&str>, report.sender))
        .subject(Text::new(subject(worst)))
        .date(Date::new(report.now))
        .message_id(MessageId::new(message_id(report)))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("MIME-Version", Raw::new("1.0"))
        .body(body);
    let mut out = Vec::with_capacity(text.len() + status.len() + returned.content().len() + 1024);
    message.serialize(&mut out);
    Ok(out)
}

/// The `Subject:` of a report whose most serious action is `worst` (Postfix's wording).
fn subject(worst: Action) -> &'static str {
    match worst {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Delivered | Action::Relayed => "Successful Mail Delivery Report",
    }
}

/// A `Message-ID:` unique to this report: the queue id and time make it unique across
/// messages and nodes, a process counter across reports on one message in the same second.
fn message_id(report: &Report<'_>) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.{}.{n}.dsn@{}",
        report.now, report.queue_id, report.reporting_mta
    )
}

/// A host name as RFC 1123 §2.1 writes it: letters, digits, hyphens, dots; at most 253 octets.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The part of the original that is returned (RFC 3462/6522 §4, RFC 3461 §4.3).
struct Returned {
    /// Whole (`message/rfc822`) or the header section (`text/rfc822-headers`).
    full: bool,
    /// The content, made safe ([`clean_lines`]).
    content: Vec<u8>,
    /// Why less than asked for is returned, for the text.
    note: Option<String>,
}

impl Returned {
    /// What `report` returns: the whole original for `RET=FULL` on a report with a failure
    /// (`failure`), unless larger than [`MAX_RETURNED_MESSAGE`]; the header section otherwise.
    fn of(report: &Report<'_>, failure: bool) -> Self {
        let original = report.original;
        let full_asked = failure && report.dsn.ret == Some(Ret::Full);
        // RFC 8689 §5: RET=FULL is disregarded for a REQUIRETLS message; its body must not
        // travel a path that may be weaker than the one its sender required.
        let requiretls = report.dsn.tls_request == TlsRequest::Required;
        if full_asked && requiretls {
            return Self {
                full: false,
                content: clean_lines(Self::headers(original).0),
                note: Some(
                    "The message required TLS (REQUIRETLS, RFC 8689 §5): only its header \
                     section is returned, whatever RET asked for."
                        .to_owned(),
                ),
            };
        }
        if full_asked && original.len() <= MAX_RETURNED_MESSAGE {
            return Self {
                full: true,
                content: clean_lines(original),
                note: None,
            };
        }
        let mut note = full_asked.then(|| {
            format!(
                "The message was too large to be returned in full ({} octets, the limit is \
                 {MAX_RETURNED_MESSAGE}): only its header section is attached.",
                original.len()
            )
        });
        let (headers, cut) = Self::headers(original);
        if let Some(cut) = cut {
            note = Some(cut);
        }
        Self {
            full: false,
            content: clean_lines(headers),
            note,
        }
    }

    /// The header section of `original`, cut at a line end to [`MAX_RETURNED_HEADERS`], and
    /// the note that says so when it was cut.
    fn headers(original: &[u8]) -> (&[u8], Option<String>) {
        let mut headers = header_section(original);
        if headers.len() <= MAX_RETURNED_HEADERS {
            return (headers, None);
        }
        let cut = headers.get(..MAX_RETURNED_HEADERS).unwrap_or(headers);
        headers = match cut.iter().rposition(|&b| b == b'\n') {
            Some(end) => cut.get(..=end).unwrap_or(cut),
            None => cut,
        };
        let note = format!(
            "The message's header section was too large to be returned in full: only its \
             first {} octets are attached.",
            headers.len()
        );
        (headers, Some(note))
    }

    fn content(&self) -> &[u8] {
        &self.content
    }

    fn content_type(&self) -> &'static str {
        if self.full {
            "message/rfc822"
        } else {
            "text/rfc822-headers"
        }
    }

    fn description(&self) -> &'static str {
        if self.full {
            "Undelivered Message"
        } else {
            "Undelivered Message Headers"
        }
    }
}

/// The header section of `message` (RFC 5322 §2.1): everything before the first empty line,
/// with the last header line's line end; all of it when there is no empty line.
fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if matches!(line, b"\n" | b"\r\n") {
            return message.get(..start).unwrap_or(message);
        }
        start += line.len();
    }
    message
}

/// `content` made safe to embed (RFC 5322 §2.1.1, RFC 2045 §2.8): every line end CRLF (a bare
/// CR or LF becomes one), no NUL, lines longer than [`MAX_LINE`] octets broken with CRLF and a
/// space (as Postfix's `smtp_line_length_limit` does, which leaves header fields folded), and
/// a final CRLF.
fn clean_lines(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 2);
    let mut column = 0;
    let mut bytes = content.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                if bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                column = 0;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                column = 0;
            }
            0 => {}
            _ => {
                if column == MAX_LINE {
                    out.extend_from_slice(b"\r\n ");
                    column = 1;
                }
                out.push(b);
                column += 1;
            }
        }
    }
    if column > 0 {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `text` as one line: control characters (CR, LF, TAB, DEL, C1) and Unicode line separators
/// become spaces, runs of spaces one, no space at either end. Remote reply texts go through
/// this before they are written anywhere.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Appends `line` (already [`clean`]) folded (RFC 5322 §2.2.3): broken at spaces before
/// [`FOLD_AT`] columns where it can be, each continuation line starting with `indent` (white
/// space, so that it folds a header-like field), words longer than [`MAX_WORD`] cut; CRLF at
/// the end. No line is longer than [`MAX_LINE`].
fn push_folded(out: &mut String, line: &str, indent: &str) {
    let mut column = 0;
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        for piece in chunks(word, MAX_WORD) {
            if column > 0 && column + 1 + piece.len() > FOLD_AT {
                out.push_str("\r\n");
                out.push_str(indent);
                column = indent.len();
            } else if column > 0 {
                out.push(' ');
                column += 1;
            }
            out.push_str(piece);
            column += piece.len();
        }
    }
    out.push_str("\r\n");
}

/// `s` in pieces of at most `max` octets, cut at character boundaries.
fn chunks(mut s: &str, max: usize) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        if s.is_empty() {
            return None;
        }
        let mut end = s.len().min(max);
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            end = s.chars().next().map_or(s.len(), char::len_utf8);
        }
        let (piece, rest) = s.split_at(end);
        s = rest;
        Some(piece)
    })
}

/// An RFC 3464 §2.1.1 `text` value that must stay 7-bit (`ENVID`): printable US-ASCII and
/// spaces kept, anything else written as xtext `+XX` (RFC 3461 §4), as is `+` itself when
/// anything is.
fn seven_bit(value: &str) -> String {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'+' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// `type; address` for `Original-Recipient` and `Final-Recipient` (RFC 3464 §2.3.1, §2.3.2).
/// An address that is not printable US-ASCII is written as type `utf-8` with its other
/// characters as `\x{HEX}` (RFC 6533 §3 `utf-8-addr-xtext`), since `message/delivery-status`
/// is 7-bit.
fn address_field(addr_type: &str, address: &str) -> String {
    let addr_type: String = addr_type
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let addr_type = if addr_type.is_empty() {
        "unknown"
    } else {
        &addr_type
    };
    if address.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return format!("{addr_type}; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if matches!(c, '\u{21}'..='\u{7e}') && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// The `Status` of a recipient (RFC 3464 §2.3.4, codes of RFC 3463).
///
/// The reply's enhanced status when it agrees with the reply code's class, else the class of
/// the reply code (`5xx` → `5.0.0`, `4xx` → `4.0.0`, `2xx` → `2.0.0`), else (our own reason)
/// the class of the action. A recipient `expired` gets `4.4.7` (RFC 3463 §3.5, "delivery time
/// expired") unless the reply's enhanced status says more than `X.0.0`.
fn status(reply: &Response, action: Action, expired: bool) -> EnhancedStatus {
    let (code_class, enhanced) = match reply {
        Response::Smtp(r) => {
            let class = u8::try_from(r.code / 100)
                .ok()
                .filter(|c| matches!(c, 2 | 4 | 5));
            let enhanced = r.enhanced.filter(|e| {
                matches!(e.class, 2 | 4 | 5) && class.is_none_or(|class| class == e.class)
            });
            (class, enhanced)
        }
        Response::Local(_) => (None, None),
    };
    if expired {
        return enhanced
            .filter(|e| matches!(e.class, 4 | 5) && (e.subject, e.detail) != (0, 0))
            .unwrap_or(EnhancedStatus::new(4, 4, 7));
    }
    enhanced.unwrap_or_else(|| EnhancedStatus::new(code_class.unwrap_or(action.class()), 0, 0))
}

/// One recipient's reason for the text: the server's reply with its host, or our own reason.
fn reason(reported: &Reported<'_>) -> String {
    let text = match &reported.outcome.reply {
        Response::Smtp(reply) => match (&reply.mta, reported.action) {
            (Some(mta), Action::Delivered | Action::Relayed) => {
                format!("delivery via {}[{}]: {reply}", mta.host, mta.address)
            }
            (Some(mta), _) => format!("host {}[{}] said: {reply}", mta.host, mta.address),
            (None, _) => reply.to_string(),
        },
        Response::Local(text) => text.clone(),
    };
    let text = clean(&text);
    if reported.expired {
        format!("delivery time expired; the last error was: {text}")
    } else {
        text
    }
}

/// Part 1: the explanation for people, in the words of Postfix's bounce templates.
fn human_text(
    report: &Report<'_>,
    recipients: &[&Reported<'_>],
    worst: Action,
    returned: &Returned,
) -> String {
    let mut text = String::new();
    let line = |text: &mut String, s: &str| push_folded(text, &clean(s), "    ");
    if worst == Action::Delayed {
        for s in [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
        ] {
            line(&mut text, s);
        }
    }
    line(
        &mut text,
        &format!("This is the mail system at host {}.", report.reporting_mta),
    );
    text.push_str("\r\n");
    let intro: &[&str] = match worst {
        Action::Failed => &[
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
        ],
        Action::Delayed => &[
            "Your message could not be delivered yet to one or more",
            "recipients. The mail system will keep trying to deliver it;",
            "you do not need to send it again. Its headers are attached below.",
        ],
        Action::Delivered | Action::Relayed => &[
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
        ],
    };
    for s in intro {
        line(&mut text, s);
    }
    text.push_str("\r\n");
    text.push_str("                   The mail system\r\n");
    if let Some(note) = &returned.note {
        text.push_str("\r\n");
        line(&mut text, note);
    }
    let mixed = recipients.iter().any(|r| r.action.rank() != worst.rank());
    let mut group = None;
    for r in recipients {
        if mixed && group != Some(r.action.rank()) {
            group = Some(r.action.rank());
            text.push_str("\r\n");
            line(
                &mut text,
                match r.action {
                    Action::Failed => "Could not be delivered:",
                    Action::Delayed => "Not delivered yet, still being retried:",
                    Action::Delivered | Action::Relayed => "Delivered:",
                },
            );
        }
        text.push_str("\r\n");
        line(
            &mut text,
            &format!("<{}>: {}", r.outcome.address, reason(r)),
        );
    }
    text
}

/// Part 2: the `message/delivery-status` body (RFC 3464 §2.1): the per-message fields
/// (§2.2), then per recipient a blank line and its fields (§2.3). 7-bit, folded.
fn delivery_status(report: &Report<'_>, recipients: &[&Reported<'_>]) -> Vec<u8> {
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        push_folded(out, &clean(&format!("{name}: {value}")), " ");
    };
    field(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", report.reporting_mta),
    );
    field(&mut out, "X-Danemta-Queue-ID", report.queue_id);
    if let Some(envid) = &report.dsn.envid {
        field(&mut out, "Original-Envelope-Id", &seven_bit(envid));
    }
    field(
        &mut out,
        "Arrival-Date",
        &Date::new(report.arrival).to_rfc822(),
    );
    for r in recipients {
        out.push_str("\r\n");
        let address = &r.outcome.address;
        if let Some((addr_type, orcpt)) =
            report.dsn.recipient(address).and_then(|p| p.orcpt.as_ref())
        {
            field(
                &mut out,
                "Original-Recipient",
                &address_field(addr_type, orcpt),
            );
        }
        field(
            &mut out,
            "Final-Recipient",
            &address_field("rfc822", address),
        );
        field(&mut out, "Action", r.action.as_str());
        let status = status(&r.outcome.reply, r.action, r.expired);
        field(&mut out, "Status", &status.to_string());
        match &r.outcome.reply {
            Response::Smtp(reply) => {
                if let Some(mta) = &reply.mta {
                    field(&mut out, "Remote-MTA", &format!("dns; {}", mta.host));
                }
                field(
                    &mut out,
                    "Diagnostic-Code",
                    &format!("smtp; {}", seven_bit(&clean(&reply.to_string()))),
                );
            }
            Response::Local(reason) => field(
                &mut out,
                "Diagnostic-Code",
                &format!("X-Danemta; {}", seven_bit(&clean(reason))),
            ),
        }
        field(
            &mut out,
            "Last-Attempt-Date",
            &Date::new(report.now).to_rfc822(),
        );
    }
    out.into_bytes()
}

/// A MIME boundary (RFC 2046 §5.1.1) found in none of `parts`: Postfix's `QUEUEID.TIME/HOST`
/// form, then random suffixes should a (crafted) part contain it. At most 70 characters, all
/// of them `bchars`.
fn boundary(report: &Report<'_>, parts: &[&[u8]]) -> Result<String, DsnError> {
    // ASCII only (the names are checked), so these cuts are at character boundaries.
    let base = format!(
        "{}.{}/{}",
        report.queue_id, report.now, report.reporting_mta
    );
    let random = RandomState::new();
    for attempt in 0u64..16 {
        let candidate = if attempt == 0 {
            base.get(..70).unwrap_or(&base).to_owned()
        } else {
            let base = base.get(..53).unwrap_or(&base);
            format!("{base}/{:016x}", random.hash_one(attempt))
        };
        let needle = candidate.as_bytes();
        if !parts
            .iter()
            .any(|part| part.windows(needle.len()).any(|w| w == needle))
        {
            return Ok(candidate);
        }
    }
    Err(DsnError::Boundary)
}

/// `charset` for text we made: `us-ascii` when it is, else `utf-8`.
fn charset(text: &[u8]) -> &'static str {
    if text.is_ascii() { "us-ascii" } else { "utf-8" }
}

/// `Content-Transfer-Encoding` of content written as it is (RFC 2045 §6.2): `7bit` or `8bit`.
fn transfer_encoding(content: &[u8]) -> &'static str {
    if content.is_ascii() { "7bit" } else { "8bit" }
}

#[cfg(test)]
mod tests {
    use mail_parser::{MessageParser, MimeHeaders, PartType};
    use smtp::outcome::{Fate, RemoteMta, ServerReply};
    use smtp::server::Notify;

    use super::*;
    use crate::queue::RecipientDsn;

    const ORIGINAL: &[u8] =
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody line\r\n";

    fn smtp(code: u16, text: &str) -> Response {
        let enhanced = text.split(' ').next().and_then(|s| {
            let mut it = s.split('.').map(|n| n.parse::<u16>().ok());
            let (c, s, d) = (it.next()??, it.next()??, it.next()??);
            Some(EnhancedStatus::new(u8::try_from(c).ok()?, s, d))
        });
        Response::Smtp(ServerReply {
            code,
            enhanced,
            lines: vec![text.to_owned()],
            mta: Some(RemoteMta {
                host: "mx.example.net".parse().unwrap(),
                address: "192.0.2.1".parse().unwrap(),
            }),
        })
    }

    fn outcome(address: &str, fate: Fate, reply: Response) -> RecipientOutcome {
        RecipientOutcome {
            address: address.to_owned(),
            outcome: fate,
            reply,
        }
    }

    fn report<'a>(
        dsn: &'a DsnParams,
        recipients: Vec<Reported<'a>>,
        original: &'a [u8],
    ) -> Report<'a> {
        Report {
            reporting_mta: "relay.example.org",
            queue_id: "0123456789ABCDEF01234567",
            arrival: 1_790_000_000,
            sender: "a@example.org",
            dsn,
            recipients,
            original,
            now: 1_790_003_600,
        }
    }

    fn failed(outcome: &RecipientOutcome) -> Reported<'_> {
        Reported {
            outcome,
            action: Action::Failed,
            expired: false,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    /// Every CR is followed by LF and every LF preceded by CR; no line over 998 octets.
    fn assert_crlf_only(out: &[u8]) {
        for (i, &b) in out.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert_eq!(out.get(i.wrapping_sub(1)), Some(&b'\r'), "bare LF at {i}"),
                _ => {}
            }
        }
        assert!(out.ends_with(b"\r\n"));
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "line of {} octets", line.len());
        }
    }

    /// The three parts of a parsed report: their content types and raw bodies.
    fn parts_of(out: &[u8]) -> Vec<(String, Vec<u8>)> {
        let message = MessageParser::default().parse(out).unwrap();
        let ct = message.content_type().unwrap();
        assert_eq!(
            (ct.ctype(), ct.subtype(), ct.attribute("report-type")),
            ("multipart", Some("report"), Some("delivery-status"))
        );
        let PartType::Multipart(ids) = &message.root_part().body else {
            panic!("not multipart");
        };
        ids.iter()
            .map(|&id| {
                let part = message.part(id).unwrap();
                let ct = part.content_type().unwrap();
                let raw = out
                    .get(part.offset_body as usize..part.offset_end as usize)
                    .unwrap()
                    .to_vec();
                (
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()),
                    raw,
                )
            })
            .collect()
    }

    /// The per-recipient field groups of a delivery-status body.
    fn groups(status: &[u8]) -> Vec<String> {
        text(status)
            .replace("\r\n ", " ")
            .split("\r\n\r\n")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_failure_report_parses_back_with_its_fields() {
        let b = outcome(
            "b@example.net",
            Fate::Bounced,
            smtp(550, "5.1.1 unknown user"),
        );
        let c = outcome(
            "c@example.net",
            Fate::Bounced,
            Response::Local("no MX".into()),
        );
        let dsn = DsnParams::default();
        let out = build(&report(&dsn, vec![failed(&b), failed(&c)], ORIGINAL)).unwrap();
        assert_crlf_only(&out);

        let message = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        let from = message.from().unwrap().first().unwrap();
        assert_eq!(
            (from.name(), from.address()),
            (
                Some("Mail Delivery System"),
                Some("MAILER-DAEMON@relay.example.org")
            )
        );
        assert_eq!(
            message.to().unwrap().first().unwrap().address(),
            Some("a@example.org")
        );
        assert!(
            message
                .message_id()
                .unwrap()
                .ends_with("@relay.example.org")
        );
        assert_eq!(
            message.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(
            message.header_raw("MIME-Version").map(str::trim),
            Some("1.0")
        );
        assert!(message.date().is_some());

        let parts = parts_of(&out);
        let types: Vec<_> = parts.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let human = text(&parts[0].1).replace("\r\n    ", " ");
        assert!(human.contains("This is the mail system at host relay.example.org."));
        assert!(text(&parts[0].1).contains("\r\n                   The mail system\r\n"));
        assert!(human.contains("could not\r\nbe delivered to one or more recipients"));
        assert!(
            human.contains(
                "<b@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 unknown user"
            ),
            "{human}"
        );
        assert!(human.contains("<c@example.net>: no MX"));

        let groups = groups(&parts[1].1);
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert!(groups[0].starts_with("Reporting-MTA: dns; relay.example.org\r\n"));
        assert!(groups[0].contains("X-Danemta-Queue-ID: 0123456789ABCDEF01234567\r\n"));
        assert!(groups[0].contains("Arrival-Date: "));
        assert!(!groups[0].contains("Original-Envelope-Id"));
        let b = &groups[1];
        for f in [
            "Final-Recipient: rfc822; b@example.net\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.example.net\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 unknown user\r\n",
            "Last-Attempt-Date: ",
        ] {
            assert!(b.contains(f), "{f} in {b}");
        }
        assert!(!b.contains("Original-Recipient"));
        let c = &groups[2];
        for f in [
            "Final-Recipient: rfc822; c@example.net\r\n",
            "Status: 5.0.0\r\n",
            "Diagnostic-Code: X-Danemta; no MX\r\n",
        ] {
            assert!(c.contains(f), "{f} in {c}");
        }
        assert!(!c.contains("Remote-MTA"));

        assert_eq!(
            parts[2].1,
            b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n"
        );
    }

    #[test]
    fn status_comes_from_the_reply_or_its_class() {
        let without = |code| {
            Response::Smtp(ServerReply {
                code,
                enhanced: None,
                lines: vec!["no".into()],
                mta: None,
            })
        };
        assert_eq!(
            status(&without(554), Action::Failed, false).to_string(),
            "5.0.0"
        );
        assert_eq!(
            status(&without(451), Action::Delayed, false).to_string(),
            "4.0.0"
        );
        assert_eq!(
            status(&smtp(250, "2.1.5 ok"), Action::Delivered, false).to_string(),
            "2.1.5"
        );
        // An enhanced status of another class than the code's is not believed.
        assert_eq!(
            status(&smtp(550, "2.0.0 odd"), Action::Failed, false).to_string(),
            "5.0.0"
        );
        let local = Response::Local("x".into());
        assert_eq!(status(&local, Action::Failed, false).to_string(), "5.0.0");
        assert_eq!(status(&local, Action::Delayed, false).to_string(), "4.0.0");
        assert_eq!(status(&local, Action::Failed, true).to_string(), "4.4.7");
        assert_eq!(
            status(&without(451), Action::Failed, true).to_string(),
            "4.4.7"
        );
        assert_eq!(
            status(&smtp(451, "4.0.0 later"), Action::Failed, true).to_string(),
            "4.4.7"
        );
        assert_eq!(
            status(&smtp(451, "4.7.5 dane"), Action::Failed, true).to_string(),
            "4.7.5"
        );
    }

    #[test]
    fn an_expired_recipient_fails_with_4_4_7() {
        let b = outcome(
            "b@example.net",
            Fate::Bounced,
            Response::Local("no usable host".into()),
        );
        let dsn = DsnParams::default();
        let expired = Reported {
            outcome: &b,
            action: Action::Failed,
            expired: true,
        };
        let out = build(&report(&dsn, vec![expired], ORIGINAL)).unwrap();
        let parts = parts_of(&out);
        let g = &groups(&parts[1].1)[1];
        assert!(g.contains("Action: failed\r\n"), "{g}");
        assert!(g.contains("Status: 4.4.7\r\n"), "{g}");
        let human = text(&parts[0].1).replace("\r\n    ", " ");
        assert!(
            human.contains("<b@example.net>: delivery time expired"),
            "{human}"
        );
        assert!(human.contains("no usable host"));
    }

    #[test]
    fn orcpt_and_envid_are_echoed() {
        let b = outcome("b@example.net", Fate::Bounced, smtp(550, "5.1.1 no"));
        let u = outcome("ü@example.net", Fate::Bounced, smtp(550, "5.1.1 no"));
        let dsn = DsnParams {
            ret: None,
            envid: Some("QQ314159".into()),
            recipients: vec![
                RecipientDsn {
                    address: "b@example.net".into(),
                    notify: None,
                    orcpt: Some(("rfc822".into(), "Bob@Example.NET".into())),
                },
                RecipientDsn {
                    address: "ü@example.net".into(),
                    notify: None,
                    orcpt: Some(("utf-8".into(), "ü@example.net".into())),
                },
            ],
            ..DsnParams::default()
        };
        let out = build(&report(&dsn, vec![failed(&b), failed(&u)], ORIGINAL)).unwrap();
        assert_crlf_only(&out);
        let parts = parts_of(&out);
        assert!(parts[1].1.is_ascii());
        let groups = groups(&parts[1].1);
        assert!(groups[0].contains("Original-Envelope-Id: QQ314159\r\n"));
        assert!(groups[1].contains("Original-Recipient: rfc822; Bob@Example.NET\r\n"));
        assert!(groups[1].contains("Final-Recipient: rfc822; b@example.net\r\n"));
        assert!(groups[2].contains("Original-Recipient: utf-8; \\x{FC}@example.net\r\n"));
        assert!(groups[2].contains("Final-Recipient: utf-8; \\x{FC}@example.net\r\n"));
        // The text is for people: the address as it is, in UTF-8.
        assert!(text(&parts[0].1).contains("<ü@example.net>"));
        assert!(text(&out).contains(
            "Content-Type: text/plain; charset=\"utf-8\"\r\n\
             Content-Description: Notification\r\n\
             Content-Transfer-Encoding: 8bit\r\n"
        ));
    }

    #[test]
    fn ret_full_returns_the_whole_message_and_hdrs_the_headers() {
        let b = outcome("b@example.net", Fate::Bounced, smtp(550, "5.1.1 no"));
        let eight_bit = "From: a@example.org\r\nSubject: caf\u{e9}\r\n\r\ncaf\u{e9} \u{2603}\r\n";
        let full = DsnParams {
            ret: Some(Ret::Full),
            ..DsnParams::default()
        };
        let out = build(&report(&full, vec![failed(&b)], eight_bit.as_bytes())).unwrap();
        assert_crlf_only(&out);
        let message = MessageParser::default().parse(&out).unwrap();
        let returned = message.part(3).unwrap();
        assert_eq!(returned.content_type().unwrap().subtype(), Some("rfc822"));
        assert_eq!(returned.content_transfer_encoding(), Some("8bit"));
        let PartType::Message(inner) = &returned.body else {
            panic!("not a message");
        };
        assert_eq!(inner.subject(), Some("café"));
        assert_eq!(
            inner.body_text(0).as_deref().map(str::trim_end),
            Some("café ☃")
        );

        let hdrs = DsnParams {
            ret: Some(Ret::Hdrs),
            ..DsnParams::default()
        };
        let out = build(&report(&hdrs, vec![failed(&b)], eight_bit.as_bytes())).unwrap();
        let parts = parts_of(&out);
        assert_eq!(parts[2].0, "text/rfc822-headers");
        assert_eq!(
            parts[2].1,
            "From: a@example.org\r\nSubject: caf\u{e9}\r\n".as_bytes()
        );
        assert!(text(&out).contains("Content-Transfer-Encoding: 8bit"));

        // Without a failure, RET=FULL returns the headers only (RFC 3461 §4.3).
        let success = DsnParams {
            ret: Some(Ret::Full),
            recipients: vec![RecipientDsn {
                address: "b@example.net".into(),
                notify: Some(Notify {
                    success: true,
                    ..Notify::default()
                }),
                orcpt: None,
            }],
            ..DsnParams::default()
        };
        let ok = outcome("b@example.net", Fate::Delivered, smtp(250, "2.0.0 Ok"));
        let delivered = Reported {
            outcome: &ok,
            action: Action::Delivered,
            expired: false,
        };
        let out = build(&report(&success, vec![delivered], ORIGINAL)).unwrap();
        let message = MessageParser::default().parse(&out).unwrap();
        assert_eq!(message.subject(), Some("Successful Mail Delivery Report"));
        let parts = parts_of(&out);
        assert_eq!(parts[2].0, "text/rfc822-headers");
        let g = &groups(&parts[1].1)[1];
        assert!(g.contains("Action: delivered\r\nStatus: 2.0.0\r\n"), "{g}");
        assert!(text(&parts[0].1).contains("delivery via mx.example.net[192.0.2.1]: 250 2.0.0 Ok"));
    }

    /// RFC 8689 §5: the bounce of a REQUIRETLS message returns its headers only, RET=FULL
    /// or not: the body must not travel a path weaker than the one its sender required.
    #[test]
    fn a_requiretls_message_is_never_returned_whole() {
        let b = outcome(
            "b@example.net",
            Fate::Bounced,
            smtp(550, "5.7.30 no REQUIRETLS"),
        );
        let original = "From: a@example.org\r\nSubject: secret plans\r\n\r\nthe secret body\r\n";
        let full = DsnParams {
            ret: Some(Ret::Full),
            tls_request: TlsRequest::Required,
            ..DsnParams::default()
        };
        let out = build(&report(&full, vec![failed(&b)], original.as_bytes())).unwrap();
        assert_crlf_only(&out);
        let parts = parts_of(&out);
        assert_eq!(parts[2].0, "text/rfc822-headers");
        assert_eq!(
            parts[2].1,
            b"From: a@example.org\r\nSubject: secret plans\r\n"
        );
        assert!(!text(&out).contains("the secret body"), "{}", text(&out));
        assert!(text(&parts[0].1).contains("REQUIRETLS"));
        assert!(groups(&parts[1].1)[1].contains("Status: 5.7.30"));
        // Without REQUIRETLS the same report returns the body, as asked.
        let plain = DsnParams {
            ret: Some(Ret::Full),
            ..DsnParams::default()
        };
        let out = build(&report(&plain, vec![failed(&b)], original.as_bytes())).unwrap();
        assert!(text(&out).contains("the secret body"));
    }

    #[test]
    fn a_message_too_large_is_returned_as_headers() {
        let b = outcome("b@example.net", Fate::Bounced, smtp(552, "5.3.4 too big"));
        let mut big = ORIGINAL.to_vec();
        big.resize(MAX_RETURNED_MESSAGE + 1, b'x');
        let full = DsnParams {
            ret: Some(Ret::Full),
            ..DsnParams::default()
        };
        let out = build(&report(&full, vec![failed(&b)], &big)).unwrap();
        let parts = parts_of(&out);
        assert_eq!(parts[2].0, "text/rfc822-headers");
        assert!(text(&parts[0].1).contains("too large to be returned in full"));
    }

    #[test]
    fn an_original_without_a_body_is_all_headers() {
        assert_eq!(header_section(b"A: 1\r\nB: 2\r\n"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_section(b"A: 1\nB: 2"), b"A: 1\nB: 2");
        assert_eq!(header_section(b"A: 1\n\nbody"), b"A: 1\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(clean_lines(b"A: 1\nB: 2\rC\0"), b"A: 1\r\nB: 2\r\nC\r\n");
        let long = clean_lines(&[b'y'; 2000]);
        assert_crlf_only(&long);
        // Two breaks (CRLF and a space each), and the final CRLF.
        assert_eq!(long.len(), 2000 + 2 * 3 + 2);
    }

    #[test]
    fn notify_decides_what_is_wanted() {
        let dsn = |notify| DsnParams {
            recipients: vec![RecipientDsn {
                address: "b@x".into(),
                notify,
                orcpt: None,
            }],
            ..DsnParams::default()
        };
        let all = [
            Action::Failed,
            Action::Delayed,
            Action::Delivered,
            Action::Relayed,
        ];
        let wants = |d: &DsnParams, address| all.map(|a| wanted(d, address, a));
        // Absent NOTIFY (no parameters at all, or parameters without NOTIFY): failures only.
        assert_eq!(
            wants(&DsnParams::default(), "b@x"),
            [true, false, false, false]
        );
        assert_eq!(wants(&dsn(None), "b@x"), [true, false, false, false]);
        assert_eq!(
            wants(&dsn(Some(Notify::default())), "b@x"),
            [false, false, false, false]
        );
        let success = Notify {
            success: true,
            ..Notify::default()
        };
        assert_eq!(
            wants(&dsn(Some(success)), "b@x"),
            [false, false, true, true]
        );
        // Another recipient's parameters do not apply.
        assert_eq!(
            wants(&dsn(Some(success)), "c@x"),
            [true, false, false, false]
        );
        let failure_delay = Notify {
            failure: true,
            delay: true,
            ..Notify::default()
        };
        assert_eq!(
            wants(&dsn(Some(failure_delay)), "b@x"),
            [true, true, false, false]
        );

        // build leaves out the unwanted, and refuses when none is left.
        let b = outcome("b@x", Fate::Bounced, smtp(550, "5.1.1 no"));
        let never = dsn(Some(Notify::default()));
        assert_eq!(
            build(&report(&never, vec![failed(&b)], ORIGINAL)),
            Err(DsnError::NothingToReport)
        );
        assert_eq!(
            build(&report(&never, vec![], ORIGINAL)),
            Err(DsnError::NothingToReport)
        );
        // A delay report for one who asked for it, a failure report for the other; one
        // report with both is about the failure first.
        let later = outcome("b@x", Fate::Deferred, smtp(451, "4.2.0 mailbox busy"));
        let delayed = Reported {
            outcome: &later,
            action: Action::Delayed,
            expired: false,
        };
        let d = dsn(Some(failure_delay));
        let out = build(&report(&d, vec![delayed.clone()], ORIGINAL)).unwrap();
        assert_crlf_only(&out);
        let message = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            message.subject(),
            Some("Delayed Mail (still being retried)")
        );
        assert!(text(&out).contains("Action: delayed\r\nStatus: 4.2.0\r\n"));
        assert!(text(&out).contains("THIS IS A WARNING ONLY"));
        let c = outcome("c@x", Fate::Bounced, smtp(550, "5.1.1 no"));
        let out = build(&report(&d, vec![delayed, failed(&c)], ORIGINAL)).unwrap();
        let message = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        let groups = groups(&parts_of(&out)[1].1);
        assert!(groups[1].contains("Final-Recipient: rfc822; c@x\r\nAction: failed\r\n"));
        assert!(groups[2].contains("Final-Recipient: rfc822; b@x\r\nAction: delayed\r\n"));
    }

    #[test]
    fn the_null_sender_and_bad_names_are_refused() {
        let b = outcome("b@x", Fate::Bounced, smtp(550, "5.1.1 no"));
        let dsn = DsnParams::default();
        let mut r = report(&dsn, vec![failed(&b)], ORIGINAL);
        r.sender = "";
        assert_eq!(build(&r), Err(DsnError::NullSender));
        r.sender = "a@x\r\nBcc: victim@y";
        assert_eq!(build(&r), Err(DsnError::InvalidSender));
        r.sender = "a@x";
        r.reporting_mta = "relay.example.org\r\nX: y";
        assert_eq!(build(&r), Err(DsnError::InvalidReportingMta));
        r.reporting_mta = "relay.example.org";
        r.queue_id = "../x";
        assert_eq!(build(&r), Err(DsnError::InvalidQueueId));
    }

    #[test]
    fn hostile_reply_text_cannot_break_the_message() {
        let dsn = DsnParams::default();
        let r = report(&dsn, vec![], ORIGINAL);
        // The boundary the report would use, planted in the reply and in the original.
        let planted = boundary(&r, &[]).unwrap();
        let hostile = format!(
            "5.1.1 bad\r\n.\r\nMAIL FROM:<x@y>\nBcc: victim@z\r--{planted}\r\n\r\n--{planted}--\x00\x1b[31m\u{85}end {}",
            "w".repeat(3000)
        );
        let b = outcome("b@example.net", Fate::Bounced, smtp(550, &hostile));
        let c = outcome(
            "c@example.net",
            Fate::Bounced,
            Response::Local(format!("local\r\nX-Injected: yes\n--{planted}")),
        );
        let original = format!("Subject: x\n\n--{planted}\r\nContent-Type: text/html\r\r\n.\r\n");
        let out = build(&report(
            &dsn,
            vec![failed(&b), failed(&c)],
            original.as_bytes(),
        ))
        .unwrap();
        assert_crlf_only(&out);
        let s = text(&out);
        assert!(!s.contains("\r\n.\r\n"), "a lone dot line");
        assert!(!s.contains("\r\nBcc:") && !s.contains("\r\nX-Injected:"));
        assert!(!s.contains('\u{1b}') && !s.contains('\0') && !s.contains('\u{85}'));
        // A different boundary was chosen, and the structure holds.
        let message = MessageParser::default().parse(&out).unwrap();
        let used = message
            .content_type()
            .unwrap()
            .attribute("boundary")
            .unwrap();
        assert_ne!(used, planted);
        let parts = parts_of(&out);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].0, "text/rfc822-headers");
        let g = &groups(&parts[1].1)[1];
        assert!(
            g.contains("Diagnostic-Code: smtp; 550 5.1.1 bad . MAIL FROM:<x@y> Bcc: victim@z"),
            "{g}"
        );
        assert!(g.contains("[31m end w"));
    }

    #[test]
    fn folding_keeps_lines_short() {
        let mut out = String::new();
        let words = "word ".repeat(40);
        push_folded(&mut out, &format!("Diagnostic-Code: smtp; {words}"), " ");
        assert!(out.lines().all(|l| l.len() <= FOLD_AT), "{out}");
        assert_eq!(
            out.replace("\r\n ", " "),
            format!("Diagnostic-Code: smtp; {}\r\n", words.trim_end())
        );
        let mut out = String::new();
        push_folded(&mut out, &"é".repeat(1000), " ");
        assert!(out.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(clean(" a\r\n\tb  \u{7f}c "), "a b c");
        assert_eq!(seven_bit("a+b\u{e9}"), "a+2Bb+C3+A9");
        assert_eq!(seven_bit("plain id"), "plain id");
    }
}
