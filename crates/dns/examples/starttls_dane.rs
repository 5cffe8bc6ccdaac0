//! Connect to an SMTP server, STARTTLS, and authenticate it by DANE (RFC 7672).
//!
//! ```text
//! cargo run -p danemta-dns --example starttls_dane -- HOST [--port N] [--connect IP[:PORT]]
//!     [--resolver validating|validating@IP:PORT|trust-ad@IP:PORT] [--trust-anchor FILE]
//! ```
//!
//! HOST is the MX host (not the mail domain: see the `route` example for that). Its TLSA
//! records at `_PORT._tcp.HOST` (after secure CNAMEs, RFC 7672 §2.2.2) are looked up with
//! DNSSEC; the TLS handshake after STARTTLS succeeds only when the server's certificate
//! matches one of them (RFC 7672 §3) and the server proves it holds the key.
//!
//! `--port N` is the SMTP port and so also names the TLSA records (`_N._tcp.HOST`, RFC 6698
//! §3); `--connect IP[:PORT]` only changes where to connect (e.g. a test server), not what is
//! looked up or verified. `--resolver` and `--trust-anchor` are as for `danemta`: in-process
//! validation over the system's resolver by default, IANA root anchors unless a file of DS or
//! DNSKEY records replaces them.
//!
//! Exit status: 0 verified; 1 not verified (TLSA mismatch, bogus DNS, no STARTTLS, network
//! error); 2 DANE does not apply to HOST (no secure TLSA records: nothing to verify, an MTA
//! would use opportunistic TLS; or none of the records is usable); 64 usage error.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dns::tls::{DaneTls, DaneTlsError};
use dns::{Backend, DnsName, ResolverSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const USAGE: &str = "usage: starttls_dane HOST [--port N] [--connect IP[:PORT]] [--resolver validating|validating@IP:PORT|trust-ad@IP:PORT] [--trust-anchor FILE]";
/// The whole run, and each DNS query.
const TIMEOUT: Duration = Duration::from_secs(30);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    host: DnsName,
    port: u16,
    connect: Option<SocketAddr>,
    resolver: ResolverSpec,
    trust_anchor: Option<PathBuf>,
}

/// What went wrong, and the exit status that says so.
enum Failure {
    /// DANE does not apply to the host: exit 2.
    NoDane(String),
    /// Verification or connection failed: exit 1.
    Failed(String),
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("starttls_dane: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    match tokio::time::timeout(TIMEOUT, run(&args)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::NoDane(why))) => {
            println!("not verified: {why}");
            ExitCode::from(2)
        }
        Ok(Err(Failure::Failed(why))) => {
            eprintln!("FAILED: {why}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("FAILED: no result within {TIMEOUT:?}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: &Args) -> Result<(), Failure> {
    let (host, port) = (&args.host, args.port);
    // The DANE part (RFC 7672): validated TLSA records, a verifier for them, the handshake.
    let resolver = Backend::open(&args.resolver, args.trust_anchor.as_deref(), DNS_TIMEOUT).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let dane = DaneTls::for_host(&resolver, host, port, provider)
        .await
        .map_err(no_dane)?;
    let addr = args.connect.or_else(|| first_address(&dane, port));
    let addr = addr.ok_or_else(|| Failure::Failed(format!("{host} has no address")))?;
    let tcp = starttls(TcpStream::connect(addr).await?).await?;
    let tls = TlsConnector::from(dane.config())
        .connect(dane.server_name(), tcp)
        .await;
    let proof = dane.verified();
    // The rest tells what happened.
    let c = dane.candidate();
    let records: Vec<String> = c.tlsa.iter().map(|r| r.to_string()).collect();
    let owner = c.tlsa_name.as_ref().map_or("?", |n| n.as_str());
    println!("TLSA {owner} (secure): {}", records.join(", "));
    match (tls, proof) {
        (Ok(mut tls), Some(proof)) => {
            let (_, session) = tls.get_ref();
            let version = session.protocol_version().map(|v| format!("{v:?}"));
            let cipher = session
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()));
            println!(
                "verified: {host} at {addr}, {} {}, SNI {}",
                version.unwrap_or_default(),
                cipher.unwrap_or_default(),
                c.tlsa_base
            );
            let name = match proof.name() {
                Some(n) => format!("{n} (DANE-TA, RFC 7672 §3.2.3)"),
                None => "not checked: DANE-EE authenticates the key (RFC 7672 §3.1.1)".to_owned(),
            };
            println!(
                "matched: {} at depth {} ({:?}); peer name {name}",
                proof.record(),
                proof.depth(),
                proof.anchor()
            );
            let _ = tls.write_all(b"QUIT\r\n").await;
            let _ = tls.shutdown().await;
            Ok(())
        }
        (Ok(_), None) => Err(Failure::Failed(
            "handshake completed without a DANE proof".into(),
        )),
        (Err(e), _) => Err(Failure::Failed(match dane.failure() {
            Some(why) => format!("DANE verification of {host} failed: {why}"),
            None => format!("TLS handshake with {host} failed: {e}"),
        })),
    }
}

/// The first address route discovery found for the host.
fn first_address(dane: &DaneTls, port: u16) -> Option<SocketAddr> {
    let first = dane.candidate().addresses.first()?;
    Some(SocketAddr::new(first.address, port))
}

/// Why DANE cannot verify this host: "does not apply" is its own exit status; a bogus or
/// unusable host is a failure.
fn no_dane(e: DaneTlsError) -> Failure {
    match e {
        DaneTlsError::NotApplicable { .. } | DaneTlsError::Unusable { .. } => {
            Failure::NoDane(e.to_string())
        }
        _ => Failure::Failed(e.to_string()),
    }
}

/// The SMTP part: greeting, EHLO, STARTTLS (RFC 3207); the socket ready for the handshake.
async fn starttls(tcp: TcpStream) -> Result<TcpStream, Failure> {
    let mut io = BufReader::new(tcp);
    let greeting = reply(&mut io).await?;
    expect(&greeting, "220", "greeting")?;
    io.get_mut()
        .write_all(b"EHLO starttls-dane.invalid\r\n")
        .await?;
    let ehlo = reply(&mut io).await?;
    expect(&ehlo, "250", "EHLO")?;
    let offered = ehlo.iter().any(|l| {
        l.get(4..)
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("STARTTLS"))
    });
    if !offered {
        return Err(Failure::Failed(
            "the server does not offer STARTTLS (with DANE, TLS is mandatory: RFC 7672 §2.2)"
                .into(),
        ));
    }
    io.get_mut().write_all(b"STARTTLS\r\n").await?;
    expect(&reply(&mut io).await?, "220", "STARTTLS")?;
    // Anything already sent after the 220 would be injected into the TLS session (RFC 3207 §5).
    if !io.buffer().is_empty() {
        return Err(Failure::Failed(
            "the server sent data after its STARTTLS reply".into(),
        ));
    }
    Ok(io.into_inner())
}

/// One SMTP reply, all its lines (RFC 5321 §4.2).
async fn reply(io: &mut BufReader<TcpStream>) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 || lines.len() > 100 {
            return Err(Failure::Failed("the server closed the connection".into()));
        }
        let line = line.trim_end().to_owned();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(lines);
        }
    }
}

fn expect(reply: &[String], code: &str, what: &str) -> Result<(), Failure> {
    match reply.last() {
        Some(l) if l.starts_with(code) => Ok(()),
        _ => Err(Failure::Failed(format!(
            "unexpected {what} reply: {}",
            reply.join(" | ")
        ))),
    }
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut host = None;
    let mut args = Args {
        host: DnsName::root(),
        port: 25,
        connect: None,
        resolver: ResolverSpec::default(),
        trust_anchor: None,
    };
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--connect" => {
                let v = value()?;
                args.connect = Some(
                    v.parse()
                        .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
                        .map_err(|_| format!("--connect {v:?}: expected IP or IP:PORT"))?,
                );
            }
            "--resolver" => args.resolver = value()?.parse().map_err(|e| format!("{e}"))?,
            "--trust-anchor" => args.trust_anchor = Some(value()?.into()),
            "-h" | "--help" => return Err("help".into()),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ if host.is_none() => host = Some(arg.parse().map_err(|e| format!("{e}"))?),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    args.host = host.ok_or("HOST is missing")?;
    // `--connect IP` without a port connects to --port.
    if let Some(a) = &mut args.connect
        && a.port() == 0
    {
        a.set_port(args.port);
    }
    Ok(args)
}
