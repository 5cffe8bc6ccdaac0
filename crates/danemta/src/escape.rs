//! Text from the network, made harmless for a terminal.
//!
//! SMTP replies, certificate names, DNS data and the error messages that quote them are chosen
//! by whoever runs the server or the zone. Printed raw, `\x1b[2K\r` erases the line and a
//! forged `delivered` takes its place; other escape sequences set the window title, move the
//! cursor or, on some terminals, write to files. Every human-facing string that came from a
//! peer or from DNS goes through [`escape`] on its way out (JSON output is escaped by serde).

use std::borrow::Cow;
use std::fmt::Write;

/// Bidirectional formatting characters (Unicode Cf), which reorder what follows them on the
/// screen ("Trojan Source", CVE-2021-42574): `host.evil\u{202e}moc.elpmaxe` displays as
/// `host.evilexample.com`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is printed as an escape.
fn needs_escape(c: char) -> bool {
    // Cc: the C0 controls (ESC, CR, LF, BEL, BS, TAB …), DEL and the C1 controls (CSI
    // U+009B starts a sequence on its own).
    c.is_control() || is_bidi_control(c)
}

/// `text` with every control character (C0 including tab, CR and LF; DEL; C1) and every
/// bidirectional formatting character written as a visible escape: `\r`, `\n`, `\t`, `\x1b`,
/// `\u{9b}`, `\u{202e}`. An escape sequence is thereby disarmed: its ESC is shown, the rest is
/// plain text. Printable text, UTF-8 included, is unchanged (and not copied).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn a_forged_status_line_is_shown_not_obeyed() {
        let hostile = "250 ok\x1b[2K\rdelivered\x07\x1b]0;title\x07";
        let shown = escape(hostile);
        assert_eq!(shown, "250 ok\\x1b[2K\\rdelivered\\x07\\x1b]0;title\\x07");
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in ('\0'..='\x1f').chain('\x7f'..='\u{9f}') {
            let text = format!("a{c}b");
            let shown = escape(&text);
            assert!(!shown.chars().any(char::is_control), "{c:?}: {shown:?}");
            assert!(shown.starts_with("a\\") && shown.ends_with('b'), "{shown}");
        }
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn printable_text_is_unchanged_and_not_copied() {
        for ok in [
            "250 2.0.0 Ok: queued as ABC123",
            "jösé@bücher.test — ok ✓",
            "",
        ] {
            assert!(matches!(escape(ok), std::borrow::Cow::Borrowed(s) if s == ok));
        }
    }
}
