//! The message content after `DATA` (RFC 5321 §4.1.1.4, §4.5.2), read strictly: a pure
//! decoder fed the bytes as they arrive, so that every rule is testable without a socket.
//!
//! # End of data, and SMTP smuggling
//!
//! The content ends at the first `<CRLF>.<CRLF>` and nowhere else (RFC 5321 §4.1.1.4; the
//! `<CRLF>` before the dot is the one ending the previous line, or the `DATA` command itself
//! for an empty message). Lines end with `<CRLF>` and nothing else (RFC 5321 §2.3.8).
//!
//! SMTP smuggling (2023) exploits servers that disagree on this: one server reads `\n.\n`
//! (or `\r.\r`, `\n.\r\n`, …) as the end and the rest as new commands, another passes the
//! bytes on as content. A receiver that *normalises* bare line ends to CRLF and forwards the
//! message could turn `\n.\n` into a real end-of-data downstream. We **reject** instead, as
//! Postfix does with `smtpd_forbid_bare_newline = yes`: the first bare CR (a CR not followed by
//! LF) or bare LF (an LF not preceded by CR) anywhere in the content is [`DataError::BareLineEnd`];
//! the session then answers `554 5.5.2` and closes the connection, so neither the message nor
//! anything the client sent after it is acted on. Nothing of such a message is ever handed on.
//!
//! # Dot-unstuffing and limits
//!
//! A line that starts with a dot and has more characters loses that first dot (RFC 5321
//! §4.5.2). The body handed on has CRLF line ends, as received. A line longer than the text
//! line limit (RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF) and a message over the size
//! limit (RFC 1870) are read to their end but not kept, then refused: memory stays bounded by
//! the size limit whatever the client sends.

/// What makes a message unacceptable once its end has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More octets than the size limit (RFC 1870 §6.3: `552 5.3.4`).
    #[error("message larger than {limit} octets")]
    TooBig {
        /// The limit.
        limit: u64,
    },
    /// A line longer than the text line limit (RFC 5321 §4.5.3.1.6).
    #[error("a line longer than {limit} octets")]
    LineTooLong {
        /// The limit, CRLF included.
        limit: usize,
    },
    /// A header section (RFC 5322 §2.1: up to and including the first empty line) longer
    /// than its limit: a header flood. Refused (`552 5.6.0`, as sendmail's
    /// `MaxHeadersLength`) rather than truncated, so that nothing of the message is altered.
    #[error("header section larger than {limit} octets")]
    HeaderTooBig {
        /// The limit, the empty line included.
        limit: u64,
    },
    /// A NUL octet: no message text may hold one (RFC 5322 §2.3, RFC 2045 §2.8 for 8-bit
    /// data), and the delivery side refuses to send one (`crate::message`), so accepting it
    /// would only turn into a bounce later.
    #[error("a NUL octet in the message")]
    Nul,
    /// No room to keep the content now ([`DataReader::stop_keeping`]): a temporary failure.
    #[error("no room to keep the message now")]
    NoRoom,
}

/// A content error after which the boundary of the message cannot be trusted: the session
/// must answer and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A CR not followed by LF, or an LF not preceded by CR (RFC 5321 §2.3.8), at this offset
    /// of the content: the SMTP smuggling family.
    #[error("bare CR or LF in the message content at octet {offset} (RFC 5321 §2.3.8)")]
    BareLineEnd {
        /// Offset in the content as received (after `DATA`'s CRLF).
        offset: u64,
    },
}

/// What a call to [`DataReader::feed`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// All the input was content; more is needed.
    More,
    /// End of data: the first `used` octets of the input were content and the final
    /// `.<CRLF>`; the rest belongs to the commands that follow.
    Done {
        /// Octets of the input consumed.
        used: usize,
    },
}

/// Decodes one message's content: unstuffs dots, finds the end, enforces the limits.
#[derive(Debug)]
pub struct DataReader {
    body: Vec<u8>,
    max_size: u64,
    max_line: usize,
    max_header: u64,
    /// Still in the header section (no empty line yet).
    in_header: bool,
    /// Octets of content after unstuffing, CRLFs included (also those not kept).
    size: u64,
    /// Octets of the raw content seen so far.
    offset: u64,
    /// At the start of a line.
    bol: bool,
    /// The current line started with a dot (removed).
    dot: bool,
    /// Octets of the current line as received, without its CRLF.
    line_len: usize,
    /// The previous octet was a CR.
    cr: bool,
    /// The limits crossed so far; [`DataReader::finish`] reports one in a fixed order, so
    /// that the reply does not depend on how the content was split into reads.
    too_big: bool,
    header_too_big: bool,
    line_too_long: bool,
    nul: bool,
    /// The session had no room to keep the content ([`DataReader::stop_keeping`]).
    no_room: bool,
}

impl DataReader {
    /// A reader for a message of at most `max_size` octets (after unstuffing, CRLF line ends)
    /// with lines of at most `max_line` octets, CRLF included.
    pub fn new(max_size: u64, max_line: usize) -> Self {
        Self {
            body: Vec::new(),
            max_size,
            max_line,
            max_header: u64::MAX,
            in_header: true,
            size: 0,
            offset: 0,
            bol: true,
            dot: false,
            line_len: 0,
            cr: false,
            too_big: false,
            header_too_big: false,
            line_too_long: false,
            nul: false,
            no_room: false,
        }
    }

    /// The same reader with a limit on the header section (RFC 5322 §2.1: the lines up to and
    /// including the first empty one, or the whole content when there is none).
    pub fn with_max_header(mut self, max_header: u64) -> Self {
        self.max_header = max_header;
        self
    }

    fn refused(&self) -> bool {
        self.too_big || self.header_too_big || self.line_too_long || self.nul || self.no_room
    }

    /// Octets held for the body now (its allocation, not only its length).
    pub fn kept(&self) -> usize {
        self.body.capacity()
    }

    /// Keeps nothing more of this message: there is no room for it (see
    /// [`super::budget`]). It is read to its end and refused with [`Refusal::NoRoom`], unless
    /// it breaks a limit, which is reported first.
    pub fn stop_keeping(&mut self) {
        self.no_room = true;
        self.body = Vec::new();
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        self.too_big |= self.size > self.max_size;
        self.header_too_big |= self.in_header && self.size > self.max_header;
        if !self.refused() {
            self.body.extend_from_slice(bytes);
        } else {
            // Nothing more is kept: the message is refused at its end.
            self.body = Vec::new();
        }
    }

    /// Feeds the next octets of the content.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, DataError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            let offset = self.offset + i as u64;
            if self.cr {
                self.cr = false;
                if b != b'\n' {
                    // The CR was the octet before this one (perhaps in the previous input).
                    return Err(DataError::BareLineEnd {
                        offset: offset.saturating_sub(1),
                    });
                }
                i += 1;
                if self.dot && self.line_len == 1 {
                    return Ok(Progress::Done { used: i });
                }
                self.push(b"\r\n");
                // RFC 5322 §2.1: the first empty line ends the header section.
                self.in_header &= self.line_len > 0;
                self.bol = true;
                self.dot = false;
                self.line_len = 0;
                continue;
            }
            match b {
                b'\r' => {
                    self.cr = true;
                    i += 1;
                }
                b'\n' => return Err(DataError::BareLineEnd { offset }),
                b'.' if self.bol => {
                    // RFC 5321 §4.5.2: the first dot of a line is removed.
                    self.dot = true;
                    self.bol = false;
                    self.line_len += 1;
                    self.check_line();
                    i += 1;
                }
                _ => {
                    // The run of octets up to the next CR or LF, kept in one piece.
                    let end = input[i..]
                        .iter()
                        .position(|c| matches!(c, b'\r' | b'\n'))
                        .map_or(input.len(), |p| i + p);
                    let run = &input[i..end];
                    self.nul |= run.contains(&0);
                    self.bol = false;
                    self.line_len += run.len();
                    self.push(run);
                    self.check_line();
                    i = end;
                }
            }
        }
        self.offset += input.len() as u64;
        Ok(Progress::More)
    }

    /// RFC 5321 §4.5.3.1.6: the current line with its CRLF within the limit.
    fn check_line(&mut self) {
        if self.line_len + 2 > self.max_line {
            self.line_too_long = true;
            self.body = Vec::new();
        }
    }

    /// After [`Progress::Done`]: the body (CRLF line ends, unstuffed) or why it is refused:
    /// of several reasons, the size first (RFC 1870's `552`), then the header section, then a
    /// long line, then a NUL, and last the lack of room.
    pub fn finish(self) -> Result<Vec<u8>, Refusal> {
        if self.too_big {
            Err(Refusal::TooBig {
                limit: self.max_size,
            })
        } else if self.header_too_big {
            Err(Refusal::HeaderTooBig {
                limit: self.max_header,
            })
        } else if self.line_too_long {
            Err(Refusal::LineTooLong {
                limit: self.max_line,
            })
        } else if self.nul {
            Err(Refusal::Nul)
        } else if self.no_room {
            Err(Refusal::NoRoom)
        } else {
            Ok(self.body)
        }
    }

    /// Octets of content received so far (after unstuffing).
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` whole, then one octet at a time: both must agree.
    fn read(input: &[u8]) -> Result<(Result<Vec<u8>, Refusal>, usize), DataError> {
        let whole = {
            let mut r = DataReader::new(1000, 100);
            match r.feed(input)? {
                Progress::Done { used } => Some((r.finish(), used)),
                Progress::More => None,
            }
        };
        let mut r = DataReader::new(1000, 100);
        let mut bytewise = None;
        let mut err = None;
        for (i, b) in input.iter().enumerate() {
            match r.feed(std::slice::from_ref(b)) {
                Ok(Progress::Done { used: 1 }) => {
                    bytewise = Some(i + 1);
                    break;
                }
                Ok(Progress::Done { .. }) => unreachable!(),
                Ok(Progress::More) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(err.is_none());
        assert_eq!(whole.as_ref().map(|w| w.1), bytewise, "{input:?}");
        whole.ok_or(DataError::BareLineEnd { offset: u64::MAX })
    }

    fn body(input: &[u8]) -> Vec<u8> {
        read(input).unwrap().0.unwrap()
    }

    #[test]
    fn end_of_data_and_dot_unstuffing() {
        assert_eq!(body(b".\r\n"), b"");
        assert_eq!(body(b"a\r\n.\r\n"), b"a\r\n");
        assert_eq!(body(b"..\r\n.\r\n"), b".\r\n");
        assert_eq!(body(b"..a\r\n...\r\n.\r\n"), b".a\r\n..\r\n");
        assert_eq!(body(b".a\r\n.\r\n"), b"a\r\n");
        // A dot inside a line is content.
        assert_eq!(body(b"a.\r\n a\r\n.\r\n"), b"a.\r\n a\r\n");
        // What follows the end belongs to the next commands.
        let (b, used) = read(b"x\r\n.\r\nQUIT\r\n").unwrap();
        assert_eq!((b.unwrap(), used), (b"x\r\n".to_vec(), 6));
        // `. ` is not the end.
        assert_eq!(body(b". \r\n.\r\n"), b" \r\n");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/smtp_data.rs): with two limits crossed, the reason
    /// given depended on where TCP split the content.
    #[test]
    fn the_reason_given_does_not_depend_on_how_the_content_was_split() {
        let cases: [(u64, usize, &[u8], usize, Refusal); 3] = [
            (2, 1000, b"abc\0\r\n.\r\n", 3, Refusal::TooBig { limit: 2 }),
            (
                10,
                8,
                b"abcdefghijkl\r\n.\r\n",
                7,
                Refusal::TooBig { limit: 10 },
            ),
            (
                1000,
                8,
                b"abc\0defghij\r\n.\r\n",
                4,
                Refusal::LineTooLong { limit: 8 },
            ),
        ];
        for (max_size, max_line, content, split, want) in cases {
            for reads in [vec![content], vec![&content[..split], &content[split..]]] {
                let mut r = DataReader::new(max_size, max_line);
                let done = reads
                    .iter()
                    .map(|read| r.feed(read).unwrap())
                    .any(|p| matches!(p, Progress::Done { .. }));
                assert!(done);
                assert_eq!(r.finish(), Err(want), "{content:?} split at {split}");
            }
        }
    }

    /// Every bare line end of the SMTP smuggling family is refused, wherever it is, whether
    /// or not it would form a fake end of data.
    #[test]
    fn smuggling_variants_are_refused() {
        for (input, at) in [
            (&b"a\n.\n"[..], 1),
            (b"a\n.\r\n", 1),
            (b"a\r.\r", 1),
            (b"a\r\n.\n", 4),
            (b"a\r\n.\r.\r\n", 4),
            (b"a\r.\r\n", 1),
            (b".\n", 1),
            (b"\n.\r\n", 0),
            (b"\r\n.\rX", 3),
            (b"a\r\r\n.\r\n", 1),
            (b"a\n\r\n.\r\n", 1),
            (b"text\nmore\r\n.\r\n", 4),
            (b"x\r\n\n.\r\nMAIL FROM:<a@b>\r\n", 3),
            (b"x\r\n.\n\r\n.\r\n", 4),
        ] {
            let mut r = DataReader::new(1000, 100);
            assert_eq!(
                r.feed(input),
                Err(DataError::BareLineEnd { offset: at }),
                "{input:?}"
            );
            // The same, one octet at a time.
            let mut r = DataReader::new(1000, 100);
            let e = input.iter().find_map(|b| r.feed(&[*b]).err());
            assert_eq!(e, Some(DataError::BareLineEnd { offset: at }), "{input:?}");
        }
        // A CR as the last octet of one read waits for the next.
        let mut r = DataReader::new(1000, 100);
        assert_eq!(r.feed(b"a\r"), Ok(Progress::More));
        assert_eq!(r.feed(b"\n.\r"), Ok(Progress::More));
        assert_eq!(r.feed(b"\n"), Ok(Progress::Done { used: 1 }));
        assert_eq!(r.finish().unwrap(), b"a\r\n");
    }

    #[test]
    fn nul_is_refused_at_the_end() {
        assert_eq!(read(b"a\0b\r\n.\r\n").unwrap().0, Err(Refusal::Nul));
    }

    /// What the crate's client sends (dot-stuffed, CRLF) comes out unstuffed, as a simple
    /// line-by-line oracle says: many pseudo-random messages with dots, spaces, 8-bit octets
    /// and empty lines.
    #[test]
    fn the_clients_wire_form_round_trips() {
        let mut x: u32 = 7;
        let mut next = move || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as usize
        };
        let alphabet = [
            b'.', b'.', b' ', b'a', b'Z', 0xc3, 0xa9, b'\n', b'\n', b'\t',
        ];
        for _ in 0..500 {
            let mut raw = b"Subject: x\n".to_vec();
            for _ in 0..next() % 200 {
                raw.push(alphabet[next() % alphabet.len()]);
            }
            let message = crate::message::Message::new(&raw).unwrap();
            let mut r = DataReader::new(1 << 20, 1000);
            let input = [message.wire(), b".\r\n"].concat();
            assert_eq!(r.feed(&input), Ok(Progress::Done { used: input.len() }));
            let body = r.finish().unwrap();
            // The oracle: the wire form cut at CRLFs, each line without one leading dot.
            let wire = message.wire();
            let mut want = Vec::new();
            for line in wire[..wire.len() - 2].split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                want.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(body, want, "{raw:?}");
        }
    }

    #[test]
    fn limits_are_enforced_after_the_end_with_bounded_memory() {
        let mut r = DataReader::new(10, 1000);
        assert_eq!(r.feed(&[b'x'; 5000]), Ok(Progress::More));
        assert!(r.body.is_empty());
        assert_eq!(r.feed(b"\r\n.\r\n"), Ok(Progress::Done { used: 5 }));
        assert_eq!(r.finish(), Err(Refusal::TooBig { limit: 10 }));
        // Exactly the limit fits: 8 octets and a CRLF are 10.
        let mut r = DataReader::new(10, 1000);
        assert_eq!(
            r.feed(b"12345678\r\n.\r\n"),
            Ok(Progress::Done { used: 13 })
        );
        assert_eq!(r.finish().unwrap().len(), 10);
        // Lines: 98 octets and CRLF are 100, the limit; one more is too long.
        assert!(body(&[&[b'y'; 98][..], b"\r\n.\r\n"].concat()).len() == 100);
        assert_eq!(
            read(&[&[b'y'; 99][..], b"\r\n.\r\n"].concat()).unwrap().0,
            Err(Refusal::LineTooLong { limit: 100 })
        );
    }

    fn with_header_limit(limit: u64, input: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mut r = DataReader::new(1 << 20, 1000).with_max_header(limit);
        assert!(matches!(r.feed(input), Ok(Progress::Done { .. })));
        r.finish()
    }

    /// A header flood is refused whole; the limit counts the header section only, up to and
    /// including the first empty line, so a big body passes.
    #[test]
    fn the_header_section_has_its_own_limit() {
        let flood = [&b"X-A: 1\r\n".repeat(100)[..], b"\r\nbody\r\n.\r\n"].concat();
        assert_eq!(
            with_header_limit(801, &flood),
            Err(Refusal::HeaderTooBig { limit: 801 })
        );
        assert!(with_header_limit(802, &flood).is_ok());
        // The body is not the header section, however big.
        let big_body = [&b"S: x\r\n\r\n"[..], &b"line\r\n".repeat(1000), b".\r\n"].concat();
        assert!(with_header_limit(8, &big_body).is_ok());
        // No empty line: all of it is header.
        assert_eq!(
            with_header_limit(8, b"S: xx\r\nline\r\n.\r\n"),
            Err(Refusal::HeaderTooBig { limit: 8 })
        );
        // A line holding only a stuffed dot is not the empty line.
        assert_eq!(
            with_header_limit(8, b"..\r\nS: xx\r\n\r\n.\r\n"),
            Err(Refusal::HeaderTooBig { limit: 8 })
        );
        // The size limit is reported first.
        let mut r = DataReader::new(10, 1000).with_max_header(5);
        assert!(matches!(r.feed(&flood), Ok(Progress::Done { .. })));
        assert_eq!(r.finish(), Err(Refusal::TooBig { limit: 10 }));
    }
}
