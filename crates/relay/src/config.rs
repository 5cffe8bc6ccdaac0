//! The relay's configuration: the TOML contract of PRODUCT.md ("The relay daemon"), its
//! embedded defaults, and the checks that refuse a bad file at start with the file, the key
//! and the reason.
//!
//! [`Config::load`] reads `--config PATH`, else `/etc/danemta/danemta.toml` when it exists,
//! else uses the embedded defaults. [`Config::effective`] lists the settings in force, one per
//! line with where each comes from; [`Config::warnings`] lists keys that are accepted but have
//! no effect; [`Config::policy_for`] picks a destination's TLS policy.
//!
//! Value syntaxes: durations are `30s`, `5m`, `1h`, `5d` (or combined, `1h30m`), at least
//! `1s`; sizes are a number of bytes with an optional unit, `kB`/`MB`/`GB` (powers of 1000) or
//! `KiB`/`MiB`/`GiB` (powers of 1024), case insensitive.

mod types;
mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dns::{DnsName, ResolverSpec};
use serde::Deserialize;
use smtp::Level;

pub use types::{
    IpNetwork, IpNetworkError, NextHop, NextHopError, PolicyDomain, PolicyDomainError,
};
pub use units::{UnitError, format_duration, format_size, parse_duration, parse_size};

/// Where the daemon looks for its configuration when no `--config` is given.
pub const SYSTEM_PATH: &str = "/etc/danemta/danemta.toml";

/// The default `max_message_size`: 50 MB (50 000 000 bytes).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 50_000_000;

/// A configuration that cannot be used; each message names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}:{line}:{column}: TOML syntax error{}: {reason}", key_suffix(.key))]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The key near the error, with its table path, when known.
        key: String,
        /// What the parser says.
        reason: String,
    },
    /// A key that does not exist, a value of the wrong type or syntax.
    #[error("{file}:{line}:{column}: {key}: {reason}")]
    Value {
        /// The file.
        file: PathBuf,
        /// 1-based line of the key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key with its table path (`queue.retry_first`, `policy[1].level`).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// Values that are each fine but do not make a working configuration together.
    #[error("{file}{}: {key}: {reason}", line_suffix(*.line))]
    Invalid {
        /// The file (`(embedded defaults)` for the defaults).
        file: PathBuf,
        /// 1-based line of the key, when the file has it.
        line: Option<usize>,
        /// The key with its table path.
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" at {key}")
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the listening side.
    pub server: Server,
    /// `[auth]`: authentication of submission clients.
    pub auth: Auth,
    /// `[dns]`: how DNS (and DNSSEC) is resolved.
    pub dns: Dns,
    /// `[queue]`: where and how long mail is kept.
    pub queue: Queue,
    /// `[delivery]`: the sending side.
    pub delivery: Delivery,
    /// `[[policy]]`: per-destination TLS policy; the most specific match wins.
    pub policy: Vec<PolicyEntry>,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: Metrics,
    /// Where the values come from (not a key).
    #[serde(skip)]
    origin: Origin,
}

/// Where a configuration came from, for [`Config::effective`].
#[derive(Clone, Debug, Default)]
struct Origin {
    /// The file, when one was read.
    file: Option<PathBuf>,
    /// The file's keys as parsed, to tell file values from defaults.
    table: toml::Table,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// `hostname`: the name in the greeting, EHLO, `Received:` and as the DSN reporting MTA.
    /// Default: the system's host name (left to the daemon to find; `None` here).
    #[serde(deserialize_with = "units::from_str::option")]
    pub hostname: Option<DnsName>,
    /// `relay_networks`: clients in these networks may relay to any domain. Default: loopback
    /// only (`127.0.0.0/8`, `::1/128`).
    #[serde(deserialize_with = "units::from_str::vec")]
    pub relay_networks: Vec<IpNetwork>,
    /// `accept_domains`: mail for these domains is accepted from any client (inbound
    /// gateway). Default: none.
    #[serde(deserialize_with = "units::from_str::vec")]
    pub accept_domains: Vec<DnsName>,
    /// `max_message_size`: the largest message accepted (announced with `SIZE`). Default 50MB.
    #[serde(deserialize_with = "units::size::deserialize")]
    pub max_message_size: u64,
    /// `max_header_size`: the largest header section (the lines up to the first empty one) of
    /// a message; a bigger one (a header flood) is refused with `552 5.6.0`, never truncated.
    /// Default 1MB.
    #[serde(deserialize_with = "units::size::deserialize")]
    pub max_header_size: u64,
    /// `max_content_memory`: memory for the content of messages being received, over all
    /// sessions of all listeners; a message that finds none left (many clients stalled in
    /// DATA) gets `452 4.3.1` and is retried by its client. At least `max_message_size`.
    /// Default: 4 × `max_message_size`, at least 64MiB. See [`Config::max_content_memory`].
    #[serde(deserialize_with = "units::size::option")]
    pub max_content_memory: Option<u64>,
    /// `max_connections`: SMTP sessions at once, per listener; a connection past it gets
    /// `421 4.3.2` and is closed. Default 100 (Postfix's `default_process_limit`).
    pub max_connections: u32,
    /// `max_connections_per_client`: sessions at once from one client address, per listener;
    /// past it `421 4.7.0`. Clients in `relay_networks` are exempt (Postfix's
    /// `smtpd_client_event_limit_exceptions = $mynetworks`). Default 50 (Postfix's
    /// `smtpd_client_connection_count_limit`).
    pub max_connections_per_client: u32,
    /// `[[server.listen]]`: the listening sockets. Default: `127.0.0.1:2525`, mode `smtp`.
    pub listen: Vec<Listen>,
    /// `[[server.tls]]`: certificate chains offered with STARTTLS, chosen by SNI; the first is
    /// the default. Default: none, a self-signed certificate is made in the spool.
    pub tls: Vec<TlsChain>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            hostname: None,
            relay_networks: vec![
                IpNetwork {
                    address: [127, 0, 0, 0].into(),
                    prefix: 8,
                },
                IpNetwork {
                    address: std::net::Ipv6Addr::LOCALHOST.into(),
                    prefix: 128,
                },
            ],
            accept_domains: Vec::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_header_size: 1_000_000,
            max_content_memory: None,
            max_connections: 100,
            max_connections_per_client: 50,
            listen: vec![Listen {
                address: SocketAddr::from(([127, 0, 0, 1], 2525)),
                mode: ListenMode::Smtp,
            }],
            tls: Vec::new(),
        }
    }
}

/// One `[[server.listen]]` socket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `address`: `IP:PORT` to listen on (`0.0.0.0:25`, `[::]:587`).
    pub address: SocketAddr,
    /// `mode`: `smtp` (default), `submission` or `submissions`.
    #[serde(default)]
    pub mode: ListenMode,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// Plain SMTP with STARTTLS offered (port 25).
    #[default]
    Smtp,
    /// Message submission: AUTH required, after STARTTLS (port 587).
    Submission,
    /// Submission over implicit TLS (port 465).
    Submissions,
}

impl fmt::Display for ListenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenMode::Smtp => "smtp",
            ListenMode::Submission => "submission",
            ListenMode::Submissions => "submissions",
        })
    }
}

/// One `[[server.tls]]` chain.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsChain {
    /// `cert`: PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `key`: PEM file with its private key.
    pub key: PathBuf,
}

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `users_file`: `user:password-hash` lines checked by AUTH on submission listeners.
    /// Default: none (no one can authenticate).
    pub users_file: Option<PathBuf>,
}

/// `[dns]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// `resolver`: same syntax as `--resolver` (`validating`, `validating@IP:PORT`,
    /// `trust-ad@IP:PORT`). Default `validating`: in-process DNSSEC validation.
    #[serde(deserialize_with = "units::from_str::deserialize")]
    pub resolver: ResolverSpec,
    /// `trust_anchor`: root trust anchor file, as `--trust-anchor`. Default: built in.
    pub trust_anchor: Option<PathBuf>,
    /// `timeout`: how long to wait for each DNS answer. Default `5s`.
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub timeout: Duration,
    /// `negative_trust_anchors`: domains treated as DNSSEC-insecure (RFC 7646), as
    /// `--negative-trust-anchor`. Default: none.
    #[serde(deserialize_with = "units::from_str::vec")]
    pub negative_trust_anchors: Vec<DnsName>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            resolver: ResolverSpec::default(),
            trust_anchor: None,
            timeout: Duration::from_secs(5),
            negative_trust_anchors: Vec::new(),
        }
    }
}

/// `[queue]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queue {
    /// `dir`: the spool directory. Default `/var/spool/danemta` as root, else
    /// `$XDG_STATE_HOME/danemta` or `~/.local/state/danemta`.
    pub dir: PathBuf,
    /// `store`: `local` (spool files + SQLite, default) or `postgres` (several nodes sharing
    /// one queue; needs `url`).
    pub store: StoreKind,
    /// `url`: the PostgreSQL connection URL for `store = "postgres"`.
    pub url: Option<String>,
    /// `retry_first`: the first retry after a deferral; the interval then doubles. Default
    /// `5m`.
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub retry_first: Duration,
    /// `retry_max`: the longest interval between retries. Default `1h`.
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub retry_max: Duration,
    /// `lifetime`: how long a message is retried before it bounces. Default `5d`.
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub lifetime: Duration,
    /// `min_free`: the free space the queue's file system must keep; below it new mail gets
    /// `452 4.3.1` at MAIL FROM, so that deliveries (which write to the queue database) go on
    /// and free space. Default: 1.5 × `server.max_message_size`, as Postfix's smtpd keeps.
    /// See [`Config::min_free`].
    #[serde(deserialize_with = "units::size::option")]
    pub min_free: Option<u64>,
    /// `lease_time`: how long a node's claim on a message lasts without renewal. A node
    /// renews the claims it is delivering every third of it; when a node dies (kill -9, a
    /// power cut) another node sharing the queue (`store = "postgres"`) takes its mail over
    /// once the lease runs out. Default `2m`, at least `5s`.
    #[serde(deserialize_with = "units::duration::deserialize")]
    pub lease_time: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            dir: default_spool(),
            store: StoreKind::Local,
            url: None,
            retry_first: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86_400),
            min_free: None,
            lease_time: Duration::from_secs(120),
        }
    }
}

/// The default spool: `/var/spool/danemta` for root, else `$XDG_STATE_HOME/danemta`, else
/// `~/.local/state/danemta` (relative `.local/state/danemta` if `HOME` is unset too).
pub fn default_spool() -> PathBuf {
    spool_for(
        is_root(),
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn spool_for(root: bool, xdg_state: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if root {
        return PathBuf::from("/var/spool/danemta");
    }
    // XDG Base Directory: a relative value is invalid and must be ignored.
    match xdg_state.filter(|p| p.is_absolute()) {
        Some(state) => state.join("danemta"),
        None => home
            .unwrap_or_default()
            .join(".local")
            .join("state")
            .join("danemta"),
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `[queue] store`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Spool files and SQLite in `dir`.
    #[default]
    Local,
    /// PostgreSQL at `url`.
    Postgres,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Local => "local",
            StoreKind::Postgres => "postgres",
        })
    }
}

/// `[delivery]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// `policy`: the TLS level for destinations without a `[[policy]]` entry. Default `dane`.
    #[serde(deserialize_with = "units::from_str::deserialize")]
    pub policy: Level,
    /// `port`: the SMTP port of MX hosts. Default 25.
    pub port: u16,
    /// `ca_file`: extra PKIX trust anchors (PEM) for MTA-STS and `verify`/`secure`.
    pub ca_file: Option<PathBuf>,
    /// `max_connections`: outgoing connections at once, overall. Default 200.
    pub max_connections: u32,
    /// `max_connections_per_destination`: outgoing connections at once to one destination.
    /// Default 20.
    pub max_connections_per_destination: u32,
    /// `paused`: accept and queue mail, but start no deliveries (maintenance, or to fill a
    /// queue before a measurement); SIGHUP with `paused = false` resumes. Like Postfix's
    /// `defer_transports = smtp`, except that `danemta queue flush` does not override it.
    /// Default false.
    pub paused: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            policy: Level::Dane,
            port: 25,
            ca_file: None,
            max_connections: 200,
            max_connections_per_destination: 20,
            paused: false,
        }
    }
}

/// One `[[policy]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// `domain`: `example.com` for that domain, `.example.com` for its subdomains.
    #[serde(deserialize_with = "units::from_str::deserialize")]
    pub domain: PolicyDomain,
    /// `level`: the TLS level for it (none, may, encrypt, dane, dane-only, fingerprint,
    /// verify, secure).
    #[serde(deserialize_with = "units::from_str::deserialize")]
    pub level: Level,
    /// `next_hop`: deliver to this host (MX lookup skipped) or `[address]:port` instead.
    #[serde(default, deserialize_with = "units::from_str::option")]
    pub next_hop: Option<NextHop>,
    /// `match`: the names the certificate must carry, for `verify` (required) and `secure`
    /// (default: the next-hop domain).
    #[serde(default, rename = "match", deserialize_with = "units::from_str::vec")]
    pub match_names: Vec<DnsName>,
    /// `fingerprint`: for the `fingerprint` level (required there), SHA-256 or SHA-512
    /// digests in hex of the server's certificate or public key, or TLSA-style
    /// `3 S M HEX` records.
    #[serde(default)]
    pub fingerprint: Vec<String>,
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// `listen`: `IP:PORT` serving Prometheus text at `/metrics`. Default `127.0.0.1:9325`.
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: SocketAddr::from(([127, 0, 0, 1], 9325)),
        }
    }
}

/// One line of [`Config::effective`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key with its table path (`queue.retry_first`).
    pub key: String,
    /// The value, in the file's syntax.
    pub value: String,
    /// Whether the file set it.
    pub from_file: bool,
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else [`SYSTEM_PATH`] if it
    /// exists, else the embedded defaults. Everything is checked before it is returned.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_system(path, Path::new(SYSTEM_PATH))
    }

    fn load_with_system(path: Option<&Path>, system: &Path) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None if system.exists() => Self::from_file(system),
            None => Ok(Self::defaults()),
        }
    }

    /// The embedded defaults.
    pub fn defaults() -> Config {
        Config::default()
    }

    /// Reads and checks one file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text`, read from `file` (named in errors).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column, key) = locate(text, e.span());
            ConfigError::Syntax {
                file: file.to_owned(),
                line,
                column,
                key,
                reason: e.message().trim().to_owned(),
            }
        })?;
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column, key) = locate(text, e.span());
            ConfigError::Value {
                file: file.to_owned(),
                line,
                column,
                key,
                reason: e.message().trim().to_owned(),
            }
        })?;
        config.origin = Origin {
            file: Some(file.to_owned()),
            table,
        };
        config.validate().map_err(|e| match e {
            ConfigError::Invalid {
                file,
                line: None,
                key,
                reason,
            } => ConfigError::Invalid {
                line: key_line(text, &key),
                file,
                key,
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// The file this came from, `None` for the embedded defaults.
    pub fn file(&self) -> Option<&Path> {
        self.origin.file.as_deref()
    }

    /// Checks what types alone do not.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: self
                .origin
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from("(embedded defaults)")),
            line: None,
            key,
            reason,
        };
        if self.server.hostname.as_ref().is_some_and(DnsName::is_root) {
            return Err(invalid(
                "server.hostname".into(),
                "the root \".\" is not a host name".into(),
            ));
        }
        if self.server.listen.is_empty() {
            return Err(invalid(
                "server.listen".into(),
                "at least one [[server.listen]] is needed".into(),
            ));
        }
        for (i, l) in self.server.listen.iter().enumerate() {
            if self.server.listen[..i]
                .iter()
                .any(|o| o.address == l.address)
            {
                return Err(invalid(
                    format!("server.listen[{i}].address"),
                    format!("{} is listed twice", l.address),
                ));
            }
        }
        if self.max_content_memory() < self.server.max_message_size {
            return Err(invalid(
                "server.max_content_memory".into(),
                format!(
                    "{} is less than server.max_message_size ({}): the largest message could never be received",
                    format_size(self.max_content_memory()),
                    format_size(self.server.max_message_size)
                ),
            ));
        }
        let q = &self.queue;
        if q.retry_first > q.retry_max {
            return Err(invalid(
                "queue.retry_first".into(),
                format!(
                    "{} is longer than queue.retry_max ({})",
                    format_duration(q.retry_first),
                    format_duration(q.retry_max)
                ),
            ));
        }
        if q.lease_time < Duration::from_secs(5) {
            return Err(invalid(
                "queue.lease_time".into(),
                format!(
                    "{} is too short: a node renews its leases every third of it, and each renewal is a database round trip (at least 5s)",
                    format_duration(q.lease_time)
                ),
            ));
        }
        if q.store == StoreKind::Postgres && q.url.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "queue.url".into(),
                "store = \"postgres\" needs the database url".into(),
            ));
        }
        if q.dir.as_os_str().is_empty() {
            return Err(invalid("queue.dir".into(), "empty path".into()));
        }
        for (key, n) in [
            ("server.max_connections", self.server.max_connections),
            (
                "server.max_connections_per_client",
                self.server.max_connections_per_client,
            ),
        ] {
            if n == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        let d = &self.delivery;
        if d.port == 0 {
            return Err(invalid("delivery.port".into(), "port 0".into()));
        }
        if d.max_connections == 0 {
            return Err(invalid(
                "delivery.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if d.max_connections_per_destination == 0 {
            return Err(invalid(
                "delivery.max_connections_per_destination".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, p) in self.policy.iter().enumerate() {
            let key = |k: &str| format!("policy[{i}].{k}");
            if self.policy[..i].iter().any(|o| o.domain == p.domain) {
                return Err(invalid(
                    key("domain"),
                    format!("{} already has a [[policy]] entry", p.domain),
                ));
            }
            match p.level {
                Level::Fingerprint if p.fingerprint.is_empty() => {
                    return Err(invalid(
                        key("fingerprint"),
                        "level \"fingerprint\" needs at least one fingerprint".into(),
                    ));
                }
                Level::Verify if p.match_names.is_empty() => {
                    return Err(invalid(
                        key("match"),
                        "level \"verify\" needs at least one name to match".into(),
                    ));
                }
                _ => {}
            }
            if p.level == Level::Fingerprint {
                for (j, f) in p.fingerprint.iter().enumerate() {
                    check_fingerprint(f).map_err(|reason| {
                        invalid(format!("policy[{i}].fingerprint[{j}]"), reason)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The TLS level for mail to `domain` and the `[[policy]]` entry that set it: an exact
    /// `domain` entry, else the `.suffix` entry with the longest suffix of it, else the
    /// `[delivery] policy` default (and `None`). Case and a trailing dot do not matter.
    pub fn policy_for(&self, domain: &str) -> (Level, Option<&PolicyEntry>) {
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        let exact = self.policy.iter().find(|p| match &p.domain {
            PolicyDomain::Exact(n) => n.as_str() == name,
            PolicyDomain::Suffix(_) => false,
        });
        let best = exact.or_else(|| {
            self.policy
                .iter()
                .filter(|p| match &p.domain {
                    PolicyDomain::Suffix(s) => name
                        .strip_suffix(s.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                    PolicyDomain::Exact(_) => false,
                })
                .max_by_key(|p| match &p.domain {
                    PolicyDomain::Suffix(s) | PolicyDomain::Exact(s) => s.as_str().len(),
                })
        });
        match best {
            Some(p) => (p.level, Some(p)),
            None => (self.delivery.policy, None),
        }
    }

    /// The free space the queue's file system must keep (`queue.min_free`, by default 1.5 ×
    /// `server.max_message_size`).
    pub fn min_free(&self) -> u64 {
        self.queue
            .min_free
            .unwrap_or(self.server.max_message_size.saturating_mul(3) / 2)
    }

    /// The memory for messages being received (`server.max_content_memory`, by default 4 ×
    /// `server.max_message_size` and at least 64 MiB).
    pub fn max_content_memory(&self) -> u64 {
        self.server
            .max_content_memory
            .unwrap_or(self.server.max_message_size.saturating_mul(4).max(64 << 20))
    }

    /// The settings in force, one per key, with whether the file set them (the daemon prints
    /// them at start and for `serve --check-config`).
    pub fn effective(&self) -> Vec<Setting> {
        let s = &self.server;
        let opt = |v: Option<String>| v.unwrap_or_else(|| "(none)".to_owned());
        let path = |p: &Option<PathBuf>| opt(p.as_ref().map(|p| p.display().to_string()));
        let list = |v: String| if v.is_empty() { "(none)".to_owned() } else { v };
        let mut out: Vec<(String, String)> = vec![
            (
                "server.hostname".into(),
                opt(s.hostname.as_ref().map(ToString::to_string))
                    .replace("(none)", "(the system's host name)"),
            ),
            (
                "server.relay_networks".into(),
                list(units::join(&s.relay_networks)),
            ),
            (
                "server.accept_domains".into(),
                list(units::join(&s.accept_domains)),
            ),
            (
                "server.max_message_size".into(),
                format_size(s.max_message_size),
            ),
            (
                "server.max_header_size".into(),
                format_size(s.max_header_size),
            ),
            (
                "server.max_content_memory".into(),
                format_size(self.max_content_memory()),
            ),
            (
                "server.max_connections".into(),
                s.max_connections.to_string(),
            ),
            (
                "server.max_connections_per_client".into(),
                s.max_connections_per_client.to_string(),
            ),
        ];
        for (i, l) in s.listen.iter().enumerate() {
            out.push((
                format!("server.listen[{i}]"),
                format!("{} {}", l.address, l.mode),
            ));
        }
        if s.tls.is_empty() {
            out.push((
                "server.tls".into(),
                "(none: a self-signed certificate kept in the spool)".into(),
            ));
        }
        for (i, t) in s.tls.iter().enumerate() {
            out.push((
                format!("server.tls[{i}]"),
                format!("cert {} key {}", t.cert.display(), t.key.display()),
            ));
        }
        out.push(("auth.users_file".into(), path(&self.auth.users_file)));
        let d = &self.dns;
        out.extend([
            ("dns.resolver".into(), d.resolver.to_string()),
            (
                "dns.trust_anchor".into(),
                path(&d.trust_anchor).replace("(none)", "(built in)"),
            ),
            ("dns.timeout".into(), format_duration(d.timeout)),
            (
                "dns.negative_trust_anchors".into(),
                list(units::join(&d.negative_trust_anchors)),
            ),
        ]);
        let q = &self.queue;
        out.extend([
            ("queue.dir".into(), q.dir.display().to_string()),
            ("queue.store".into(), q.store.to_string()),
        ]);
        if q.url.is_some() {
            // The URL may carry a password: say only that it is set.
            out.push(("queue.url".into(), "(set)".into()));
        }
        out.extend([
            ("queue.retry_first".into(), format_duration(q.retry_first)),
            ("queue.retry_max".into(), format_duration(q.retry_max)),
            ("queue.lifetime".into(), format_duration(q.lifetime)),
            ("queue.min_free".into(), format_size(self.min_free())),
            ("queue.lease_time".into(), format_duration(q.lease_time)),
        ]);
        let dl = &self.delivery;
        out.extend([
            ("delivery.policy".into(), dl.policy.to_string()),
            ("delivery.port".into(), dl.port.to_string()),
            ("delivery.ca_file".into(), path(&dl.ca_file)),
            (
                "delivery.max_connections".into(),
                dl.max_connections.to_string(),
            ),
            (
                "delivery.max_connections_per_destination".into(),
                dl.max_connections_per_destination.to_string(),
            ),
            ("delivery.paused".into(), dl.paused.to_string()),
        ]);
        for (i, p) in self.policy.iter().enumerate() {
            let mut v = format!("{} {}", p.domain, p.level);
            if let Some(h) = &p.next_hop {
                v.push_str(&format!(" next_hop {h}"));
            }
            if !p.match_names.is_empty() {
                v.push_str(&format!(" match {}", units::join(&p.match_names)));
            }
            if !p.fingerprint.is_empty() {
                v.push_str(&format!(" fingerprint {}", p.fingerprint.join(", ")));
            }
            out.push((format!("policy[{i}]"), v));
        }
        out.push(("metrics.listen".into(), self.metrics.listen.to_string()));
        out.into_iter()
            .map(|(key, value)| Setting {
                from_file: self.file_has(&key),
                key,
                value,
            })
            .collect()
    }

    /// Settings that are accepted but have no effect, worth a warning at start: `match` on a
    /// `[[policy]]` whose level is not `verify` or `secure`, `fingerprint` on one whose level
    /// is not `fingerprint` (PRODUCT.md's own example shows both keys on a `dane-only`
    /// entry), `url` with `store = "local"`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, p) in self.policy.iter().enumerate() {
            if !p.match_names.is_empty() && !matches!(p.level, Level::Verify | Level::Secure) {
                out.push(format!(
                    "policy[{i}].match: ignored, level {} uses no names (only verify and secure do)",
                    p.level
                ));
            }
            if !p.fingerprint.is_empty() && p.level != Level::Fingerprint {
                out.push(format!(
                    "policy[{i}].fingerprint: ignored, level {} uses no fingerprints (only fingerprint does)",
                    p.level
                ));
            }
        }
        if self.queue.store == StoreKind::Local && self.queue.url.is_some() {
            out.push("queue.url: ignored, store is local".to_owned());
        }
        out
    }

    /// Whether the file set `key` (`a.b`, `a.b[0]`, `policy[1]`).
    fn file_has(&self, key: &str) -> bool {
        let mut item: Option<&toml::Value> = None;
        let mut table = Some(&self.origin.table);
        for part in key.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let Some(t) = table else { return false };
            let mut v = t.get(name);
            if let Some(i) = index {
                v = v.and_then(|v| v.as_array()).and_then(|a| a.get(i));
            }
            let Some(v) = v else { return false };
            item = Some(v);
            table = v.as_table();
        }
        item.is_some()
    }
}

impl fmt::Display for Config {
    /// The effective settings, one `key = value  (source)` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .origin
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for s in self.effective() {
            let source = if s.from_file {
                file.as_str()
            } else {
                "default"
            };
            writeln!(f, "{} = {}  ({source})", s.key, s.value)?;
        }
        Ok(())
    }
}

/// Checks a `fingerprint` value: a hex digest (SHA-256 or SHA-512, `:` allowed) or a
/// TLSA-style `3 S M HEX` record with selector 0 or 1 and matching type 1 or 2.
fn check_fingerprint(text: &str) -> Result<(), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        [hex] => smtp::fingerprint_records(&[(*hex).to_owned()])
            .map(|_| ())
            .map_err(|e| e.to_string()),
        ["3", s, m, hex @ ..] if matches!(*s, "0" | "1") && !hex.is_empty() => {
            let hex: String = hex.concat();
            let len = match *m {
                "1" => 64,
                "2" => 128,
                _ => 0,
            };
            if len != 0 && hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(format!(
                    "{text:?}: expected \"3 S M HEX\" with S 0 or 1, M 1 (SHA-256) or 2 (SHA-512) and a digest of that length"
                ))
            }
        }
        _ => Err(format!(
            "{text:?}: expected a SHA-256 or SHA-512 digest in hex, or \"3 S M HEX\""
        )),
    }
}

/// Line, column (1-based) and the key with its table path at byte `span` of `text`.
///
/// The key path comes from the last table header above the position (`[[x]]` headers
/// counted, giving `x[N]`) and the key on the position's line; dotted keys and inline tables
/// are reported as written.
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> (usize, usize, String) {
    let start = span.map_or(0, |s| s.start).min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let mut header = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in text[..line_start].lines() {
        if let Some(h) = header_of(l) {
            header = apply_header(h, &mut counts);
        }
    }
    let this_line = text[line_start..].lines().next().unwrap_or("");
    if let Some(h) = header_of(this_line) {
        let key = apply_header(h, &mut counts);
        return (line, column, key);
    }
    let key_of = |l: &str| {
        l.split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
            .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.contains(['"', ',', '[']))
    };
    // A value continued over several lines (an array): the key is on the nearest line above
    // that has one, below the table header.
    let key = key_of(this_line)
        .or_else(|| {
            text[..line_start]
                .lines()
                .rev()
                .take_while(|l| header_of(l).is_none())
                .find_map(key_of)
        })
        .unwrap_or_default();
    let full = match (header.is_empty(), key.is_empty()) {
        (_, true) => header,
        (true, false) => key,
        (false, false) => format!("{header}.{key}"),
    };
    (line, column, full)
}

/// The 1-based line where `key` (`queue.retry_first`, `policy[1].match`,
/// `policy[0].fingerprint[2]`) is set in `text`; for a list element, the list's line.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let mut header = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut found = None;
    for (i, l) in text.lines().enumerate() {
        let path = if let Some(h) = header_of(l) {
            header = apply_header(h, &mut counts);
            header.clone()
        } else {
            match l.split_once('=') {
                Some((k, _)) if !k.trim().starts_with('#') && !k.trim().is_empty() => {
                    let k = k.trim().trim_matches('"');
                    if header.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{header}.{k}")
                    }
                }
                _ => continue,
            }
        };
        if path == key {
            return Some(i + 1);
        }
        // `a.b[2]` is on the line of `a.b` (a list) or of the third `[[a.b]]`.
        if let Some((list, _)) = key.rsplit_once('[')
            && path == list
            && found.is_none()
        {
            found = Some(i + 1);
        }
    }
    found
}

/// A table header's name and whether it is an array of tables.
fn header_of(line: &str) -> Option<(&str, bool)> {
    let l = line.split('#').next().unwrap_or("").trim();
    if let Some(inner) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        return Some((inner.trim(), true));
    }
    l.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(|inner| (inner.trim(), false))
}

/// The path a header opens (`policy[2]` for the third `[[policy]]`).
fn apply_header((name, array): (&str, bool), counts: &mut Vec<(String, usize)>) -> String {
    if !array {
        return name.to_owned();
    }
    let n = match counts.iter_mut().find(|(k, _)| k == name) {
        Some((_, c)) => {
            *c += 1;
            *c
        }
        None => {
            counts.push((name.to_owned(), 0));
            0
        }
    };
    format!("{name}[{n}]")
}

#[cfg(test)]
mod tests;
