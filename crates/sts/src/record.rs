//! The DNS TXT records that announce a domain's MTA-STS policy (`_mta-sts.<domain>`, RFC 8461
//! §3.1) and its TLS reporting addresses (`_smtp._tls.<domain>`, RFC 8460 §3).
//!
//! Both records share one shape: a version tag, then `name=value` fields separated by `;` with
//! optional spaces or tabs around the `;`. Unknown fields are checked for syntax and ignored.
//! A TXT record made of several character-strings is their concatenation, without spaces
//! (RFC 8461 §3.1, RFC 8460 §3): callers pass each record already joined.
//!
//! One deliberate leniency: whitespace at the very end of a record is accepted even without a
//! final `;` (the ABNF allows it only after one). It cannot change what a record means.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The tag an MTA-STS TXT record starts with (RFC 8461 §3.1, `sts-version`).
pub const STS_VERSION: &str = "v=STSv1";
/// The tag a TLS-RPT TXT record starts with (RFC 8460 §3, `tlsrpt-version`).
pub const TLSRPT_VERSION: &str = "v=TLSRPTv1";

/// The longest `id` of an MTA-STS record (RFC 8461 §3.1: `1*32(ALPHA / DIGIT)`).
pub const MAX_ID_LEN: usize = 32;

/// Why a TXT record is unusable. Any of these means the domain has no usable record (RFC 8461
/// §3.1, RFC 8460 §3); a cached MTA-STS policy still applies (RFC 8461 §5.1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Several records start with the version tag: RFC 8461 §3.1 and RFC 8460 §3 say the
    /// domain then has none.
    #[error("{count} TXT records start with {version}; exactly one is allowed")]
    Multiple {
        /// The version tag.
        version: &'static str,
        /// How many records carry it.
        count: usize,
    },
    /// The record does not start with the version tag followed by `;`.
    #[error("the record does not start with {0} followed by ';'")]
    NotVersion(&'static str),
    /// A byte that no field may hold: not printable ASCII, space or tab.
    #[error("byte {position} (0x{byte:02x}) is not printable ASCII, space or tab")]
    BadCharacter {
        /// Offset in the record.
        position: usize,
        /// The byte.
        byte: u8,
    },
    /// Two `;` with nothing between them.
    #[error("an empty field between two ';'")]
    EmptyField,
    /// A field that is not `name=value` with a valid name.
    #[error("field {field:?} is not name=value with a valid name")]
    MalformedField {
        /// The field as written.
        field: String,
    },
    /// A field's value does not have the field's syntax.
    #[error("field {name} has an invalid value {value:?}")]
    BadValue {
        /// The field name.
        name: String,
        /// The value as written.
        value: String,
    },
    /// A field that may appear once appears again.
    #[error("field {0} appears more than once")]
    Duplicate(&'static str),
    /// An MTA-STS `id` that is not 1 to 32 letters and digits.
    #[error("invalid id {0:?}: expected 1 to 32 ASCII letters and digits")]
    BadId(String),
    /// An MTA-STS record without `id` (RFC 8461 §3.1: required).
    #[error("no id field")]
    MissingId,
    /// A TLS-RPT record without `rua` (RFC 8460 §3: required).
    #[error("no rua field")]
    MissingRua,
    /// A `rua` URI that is malformed.
    #[error("invalid report URI {uri:?}: {why}")]
    BadUri {
        /// The URI as written.
        uri: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Every `rua` URI has a scheme other than `mailto:` and `https:` (RFC 8460 §3).
    #[error("no rua URI has a supported scheme (mailto:, https:)")]
    NoUsableRua,
}

/// An MTA-STS policy `id` (RFC 8461 §3.1): 1 to 32 ASCII letters and digits, compared exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StsId(String);

impl StsId {
    /// The id as published.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StsId {
    type Err = RecordError;

    /// RFC 8461 §3.1, `sts-id = %s"id=" 1*32(ALPHA / DIGIT)`.
    fn from_str(s: &str) -> Result<Self, RecordError> {
        if (1..=MAX_ID_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(RecordError::BadId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for StsId {
    type Error = RecordError;

    fn try_from(s: String) -> Result<Self, RecordError> {
        s.parse()
    }
}

impl From<StsId> for String {
    fn from(id: StsId) -> String {
        id.0
    }
}

impl fmt::Display for StsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed `_mta-sts.<domain>` TXT record (RFC 8461 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsRecord {
    /// The policy instance the domain currently publishes: a change means a new policy.
    pub id: StsId,
}

impl StsRecord {
    /// The MTA-STS record among all TXT records at `_mta-sts.<domain>` (RFC 8461 §3.1):
    /// records not starting with `v=STSv1` are discarded; none left is `Ok(None)` (the domain
    /// does not publish MTA-STS), more than one is an error, as is an invalid one.
    pub fn select<R: AsRef<[u8]>>(records: &[R]) -> Result<Option<StsRecord>, RecordError> {
        select(records, STS_VERSION, Self::parse)
    }

    /// Parses one record (RFC 8461 §3.1, `sts-text-record`): `v=STSv1` first, then an `id`
    /// and any extension fields. A second `id` makes the record invalid: RFC 8461 gives no
    /// rule for it, and such a record does not identify one policy.
    pub fn parse(text: &[u8]) -> Result<StsRecord, RecordError> {
        let mut id = None;
        for (name, value) in fields(text, STS_VERSION)? {
            if name == "id" {
                if id.is_some() {
                    return Err(RecordError::Duplicate("id"));
                }
                id = Some(value.parse()?);
            } else {
                extension(name, value)?;
            }
        }
        Ok(StsRecord {
            id: id.ok_or(RecordError::MissingId)?,
        })
    }
}

/// Where TLS-RPT reports go (RFC 8460 §3, `rua`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportUri {
    /// `mailto:`: the address, percent-decoded, without any `?` header fields.
    Mailto(String),
    /// `https:`: the URL as published (still percent-encoded).
    Https(String),
}

impl fmt::Display for ReportUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportUri::Mailto(address) => write!(f, "mailto:{address}"),
            ReportUri::Https(url) => f.write_str(url),
        }
    }
}

/// A parsed `_smtp._tls.<domain>` TXT record (RFC 8460 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRptRecord {
    /// The report destinations with a supported scheme, in the published order (at least one).
    pub rua: Vec<ReportUri>,
    /// `rua` URIs with another scheme, as written: not used, kept for diagnostics.
    pub unsupported: Vec<String>,
}

impl TlsRptRecord {
    /// The TLS-RPT record among all TXT records at `_smtp._tls.<domain>` (RFC 8460 §3):
    /// records not starting with `v=TLSRPTv1` are discarded; none left is `Ok(None)`, more
    /// than one is an error, as is an invalid one.
    pub fn select<R: AsRef<[u8]>>(records: &[R]) -> Result<Option<TlsRptRecord>, RecordError> {
        select(records, TLSRPT_VERSION, Self::parse)
    }

    /// Parses one record (RFC 8460 §3, `tlsrpt-record`): `v=TLSRPTv1` first, then one `rua`
    /// field (a comma-separated list of URIs, spaces allowed around the commas) and any
    /// extension fields. A `,` or `;` inside a URI must be percent-encoded (`%2C`, `%3B`), so
    /// every raw one is a separator. URIs with schemes other than `mailto:` and `https:` are
    /// set aside; at least one supported URI must remain.
    pub fn parse(text: &[u8]) -> Result<TlsRptRecord, RecordError> {
        let mut rua = None;
        for (name, value) in fields(text, TLSRPT_VERSION)? {
            if name == "rua" {
                if rua.is_some() {
                    return Err(RecordError::Duplicate("rua"));
                }
                rua = Some(value);
            } else {
                extension(name, value)?;
            }
        }
        let rua = rua.ok_or(RecordError::MissingRua)?;
        let mut record = TlsRptRecord {
            rua: Vec::new(),
            unsupported: Vec::new(),
        };
        for uri in rua.split(',').map(|u| u.trim_matches(is_wsp)) {
            match report_uri(uri)? {
                Some(parsed) => record.rua.push(parsed),
                None => record.unsupported.push(uri.to_owned()),
            }
        }
        if record.rua.is_empty() {
            return Err(RecordError::NoUsableRua);
        }
        Ok(record)
    }
}

/// RFC 8461 §3.1 / RFC 8460 §3: of all records, those starting with the version tag; exactly
/// one may remain.
fn select<R: AsRef<[u8]>, T>(
    records: &[R],
    version: &'static str,
    parse: fn(&[u8]) -> Result<T, RecordError>,
) -> Result<Option<T>, RecordError> {
    let mut candidates = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| starts_with_version(r, version));
    let Some(first) = candidates.next() else {
        return Ok(None);
    };
    let more = candidates.count();
    if more > 0 {
        return Err(RecordError::Multiple {
            version,
            count: more + 1,
        });
    }
    parse(first).map(Some)
}

/// Whether a record is one of `version`'s: the tag, then the end, a `;` or whitespace (so
/// `v=STSv10` is not an STSv1 record, but `v=STSv1 ;id=1` is a valid one).
fn starts_with_version(record: &[u8], version: &str) -> bool {
    record
        .strip_prefix(version.as_bytes())
        .is_some_and(|rest| matches!(rest.first(), None | Some(b';' | b' ' | b'\t')))
}

/// `*WSP` of RFC 5234: space and horizontal tab.
fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The `name=value` fields after the version tag (RFC 8461 §3.1 `sts-text-record`, RFC 8460
/// §3 `tlsrpt-record`: `version 1*(*WSP ";" *WSP field) [*WSP ";" *WSP]`). Names are checked
/// here, values by the caller.
fn fields<'a>(
    text: &'a [u8],
    version: &'static str,
) -> Result<Vec<(&'a str, &'a str)>, RecordError> {
    if let Some(position) = text
        .iter()
        .position(|&b| !(b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b)))
    {
        return Err(RecordError::BadCharacter {
            position,
            byte: text[position],
        });
    }
    // Only printable ASCII, space and tab are left: valid UTF-8.
    let text = std::str::from_utf8(text).map_err(|_| RecordError::NotVersion(version))?;
    let rest = text
        .strip_prefix(version)
        .ok_or(RecordError::NotVersion(version))?
        .trim_end_matches(is_wsp);
    let mut parts = rest.split(';');
    if parts
        .next()
        .is_some_and(|head| !head.trim_matches(is_wsp).is_empty())
    {
        return Err(RecordError::NotVersion(version));
    }
    let parts: Vec<&str> = parts.map(|p| p.trim_matches(is_wsp)).collect();
    let mut fields = Vec::with_capacity(parts.len());
    for (i, field) in parts.iter().enumerate() {
        if field.is_empty() {
            // Only after the last field: the optional trailing separator.
            if i + 1 == parts.len() {
                break;
            }
            return Err(RecordError::EmptyField);
        }
        let malformed = || RecordError::MalformedField {
            field: (*field).to_owned(),
        };
        let (name, value) = field.split_once('=').ok_or_else(malformed)?;
        if !is_field_name(name) {
            return Err(malformed());
        }
        fields.push((name, value));
    }
    Ok(fields)
}

/// `sts-ext-name` (RFC 8461 §3.1) and `tlsrpt-ext-name` (RFC 8460 §3):
/// `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`.
fn is_field_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// An extension field (RFC 8461 §3.1 `sts-extension`, RFC 8460 §3 `tlsrpt-extension`): its
/// value is `1*(%x21-3A / %x3C / %x3E-7E)`, anything visible but `;` and `=`. Ignored once
/// checked.
fn extension(name: &str, value: &str) -> Result<(), RecordError> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'=')
    {
        Ok(())
    } else {
        Err(RecordError::BadValue {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// One `rua` URI (RFC 8460 §3): `mailto:` or `https:` parsed, another scheme `None`.
fn report_uri(uri: &str) -> Result<Option<ReportUri>, RecordError> {
    let bad = |why| RecordError::BadUri {
        uri: uri.to_owned(),
        why,
    };
    if uri.is_empty() {
        return Err(bad("empty"));
    }
    if uri.bytes().any(|b| b == b' ' || b == b'\t') {
        return Err(bad("whitespace inside a URI"));
    }
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| bad("no scheme"))?;
    // RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), case-insensitive.
    let mut chars = scheme.bytes();
    let scheme_ok = chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(bad("invalid scheme"));
    }
    if scheme.eq_ignore_ascii_case("mailto") {
        // RFC 6068: `mailto:addr?hfields`; the address ends at the first raw `?`.
        let raw_address = rest.split('?').next().unwrap_or_default();
        let address = percent_decode(raw_address).ok_or_else(|| bad("invalid percent-encoding"))?;
        let address = String::from_utf8(address).map_err(|_| bad("address is not UTF-8"))?;
        match address.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Ok(Some(ReportUri::Mailto(address)))
            }
            _ => Err(bad("not a mail address")),
        }
    } else if scheme.eq_ignore_ascii_case("https") {
        let authority = rest.strip_prefix("//").ok_or_else(|| bad("no //host"))?;
        let host_end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
        if authority[..host_end].is_empty() {
            return Err(bad("no host"));
        }
        if percent_decode(authority).is_none() {
            return Err(bad("invalid percent-encoding"));
        }
        Ok(Some(ReportUri::Https(uri.to_owned())))
    } else {
        Ok(None)
    }
}

/// RFC 3986 §2.1 percent-decoding; `None` when a `%` is not followed by two hex digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|&h| (h as char).to_digit(16));
            let (hi, lo) = (hex(i + 1)?, hex(i + 2)?);
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(text: &str) -> Result<StsRecord, RecordError> {
        StsRecord::parse(text.as_bytes())
    }

    fn rpt(text: &str) -> Result<TlsRptRecord, RecordError> {
        TlsRptRecord::parse(text.as_bytes())
    }

    #[test]
    fn sts_records_of_rfc_8461_parse() {
        assert_eq!(
            sts("v=STSv1; id=20160831085700Z;").unwrap().id.as_str(),
            "20160831085700Z"
        );
        assert_eq!(sts("v=STSv1;id=abc").unwrap().id.as_str(), "abc");
        assert_eq!(sts("v=STSv1 ;\tid=abc ; ").unwrap().id.as_str(), "abc");
        // Extensions are allowed and ignored, before or after the id.
        assert_eq!(
            sts("v=STSv1; ext=x!:<>; id=1; foo.bar-baz_1=y")
                .unwrap()
                .id
                .as_str(),
            "1"
        );
        let max = "a".repeat(32);
        assert_eq!(sts(&format!("v=STSv1; id={max}")).unwrap().id.as_str(), max);
    }

    #[test]
    fn invalid_sts_records_are_rejected() {
        for (text, want) in [
            ("v=STSv1", RecordError::MissingId),
            ("v=STSv1;", RecordError::MissingId),
            ("v=STSv1; ext=1", RecordError::MissingId),
            ("v=STSv1; id=", RecordError::BadId(String::new())),
            ("v=STSv1; id=a-b", RecordError::BadId("a-b".into())),
            ("v=STSv1; id=a b", RecordError::BadId("a b".into())),
            ("v=STSv1; id=1; id=2", RecordError::Duplicate("id")),
            ("v=STSv1;; id=1", RecordError::EmptyField),
            ("v=STSv1; ;", RecordError::EmptyField),
            ("v=STSv1 id=1", RecordError::NotVersion(STS_VERSION)),
            (" v=STSv1; id=1", RecordError::NotVersion(STS_VERSION)),
            ("v=stsv1; id=1", RecordError::NotVersion(STS_VERSION)),
            (
                "v=STSv1; id =1",
                RecordError::MalformedField {
                    field: "id =1".into(),
                },
            ),
            (
                "v=STSv1; id=1; noequals",
                RecordError::MalformedField {
                    field: "noequals".into(),
                },
            ),
            (
                "v=STSv1; id=1; _x=1",
                RecordError::MalformedField {
                    field: "_x=1".into(),
                },
            ),
            (
                "v=STSv1; id=1; e=a=b",
                RecordError::BadValue {
                    name: "e".into(),
                    value: "a=b".into(),
                },
            ),
            (
                "v=STSv1; id=1; e=",
                RecordError::BadValue {
                    name: "e".into(),
                    value: String::new(),
                },
            ),
        ] {
            assert_eq!(sts(text), Err(want), "{text:?}");
        }
        assert_eq!(
            sts(&format!("v=STSv1; id={}", "a".repeat(33))),
            Err(RecordError::BadId("a".repeat(33)))
        );
        assert_eq!(
            StsRecord::parse(b"v=STSv1; id=1\x00"),
            Err(RecordError::BadCharacter {
                position: 13,
                byte: 0
            })
        );
        assert!(matches!(
            StsRecord::parse("v=STSv1; id=é".as_bytes()),
            Err(RecordError::BadCharacter { position: 12, .. })
        ));
    }

    #[test]
    fn selection_ignores_other_records_and_refuses_two() {
        let one: &[&[u8]] = &[b"v=spf1 -all", b"v=STSv10; id=9", b"v=STSv1; id=7"];
        assert_eq!(StsRecord::select(one).unwrap().unwrap().id.as_str(), "7");
        let none: &[&[u8]] = &[b"v=spf1 -all", b"hello"];
        assert_eq!(StsRecord::select(none), Ok(None));
        assert_eq!(StsRecord::select::<&[u8]>(&[]), Ok(None));
        let two: &[&[u8]] = &[b"v=STSv1; id=1", b"v=STSv1; id=2"];
        assert_eq!(
            StsRecord::select(two),
            Err(RecordError::Multiple {
                version: STS_VERSION,
                count: 2
            })
        );
        // Even two identical ones.
        let same: &[&[u8]] = &[b"v=STSv1; id=1", b"v=STSv1; id=1"];
        assert!(StsRecord::select(same).is_err());
        // An invalid single candidate is an error, not "no record".
        let bad: &[&[u8]] = &[b"v=STSv1; id=bad!"];
        assert_eq!(
            StsRecord::select(bad),
            Err(RecordError::BadId("bad!".into()))
        );
    }

    #[test]
    fn ids_round_trip_through_serde_and_are_validated() {
        let id: StsId = "abc123".parse().unwrap();
        assert_eq!(String::from(id.clone()), "abc123");
        assert_eq!(id.to_string(), "abc123");
        assert!(StsId::try_from(String::from("x y")).is_err());
    }

    #[test]
    fn tlsrpt_records_of_rfc_8460_parse() {
        let r = rpt("v=TLSRPTv1;rua=mailto:reports@example.com").unwrap();
        assert_eq!(r.rua, [ReportUri::Mailto("reports@example.com".into())]);
        let r = rpt("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").unwrap();
        assert_eq!(
            r.rua,
            [ReportUri::Https(
                "https://reporting.example.com/v1/tlsrpt".into()
            )]
        );
        // Several URIs, spaces around the commas, extensions, a trailing separator.
        let r =
            rpt("v=TLSRPTv1; ext=1; rua=mailto:a@x.test , HTTPS://r.test/a?x=1,\tmailto:b@y.test;")
                .unwrap();
        assert_eq!(
            r.rua,
            [
                ReportUri::Mailto("a@x.test".into()),
                ReportUri::Https("HTTPS://r.test/a?x=1".into()),
                ReportUri::Mailto("b@y.test".into()),
            ]
        );
        // Escaped ',' and ';' belong to the URI; header fields of a mailto URI are dropped.
        let r = rpt("v=TLSRPTv1; rua=mailto:a%2Cb%3Bc@x.test?subject=hi").unwrap();
        assert_eq!(r.rua, [ReportUri::Mailto("a,b;c@x.test".into())]);
        assert_eq!(r.rua[0].to_string(), "mailto:a,b;c@x.test");
        // Unknown schemes are set aside while one supported URI remains.
        let r = rpt("v=TLSRPTv1; rua=ftp://x.test/r,mailto:a@x.test").unwrap();
        assert_eq!(r.unsupported, ["ftp://x.test/r"]);
    }

    #[test]
    fn invalid_tlsrpt_records_are_rejected() {
        for (text, want) in [
            ("v=TLSRPTv1", RecordError::MissingRua),
            ("v=TLSRPTv1; ext=1", RecordError::MissingRua),
            (
                "v=TLSRPTv1;rua=mailto:a@x.test;rua=mailto:b@x.test",
                RecordError::Duplicate("rua"),
            ),
            ("v=TLSRPTv1;rua=ftp://x.test/", RecordError::NoUsableRua),
            (
                "v=TLSRPTv2;rua=mailto:a@x.test",
                RecordError::NotVersion(TLSRPT_VERSION),
            ),
            ("v=STSv1; id=1", RecordError::NotVersion(TLSRPT_VERSION)),
        ] {
            assert_eq!(rpt(text), Err(want), "{text:?}");
        }
        for (text, why) in [
            ("v=TLSRPTv1;rua=", "empty"),
            ("v=TLSRPTv1;rua=mailto:a@x.test,", "empty"),
            ("v=TLSRPTv1;rua=mailto:a@x.test,,mailto:b@x.test", "empty"),
            ("v=TLSRPTv1;rua=reports@example.com", "no scheme"),
            ("v=TLSRPTv1;rua=example.com", "no scheme"),
            ("v=TLSRPTv1;rua=1x:y", "invalid scheme"),
            ("v=TLSRPTv1;rua=mailto:nobody", "not a mail address"),
            ("v=TLSRPTv1;rua=mailto:@x.test", "not a mail address"),
            (
                "v=TLSRPTv1;rua=mailto:a%2@x.test",
                "invalid percent-encoding",
            ),
            ("v=TLSRPTv1;rua=mailto:a%ff@x.test", "address is not UTF-8"),
            ("v=TLSRPTv1;rua=https:/x.test", "no //host"),
            ("v=TLSRPTv1;rua=https:///path", "no host"),
            (
                "v=TLSRPTv1;rua=mailto:a b@x.test",
                "whitespace inside a URI",
            ),
        ] {
            match rpt(text) {
                Err(RecordError::BadUri { why: got, .. }) => assert_eq!(got, why, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tlsrpt_selection_follows_the_same_rules() {
        let recs: &[&str] = &["v=spf1", "v=TLSRPTv1; rua=mailto:a@x.test"];
        assert!(TlsRptRecord::select(recs).unwrap().is_some());
        let two: &[&str] = &[
            "v=TLSRPTv1; rua=mailto:a@x.test",
            "v=TLSRPTv1;rua=mailto:b@x.test",
        ];
        assert!(matches!(
            TlsRptRecord::select(two),
            Err(RecordError::Multiple { count: 2, .. })
        ));
        assert_eq!(
            TlsRptRecord::select(&["v=TLSRPTv10;rua=mailto:a@x.test"]),
            Ok(None)
        );
    }
}
