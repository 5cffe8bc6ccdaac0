//! SMTP command lines as the server parses them (`smtp::server::command::parse`): never
//! panics, is deterministic, reads verbs case-insensitively, and whatever parses obeys the
//! module's rules and parses back to the same command from a canonical command line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp::envelope::{Field, check_mailbox};
use smtp::server::command::{
    Command, MAX_ENVID, MAX_ORCPT, MailFrom, ParseError, RcptTo, parse, xtext_decode,
};
use smtp::server::{Body, Notify, Ret};

/// RFC 3461 §4 xtext, as short as possible: `+XX` only where it is required.
fn xtext(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => (b as char).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

fn notify(n: &Notify) -> String {
    if n.is_never() {
        return "NEVER".into();
    }
    let words = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ];
    let words: Vec<&str> = words.iter().filter(|w| w.0).map(|w| w.1).collect();
    words.join(",")
}

/// A command line that says what `c` says.
fn canonical(c: &Command) -> String {
    match c {
        Command::Ehlo(name) => format!("EHLO {name}"),
        Command::Helo(name) => format!("HELO {name}"),
        Command::Mail(m) => {
            let mut line = format!("MAIL FROM:<{}>", m.sender);
            if let Some(size) = m.size {
                line += &format!(" SIZE={size}");
            }
            if m.body == Body::EightBitMime {
                line += " BODY=8BITMIME";
            }
            if m.smtputf8 {
                line += " SMTPUTF8";
            }
            match m.ret {
                Some(Ret::Full) => line += " RET=FULL",
                Some(Ret::Hdrs) => line += " RET=HDRS",
                None => {}
            }
            if let Some(envid) = &m.envid {
                line += &format!(" ENVID={}", xtext(envid));
            }
            line
        }
        Command::Rcpt(r) => {
            let mut line = format!("RCPT TO:<{}>", r.recipient);
            if let Some(n) = &r.notify {
                line += &format!(" NOTIFY={}", notify(n));
            }
            if let Some((kind, addr)) = &r.orcpt {
                line += &format!(" ORCPT={kind};{}", xtext(addr));
            }
            line
        }
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Vrfy => "VRFY x".into(),
        Command::Expn => "EXPN x".into(),
        Command::Help => "HELP".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::StartTls => "STARTTLS".into(),
        Command::Auth { mechanism, initial } => match initial {
            Some(i) => format!("AUTH {mechanism} {i}"),
            None => format!("AUTH {mechanism}"),
        },
        Command::Bdat => "BDAT".into(),
    }
}

fn check_mail(m: &MailFrom) {
    // RFC 5321 §4.5.5: the null sender; otherwise the envelope rules hold, and no source route.
    if !m.sender.is_empty() {
        assert_eq!(check_mailbox(Field::Sender, &m.sender), Ok(()), "{m:?}");
        assert!(!m.sender.starts_with('@'), "source route {m:?}");
    }
    assert!(!m.sender.contains('>'), "{m:?}");
    if let Some(envid) = &m.envid {
        assert!(!envid.is_empty() && envid.len() <= MAX_ENVID, "{m:?}");
        assert_eq!(xtext_decode(&xtext(envid)).as_ref(), Some(envid));
    }
    assert_eq!(
        m.has_parameters(),
        *m != MailFrom {
            sender: m.sender.clone(),
            ..MailFrom::default()
        }
    );
}

fn check_rcpt(r: &RcptTo) {
    assert!(!r.recipient.is_empty(), "{r:?}");
    if r.recipient.eq_ignore_ascii_case("postmaster") {
        assert_eq!(r.recipient, "postmaster");
    } else {
        assert_eq!(
            check_mailbox(Field::Recipient, &r.recipient),
            Ok(()),
            "{r:?}"
        );
        assert!(!r.recipient.starts_with('@'), "source route {r:?}");
    }
    if let Some((kind, addr)) = &r.orcpt {
        assert!(!kind.is_empty() && !addr.is_empty(), "{r:?}");
        assert_eq!(*kind, kind.to_ascii_lowercase());
        assert!(kind.len() + 1 + addr.len() <= MAX_ORCPT, "{r:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    // Deterministic.
    assert_eq!(parse(data), parsed);
    match &parsed {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "{e:?} has no message");
            if std::str::from_utf8(data).is_err() {
                assert_eq!(*e, ParseError::Syntax("not UTF-8"));
            }
        }
        Ok(c) => {
            let _ = format!("{c:?}");
            match c {
                Command::Ehlo(name) | Command::Helo(name) => {
                    assert_eq!(name.to_string().parse().as_ref(), Ok(name));
                    assert!(!name.as_str().is_empty() && !name.as_str().contains(' '));
                }
                Command::Mail(m) => check_mail(m),
                Command::Rcpt(r) => check_rcpt(r),
                Command::Auth { mechanism, .. } => {
                    assert!(!mechanism.is_empty());
                    assert_eq!(*mechanism, mechanism.to_ascii_uppercase());
                }
                _ => {}
            }
            // What parsed can be said again, and means the same.
            let line = canonical(c);
            assert_eq!(
                parse(line.as_bytes()).as_ref(),
                Ok(c),
                "canonical form {line:?}"
            );
        }
    }
    // RFC 5321 §2.4: verbs are case-insensitive; only the verb changes case here.
    let verb_end = data.iter().position(|b| *b == b' ').unwrap_or(data.len());
    for case in [u8::to_ascii_lowercase, u8::to_ascii_uppercase] {
        let mut other = data.to_vec();
        other[..verb_end].iter_mut().for_each(|b| *b = case(b));
        assert_eq!(parse(&other), parsed, "verb case changed: {other:?}");
    }
});
