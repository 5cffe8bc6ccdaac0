//! The TLSA resource record (RFC 6698 §2): its fields, its presentation and wire forms.
//!
//! Parsing is strict about what a zone file or a DNS answer may contain, and lenient about
//! the values: an unknown usage, selector or matching type parses and is kept, because
//! RFC 7671 §4 makes such records *unusable*, not malformed. Only the known digest types get
//! their length checked (RFC 6698 §2.1.3), since a wrong-length digest can never match.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Certificate usage field (RFC 6698 §2.1.1, names from RFC 7218).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Usage {
    /// PKIX-TA(0): a CA that must also pass PKIX validation.
    PkixTa,
    /// PKIX-EE(1): the end-entity certificate, which must also pass PKIX validation.
    PkixEe,
    /// DANE-TA(2): a trust anchor for this service, no public CA involved.
    DaneTa,
    /// DANE-EE(3): the server's own certificate or key, nothing else checked.
    DaneEe,
    /// Any other value: kept, but never usable.
    Unassigned(u8),
}

/// Selector field (RFC 6698 §2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    /// Cert(0): the full certificate, DER.
    FullCert,
    /// SPKI(1): the SubjectPublicKeyInfo, DER.
    Spki,
    /// Any other value: kept, but never usable.
    Unassigned(u8),
}

/// Matching type field (RFC 6698 §2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Matching {
    /// Full(0): the selected content itself.
    Full,
    /// SHA2-256(1).
    Sha256,
    /// SHA2-512(2).
    Sha512,
    /// Any other value: kept, but never usable.
    Unassigned(u8),
}

macro_rules! u8_field {
    ($ty:ident { $($variant:ident = $n:literal),* }) => {
        impl From<u8> for $ty {
            fn from(n: u8) -> Self {
                match n { $($n => $ty::$variant,)* other => $ty::Unassigned(other) }
            }
        }
        impl From<$ty> for u8 {
            fn from(v: $ty) -> u8 {
                match v { $($ty::$variant => $n,)* $ty::Unassigned(other) => other }
            }
        }
    };
}
u8_field!(Usage { PkixTa = 0, PkixEe = 1, DaneTa = 2, DaneEe = 3 });
u8_field!(Selector { FullCert = 0, Spki = 1 });
u8_field!(Matching { Full = 0, Sha256 = 1, Sha512 = 2 });

impl Matching {
    /// The digest length this matching type requires, if it is a known digest.
    pub fn digest_len(self) -> Option<usize> {
        match self {
            Matching::Sha256 => Some(32),
            Matching::Sha512 => Some(64),
            Matching::Full | Matching::Unassigned(_) => None,
        }
    }
}

/// One TLSA record's RDATA.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tlsa {
    usage: Usage,
    selector: Selector,
    matching: Matching,
    data: Vec<u8>,
}

/// Which field of a TLSA record an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The certificate usage.
    Usage,
    /// The selector.
    Selector,
    /// The matching type.
    Matching,
    /// The certificate association data.
    Data,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Usage => "certificate usage",
            Field::Selector => "selector",
            Field::Matching => "matching type",
            Field::Data => "certificate association data",
        })
    }
}

/// Why a TLSA record could not be parsed. Every variant names the field and the offending text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsaError {
    /// A field is absent.
    #[error("TLSA record is missing its {0}")]
    Missing(Field),
    /// A numeric field is not a decimal number from 0 to 255.
    #[error("TLSA {field} {text:?} is not a number from 0 to 255")]
    NotANumber {
        /// The field.
        field: Field,
        /// What was found.
        text: String,
    },
    /// The association data has a character that is not a hex digit.
    #[error(
        "TLSA certificate association data has a non-hex character {found:?} at offset {offset}"
    )]
    BadHex {
        /// The character.
        found: char,
        /// Its offset within the data's hex text.
        offset: usize,
    },
    /// The association data has an odd number of hex digits.
    #[error("TLSA certificate association data has an odd number of hex digits ({digits})")]
    OddHex {
        /// How many digits were found.
        digits: usize,
    },
    /// A SHA-256 or SHA-512 digest of the wrong length.
    #[error(
        "TLSA matching type {matching} needs a {expected}-byte digest, the data has {found} bytes"
    )]
    DigestLength {
        /// The matching type number.
        matching: u8,
        /// The length that type requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// Parentheses do not balance.
    #[error("TLSA record has unbalanced parentheses")]
    Parentheses,
    /// The RFC 3597 `\# LEN HEX` form states a length that the data does not have.
    #[error("TLSA generic RDATA says {stated} bytes, but {found} follow")]
    GenericLength {
        /// The stated length.
        stated: usize,
        /// The bytes present.
        found: usize,
    },
    /// Wire RDATA shorter than the three one-byte fields.
    #[error("TLSA RDATA is {0} bytes, shorter than the 3 fixed fields")]
    Truncated(usize),
}

impl Tlsa {
    /// A record from its fields, checking the digest length of SHA-256 and SHA-512 data and
    /// that there is some data at all.
    pub fn new(
        usage: Usage,
        selector: Selector,
        matching: Matching,
        data: Vec<u8>,
    ) -> Result<Self, TlsaError> {
        if data.is_empty() {
            return Err(TlsaError::Missing(Field::Data));
        }
        if let Some(expected) = matching.digest_len()
            && data.len() != expected
        {
            return Err(TlsaError::DigestLength {
                matching: matching.into(),
                expected,
                found: data.len(),
            });
        }
        Ok(Self {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// Parses wire-format RDATA (RFC 6698 §2.1): usage, selector, matching type, then data.
    pub fn from_rdata(rdata: &[u8]) -> Result<Self, TlsaError> {
        match rdata {
            [u, s, m, data @ ..] => Self::new((*u).into(), (*s).into(), (*m).into(), data.to_vec()),
            _ => Err(TlsaError::Truncated(rdata.len())),
        }
    }

    /// The wire-format RDATA.
    pub fn to_rdata(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.data.len());
        out.extend::<[u8; 3]>([
            self.usage.into(),
            self.selector.into(),
            self.matching.into(),
        ]);
        out.extend_from_slice(&self.data);
        out
    }

    /// The certificate usage.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The selector.
    pub fn selector(&self) -> Selector {
        self.selector
    }

    /// The matching type.
    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// The certificate association data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Presentation form (RFC 6698 §2.2): `U S M HEX`, as a zone file allows it: the data may be
/// split by whitespace, the whole RDATA may span lines inside parentheses, `;` starts a
/// comment, hex is case-insensitive. The RFC 3597 generic form `\# LEN HEX` is accepted too.
impl FromStr for Tlsa {
    type Err = TlsaError;

    fn from_str(text: &str) -> Result<Self, TlsaError> {
        let tokens = tokens(text)?;
        let mut tokens = tokens.iter().copied();
        let first = tokens.next().ok_or(TlsaError::Missing(Field::Usage))?;
        if first == "\\#" {
            return generic(tokens);
        }
        let usage = number(Some(first), Field::Usage)?;
        let selector = number(tokens.next(), Field::Selector)?;
        let matching = number(tokens.next(), Field::Matching)?;
        let data = decode_hex(tokens)?;
        Self::new(usage.into(), selector.into(), matching.into(), data)
    }
}

/// Splits zone-file RDATA text into tokens, dropping comments and balanced parentheses.
fn tokens(text: &str) -> Result<Vec<&str>, TlsaError> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default();
        for piece in line.split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')') {
            if !piece.is_empty() {
                out.push(piece);
            }
        }
        for c in line.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.checked_sub(1).ok_or(TlsaError::Parentheses)?,
                _ => {}
            }
        }
    }
    if depth != 0 {
        return Err(TlsaError::Parentheses);
    }
    Ok(out)
}

fn number(token: Option<&str>, field: Field) -> Result<u8, TlsaError> {
    let token = token.ok_or(TlsaError::Missing(field))?;
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TlsaError::NotANumber {
            field,
            text: token.to_owned(),
        });
    }
    token.parse().map_err(|_| TlsaError::NotANumber {
        field,
        text: token.to_owned(),
    })
}

/// RFC 3597 §5: `\# LENGTH HEX…` holding the whole wire RDATA.
fn generic<'a>(mut tokens: impl Iterator<Item = &'a str>) -> Result<Tlsa, TlsaError> {
    let len_text = tokens.next().ok_or(TlsaError::Missing(Field::Usage))?;
    let stated: usize = len_text.parse().map_err(|_| TlsaError::NotANumber {
        field: Field::Usage,
        text: len_text.to_owned(),
    })?;
    let rdata = decode_hex(tokens).or_else(|e| match e {
        TlsaError::Missing(_) => Ok(Vec::new()),
        e => Err(e),
    })?;
    if rdata.len() != stated {
        return Err(TlsaError::GenericLength {
            stated,
            found: rdata.len(),
        });
    }
    Tlsa::from_rdata(&rdata)
}

fn decode_hex<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Vec<u8>, TlsaError> {
    let mut nibbles = Vec::new();
    for token in tokens {
        for c in token.chars() {
            let offset = nibbles.len();
            let v = c
                .to_digit(16)
                .ok_or(TlsaError::BadHex { found: c, offset })?;
            nibbles.push(v as u8);
        }
    }
    if nibbles.is_empty() {
        return Err(TlsaError::Missing(Field::Data));
    }
    if nibbles.len() % 2 != 0 {
        return Err(TlsaError::OddHex {
            digits: nibbles.len(),
        });
    }
    // The count is even, so there is no remainder.
    let (pairs, _) = nibbles.as_chunks::<2>();
    Ok(pairs.iter().map(|[hi, lo]| (hi << 4) | lo).collect())
}

/// Lower-case hex, as used in the canonical presentation form.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Canonical presentation form: `U S M hex`, one line, lower-case hex.
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            u8::from(self.usage),
            u8::from(self.selector),
            u8::from(self.matching),
            to_hex(&self.data)
        )
    }
}

impl Serialize for Tlsa {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D32: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn parses_simple_form() {
        let t: Tlsa = format!("3 1 1 {D32}").parse().unwrap();
        assert_eq!(t.usage(), Usage::DaneEe);
        assert_eq!(t.selector(), Selector::Spki);
        assert_eq!(t.matching(), Matching::Sha256);
        assert_eq!(t.data(), &[1u8; 32]);
    }

    #[test]
    fn parses_zone_file_layout_with_parentheses_comments_and_mixed_case() {
        let text = "2 0 1 ( AbCdEf01010101010101010101010101 ; first half\n\
                    0101010101010101010101010101aBcD )";
        let t: Tlsa = text.parse().unwrap();
        assert_eq!(t.usage(), Usage::DaneTa);
        assert_eq!(&t.data()[..3], &[0xab, 0xcd, 0xef]);
        assert_eq!(&t.data()[30..], &[0xab, 0xcd]);
    }

    #[test]
    fn canonical_form_round_trips() {
        let t: Tlsa = format!("3 1 1 {}", D32.to_uppercase()).parse().unwrap();
        assert_eq!(t.to_string(), format!("3 1 1 {D32}"));
        assert_eq!(t.to_string().parse::<Tlsa>().unwrap(), t);
    }

    #[test]
    fn wire_form_round_trips() {
        let t: Tlsa = format!("2 1 1 {D32}").parse().unwrap();
        let wire = t.to_rdata();
        assert_eq!(&wire[..3], &[2, 1, 1]);
        assert_eq!(Tlsa::from_rdata(&wire).unwrap(), t);
    }

    #[test]
    fn rfc3597_generic_form() {
        let t: Tlsa = "\\# 5 030100 abcd".parse().unwrap();
        assert_eq!(t.to_string(), "3 1 0 abcd");
        assert_eq!(
            "\\# 6 030100abcd".parse::<Tlsa>(),
            Err(TlsaError::GenericLength {
                stated: 6,
                found: 5
            })
        );
    }

    #[test]
    fn unknown_values_are_kept() {
        let t: Tlsa = "4 7 9 abcd".parse().unwrap();
        assert_eq!(t.usage(), Usage::Unassigned(4));
        assert_eq!(t.selector(), Selector::Unassigned(7));
        assert_eq!(t.matching(), Matching::Unassigned(9));
        assert_eq!(t.to_string(), "4 7 9 abcd");
    }

    #[test]
    fn wrong_digest_lengths_are_errors() {
        assert_eq!(
            "3 1 1 abcd".parse::<Tlsa>(),
            Err(TlsaError::DigestLength {
                matching: 1,
                expected: 32,
                found: 2
            })
        );
        assert_eq!(
            format!("3 1 2 {D32}").parse::<Tlsa>(),
            Err(TlsaError::DigestLength {
                matching: 2,
                expected: 64,
                found: 32
            })
        );
        assert!(Tlsa::from_rdata(&[3, 1, 1, 0xab]).is_err());
    }

    #[test]
    fn malformed_text_names_the_field_and_text() {
        assert_eq!("".parse::<Tlsa>(), Err(TlsaError::Missing(Field::Usage)));
        assert_eq!(
            "3".parse::<Tlsa>(),
            Err(TlsaError::Missing(Field::Selector))
        );
        assert_eq!(
            "3 1".parse::<Tlsa>(),
            Err(TlsaError::Missing(Field::Matching))
        );
        assert_eq!(
            "3 1 1".parse::<Tlsa>(),
            Err(TlsaError::Missing(Field::Data))
        );
        let e = "3 x 1 ab".parse::<Tlsa>().unwrap_err();
        assert_eq!(
            e,
            TlsaError::NotANumber {
                field: Field::Selector,
                text: "x".into()
            }
        );
        assert!(e.to_string().contains("selector \"x\""));
        assert!(matches!(
            "256 1 1 ab".parse::<Tlsa>(),
            Err(TlsaError::NotANumber {
                field: Field::Usage,
                ..
            })
        ));
        assert!(matches!(
            "-1 1 1 ab".parse::<Tlsa>(),
            Err(TlsaError::NotANumber { .. })
        ));
        assert_eq!(
            "3 1 0 abz".parse::<Tlsa>(),
            Err(TlsaError::BadHex {
                found: 'z',
                offset: 2
            })
        );
        assert_eq!(
            "3 1 0 abc".parse::<Tlsa>(),
            Err(TlsaError::OddHex { digits: 3 })
        );
        assert_eq!("3 1 0 ( ab".parse::<Tlsa>(), Err(TlsaError::Parentheses));
        assert_eq!("3 1 0 ab )".parse::<Tlsa>(), Err(TlsaError::Parentheses));
        assert_eq!(Tlsa::from_rdata(&[3, 1]), Err(TlsaError::Truncated(2)));
        assert_eq!(
            Tlsa::from_rdata(&[3, 1, 0]),
            Err(TlsaError::Missing(Field::Data))
        );
    }
}
