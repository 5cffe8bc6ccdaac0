//! `danemta sendmail`: the sendmail(1) command line as applications call it.
//!
//! Like Postfix's `sendmail` + `postdrop`, it writes the message straight into the queue
//! ([`Store::accept`], durable before it returns) and then rings the daemon
//! ([`relay::wake`]); it works while the daemon is down, which then sends the mail when it
//! starts. A user who may not write the spool (the packaged daemon's, mode 0750) cannot use
//! the queue directly: the message then goes to the running daemon over loopback SMTP (its
//! first `smtp` listener), which answers only once it is durable; with the daemon down too,
//! sendmail exits 75 and the application keeps the message. What it does to the message
//! follows Postfix's `cleanup`:
//!
//! * lines end in CRLF; a line holding a single `.` ends the input unless `-i`/`-oi`; bare CR
//!   and NUL are refused (EX_DATAERR), as is a message over `[server] max_message_size`;
//! * `-t` takes recipients from `To:`, `Cc:` and `Bcc:` (RFC 5322 §3.6.3 address lists:
//!   display names, groups, comments, quoted local parts), added to those of the command line;
//! * `Bcc:` is always removed (RFC 5322 §3.6.3: its addresses must not reach the others);
//! * a missing `From:`, `Date:` or `Message-ID:` is added (RFC 5322 §3.6), and a `Received:`
//!   trace field naming the submitting uid goes on top (RFC 5321 §4.4).
//!
//! Exit status (sysexits, as sendmail's): 0 queued; 64 usage (unknown option, no recipient,
//! bad command-line address); 65 bad message (size, bare CR, NUL, bad header address); 69
//! store not available in this build; 75 the queue cannot be written; 78 bad configuration.

use std::ffi::OsString;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use relay::config::{Config, ListenMode, StoreKind};
use relay::queue::{DsnParams, NewMessage, QueueId};
use smtp::Envelope;

use crate::error::CliError;
use crate::escape::escape;

/// Options of `danemta sendmail` (parsed by hand: sendmail's syntax glues options to their
/// values, `-oi`, `-fuser@example.org`, `-FName`, which no general parser expects).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct SendmailArgs {
    /// [-C|--config FILE] [-t] [-i|-oi] [-f FROM] [-F NAME] [-v] [RCPT…]; --help for details.
    #[arg(
        num_args = 0..,
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

pub const USAGE: &str = "\
usage: danemta sendmail [-C|--config FILE] [-t] [-i|-oi] [-f FROM] [-F NAME] [-v] [RCPT...]
Reads a message on standard input and queues it for the local danemta relay (straight into
the queue, or, for users who cannot write it, through the running daemon's smtp listener).
  -C, --config FILE  configuration (default /etc/danemta/danemta.toml, else embedded defaults)
  -t                 recipients also from the To:, Cc: and Bcc: headers (Bcc: is removed)
  -i, -oi            a line with a single '.' does not end the message (only end of input)
  -f FROM, -r FROM   envelope sender ('<>' for none); default LOGIN@HOSTNAME
  -F NAME            full name for an added From: header
  -v                 print the queue id
Accepted and ignored: -bm -oXXX -odb -odi -oem -oee -B TYPE -N DSN -R RET -V ENVID -n -m -U -G
Exit status: 0 queued; 64 usage; 65 bad message; 69 unavailable; 75 queue not writable; 78 bad config.
";

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    config: Option<PathBuf>,
    extract: bool,
    ignore_dots: bool,
    from: Option<String>,
    full_name: Option<String>,
    verbose: bool,
    help: bool,
    recipients: Vec<String>,
}

/// Options that take a value (glued, `-fuser`, or as the next argument); every other letter
/// is a flag, and flags may be bundled (`-ti`).
const WITH_VALUE: &[char] = &[
    'C', 'F', 'f', 'r', 'B', 'N', 'R', 'V', 'O', 'o', 'b', 'L', 'X', 'h', 'q', 'A',
];

/// Parses sendmail's command line (getopt style, stopping at the first operand or `--`).
fn parse_args(args: &[String]) -> Result<Options, CliError> {
    let mut opts = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", file)) => opts.config = Some(file.into()),
                None if long == "config" => {
                    let file = args.get(i).ok_or_else(|| missing("--config"))?;
                    i += 1;
                    opts.config = Some(file.into());
                }
                None if long == "help" => opts.help = true,
                _ => return Err(usage(format!("unknown option --{long}"))),
            }
            continue;
        }
        let Some(letters) = arg.strip_prefix('-').filter(|l| !l.is_empty()) else {
            i -= 1;
            break;
        };
        for (at, letter) in letters.char_indices() {
            if !WITH_VALUE.contains(&letter) {
                match letter {
                    't' => opts.extract = true,
                    'i' => opts.ignore_dots = true,
                    'v' => opts.verbose = true,
                    // No aliasing, "me too", initial submission, gateway: meaningless here.
                    'n' | 'm' | 'U' | 'G' => {}
                    _ => return Err(usage(format!("unknown option -{letter}"))),
                }
                continue;
            }
            let glued = &letters[at + letter.len_utf8()..];
            let value = if glued.is_empty() {
                let value = args.get(i).ok_or_else(|| missing(&format!("-{letter}")))?;
                i += 1;
                value.clone()
            } else {
                glued.to_owned()
            };
            option(&mut opts, letter, value)?;
            break;
        }
    }
    opts.recipients.extend(args[i..].iter().cloned());
    Ok(opts)
}

/// One option with its value.
fn option(opts: &mut Options, letter: char, value: String) -> Result<(), CliError> {
    match letter {
        'C' => opts.config = Some(value.into()),
        'F' => opts.full_name = Some(value),
        'f' | 'r' => opts.from = Some(value),
        // `-oi`; delivery mode, error mode and the other sendmail.cf options are ignored.
        'o' if value == "i" => opts.ignore_dots = true,
        'b' => match value.as_str() {
            "m" => {}
            "p" => {
                return Err(usage(
                    "-bp is not supported: use `danemta queue list`".into(),
                ));
            }
            other => {
                return Err(usage(format!(
                    "-b{other} is not supported: only -bm (read a message from standard input)"
                )));
            }
        },
        'q' => {
            return Err(usage(
                "-q is not supported: use `danemta queue flush`".into(),
            ));
        }
        // Body type, DSN NOTIFY, RET, ENVID, sendmail.cf options, log label, trace file, hop
        // count, alternate config: accepted and ignored, as Postfix does with most of them.
        _ => {}
    }
    Ok(())
}

/// A usage error (the main loop prints errors on one line: the usage text is for --help).
fn usage(message: String) -> CliError {
    CliError::Usage(format!("{message} (danemta sendmail --help for usage)"))
}

fn missing(option: &str) -> CliError {
    usage(format!("option {option} needs a value"))
}

/// Runs `danemta sendmail`.
pub fn run(args: SendmailArgs) -> Result<ExitCode, CliError> {
    let args: Vec<String> = args
        .args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    let opts = parse_args(&args)?;
    if opts.help {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    if !opts.extract && opts.recipients.is_empty() {
        return Err(usage("no recipient given (and no -t)".into()));
    }
    let config = Config::load(opts.config.as_deref())?;
    let hostname = match &config.server.hostname {
        Some(name) => name.to_string().trim_end_matches('.').to_owned(),
        None => system_hostname(),
    };
    let uid = real_uid();
    let login = login_name(uid);

    let max = config.server.max_message_size;
    let input = read_message(std::io::stdin().lock(), opts.ignore_dots, max)?;

    let mut recipients = Vec::new();
    for arg in &opts.recipients {
        let parsed = parse_address_list(arg).map_err(|e| usage(format!("recipient {e}")))?;
        if parsed.is_empty() {
            return Err(usage(format!(
                "recipient {:?}: no address in it",
                escape(arg)
            )));
        }
        for address in parsed {
            let address = qualify(&address, &hostname);
            check_recipient(&address).map_err(usage)?;
            recipients.push(address);
        }
    }
    let mut message = Message::split(&input);
    if opts.extract {
        for name in ["to", "cc", "bcc"] {
            for value in message.values(name) {
                let parsed = parse_address_list(&value)
                    .map_err(|e| CliError::Data(format!("-t: {name}: header: {e}")))?;
                for address in parsed {
                    let address = qualify(&address, &hostname);
                    check_recipient(&address)
                        .map_err(|e| CliError::Data(format!("-t: {name}: header: {e}")))?;
                    recipients.push(address);
                }
            }
        }
    }
    let recipients = dedup(recipients);
    if recipients.is_empty() {
        return Err(usage(
            "no recipient: none given and none in To:, Cc:, Bcc:".into(),
        ));
    }
    let sender = match &opts.from {
        Some(from) => envelope_sender(from, &hostname)?,
        None => format!("{login}@{hostname}"),
    };
    let envelope = Envelope::new(sender.clone(), recipients.iter().cloned()).map_err(|e| {
        let text = e.to_string();
        if opts.from.is_none() && text.starts_with("sender") {
            CliError::Usage(format!(
                "the default sender {sender:?} is not an address ({text}): give one with -f"
            ))
        } else {
            CliError::Usage(text)
        }
    })?;

    let id = QueueId::generate();
    let now = time::OffsetDateTime::now_utc();
    message.remove("bcc");
    let mut added = Vec::new();
    if !message.has("from") {
        let from = if sender.is_empty() {
            format!("MAILER-DAEMON@{hostname}")
        } else {
            sender.clone()
        };
        let name = opts.full_name.clone().or_else(|| full_name(uid));
        added.push(match name.as_deref().map(display_name) {
            Some(name) if !name.is_empty() => format!("From: {name} <{from}>"),
            _ => format!("From: {from}"),
        });
    }
    if !message.has("date") {
        added.push(format!("Date: {}", rfc5322_date(now)));
    }
    if !message.has("message-id") {
        added.push(format!("Message-ID: <{id}@{hostname}>"));
    }
    let received = format!(
        "Received: by {hostname} (danemta, from userid {uid})\r\n\tid {id}; {}",
        rfc5322_date(now)
    );
    let body = message.assemble(&received, &added);

    // Every failure to write the queue is EX_TEMPFAIL (75): the application tries later.
    match queue_directly(&config, &id, &envelope, &body) {
        Ok(()) => {
            let rung = crate::queue::doorbell(&config.queue.dir);
            if opts.verbose {
                println!("{id}: queued; {rung}");
            }
        }
        Err(CliError::Queue(e))
            if config.queue.store == StoreKind::Local && e.is_permission_denied() =>
        {
            // A user who may not write the spool (it belongs to the daemon's user) hands the
            // message to the running daemon instead, as a loopback SMTP client.
            let reply = submit_to_daemon(&config, &hostname, &envelope, &body)
                .map_err(|why| CliError::Submit(format!("{e}; and {why}")))?;
            if opts.verbose {
                println!("handed to the daemon: {}", escape(&reply));
            }
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the message into the queue ([`Store::accept`]: durable before it returns).
fn queue_directly(
    config: &Config,
    id: &QueueId,
    envelope: &Envelope,
    body: &[u8],
) -> Result<(), CliError> {
    let store = crate::queue::open_queue(config)?;
    let dsn = DsnParams::default();
    let message = NewMessage {
        id,
        envelope,
        dsn: &dsn,
        body,
    };
    store
        .accept(&message, crate::queue::now())
        .map_err(CliError::Queue)
}

/// Submits the message over SMTP to the daemon's first `smtp` listener (an unspecified
/// address becomes loopback), as Postfix's sendmail hands mail to its daemons: the daemon
/// answers 250 only once the message is durable in its queue (PRODUCT.md). The listener must
/// let this host relay (`server.relay_networks`, loopback by default). Answers the reply to
/// the message, or why it was not taken.
fn submit_to_daemon(
    config: &Config,
    hostname: &str,
    envelope: &Envelope,
    body: &[u8],
) -> Result<String, String> {
    use smtp::session::Session;
    use smtp::tls::Mode;

    let listen = config
        .server
        .listen
        .iter()
        .find(|l| l.mode == ListenMode::Smtp)
        .ok_or("the daemon has no smtp listener to submit to")?;
    let mut addr = listen.address;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let message = smtp::Message::new(body).map_err(|e| format!("the message: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let timeouts = smtp::Timeouts {
        connect: Duration::from_secs(10),
        ..smtp::Timeouts::default()
    };
    runtime.block_on(async {
        let not_taken =
            |e: &dyn std::fmt::Display| format!("the daemon at {addr} did not take it: {e}");
        // Opportunistic: the daemon's certificate is not checked (it is this host, often
        // self-signed); TLS only keeps the message off the wire of a non-loopback listener.
        let mut session = Session::open(
            addr,
            "localhost",
            hostname,
            &Mode::Opportunistic,
            &provider,
            &timeouts,
        )
        .await
        .map_err(|e| not_taken(&e))?;
        let result = session.transact(envelope, &message).await;
        session.quit().await;
        let transaction = result.map_err(|e| not_taken(&e))?;
        if let Some(refused) = transaction.rcpt.iter().find(|r| !r.is_positive()) {
            return Err(not_taken(refused));
        }
        match transaction.data {
            Some(reply) if reply.is_positive() => Ok(reply.to_string()),
            Some(reply) => Err(not_taken(&reply)),
            None => Err(not_taken(&"no reply to the message")),
        }
    })
}

/// Checks one recipient on its own, so that the error says where it came from.
fn check_recipient(address: &str) -> Result<(), String> {
    Envelope::new("", [address])
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The `-f` value as an envelope sender: `<>` or empty is the null sender, angle brackets
/// are removed, a bare login gets `@hostname`.
fn envelope_sender(from: &str, hostname: &str) -> Result<String, CliError> {
    let from = from.trim();
    let inner = from
        .strip_prefix('<')
        .and_then(|f| f.strip_suffix('>'))
        .unwrap_or(from);
    if inner.is_empty() {
        return Ok(String::new());
    }
    Ok(qualify(inner, hostname))
}

/// `user` alone becomes `user@hostname` (Postfix's `myorigin`), as `sendmail root` from cron
/// expects.
fn qualify(address: &str, hostname: &str) -> String {
    if address.contains('@') {
        address.to_owned()
    } else {
        format!("{address}@{hostname}")
    }
}

/// Recipients once each, in order; domains compare without case, local parts with it
/// (RFC 5321 §2.4).
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|a| {
            let key = match a.rsplit_once('@') {
                Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
                None => a.clone(),
            };
            seen.insert(key)
        })
        .collect()
}

/// Reads the message: lines end in CRLF, `.` alone ends it unless `ignore_dots`; bare CR,
/// NUL and more than `max` octets are refused.
fn read_message(input: impl BufRead, ignore_dots: bool, max: u64) -> Result<Vec<u8>, CliError> {
    // Input never shrinks when its lines get CRLF, so reading one octet past the limit is
    // enough to know it is exceeded.
    let mut input = input.take(max.saturating_add(1));
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(|source| CliError::Read {
                path: "standard input".into(),
                source,
            })?
            == 0
        {
            break;
        }
        number += 1;
        let mut content: &[u8] = &line;
        if let Some(c) = content.strip_suffix(b"\n") {
            content = c.strip_suffix(b"\r").unwrap_or(c);
        }
        if !ignore_dots && content == b"." {
            break;
        }
        if content.contains(&b'\r') {
            return Err(CliError::Data(format!(
                "line {number}: bare carriage return (CR not followed by LF) is not allowed in mail (RFC 5322 §2.3)"
            )));
        }
        if content.contains(&0) {
            return Err(CliError::Data(format!(
                "line {number}: NUL byte is not allowed in mail (RFC 5322 §2.3)"
            )));
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        if out.len() as u64 > max {
            return Err(CliError::Data(format!(
                "the message is larger than [server] max_message_size ({max} octets)"
            )));
        }
    }
    Ok(out)
}

/// A message cut into its header fields (each with its continuation lines, CRLF-terminated)
/// and the rest.
struct Message<'a> {
    fields: Vec<&'a [u8]>,
    /// The body, after the empty line (absent when the input had no such line).
    body: Option<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// Splits at the first empty line; a line that is neither a field nor a continuation
    /// also starts the body (an empty line is then put before it).
    fn split(input: &'a [u8]) -> Message<'a> {
        let mut fields: Vec<&'a [u8]> = Vec::new();
        let mut at = 0;
        let mut start: Option<usize> = None;
        let body = loop {
            let end = input[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(input.len(), |p| at + p + 2);
            let line = &input[at..end];
            if line.is_empty() {
                break None;
            }
            let continuation = matches!(line.first(), Some(b' ' | b'\t'));
            if continuation && start.is_some() {
                at = end;
                continue;
            }
            if let Some(s) = start.take() {
                fields.push(&input[s..at]);
            }
            if line == b"\r\n" {
                break Some(&input[end..]);
            }
            if !is_field_start(line) {
                break Some(&input[at..]);
            }
            start = Some(at);
            at = end;
        };
        if let Some(s) = start {
            fields.push(&input[s..at]);
        }
        Message { fields, body }
    }

    fn name_is(field: &[u8], name: &str) -> bool {
        field.iter().position(|&b| b == b':').is_some_and(|colon| {
            field[..colon]
                .trim_ascii_end()
                .eq_ignore_ascii_case(name.as_bytes())
        })
    }

    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| Self::name_is(f, name))
    }

    /// The values of every field called `name` (unfolded text after the colon).
    fn values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| Self::name_is(f, name))
            .filter_map(|f| {
                let colon = f.iter().position(|&b| b == b':')?;
                Some(String::from_utf8_lossy(&f[colon + 1..]).into_owned())
            })
            .collect()
    }

    fn remove(&mut self, name: &str) {
        self.fields.retain(|f| !Self::name_is(f, name));
    }

    /// `received` on top, the fields, `added` after them, an empty line, the body.
    fn assemble(&self, received: &str, added: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(received.as_bytes());
        out.extend_from_slice(b"\r\n");
        for field in &self.fields {
            out.extend_from_slice(field);
        }
        for field in added {
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if let Some(body) = self.body {
            out.extend_from_slice(body);
        }
        out
    }
}

/// `name:` with a name of printable ASCII other than `:` (RFC 5322 §2.2, §3.6.8).
fn is_field_start(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let name = line[..colon].trim_ascii_end();
            !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
        }
        None => false,
    }
}

/// A lexical token of an RFC 5322 header value (§3.2): comments and folding white space
/// are dropped on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An atom or a run of atoms and dots (`john.doe`, `example.com`), or a domain literal
    /// (`[192.0.2.1]`).
    Word(String),
    /// A quoted string, as written (quotes and backslashes kept: valid in SMTP too).
    Quoted(String),
    /// One of `,:;<>@`.
    Special(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, &'static str> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '(' => {
                // Comments nest (§3.2.2) and may hold quoted-pairs.
                let mut depth = 1;
                while depth > 0 {
                    match chars.next().ok_or("unterminated comment")? {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            '"' => {
                let mut quoted = String::from('"');
                loop {
                    match chars.next().ok_or("unterminated quoted string")? {
                        '\\' => {
                            quoted.push('\\');
                            quoted.push(chars.next().ok_or("unterminated quoted string")?);
                        }
                        '"' => break,
                        '\r' | '\n' => {}
                        c => quoted.push(c),
                    }
                }
                quoted.push('"');
                tokens.push(Token::Quoted(quoted));
            }
            '[' => {
                let mut literal = String::from('[');
                loop {
                    match chars.next().ok_or("unterminated domain literal")? {
                        ']' => break,
                        c if c.is_whitespace() => {}
                        c => literal.push(c),
                    }
                }
                literal.push(']');
                tokens.push(Token::Word(literal));
            }
            ',' | ':' | ';' | '<' | '>' | '@' => tokens.push(Token::Special(c)),
            ')' | ']' | '\\' => return Err("unbalanced special character"),
            c if c.is_control() => return Err("control character"),
            c => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || n.is_control() || "()<>[]:;@\\,\"".contains(n) {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// The addr-spec of one mailbox's tokens: what is inside `<…>` (minus an obsolete route
/// `@a,@b:`, §4.4) when there is one, else all of it (a bare addr-spec); words and quoted
/// strings are joined without the white space and comments around them (§3.4.1, §4.4).
fn mailbox(tokens: &[Token]) -> Result<String, &'static str> {
    let spec = match tokens.iter().position(|t| *t == Token::Special('<')) {
        Some(open) => {
            let close = tokens[open..]
                .iter()
                .position(|t| *t == Token::Special('>'))
                .ok_or("'<' without '>'")?;
            if open + close + 1 != tokens.len() {
                return Err("text after '>'");
            }
            let inner = &tokens[open + 1..open + close];
            match inner.iter().rposition(|t| *t == Token::Special(':')) {
                Some(colon) => &inner[colon + 1..],
                None => inner,
            }
        }
        None => tokens,
    };
    let mut address = String::new();
    for token in spec {
        match token {
            Token::Word(w) | Token::Quoted(w) => {
                // Words of a local part or domain are separated by dots (white space may
                // surround them, §4.4); two words side by side are a phrase, not an address.
                if !(address.is_empty() || address.ends_with(['.', '@']) || w.starts_with('.')) {
                    return Err("white space inside the address, or a name without <address>");
                }
                address.push_str(w);
            }
            Token::Special('@') => address.push('@'),
            Token::Special(_) => return Err("misplaced special character"),
        }
    }
    if address.is_empty() {
        return Err("an entry without an address");
    }
    Ok(address)
}

/// The mailboxes of an RFC 5322 address list (§3.4: display names, groups, comments,
/// quoted local parts), as `local@domain` strings for the envelope. Groups contribute their
/// members; an empty group (`undisclosed-recipients:;`) nothing.
fn parse_address_list(text: &str) -> Result<Vec<String>, String> {
    let fail = |why: &str| format!("{:?}: {why}", escape(text.trim()));
    let tokens = tokenize(text).map_err(fail)?;
    let mut out = Vec::new();
    let mut entry: Vec<Token> = Vec::new();
    let mut in_angle = false;
    let mut in_group = false;
    let push = |entry: &mut Vec<Token>, out: &mut Vec<String>| -> Result<(), String> {
        if !entry.is_empty() {
            out.push(mailbox(entry).map_err(fail)?);
            entry.clear();
        }
        Ok(())
    };
    for token in tokens {
        match token {
            Token::Special('<') if in_angle => return Err(fail("'<' inside '<…>'")),
            Token::Special('<') => {
                in_angle = true;
                entry.push(token);
            }
            Token::Special('>') if !in_angle => return Err(fail("'>' without '<'")),
            Token::Special('>') => {
                in_angle = false;
                entry.push(token);
            }
            // In a route (`<@a,@b:x@y>`) commas and colons belong to the mailbox.
            Token::Special(',' | ':') if in_angle => entry.push(token),
            Token::Special(',') => push(&mut entry, &mut out)?,
            Token::Special(':') => {
                // `display-name:` opens a group: the name is not an address.
                if in_group {
                    return Err(fail("a group inside a group"));
                }
                in_group = true;
                entry.clear();
            }
            Token::Special(';') if in_group => {
                push(&mut entry, &mut out)?;
                in_group = false;
            }
            other => entry.push(other),
        }
    }
    if in_angle {
        return Err(fail("'<' without '>'"));
    }
    push(&mut entry, &mut out)?;
    Ok(out)
}

/// A display name for `From:`: control characters dropped (no header injection), quoted when
/// it is not all atoms (RFC 5322 §3.2.5), RFC 2047 encoded when it is not ASCII.
fn display_name(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() {
        return String::new();
    }
    if !name.is_ascii() {
        let mut encoded = String::from("=?UTF-8?Q?");
        for b in name.bytes() {
            match b {
                b' ' => encoded.push('_'),
                b if b.is_ascii_alphanumeric() => encoded.push(char::from(b)),
                b => encoded.push_str(&format!("={b:02X}")),
            }
        }
        encoded.push_str("?=");
        return encoded;
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        return name.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// `Wed, 02 Dec 2026 06:50:50 +0000` (RFC 5322 §3.3).
fn rfc5322_date(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    t.format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `/proc/sys/kernel/hostname`, else `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The real uid (who ran the command, not a set-uid owner): `/proc/self/status`, else the
/// owner of `/proc/self` (the effective uid).
fn real_uid() -> u32 {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
    from_status.unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
    })
}

/// The `/etc/passwd` entry of `uid`: (login, GECOS full name).
fn passwd_entry(uid: u32) -> Option<(String, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[..] {
            [name, _, id, _, gecos, ..] if id.parse() == Ok(uid) => Some((
                name.to_owned(),
                gecos.split(',').next().unwrap_or("").to_owned(),
            )),
            _ => None,
        }
    })
}

/// The login of `uid` (its passwd entry), else `LOGNAME` or `USER`, else `uid<N>`.
fn login_name(uid: u32) -> String {
    passwd_entry(uid)
        .map(|(name, _)| name)
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// The full name of `uid` (GECOS), for `From:` when `-F` is not given.
fn full_name(uid: u32) -> Option<String> {
    passwd_entry(uid)
        .map(|(_, gecos)| gecos)
        .filter(|g| !g.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn sendmail_flags_as_applications_pass_them() {
        let o = parse_args(&args("-t -i -f a@example.org -F Me")).expect("parse");
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.from.as_deref(), Some("a@example.org"));
        assert_eq!(o.full_name.as_deref(), Some("Me"));
        assert!(o.recipients.is_empty());
        // Glued values and bundled flags.
        let o = parse_args(&args(
            "-ti -oi -fa@example.org -FMe -oem -odb b@x.test c@x.test",
        ))
        .expect("parse");
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.from.as_deref(), Some("a@example.org"));
        assert_eq!(o.full_name.as_deref(), Some("Me"));
        assert_eq!(o.recipients, ["b@x.test", "c@x.test"]);
        // What cron and PHP pass.
        let o = parse_args(&args("-FCronDaemon -i -B8BITMIME -oem root")).expect("parse");
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(o.recipients, ["root"]);
        let o = parse_args(&args(
            "-bm -v -N success,delay -R hdrs -V envid -B 8BITMIME -- -odd@x.test",
        ))
        .expect("parse");
        assert!(o.verbose);
        assert_eq!(o.recipients, ["-odd@x.test"]);
        let o = parse_args(&args("-C /etc/x.toml --config=/etc/y.toml -r <> a@b")).expect("parse");
        assert_eq!(
            o.config.as_deref(),
            Some(std::path::Path::new("/etc/y.toml"))
        );
        assert_eq!(o.from.as_deref(), Some("<>"));
        // Options stop at the first recipient.
        let o = parse_args(&args("a@b -t")).expect("parse");
        assert!(!o.extract);
        assert_eq!(o.recipients, ["a@b", "-t"]);
    }

    #[test]
    fn unsupported_modes_and_unknown_options_are_usage_errors() {
        for bad in ["-bs", "-bp", "-q", "-x", "--nope", "-f"] {
            assert!(
                matches!(parse_args(&args(bad)), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn input_gets_crlf_and_a_lone_dot_ends_it_unless_i() {
        let text = b"Subject: x\n\nline\r\n..dot\n.\nafter\n";
        let out = read_message(&text[..], false, 1000).expect("read");
        assert_eq!(out, b"Subject: x\r\n\r\nline\r\n..dot\r\n");
        let out = read_message(&text[..], true, 1000).expect("read");
        assert_eq!(out, b"Subject: x\r\n\r\nline\r\n..dot\r\n.\r\nafter\r\n");
        let out = read_message(&b"no newline at end"[..], true, 1000).expect("read");
        assert_eq!(out, b"no newline at end\r\n");
    }

    #[test]
    fn bare_cr_nul_and_oversize_are_refused() {
        for bad in [&b"a\rb\n"[..], b"a\0b\n", b"a\r"] {
            assert!(matches!(
                read_message(bad, true, 1000),
                Err(CliError::Data(_))
            ));
        }
        assert!(read_message(&[b'a'; 10][..], true, 12).is_ok());
        assert!(matches!(
            read_message(&[b'a'; 10][..], true, 11),
            Err(CliError::Data(_))
        ));
        assert!(matches!(
            read_message(&[b'a'; 100][..], true, 50),
            Err(CliError::Data(_))
        ));
    }

    #[test]
    fn address_lists_with_names_groups_comments_and_quotes() {
        let list = parse_address_list(
            "\"Doe, John\" <john@example.com>, (comment) jane@example.com (Jane),\r\n \
             friends: a@x.test, B <b@x.test>;, \"odd guy\"@example.net",
        )
        .expect("parse");
        assert_eq!(
            list,
            [
                "john@example.com",
                "jane@example.com",
                "a@x.test",
                "b@x.test",
                "\"odd guy\"@example.net"
            ]
        );
        assert_eq!(
            parse_address_list("undisclosed-recipients:;").expect("empty group"),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_address_list(
                "<@route.test,@r2.test:a@x.test>, X <\"a\\\"b\"@x.test>, a(c)@x.test, c@[192.0.2.1]"
            )
            .expect("parse"),
            ["a@x.test", "\"a\\\"b\"@x.test", "a@x.test", "c@[192.0.2.1]"]
        );
        for bad in [
            "b@exa mple.com",
            "John Doe",
            "john doe@x.test",
            "<a@x.test",
            "\"a@x.test",
            "(a@x.test",
            "a@x.test>",
            "x <a@x.test> y",
            "a@x.test, <>",
        ] {
            assert!(parse_address_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_are_found_removed_and_added() {
        let input = b"To: a@x.test\r\nBcc: secret@x.test,\r\n\tother@x.test\r\nSubject: hi\r\n\r\nBcc: in body\r\n";
        let mut m = Message::split(input);
        assert_eq!(m.values("bcc"), [" secret@x.test,\r\n\tother@x.test\r\n"]);
        assert!(m.has("TO") && !m.has("from"));
        m.remove("bcc");
        let out = m.assemble("Received: by h", &["From: me@h".into()]);
        assert_eq!(
            out,
            b"Received: by h\r\nTo: a@x.test\r\nSubject: hi\r\nFrom: me@h\r\n\r\nBcc: in body\r\n"
        );
        // No empty line: the body starts at the first line that is not a field.
        let m = Message::split(b"Subject: x\r\nhello world\r\n");
        assert_eq!(
            m.assemble("R: x", &[]),
            b"R: x\r\nSubject: x\r\n\r\nhello world\r\n"
        );
        // Headers only.
        let m = Message::split(b"Subject: x\r\n");
        assert_eq!(m.assemble("R: x", &[]), b"R: x\r\nSubject: x\r\n\r\n");
    }

    #[test]
    fn display_names_cannot_inject_headers() {
        assert_eq!(display_name("Jane Doe"), "Jane Doe");
        assert_eq!(display_name("Doe, Jane"), "\"Doe, Jane\"");
        assert_eq!(display_name("x\r\nBcc: evil@x"), "\"xBcc: evil@x\"");
        assert_eq!(display_name("Jösé"), "=?UTF-8?Q?J=C3=B6s=C3=A9?=");
    }

    #[test]
    fn senders_and_bare_logins() {
        assert_eq!(envelope_sender("<>", "h.test").expect("null"), "");
        assert_eq!(envelope_sender("", "h.test").expect("null"), "");
        assert_eq!(
            envelope_sender("<a@b.test>", "h.test").expect("a"),
            "a@b.test"
        );
        assert_eq!(
            envelope_sender("root", "h.test").expect("root"),
            "root@h.test"
        );
        assert_eq!(qualify("root", "h.test"), "root@h.test");
        assert_eq!(
            dedup(vec!["a@x".into(), "a@X".into(), "A@x".into()]),
            ["a@x", "A@x"]
        );
        assert!(
            rfc5322_date(time::OffsetDateTime::UNIX_EPOCH) == "Thu, 01 Jan 1970 00:00:00 +0000"
        );
    }
}
