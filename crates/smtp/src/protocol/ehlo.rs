//! Service extensions announced in the EHLO reply (RFC 5321 §4.1.1.1).

use serde::Serialize;

use crate::reply::Reply;

/// The extensions this client uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870), with the limit when one is given.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms (RFC 4954), upper-case.
    pub auth: Vec<String>,
    /// REQUIRETLS (RFC 8689 §2). Meaningful only in the EHLO reply after STARTTLS: a
    /// plaintext EHLO reply is the attacker's to write.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
}

impl Capabilities {
    /// Reads the keywords of a 250 EHLO reply; the first line is the server's greeting name.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => caps.auth = words.map(str::to_ascii_uppercase).collect(),
                "REQUIRETLS" => caps.requiretls = true,
                _ => {}
            }
        }
        caps
    }

    /// Whether a message of `len` bytes fits the announced SIZE limit (0 means no limit).
    pub fn fits(&self, len: usize) -> bool {
        match self.size {
            Some(limit) if limit > 0 => (len as u64) <= limit,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_read_case_insensitively() {
        let reply = Reply::new(
            250,
            [
                "mx.example",
                "pipelining",
                "SIZE 10240000",
                "8BITMIME",
                "STARTTLS",
                "AUTH PLAIN login",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
                "requiretls",
            ]
            .map(String::from)
            .to_vec(),
        );
        let c = Capabilities::from_ehlo(&reply);
        assert!(
            c.starttls
                && c.pipelining
                && c.eight_bit_mime
                && c.smtputf8
                && c.enhanced_status_codes
                && c.requiretls
        );
        assert_eq!(c.size, Some(10_240_000));
        assert_eq!(c.auth, ["PLAIN", "LOGIN"]);
        assert!(c.fits(10_240_000) && !c.fits(10_240_001));
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword() {
        let c = Capabilities::from_ehlo(&Reply::new(250, vec!["STARTTLS".into()]));
        assert!(!c.starttls);
    }
}
