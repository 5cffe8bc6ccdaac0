//! The small value syntaxes of the configuration file: durations (`30s`, `5m`, `1h`, `5d`,
//! or combined as `1h30m`) and sizes (`10MB`, `512KiB`, or a plain number of bytes).

use std::fmt;
use std::time::Duration;

/// A duration or size that is not in the accepted syntax.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error(
        "{0:?} is not a duration: expected a number and a unit s, m, h or d (\"30s\", \"5m\", \"1h30m\"), at least 1s"
    )]
    Duration(String),
    /// Not a size.
    #[error(
        "{0:?} is not a size: expected a number of bytes, optionally with a unit kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), at least 1 byte"
    )]
    Size(String),
}

/// Parses a duration: one or more `<number><unit>` parts, unit `s`, `m`, `h` or `d`
/// (`"30s"`, `"5m"`, `"1h30m"`). The total must be at least one second.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.chars().next().ok_or_else(bad)?;
        let scale: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit.len_utf8()..];
        total = number
            .checked_mul(scale)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration back in the file's syntax, with the largest exact unit (`300s` → `5m`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (scale, unit) in [(86_400, 'd'), (3600, 'h'), (60, 'm')] {
        if s != 0 && s.is_multiple_of(scale) {
            return format!("{}{unit}", s / scale);
        }
    }
    format!("{s}s")
}

/// Parses a size: a number of bytes, optionally followed (spaces allowed) by a unit, case
/// insensitive: `B`; `kB`, `MB`, `GB` (powers of 1000); `KiB`, `MiB`, `GiB` (powers of
/// 1024). At least one byte.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(text.to_owned());
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let number: u64 = t[..digits].parse().map_err(|_| bad())?;
    let scale: u64 = match t[digits..].trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    match number.checked_mul(scale) {
        Some(0) | None => Err(bad()),
        Some(n) => Ok(n),
    }
}

/// A size written back with the largest exact decimal unit (`50000000` → `50MB`).
pub fn format_size(n: u64) -> String {
    for (scale, unit) in [
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1000, "kB"),
    ] {
        if n != 0 && n.is_multiple_of(scale) {
            return format!("{}{unit}", n / scale);
        }
    }
    format!("{n}B")
}

/// serde glue: a duration string.
pub(crate) mod duration {
    use super::*;
    use serde::Deserialize;

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// serde glue: a size, as a string with a unit or an integer number of bytes.
pub(crate) mod size {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(i64),
        Text(String),
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) if n > 0 => u64::try_from(n).map_err(serde::de::Error::custom),
            Raw::Bytes(n) => Err(serde::de::Error::custom(UnitError::Size(n.to_string()))),
            Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }

    /// An optional size.
    pub(crate) fn option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// serde glue: any `FromStr` value written as a string.
pub(crate) mod from_str {
    use serde::Deserialize;
    use std::fmt::Display;
    use std::str::FromStr;

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// A list of such values.
    pub(crate) fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect()
    }

    /// An optional such value.
    pub(crate) fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        deserialize(d).map(Some)
    }
}

/// Joins displayable values with `, `.
pub(crate) fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("1s", 1),
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("5d", 432_000),
            ("1h30m", 5400),
            (" 2m ", 120),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "0s",
            "0m",
            "5",
            "s",
            "5x",
            "-5s",
            "5 s",
            "1.5h",
            "5S",
            "99999999999999999999s",
            "99999999999999999d",
            "5mé",
            "1h 30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for (secs, text) in [
            (1, "1s"),
            (90, "90s"),
            (300, "5m"),
            (3600, "1h"),
            (432_000, "5d"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn sizes() {
        for (text, n) in [
            ("1", 1),
            ("10B", 10),
            ("10MB", 10_000_000),
            ("50mb", 50_000_000),
            ("2 kB", 2000),
            ("1GB", 1_000_000_000),
            ("512KiB", 524_288),
            ("1MiB", 1_048_576),
            ("1gib", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(n), "{text}");
        }
        for bad in [
            "",
            "0",
            "0MB",
            "MB",
            "10XB",
            "-1MB",
            "1.5MB",
            "99999999999GB",
            "10 M B",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_round_trip() {
        for (n, text) in [(50_000_000, "50MB"), (1 << 20, "1MiB"), (1234, "1234B")] {
            assert_eq!(format_size(n), text);
            assert_eq!(parse_size(text), Ok(n));
        }
    }
}
