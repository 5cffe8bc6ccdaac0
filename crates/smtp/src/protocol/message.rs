//! A message ready for the DATA phase: CRLF line endings, dot-stuffed (RFC 5321 §4.5.2).
//!
//! Two forms: [`Message`], checked and prepared whole in memory (what `send` reads), and
//! [`Body`], a stream read in blocks from any [`AsyncRead`] (a spool file) and prepared on the
//! fly by [`Stuffer`], so that a relay never holds a whole message in memory.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;
use tokio::io::AsyncRead;

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

/// The DATA payload prepared on the fly, block by block, exactly as [`Message::new`] prepares
/// a whole message (RFC 5321 §4.5.2 dot-stuffing, §2.3.8 CRLF line endings): CRLF, bare CR
/// and bare LF each become CRLF, a line starting with `.` gets another, and
/// [`Stuffer::finish`] ends the data with CRLF when it does not end so. Lines over
/// [`MAX_LINE`] and NUL bytes are refused (RFC 5321 §4.5.3.1.6, §2.3.8), as by `Message`.
/// Pure: no I/O, the state carries over block boundaries (a CR at the end of one block and
/// the LF at the start of the next are one line ending).
#[derive(Clone, Debug, Default)]
pub struct Stuffer {
    /// The previous byte was a CR: a following LF is the same line ending.
    after_cr: bool,
    /// A line ending read but not yet written: `Message` drops the last one of a message
    /// that ends in two or more, and so must the stream.
    held: bool,
    /// The last bytes written are a CRLF.
    wrote_newline: bool,
    /// Bytes of the current line so far.
    column: usize,
    /// Line endings read so far (the current line's number is one more).
    lines: usize,
    /// Whether any byte was read.
    started: bool,
}

impl Stuffer {
    /// At the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the wire form of `input`, the next block of the raw message, to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MessageError> {
        out.reserve(input.len() + input.len() / 32 + 2);
        for &b in input {
            self.started = true;
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if self.held {
                        out.extend_from_slice(b"\r\n");
                        self.wrote_newline = true;
                    }
                    self.held = true;
                    self.after_cr = b == b'\r';
                    self.column = 0;
                    self.lines += 1;
                }
                0 => return Err(MessageError::Nul(self.lines + 1)),
                _ => {
                    if std::mem::replace(&mut self.held, false) {
                        out.extend_from_slice(b"\r\n");
                    }
                    if self.column == 0 && b == b'.' {
                        out.push(b'.');
                    }
                    self.column += 1;
                    if self.column > MAX_LINE {
                        return Err(MessageError::LineTooLong {
                            line: self.lines + 1,
                            len: self.column,
                        });
                    }
                    out.push(b);
                    self.wrote_newline = false;
                }
            }
        }
        Ok(())
    }

    /// Ends the data with exactly one CRLF after the last line, as [`Message::new`] does.
    /// Refuses an empty message.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        if !self.started {
            return Err(MessageError::Empty);
        }
        let held = std::mem::replace(&mut self.held, false);
        if (held && !self.wrote_newline) || self.column > 0 {
            out.extend_from_slice(b"\r\n");
        }
        self.column = 0;
        self.wrote_newline = true;
        Ok(())
    }
}

/// A message body for the DATA phase, read in blocks: either already in wire form (a
/// [`Message`]) or raw, prepared by a [`Stuffer`] as it is read (a spool file). The session
/// never holds more than one block of it (RFC 5321 §4.5.3.2.5 times each block).
pub struct Body<'a> {
    pub(crate) reader: Pin<Box<dyn AsyncRead + Send + 'a>>,
    pub(crate) prepared: bool,
    size: Option<u64>,
    eight_bit: bool,
}

impl<'a> Body<'a> {
    /// A raw message from `reader` (any line endings, not dot-stuffed). `size` is its
    /// estimated size for the SIZE parameter (RFC 1870 §3: an estimate is allowed), e.g. the
    /// file's length; `eight_bit` whether it has 8-bit bytes (for `BODY=8BITMIME`, RFC 6152),
    /// which the caller knows from when it accepted the message.
    pub fn stream(reader: impl AsyncRead + Send + 'a, size: Option<u64>, eight_bit: bool) -> Self {
        Self {
            reader: Box::pin(reader),
            prepared: false,
            size,
            eight_bit,
        }
    }

    /// The estimated size, for SIZE (RFC 1870).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Whether it has 8-bit bytes.
    pub fn is_eight_bit(&self) -> bool {
        self.eight_bit
    }
}

impl<'a> From<&'a Message> for Body<'a> {
    fn from(m: &'a Message) -> Self {
        Self {
            reader: Box::pin(m.wire()),
            prepared: true,
            size: Some(m.len() as u64),
            eight_bit: m.is_eight_bit(),
        }
    }
}

/// Where a message body comes from, opened anew for each attempt: a delivery that moves on
/// to another connection after one failed mid-DATA reads it again from its start.
pub trait BodySource: Sync {
    /// The body from its start.
    fn open(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Body<'_>>> + Send + '_>>;
}

impl BodySource for Message {
    fn open(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Body<'_>>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(Body::from(self))))
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

    /// The stuffer in blocks of every size gives what `Message` gives whole.
    #[test]
    fn the_stream_is_prepared_as_the_whole_message_is() {
        let cases: [&[u8]; 7] = [
            b"Subject: x\n\n.hidden\r\nline\rlast",
            b"Subject: x\r\n\r\nbody\r\n",
            b"Subject: x\n\n..two\n.\n\nend\n\n",
            b"Subject: x\r\n\r\n\r\r\n\n.",
            b"Subject: x\n\nno final newline",
            b"Subject: x\r",
            b"Subject: x\r\n.\r\n",
        ];
        for raw in cases {
            let whole = Message::new(raw).unwrap();
            for block in 1..=raw.len() {
                let mut s = Stuffer::new();
                let mut out = Vec::new();
                for chunk in raw.chunks(block) {
                    s.push(chunk, &mut out).unwrap();
                }
                s.finish(&mut out).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(whole.wire()),
                    "{raw:?} in blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn the_stream_refuses_what_the_message_refuses() {
        let mut out = Vec::new();
        assert_eq!(Stuffer::new().finish(&mut out), Err(MessageError::Empty));
        let long = format!("Subject: x\n\n{}", "a".repeat(999));
        let mut s = Stuffer::new();
        let (head, tail) = long.as_bytes().split_at(500);
        s.push(head, &mut out).unwrap();
        assert_eq!(
            s.push(tail, &mut out),
            Err(MessageError::LineTooLong { line: 3, len: 999 })
        );
        assert_eq!(
            Stuffer::new().push(b"Subject: x\r\n\na\0b", &mut out),
            Err(MessageError::Nul(3))
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
