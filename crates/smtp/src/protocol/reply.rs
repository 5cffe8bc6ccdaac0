//! SMTP replies (RFC 5321 §4.2), read strictly.
//!
//! A reply is one or more lines `DDD-text` ending with `DDD text` (or a bare `DDD`), all with
//! the same code. Anything else — a line without a three-digit code, mixed codes, a line
//! longer than we accept, a reply of too many lines — is a protocol error for that host.
//! (smtp-proto's reply parser takes the code from the first line and ignores the rest, so
//! this small reader is our own.)

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 sets 512; real servers
/// send longer, so we allow some slack but stay bounded.
pub const MAX_LINE: usize = 2048;
/// Most lines in one reply (EHLO replies are the longest in practice).
pub const MAX_LINES: usize = 100;

/// An enhanced status code (RFC 3463 §2), e.g. `2.1.5`: `class.subject.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnhancedStatus {
    /// 2 success, 4 persistent transient failure, 5 permanent failure (RFC 3463 §3.1).
    pub class: u8,
    /// What the status is about: 1 addressing, 2 mailbox, 3 mail system, 4 network and
    /// routing, 5 mail delivery protocol, 6 message content, 7 security (RFC 3463 §3.2).
    pub subject: u16,
    /// The detail within the subject (RFC 3463 §3.3 ff.).
    pub detail: u16,
}

impl EnhancedStatus {
    /// `class.subject.detail`.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<String>,
}

/// A reply that breaks RFC 5321 §4.2.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The connection closed mid-reply or before one.
    #[error("connection closed by the server")]
    Closed,
    /// A line longer than [`MAX_LINE`].
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines.
    #[error("reply of more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a three-digit code and a separator.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// Lines of one reply with different codes.
    #[error("reply lines with different codes ({0} then {1})")]
    MixedCodes(u16, u16),
    /// Reading failed.
    #[error("read error: {0}")]
    Io(String),
}

impl Reply {
    /// A reply from its parts (for tests and generated replies).
    pub fn new(code: u16, lines: Vec<String>) -> Self {
        Self { code, lines }
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text lines, without codes.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (e.g. 354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced status code at the start of the first line, if any (RFC 2034 §4, in the
    /// syntax of RFC 3463 §2; its class must agree with the reply code's).
    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        let first = self.lines.first()?;
        let token = first.split(' ').next()?;
        let mut parts = token.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && matches!(class, 2 | 4 | 5) && class == (self.code / 100) as u8)
            .then_some(EnhancedStatus::new(class, subject, detail))
    }

    /// Parses one line `DDD-text` / `DDD text` / `DDD` (CRLF stripped): code and whether more
    /// lines follow.
    fn parse_line(line: &str) -> Result<(u16, bool, &str), ReplyError> {
        let bytes = line.as_bytes();
        let malformed = || ReplyError::Malformed(line.chars().take(80).collect());
        if bytes.len() < 3
            || !bytes[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&bytes[0])
        {
            return Err(malformed());
        }
        let code: u16 = line[..3].parse().map_err(|_| malformed())?;
        match bytes.get(3) {
            None => Ok((code, false, "")),
            Some(b' ') => Ok((code, false, &line[4..])),
            Some(b'-') => Ok((code, true, &line[4..])),
            Some(_) => Err(malformed()),
        }
    }

    /// Reads one reply from `reader`.
    pub async fn read<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, ReplyError> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            if lines.len() == MAX_LINES {
                return Err(ReplyError::TooManyLines);
            }
            let line = read_line(reader).await?;
            let (c, more, text) = Self::parse_line(&line)?;
            match code {
                None => code = Some(c),
                Some(first) if first != c => return Err(ReplyError::MixedCodes(first, c)),
                Some(_) => {}
            }
            lines.push(text.to_owned());
            if !more {
                return Ok(Reply { code: c, lines });
            }
        }
    }
}

/// Reads a line ending in LF (a CR before it is dropped), bounded by [`MAX_LINE`].
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, ReplyError> {
    let mut buf = Vec::new();
    loop {
        let available = reader
            .fill_buf()
            .await
            .map_err(|e| ReplyError::Io(e.to_string()))?;
        if available.is_empty() {
            return Err(ReplyError::Closed);
        }
        let (used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + used > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        if done {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

/// `250 2.0.0 Ok` (all lines joined by a space, as logs show replies).
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

impl Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> Result<Reply, ReplyError> {
        let mut reader = tokio::io::BufReader::new(input);
        Reply::read(&mut reader).await
    }

    #[tokio::test]
    async fn single_and_multi_line_replies() {
        let r = parse(b"250 2.1.0 Ok\r\n").await.unwrap();
        assert_eq!(
            (r.code(), r.enhanced()),
            (250, Some(EnhancedStatus::new(2, 1, 0)))
        );
        assert_eq!(r.to_string(), "250 2.1.0 Ok");
        let r = parse(b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            .await
            .unwrap();
        assert_eq!(r.lines(), ["mx.example", "PIPELINING", "STARTTLS"]);
        let r = parse(b"354\r\n").await.unwrap();
        assert!(r.is_intermediate() && r.lines() == [""]);
        // A bare LF ends a line too.
        assert_eq!(parse(b"221 bye\n").await.unwrap().code(), 221);
    }

    #[tokio::test]
    async fn enhanced_codes_must_agree_with_the_class() {
        assert_eq!(
            parse(b"550 5.1.1 no such user\r\n")
                .await
                .unwrap()
                .enhanced(),
            Some(EnhancedStatus::new(5, 1, 1))
        );
        assert_eq!(parse(b"550 2.1.1 odd\r\n").await.unwrap().enhanced(), None);
        assert_eq!(parse(b"250 Ok\r\n").await.unwrap().enhanced(), None);
    }

    #[tokio::test]
    async fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"25 short\r\n"[..],
            b"abc text\r\n",
            b"250x text\r\n",
            b"650 not a reply code\r\n",
            b"\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(
                matches!(parse(bad).await, Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(b"250-a\r\n451 b\r\n").await,
            Err(ReplyError::MixedCodes(250, 451))
        );
        assert_eq!(parse(b"250-a\r\n").await, Err(ReplyError::Closed));
        assert_eq!(parse(b"").await, Err(ReplyError::Closed));
        let long = [b"250 ".as_slice(), &vec![b'x'; MAX_LINE], b"\r\n"].concat();
        assert_eq!(parse(&long).await, Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse(many.as_bytes()).await, Err(ReplyError::TooManyLines));
    }
}
