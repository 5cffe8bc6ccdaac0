//! A message ready for the DATA phase: CRLF line endings, dot-stuffed (RFC 5321 §4.5.2).

use thiserror::Error;

/// Longest line, CRLF excluded (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// A message that cannot be sent as it is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Nothing to send.
    #[error("the message is empty")]
    Empty,
    /// The message does not start with a header field (RFC 5322 §2.2).
    #[error("the message does not start with a header field (\"Name: value\"): {0:?}")]
    NoHeader(String),
    /// A line over the SMTP limit.
    #[error(
        "line {line} is {len} bytes long; SMTP allows at most {MAX_LINE} (RFC 5321 §4.5.3.1.6)"
    )]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// Its length.
        len: usize,
    },
    /// A NUL byte, which SMTP cannot carry (RFC 5321 §2.3.8).
    #[error("line {0} contains a NUL byte")]
    Nul(usize),
}

/// A message in SMTP wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    wire: Vec<u8>,
    eight_bit: bool,
}

impl Message {
    /// Checks `raw` and prepares it: bare LF and bare CR become CRLF, lines starting with a
    /// dot get another dot, and the data ends with CRLF.
    pub fn new(raw: &[u8]) -> Result<Self, MessageError> {
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(MessageError::Empty);
        }
        let first = raw.split(|b| *b == b'\n').next().unwrap_or_default();
        let first_text = String::from_utf8_lossy(first);
        let is_header = first_text.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        });
        if !is_header {
            return Err(MessageError::NoHeader(
                first_text.chars().take(60).collect(),
            ));
        }
        let mut wire = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
        let text = normalise_newlines(raw);
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                wire.extend_from_slice(b"\r\n");
            }
            if line.len() > MAX_LINE {
                return Err(MessageError::LineTooLong {
                    line: i + 1,
                    len: line.len(),
                });
            }
            if line.contains(&0) {
                return Err(MessageError::Nul(i + 1));
            }
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
        }
        if !wire.ends_with(b"\r\n") {
            wire.extend_from_slice(b"\r\n");
        }
        let eight_bit = raw.iter().any(|b| *b >= 0x80);
        Ok(Self { wire, eight_bit })
    }

    /// The DATA payload, without the final `.` line.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Whether it has 8-bit bytes (for `BODY=8BITMIME`, RFC 6152).
    pub fn is_eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// Size for the SIZE parameter (RFC 1870).
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    /// Never true: an empty message is refused by [`Message::new`].
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }
}

/// Every CRLF, bare CR and bare LF as a single LF.
fn normalise_newlines(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.push(b'\n');
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_normalised_and_dots_stuffed() {
        let m = Message::new(b"Subject: x\n\n.hidden\r\nline\rlast").unwrap();
        assert_eq!(m.wire(), b"Subject: x\r\n\r\n..hidden\r\nline\r\nlast\r\n");
        let m = Message::new(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!(m.wire(), b"Subject: x\r\n\r\nbody\r\n");
        assert!(!m.is_eight_bit());
        assert!(
            Message::new("Subject: é\n\nx".as_bytes())
                .unwrap()
                .is_eight_bit()
        );
    }

    #[test]
    fn unsendable_messages_are_refused_with_the_reason() {
        assert_eq!(Message::new(b""), Err(MessageError::Empty));
        assert_eq!(Message::new(b" \r\n"), Err(MessageError::Empty));
        assert!(matches!(
            Message::new(b"no header here\n\nbody"),
            Err(MessageError::NoHeader(_))
        ));
        let long = format!("Subject: x\n\n{}", "a".repeat(999));
        assert_eq!(
            Message::new(long.as_bytes()),
            Err(MessageError::LineTooLong { line: 3, len: 999 })
        );
        assert_eq!(
            Message::new(b"Subject: x\n\na\0b"),
            Err(MessageError::Nul(3))
        );
    }
}
