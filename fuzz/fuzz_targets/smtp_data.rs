//! The DATA decoder (`smtp::server::data::DataReader`): never panics; gives the same result
//! however the input is split into reads (TCP decides that, not the client); agrees with a
//! simple model of its module docs (end at the first `<CRLF>.<CRLF>` only, the first bare CR
//! or LF refused at its offset, dot-unstuffing, the size, header section and line limits, NUL
//! refused); and a body it hands on has CRLF line ends only and fits the limits.
//!
//! Input: two octets of size limit (little-endian; the second, times 16, is also the header
//! section limit), one octet of line limit (times 8), one octet `n` and then `n % 16` read
//! lengths (0 included: an empty read), then the content.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp::server::data::{DataError, DataReader, Progress, Refusal};

/// How feeding the content ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Refused at this offset (absolute, in the content).
    Bare(DataError),
    /// All the input was content; this much was counted.
    More { size: u64 },
    /// End of data after `used` octets (absolute), with the result of `finish`.
    Done {
        used: usize,
        result: Result<Vec<u8>, Refusal>,
    },
}

/// The limits of one run.
#[derive(Clone, Copy)]
struct Limits {
    size: u64,
    header: u64,
    line: usize,
}

fn run(limits: Limits, input: &[u8], reads: &[usize]) -> End {
    let mut reader = DataReader::new(limits.size, limits.line).with_max_header(limits.header);
    let mut at = 0;
    let mut reads = reads.iter().copied();
    loop {
        let len = reads
            .next()
            .unwrap_or(input.len() - at)
            .min(input.len() - at);
        let chunk = &input[at..at + len];
        match reader.feed(chunk) {
            Err(e) => return End::Bare(e),
            Ok(Progress::Done { used }) => {
                assert!(
                    used <= chunk.len() && used > 0,
                    "used {used} of {}",
                    chunk.len()
                );
                return End::Done {
                    used: at + used,
                    result: reader.finish(),
                };
            }
            Ok(Progress::More) => {
                at += len;
                if at == input.len() && reads.len() == 0 {
                    return End::More {
                        size: reader.size(),
                    };
                }
            }
        }
    }
}

/// The module docs as a model: what the reader should find in `input`, fed whole. The
/// refusal, when there is one, is any of those that apply (the docs do not rank them; that
/// the reader picks the same one however the input is split is checked separately).
fn model(limits: Limits, input: &[u8]) -> (Result<Option<usize>, u64>, Vec<Refusal>, Vec<u8>) {
    let Limits {
        size: max_size,
        header: max_header,
        line: max_line,
    } = limits;
    // The first <CRLF>.<CRLF>, the DATA command's CRLF counting for an empty message.
    let ext = [b"\r\n", input].concat();
    let end = ext.windows(5).position(|w| w == b"\r\n.\r\n");
    let scan = end.map_or(input.len(), |q| q + 3);
    // The first bare CR or LF before it (a CR as the very last octet still waits for its LF).
    let bare = (0..scan).find(|&i| match input[i] {
        b'\n' => i == 0 || input[i - 1] != b'\r',
        b'\r' => i + 1 < input.len() && input[i + 1] != b'\n',
        _ => false,
    });
    if let Some(offset) = bare {
        return (Err(offset as u64), vec![], vec![]);
    }
    let Some(q) = end else {
        return (Ok(None), vec![], vec![]);
    };
    let content = &input[..q];
    let mut body = Vec::new();
    let mut refusals = Vec::new();
    let mut line_too_long = 1 + 2 > max_line; // the final `.` line
    // The header section: up to and including the first empty line, or all of it.
    let mut header = None;
    if !content.is_empty() {
        let lines = content[..content.len() - 2].split(|b| *b == b'\n');
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line_too_long |= line.len() + 2 > max_line;
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            body.extend_from_slice(b"\r\n");
            if line.is_empty() && header.is_none() {
                header = Some(body.len());
            }
        }
    }
    if header.unwrap_or(body.len()) as u64 > max_header {
        refusals.push(Refusal::HeaderTooBig { limit: max_header });
    }
    if content.contains(&0) {
        refusals.push(Refusal::Nul);
    }
    if body.len() as u64 > max_size {
        refusals.push(Refusal::TooBig { limit: max_size });
    }
    if line_too_long {
        refusals.push(Refusal::LineTooLong { limit: max_line });
    }
    (Ok(Some(scan)), refusals, body)
}

/// What a body handed on must be: CRLF line ends only, no NUL, within the limits.
fn check_body(body: &[u8], limits: Limits) {
    let (max_size, max_line) = (limits.size, limits.line);
    assert!(body.len() as u64 <= max_size, "{} > {max_size}", body.len());
    let header = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |p| p + 4);
    let header = if body.starts_with(b"\r\n") { 2 } else { header };
    assert!(header as u64 <= limits.header, "header section of {header} octets");
    assert!(!body.contains(&0), "NUL in {body:?}");
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "{body:?}");
    for (i, b) in body.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i} of {body:?}"),
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i} of {body:?}"),
            _ => {}
        }
    }
    if !body.is_empty() {
        for line in body[..body.len() - 2].split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() + 2 <= max_line, "line of {} octets", line.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, l, n, rest @ ..] = data else {
        return;
    };
    let limits = Limits {
        size: u64::from(u16::from_le_bytes([*s0, *s1])),
        header: u64::from(*s1) * 16,
        line: usize::from(*l) * 8,
    };
    let n = usize::from(*n % 16).min(rest.len());
    let (reads, input) = rest.split_at(n);
    let reads: Vec<usize> = reads.iter().map(|b| usize::from(*b)).collect();

    let whole = run(limits, input, &[]);
    // One read, the fuzzer's reads, one octet at a time: all the same.
    let split = run(limits, input, &reads);
    assert_eq!(split, whole, "reads {reads:?}");
    let bytewise = run(limits, input, &vec![1; input.len()]);
    assert_eq!(bytewise, whole, "one octet at a time");

    let (end, refusals, body) = model(limits, input);
    match (&whole, end) {
        (End::Bare(DataError::BareLineEnd { offset }), Err(want)) => assert_eq!(*offset, want),
        (End::More { .. }, Ok(None)) => {}
        (End::Done { used, result }, Ok(Some(want))) => {
            assert_eq!(*used, want);
            match result {
                Ok(got) => {
                    assert!(refusals.is_empty(), "accepted, but {refusals:?}");
                    assert_eq!(*got, body);
                    check_body(got, limits);
                }
                Err(r) => assert!(refusals.contains(r), "{r:?} is not among {refusals:?}"),
            }
        }
        (got, want) => panic!("reader: {got:?}, model: {want:?}"),
    }
});
