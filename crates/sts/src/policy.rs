//! The MTA-STS policy file (RFC 8461 §3.2): its parser and the [`Policy`] it yields.
//!
//! The file is `key: value` lines ending in CRLF or LF. Known keys are `version`, `mode`,
//! `max_age` and `mx`; unknown keys are checked for syntax and ignored. Every key but `mx` may
//! appear once: later copies are ignored, as RFC 8461 §3.2 says, without looking at their
//! values.
//!
//! One deliberate leniency: empty (or whitespace-only) lines are skipped, though the ABNF has
//! none. Policies served with a blank line at the end are common and mean nothing else.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mx::{MxPattern, MxPatternError};
use crate::record::StsId;

/// The largest `max_age` (RFC 8461 §3.2): 31557600 seconds, about a year.
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// What a policy asks of a sending MTA (RFC 8461 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to MX hosts that match the policy and authenticate with PKIX.
    Enforce,
    /// Deliver as without a policy, but report failures (TLS-RPT).
    Testing,
    /// No MTA-STS: how a domain withdraws a policy it published (RFC 8461 §8.3).
    None,
}

impl Mode {
    /// The value as written in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode that is not `enforce`, `testing` or `none`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid mode {0:?} (enforce, testing or none)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    /// RFC 8461 §3.2 `sts-policy-mode-value`: exactly `testing`, `enforce` or `none`
    /// (case-sensitive).
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// What is wrong with a policy file, and on which line (counted from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The bytes of a line are not UTF-8.
    #[error("line {line}: not UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// A line that is not `key: value` with a valid key (RFC 8461 §3.2: `sts-policy-ext-name`,
    /// then `:`); also a space before the colon or at the start of the line.
    #[error("line {line}: {text:?} is not `key: value`")]
    Malformed {
        /// The line.
        line: usize,
        /// The line as written.
        text: String,
    },
    /// A value that is empty or holds control characters (RFC 8461 §3.2 `sts-policy-vchar`).
    #[error("line {line}: the value of {key} is empty or has control characters")]
    BadValue {
        /// The line.
        line: usize,
        /// The key.
        key: String,
    },
    /// `version` is not `STSv1`.
    #[error("line {line}: unsupported version {value:?} (only STSv1)")]
    UnsupportedVersion {
        /// The line.
        line: usize,
        /// The version given.
        value: String,
    },
    /// `mode` is not `enforce`, `testing` or `none`.
    #[error("line {line}: invalid mode {value:?} (enforce, testing or none)")]
    BadMode {
        /// The line.
        line: usize,
        /// The mode given.
        value: String,
    },
    /// `max_age` is not 1 to 10 decimal digits.
    #[error("line {line}: invalid max_age {value:?} (1 to 10 digits)")]
    BadMaxAge {
        /// The line.
        line: usize,
        /// The value given.
        value: String,
    },
    /// `max_age` is over 31557600 seconds. The line is 0 when the policy did not come from a
    /// file (a stored one).
    #[error("line {line}: max_age {value} is over the limit of {MAX_AGE_LIMIT} seconds")]
    MaxAgeTooLarge {
        /// The line.
        line: usize,
        /// The value given.
        value: u64,
    },
    /// An `mx` value that is not a domain name or `*.` and a domain name.
    #[error("line {line}: invalid mx pattern {value:?}: {source}")]
    BadMx {
        /// The line.
        line: usize,
        /// The value given.
        value: String,
        /// What is wrong with it.
        source: MxPatternError,
    },
    /// A required key is absent (`version`, `mode`, `max_age`).
    #[error("no {0} line")]
    Missing(&'static str),
    /// Mode `enforce` or `testing` without any `mx` line (RFC 8461 §3.2: required then).
    #[error("mode {0} needs at least one mx line")]
    NoMx(Mode),
}

/// An MTA-STS policy (RFC 8461 §3.2) with the TXT record `id` it was fetched under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredPolicy")]
pub struct Policy {
    id: StsId,
    mode: Mode,
    mx: Vec<MxPattern>,
    max_age: u32,
}

/// A policy as serialised, validated again when read back.
#[derive(Deserialize)]
struct StoredPolicy {
    id: StsId,
    mode: Mode,
    mx: Vec<MxPattern>,
    max_age: u32,
}

impl TryFrom<StoredPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(p: StoredPolicy) -> Result<Self, PolicyError> {
        Policy::new(p.id, p.mode, p.mx, p.max_age)
    }
}

impl Policy {
    /// A policy from its parts, held to the rules of RFC 8461 §3.2: at least one `mx` pattern
    /// unless the mode is `none`, `max_age` at most [`MAX_AGE_LIMIT`].
    pub fn new(
        id: StsId,
        mode: Mode,
        mx: Vec<MxPattern>,
        max_age: u32,
    ) -> Result<Self, PolicyError> {
        if max_age > MAX_AGE_LIMIT {
            return Err(PolicyError::MaxAgeTooLarge {
                line: 0,
                value: max_age.into(),
            });
        }
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx(mode));
        }
        Ok(Self {
            id,
            mode,
            mx,
            max_age,
        })
    }

    /// Parses a policy file (RFC 8461 §3.2) fetched while the TXT record said `id`.
    pub fn parse(body: &[u8], id: StsId) -> Result<Self, PolicyError> {
        let mut version = false;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        // `sts-policy-term = LF / CRLF`; text after the last terminator is a line too.
        for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|_| PolicyError::NotUtf8 { line })?;
            if text.trim_matches(is_wsp).is_empty() {
                continue;
            }
            let (key, value) = field(line, text)?;
            match key {
                "version" if !version => {
                    if value != "STSv1" {
                        return Err(PolicyError::UnsupportedVersion {
                            line,
                            value: value.to_owned(),
                        });
                    }
                    version = true;
                }
                "mode" if mode.is_none() => {
                    mode = Some(
                        value
                            .parse()
                            .map_err(|UnknownMode(value)| PolicyError::BadMode { line, value })?,
                    );
                }
                "max_age" if max_age.is_none() => max_age = Some(parse_max_age(line, value)?),
                "mx" => mx.push(value.parse().map_err(|source| PolicyError::BadMx {
                    line,
                    value: value.to_owned(),
                    source,
                })?),
                // Unknown keys, and repeats of the single-valued ones: ignored.
                _ => {}
            }
        }
        if !version {
            return Err(PolicyError::Missing("version"));
        }
        let mode = mode.ok_or(PolicyError::Missing("mode"))?;
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        Self::new(id, mode, mx, max_age)
    }

    /// The TXT record `id` this policy was fetched under (RFC 8461 §3.1): a record with
    /// another id announces a new policy.
    pub fn id(&self) -> &StsId {
        &self.id
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The `mx` patterns, in the order of the file (none only in mode `none`).
    pub fn mx(&self) -> &[MxPattern] {
        &self.mx
    }

    /// `max_age` in seconds: how long after the fetch the policy may be used.
    pub fn max_age(&self) -> u32 {
        self.max_age
    }

    /// `max_age` as a duration.
    pub fn max_age_duration(&self) -> Duration {
        Duration::from_secs(self.max_age.into())
    }

    /// Whether MX host `host` is allowed by the policy (RFC 8461 §4.1): it matches one of the
    /// `mx` patterns. Says nothing about the mode: in mode `testing` or `none` a host that does
    /// not match is still used.
    pub fn matches_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

/// `*WSP` of RFC 5234: space and horizontal tab.
fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One `key: value` line (RFC 8461 §3.2, `sts-policy-field`): the key is
/// `sts-policy-ext-name` (letters and digits, then up to 31 of those and `_-.`), the colon
/// follows it directly, spaces and tabs around the value are dropped, and the value is
/// `sts-policy-vchar *(*WSP sts-policy-vchar)` (visible characters, UTF-8 allowed).
fn field(line: usize, text: &str) -> Result<(&str, &str), PolicyError> {
    let malformed = || PolicyError::Malformed {
        line,
        text: text.to_owned(),
    };
    let (key, value) = text.split_once(':').ok_or_else(malformed)?;
    let mut bytes = key.bytes();
    let key_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && key.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !key_ok {
        return Err(malformed());
    }
    let value = value.trim_matches(is_wsp);
    if value.is_empty() || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(PolicyError::BadValue {
            line,
            key: key.to_owned(),
        });
    }
    Ok((key, value))
}

/// RFC 8461 §3.2 `sts-policy-max-age-value = 1*10(DIGIT)`, at most [`MAX_AGE_LIMIT`].
fn parse_max_age(line: usize, value: &str) -> Result<u32, PolicyError> {
    let bad = || PolicyError::BadMaxAge {
        line,
        value: value.to_owned(),
    };
    if !(1..=10).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds: u64 = value.parse().map_err(|_| bad())?;
    u32::try_from(seconds)
        .ok()
        .filter(|&s| s <= MAX_AGE_LIMIT)
        .ok_or(PolicyError::MaxAgeTooLarge {
            line,
            value: seconds,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StsId {
        "20160831085700Z".parse().unwrap()
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text.as_bytes(), id())
    }

    #[test]
    fn the_examples_of_rfc_8461_parse() {
        let p = parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n\
             mx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.id(), &id());
        assert_eq!(p.mode(), Mode::Enforce);
        assert_eq!(p.max_age(), 604_800);
        assert_eq!(p.max_age_duration(), Duration::from_secs(604_800));
        let mx: Vec<String> = p.mx().iter().map(ToString::to_string).collect();
        assert_eq!(
            mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert!(p.matches_mx("MAIL.example.com."));
        assert!(p.matches_mx("mx1.example.net"));
        assert!(!p.matches_mx("example.net"));
        assert!(!p.matches_mx("evil.example.org"));
    }

    #[test]
    fn lf_line_ends_spaces_unknown_keys_and_blank_lines_are_fine() {
        let p = parse(
            "\nversion:STSv1\nmode:\t testing  \nfoo.bar_baz-1: some thing é\nmx: mx.example.com\n\
             max_age: 0\n\n   \n",
        )
        .unwrap();
        assert_eq!(p.mode(), Mode::Testing);
        assert_eq!(p.max_age(), 0);
        // No terminator after the last line.
        assert!(parse("version: STSv1\nmode: none\nmax_age: 86400").is_ok());
    }

    #[test]
    fn mode_none_needs_no_mx_but_the_others_do() {
        let p = parse("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert!(p.mx().is_empty());
        assert!(!p.matches_mx("mx.example.com"));
        for mode in [Mode::Enforce, Mode::Testing] {
            let text = format!("version: STSv1\nmode: {mode}\nmax_age: 86400\n");
            assert_eq!(parse(&text), Err(PolicyError::NoMx(mode)));
        }
    }

    #[test]
    fn only_the_first_of_a_repeated_key_counts() {
        let p = parse(
            "version: STSv1\nmode: testing\nmode: enforce\nmode: nonsense\nmax_age: 10\n\
             max_age: x\nversion: STSv2\nmx: a.example\nmx: b.example\n",
        )
        .unwrap();
        assert_eq!(p.mode(), Mode::Testing);
        assert_eq!(p.max_age(), 10);
        assert_eq!(p.mx().len(), 2);
    }

    #[test]
    fn max_age_is_bounded() {
        let with = |age: &str| parse(&format!("version: STSv1\nmode: none\nmax_age: {age}\n"));
        assert_eq!(with("31557600").unwrap().max_age(), MAX_AGE_LIMIT);
        assert_eq!(
            with("31557601"),
            Err(PolicyError::MaxAgeTooLarge {
                line: 3,
                value: 31_557_601
            })
        );
        assert_eq!(
            with("9999999999"),
            Err(PolicyError::MaxAgeTooLarge {
                line: 3,
                value: 9_999_999_999
            })
        );
        for bad in ["12345678901", "-1", "+5", "1.5", "1 2", "0x10", "١٢"] {
            assert_eq!(
                with(bad),
                Err(PolicyError::BadMaxAge {
                    line: 3,
                    value: bad.into()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_error_names_its_line() {
        let base = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n";
        for (text, want) in [
            ("", PolicyError::Missing("version")),
            (
                "mode: enforce\nmx: a.example\nmax_age: 1\n",
                PolicyError::Missing("version"),
            ),
            (
                "version: STSv1\nmx: a.example\nmax_age: 1\n",
                PolicyError::Missing("mode"),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.example\n",
                PolicyError::Missing("max_age"),
            ),
            (
                "version: STSv2\n",
                PolicyError::UnsupportedVersion {
                    line: 1,
                    value: "STSv2".into(),
                },
            ),
            (
                "version: STSv1\nmode: Enforce\n",
                PolicyError::BadMode {
                    line: 2,
                    value: "Enforce".into(),
                },
            ),
            (
                "version: STSv1\nmode enforce\n",
                PolicyError::Malformed {
                    line: 2,
                    text: "mode enforce".into(),
                },
            ),
            (
                "version: STSv1\nmode : enforce\n",
                PolicyError::Malformed {
                    line: 2,
                    text: "mode : enforce".into(),
                },
            ),
            (
                "version: STSv1\n mode: enforce\n",
                PolicyError::Malformed {
                    line: 2,
                    text: " mode: enforce".into(),
                },
            ),
            (
                "version: STSv1\n_x: 1\n",
                PolicyError::Malformed {
                    line: 2,
                    text: "_x: 1".into(),
                },
            ),
            (
                "version: STSv1\nmode:\n",
                PolicyError::BadValue {
                    line: 2,
                    key: "mode".into(),
                },
            ),
            (
                "version: STSv1\r\nmode: enforce\rmx: a\r\n",
                PolicyError::BadValue {
                    line: 2,
                    key: "mode".into(),
                },
            ),
            (
                "version: STSv1\nx: a\u{7}b\n",
                PolicyError::BadValue {
                    line: 2,
                    key: "x".into(),
                },
            ),
            (
                "version: STSv1\nmode: enforce\nmx: *.\n",
                PolicyError::BadMx {
                    line: 3,
                    value: "*.".into(),
                    source: MxPatternError::Empty,
                },
            ),
        ] {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
        assert!(parse(base).is_ok());
        assert_eq!(
            Policy::parse(b"version: STSv1\nmode: \xff\n", id()),
            Err(PolicyError::NotUtf8 { line: 2 })
        );
    }

    #[test]
    fn stored_policies_are_validated_when_read_back() {
        let p = parse("version: STSv1\nmode: enforce\nmx: *.example.com\nmax_age: 60\n").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"id":"20160831085700Z","mode":"enforce","mx":["*.example.com"],"max_age":60}"#
        );
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        for bad in [
            r#"{"id":"x","mode":"enforce","mx":[],"max_age":60}"#,
            r#"{"id":"x","mode":"none","mx":[],"max_age":31557601}"#,
            r#"{"id":"x!","mode":"none","mx":[],"max_age":1}"#,
            r#"{"id":"x","mode":"strict","mx":[],"max_age":1}"#,
        ] {
            assert!(serde_json::from_str::<Policy>(bad).is_err(), "{bad}");
        }
    }
}
