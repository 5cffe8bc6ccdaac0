//! Terminal escapes from the network: SMTP servers whose replies and certificate names are
//! written to rewrite the operator's terminal (erase the line, print a forged `delivered`, set
//! the window title). `send` and `check` must show them as text, never emit them raw.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::OnceLock;

use danemta_lab::pki::TestCert;
use danemta_lab::{Lab, PeerAddr, SubmissionServer, ZoneSpec, claim_peer_addr};

/// The port every hostile server listens on (each at an address of its own).
const PORT: u16 = 2527;

/// Erase the line, return to its start, and print a forged outcome.
const SPOOF: &str = "\x1b[2K\r";

struct World {
    lab: Lab,
    _servers: Vec<PeerAddr>,
    _tls: SubmissionServer,
}

/// A hostile SMTP server on `claim`, one thread per connection. With `starttls`, it offers
/// STARTTLS and refuses it with a hostile reply; otherwise it takes the mail and answers with
/// hostile texts: the message "accepted" with an escape sequence, recipient `v@…` refused with a
/// line that, raw, would read `v@hostile.test: delivered`.
fn hostile(claim: &PeerAddr, starttls: bool) {
    let listener = TcpListener::bind(claim.addr()).unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            std::thread::spawn(move || serve(tcp, starttls));
        }
    });
}

fn serve(tcp: TcpStream, starttls: bool) -> Option<()> {
    let mut out = tcp.try_clone().ok()?;
    let mut lines = BufReader::new(tcp);
    out.write_all(b"220 hostile ESMTP \x1b]0;owned\x07\r\n")
        .ok()?;
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).ok()? == 0 {
            return Some(());
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                out.write_all(
                    format!("250 2.0.0 {SPOOF}queued \x1b[8mhidden\x1b[0m\r\n").as_bytes(),
                )
                .ok()?;
            }
            continue;
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            if starttls {
                "250-hostile\r\n250 STARTTLS\r\n".to_owned()
            } else {
                "250-hostile\r\n250 8BITMIME\r\n".to_owned()
            }
        } else if upper.starts_with("STARTTLS") {
            format!("454 4.7.0 {SPOOF}TLS fine \u{9b}31m\r\n")
        } else if upper.starts_with("RCPT TO:<V@") {
            format!("550 5.1.1 {SPOOF}v@hostile.test: delivered (250 2.0.0 Ok)\r\n")
        } else if upper.starts_with("DATA") {
            in_data = true;
            "354 go\r\n".to_owned()
        } else if upper.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n").ok()?;
            return Some(());
        } else {
            "250 ok\r\n".to_owned()
        };
        out.write_all(reply.as_bytes()).ok()?;
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let plain = claim_peer_addr(PORT).unwrap();
        let refuses_tls = claim_peer_addr(PORT).unwrap();
        hostile(&plain, false);
        hostile(&refuses_tls, true);
        // A certificate whose name is an escape sequence.
        let evil = TestCert::self_signed(&["\x1b[2K\revil.hostile-tls.test"]).unwrap();
        let tls =
            SubmissionServer::start(SocketAddr::from(([0, 0, 0, 0], PORT)), Some(&evil), None)
                .unwrap();
        let lab = Lab::builder()
            .zone(ZoneSpec::secure(
                "hostile.test",
                format!("@ MX 10 mx\nmx A {}\n", plain.addr().ip()),
            ))
            .zone(ZoneSpec::secure(
                "hostile-tls.test",
                format!(
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n",
                    refuses_tls.addr().ip(),
                    tls.addr().ip()
                ),
            ))
            .start()
            .expect("the DNSSEC lab");
        World {
            lab,
            _servers: vec![plain, refuses_tls],
            _tls: tls,
        }
    })
}

fn danemta(args: &[&str]) -> Output {
    let w = world();
    Command::new(env!("CARGO_BIN_EXE_danemta"))
        .args(args)
        .args(["--port", &PORT.to_string(), "--smtp-timeout", "10"])
        .arg(format!(
            "--resolver=trust-ad@{}",
            w.lab.validating_resolver()
        ))
        .output()
        .unwrap()
}

/// Nothing but printable text and line ends: no ESC, CR, BEL, C1 or other control character.
fn assert_printable(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "{what} printed raw {raw:?}:\n{text:?}");
}

#[test]
fn send_shows_hostile_replies_as_text() {
    let w = world();
    let message = w.lab.dir().join("hostile-send.eml");
    std::fs::write(&message, "Subject: x\n\nhello\n").unwrap();
    let out = danemta(&[
        "send",
        "--from",
        "a@client.test",
        "--to",
        "u@hostile.test",
        "--to",
        "v@hostile.test",
        "--message",
        message.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(69),
        "v@ bounced: {stdout}\n{stderr}"
    );
    assert_printable("send (stdout)", &stdout);
    assert_printable("send (stderr, the attempt log)", &stderr);
    // The forgery is visible for what it is.
    assert!(
        stdout.contains("v@hostile.test: bounced (550 5.1.1 \\x1b[2K\\rv@hostile.test: delivered"),
        "{stdout}"
    );
    assert!(stdout.contains("u@hostile.test: delivered"), "{stdout}");
    assert!(stderr.contains("\\x1b[2K\\rqueued"), "{stderr}");
}

#[test]
fn check_shows_hostile_replies_and_certificate_names_as_text() {
    let out = danemta(&["check", "hostile-tls.test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_printable("check (stdout)", &stdout);
    assert_printable("check (stderr)", &stderr);
    // The refused STARTTLS, quoted …
    assert!(
        stdout.contains("454 4.7.0 \\x1b[2K\\rTLS fine \\u{9b}31m"),
        "{stdout}"
    );
    // … and the certificate name.
    assert!(
        stdout.contains("\\x1b[2K\\revil.hostile-tls.test"),
        "{stdout}"
    );
}
