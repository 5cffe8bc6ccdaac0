//! The daemon: everything `danemta serve` runs, wired together. Opens the queue (recovering
//! what a crash left), the certificates, the resolver and the metrics endpoint; starts the
//! scheduler, the doorbell and a listener per `[[server.listen]]`; then waits for signals:
//! SIGHUP reloads the policy table and the certificates, SIGTERM (or SIGINT) stops accepting,
//! lets deliveries in flight finish (or go back to the queue) and returns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dane::pki_types::CertificateDer;
use dane::pki_types::pem::PemObject;
use dns::DnsName;
use rustls::crypto::CryptoProvider;
use smtp::HeloName;
use smtp::server::Server;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::certs::{self, Certs, Source};
use crate::config::{Config, ListenMode, StoreKind};
use crate::listener::{ConnectionLimits, RelayAcceptor, serve_listener};
use crate::queue::postgres::{self, PgStore};
use crate::queue::{LocalStore, QueueError, Store};
use crate::scheduler::{Policy, Scheduler, Settings, retry::Retry, unix_now};
use crate::users::{Users, UsersError};
use crate::{metrics, wake};

/// Why the daemon cannot start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `[server] hostname` is unset and the system's is not a usable name.
    #[error(
        "the system host name {0:?} cannot be used in EHLO: set [server] hostname to this host's fully qualified domain name"
    )]
    Hostname(String),
    /// The queue cannot be opened.
    #[error("queue {dir}: {source}")]
    Queue {
        /// The queue directory (for `store = "postgres"`: the database's `host:port/name`).
        dir: PathBuf,
        /// Why.
        source: QueueError,
    },
    /// Another daemon holds the queue's lock.
    #[error("queue {0}: another danemta serve is running on this queue")]
    AlreadyRunning(PathBuf),
    /// Certificates.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// `[auth] users_file`.
    #[error("[auth] users_file: {0}")]
    Users(#[from] UsersError),
    /// `[delivery] ca_file`.
    #[error("[delivery] ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The resolver cannot be set up.
    #[error("[dns]: {0}")]
    Resolver(#[from] dns::SetupError),
    /// A listening address cannot be bound.
    #[error("[[server.listen]] {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The doorbell socket.
    #[error(transparent)]
    Wake(#[from] wake::WakeError),
    /// Signal handlers.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The name the daemon uses in its greeting, EHLO, `Received:` and DSNs: `[server]
/// hostname`, else the system's host name (`/proc/sys/kernel/hostname`).
pub fn hostname(config: &Config) -> Result<HeloName, DaemonError> {
    let name = match &config.server.hostname {
        Some(name) => name.as_str().to_owned(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
    };
    HeloName::new(name.clone()).map_err(|_| DaemonError::Hostname(name))
}

/// Where the listeners' certificates come from.
pub fn cert_source(config: &Config, hostname: &HeloName) -> Source {
    if config.server.tls.is_empty() {
        Source::SelfSigned {
            dir: config.queue.dir.clone(),
            hostname: hostname.as_str().to_owned(),
        }
    } else {
        Source::Configured(config.server.tls.clone())
    }
}

/// The policy table and PKIX roots of `config` (what SIGHUP reloads).
pub fn policy(config: &Config) -> Result<Policy, DaemonError> {
    let extra: Vec<CertificateDer<'static>> = match &config.delivery.ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| DaemonError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?,
        None => Vec::new(),
    };
    Ok(Policy {
        config: Arc::new(config.clone()),
        roots: Arc::new(smtp::tls::roots(&extra)),
    })
}

/// Checks what `serve --check-config` can check beyond the file itself: the host name, the
/// certificates (without making the self-signed one), the users file and the CA file.
pub fn check(config: &Config) -> Result<(), DaemonError> {
    let hostname = hostname(config)?;
    if config.queue.store == StoreKind::Postgres {
        // The URL's form and TLS settings; the database itself is reached at start.
        let url = config.queue.url.as_deref().unwrap_or_default();
        postgres::check_url(url).map_err(|source| DaemonError::Queue {
            dir: PathBuf::from("[queue] url"),
            source,
        })?;
    }
    let source = cert_source(config, &hostname);
    if let Source::Configured(_) = source {
        Certs::load(&source, provider())?;
    }
    if let Some(path) = &config.auth.users_file {
        Users::load(path)?;
    }
    policy(config)?;
    Ok(())
}

/// Opens the configured store for the daemon.
///
/// * `local`: the spool and SQLite in `[queue] dir`, recovering what a crash left; refused
///   when another daemon holds the queue's lock.
/// * `postgres`: [`PgStore`] on `[queue] url` (connected and migrated in a blocking task).
///   Nothing of the queue is on this node's disk then, but `[queue] dir` is still the
///   node's own directory: the doorbell socket `danemta sendmail` and `danemta queue` ring
///   (which also keeps two daemons from sharing the directory), and the self-signed
///   certificate when `[server] tls` is not set. It is created if missing. Several nodes
///   share the database, each with a directory of its own.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, DaemonError> {
    let dir = config.queue.dir.clone();
    match config.queue.store {
        StoreKind::Local => {
            let (store, recovery) =
                LocalStore::open(&dir, unix_now()).map_err(|source| DaemonError::Queue {
                    dir: dir.clone(),
                    source,
                })?;
            if !recovery.spool_scanned {
                return Err(DaemonError::AlreadyRunning(dir));
            }
            log_recovery(&recovery);
            Ok(Arc::new(store))
        }
        StoreKind::Postgres => {
            let url = config.queue.url.clone().unwrap_or_default();
            let target = postgres::check_url(&url).map_err(|source| DaemonError::Queue {
                dir: PathBuf::from("[queue] url"),
                source,
            })?;
            let queue_err = |source| DaemonError::Queue {
                dir: PathBuf::from(&target),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(|source| {
                queue_err(QueueError::Io {
                    path: dir.clone(),
                    source,
                })
            })?;
            let store = tokio::task::spawn_blocking(move || PgStore::open(&url))
                .await
                .map_err(|_| queue_err(QueueError::Internal("the store's opening task failed")))?
                .map_err(queue_err)?;
            tracing::info!(target: "relay", "queue: PostgreSQL at {target}");
            Ok(Arc::new(store))
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Runs the daemon on `config` until SIGTERM or SIGINT. `path` is the configuration file
/// SIGHUP reads again (`None`: the embedded defaults, nothing to reload but certificates).
pub async fn run(config: Config, path: Option<PathBuf>) -> Result<(), DaemonError> {
    let hostname = hostname(&config)?;
    let dir = config.queue.dir.clone();
    let store = open_store(&config).await?;

    let provider = provider();
    let source = cert_source(&config, &hostname);
    let (certs, loaded) = Certs::load(&source, Arc::clone(&provider))?;
    log_certs(&source, &loaded, &hostname);
    let certs = Arc::new(certs);
    let tls = certs.server_config()?;
    let users = match &config.auth.users_file {
        Some(path) => Some(Arc::new(Users::load(path)?)),
        None => None,
    };

    if config.dns.resolver.trusts_ad_off_loopback() {
        tracing::warn!(
            target: "relay",
            "trusting the AD bit of {}, which is not on loopback: anyone on the network path can forge it (RFC 7672 §2.1.1)",
            config.dns.resolver
        );
    }
    let mut backend = dns::Backend::open(
        &config.dns.resolver,
        config.dns.trust_anchor.as_deref(),
        config.dns.timeout,
    )
    .await?;
    backend.set_negative_trust_anchors(&config.dns.negative_trust_anchors);
    let dnssec = dns::doctor::root_validates(&backend).await;
    match &dnssec {
        Ok(()) => {
            tracing::info!(target: "relay", "DNSSEC validation works ({})", config.dns.resolver)
        }
        Err(why) => tracing::warn!(
            target: "relay",
            "DNSSEC validation does not work ({why}): DANE cannot protect anything; dane-only destinations are deferred (run `danemta doctor`)"
        ),
    }

    if let Err(e) = metrics::install(config.metrics.listen) {
        tracing::warn!(target: "relay", "metrics: {e}; running without /metrics");
    }
    record_cert_expiry(&loaded.offered);

    let settings = Settings {
        hostname: hostname.clone(),
        retry: Retry {
            first: config.queue.retry_first,
            max: config.queue.retry_max,
            lifetime: config.queue.lifetime,
        },
        max_connections: usize::try_from(config.delivery.max_connections).unwrap_or(usize::MAX),
        max_connections_per_destination: usize::try_from(
            config.delivery.max_connections_per_destination,
        )
        .unwrap_or(usize::MAX),
        max_claimed: usize::try_from(config.delivery.max_connections)
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
        timeouts: smtp::Timeouts::default(),
        owner: format!("{}/{}", hostname.as_str(), std::process::id()),
        lease: config.queue.lease_time,
        dnssec,
    };
    let resolver = Arc::new(backend);
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&store),
        Arc::clone(&resolver),
        settings,
        policy(&config)?,
    ));
    let (stop, stopped) = watch::channel(false);
    let delivering = tokio::spawn(Arc::clone(&scheduler).run(stopped.clone()));
    // Our own TLSA records against the chains we serve (crate::own_tlsa): now, after each
    // reload and hourly, in a task of its own (never delaying or failing the start).
    let recheck_own_tlsa = Arc::new(tokio::sync::Notify::new());
    let own_tlsa = match hostname.as_str().parse::<DnsName>() {
        Ok(name) => Some(tokio::spawn(crate::own_tlsa::run(
            Arc::clone(&resolver),
            name,
            Arc::clone(&certs),
            Arc::clone(&recheck_own_tlsa),
            stopped.clone(),
        ))),
        Err(_) => None,
    };
    // TLS-RPT (RFC 8460): yesterday's reports, once the day is over, then hourly.
    let reporting = match hostname.as_str().parse::<DnsName>() {
        Ok(name) => {
            let roots = Arc::clone(&scheduler);
            let wake = Arc::clone(&scheduler);
            Some(tokio::spawn(crate::tlsrpt::run(
                Arc::clone(&store),
                sts::ResolverTxt(Arc::clone(&resolver)),
                sts::ResolverAddresses(resolver),
                crate::tlsrpt::Reporter::for_host(&name),
                move || roots.pkix_roots(),
                move || wake.wake(),
                stopped,
            )))
        }
        Err(_) => {
            tracing::warn!(target: "relay", "no TLS-RPT reports: the host name {hostname} is not a domain name");
            None
        }
    };

    let bell = wake::Doorbell::bind(&dir)?;
    let ringing = {
        let scheduler = Arc::clone(&scheduler);
        tokio::spawn(async move {
            loop {
                bell.rung().await;
                scheduler.wake();
            }
        })
    };

    let wake: Arc<dyn Fn() + Send + Sync> = {
        let scheduler = Arc::clone(&scheduler);
        Arc::new(move || scheduler.wake())
    };
    let auth_failures = Arc::new(crate::listener::AuthFailures::default());
    let content_budget = smtp::server::ContentBudget::new(config.max_content_memory());
    let mut listeners = Vec::new();
    for listen in &config.server.listen {
        let socket =
            TcpListener::bind(listen.address)
                .await
                .map_err(|source| DaemonError::Listen {
                    address: listen.address,
                    source,
                })?;
        let mut acceptor =
            RelayAcceptor::new(Arc::clone(&store), hostname.as_str(), &config.server)
                .on_queued(Arc::clone(&wake))
                .with_min_free(dir.clone(), config.min_free());
        if let Some(users) = &users {
            acceptor = acceptor
                .with_users(Arc::clone(users))
                .with_auth_failures(Arc::clone(&auth_failures));
        }
        let mut server = smtp::server::Config::new(hostname.clone());
        server.max_message_size = config.server.max_message_size;
        server.max_header_size = config.server.max_header_size;
        server.content_budget = Some(Arc::clone(&content_budget));
        server.tls = Some(Arc::clone(&tls));
        match listen.mode {
            ListenMode::Smtp => {}
            ListenMode::Submission | ListenMode::Submissions => {
                acceptor = acceptor.requiring_auth();
                server.auth = true;
                server.implicit_tls = listen.mode == ListenMode::Submissions;
            }
        }
        let label = match listen.mode {
            ListenMode::Smtp => "smtp",
            ListenMode::Submission => "submission",
            ListenMode::Submissions => "submissions",
        };
        tracing::info!(target: "relay", "listening on {} ({label})", listen.address);
        let server = Arc::new(Server::new(server, Arc::new(acceptor)));
        listeners.push(tokio::spawn(serve_listener(
            socket,
            server,
            ConnectionLimits::from_config(&config.server, listen.mode == ListenMode::Submissions),
            label,
        )));
    }
    tracing::info!(
        target: "relay",
        "danemta serve {} started as {}: queue {}",
        env!("CARGO_PKG_VERSION"),
        hostname.as_str(),
        dir.display()
    );
    log_paused(&config);

    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut queue_gauges = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = hup.recv() => reload(path.as_deref(), &hostname, &scheduler, &certs, &recheck_own_tlsa),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = queue_gauges.tick() => record_queue(&store).await,
        }
    }
    tracing::info!(target: "relay", "stopping: no new connections; finishing deliveries in flight");
    for l in &listeners {
        l.abort();
    }
    ringing.abort();
    if let Some(own_tlsa) = &own_tlsa {
        own_tlsa.abort();
    }
    let _ = stop.send(true);
    let _ = delivering.await;
    if let Some(reporting) = reporting {
        let _ = reporting.await;
    }
    tracing::info!(target: "relay", "stopped");
    Ok(())
}

/// SIGHUP: the policy table, `[delivery] ca_file` and the certificates from the file again.
/// A bad file changes nothing (the error is logged); settings that need a restart
/// (listeners, queue, DNS) are not re-applied.
fn reload<R: dns::Resolver + 'static>(
    path: Option<&Path>,
    hostname: &HeloName,
    scheduler: &Scheduler<R>,
    certs: &Certs,
    recheck_own_tlsa: &tokio::sync::Notify,
) {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: "relay", "reload refused, keeping the running configuration: {e}");
            return;
        }
    };
    match policy(&config) {
        Ok(p) => {
            scheduler.reload(p);
            log_paused(&config);
        }
        Err(e) => {
            tracing::error!(target: "relay", "reload refused, keeping the running configuration: {e}");
            return;
        }
    }
    match certs.reload(&cert_source(&config, hostname)) {
        Ok(loaded) => {
            tracing::info!(
                target: "relay",
                "reloaded: policy table ({} entries) and certificates ({})",
                config.policy.len(),
                loaded.default_chain.display()
            );
            record_cert_expiry(&loaded.offered);
            recheck_own_tlsa.notify_one();
        }
        Err(e) => {
            tracing::error!(target: "relay", "certificates not reloaded, keeping the old ones: {e}")
        }
    }
}

/// `danemta_tls_certificate_expiry_timestamp_seconds` of the chains offered now.
fn record_cert_expiry(offered: &[certs::Offered]) {
    metrics::certificate_expiry(
        offered
            .iter()
            .filter_map(|o| Some((o.label.as_str(), o.not_after?))),
    );
}

/// Queue size and oldest message age (the whole queue's, on every node sharing it), and
/// whether this node leads, for the metrics.
async fn record_queue(store: &Arc<dyn Store>) {
    let store = Arc::clone(store);
    let now = unix_now();
    let read = tokio::task::spawn_blocking(move || (store.stats(), store.leads_cluster())).await;
    if let Ok((stats, leads)) = read {
        if let Ok(stats) = stats {
            let oldest = stats.oldest_arrival.unwrap_or(now);
            metrics::queue(stats.messages, u64::try_from(now - oldest).unwrap_or(0));
        }
        if let Ok(leads) = leads {
            metrics::leader(leads);
        }
    }
}

fn log_paused(config: &Config) {
    if config.delivery.paused {
        tracing::warn!(
            target: "relay",
            "deliveries paused ([delivery] paused = true): mail is accepted and queued, nothing is delivered until a reload with paused = false"
        );
    }
}

fn log_recovery(r: &crate::queue::Recovery) {
    for id in &r.orphan_bodies {
        tracing::warn!(target: "relay", "{id}: spool file without a queue entry (never acknowledged, or finished just before a crash) moved to quarantine/");
    }
    for (id, why) in &r.damaged_bodies {
        tracing::error!(target: "relay", "{id}: put on hold: {why} (`danemta queue show {id}`)");
    }
    if !r.finished.is_empty() {
        tracing::info!(
            target: "relay",
            "{} message(s) delivered just before the last daemon stopped are removed now",
            r.finished.len()
        );
    }
    if r.expired_leases > 0 {
        tracing::info!(
            target: "relay",
            "{} message(s) that were being delivered when the last daemon stopped are queued again",
            r.expired_leases
        );
    }
}

fn log_certs(source: &Source, loaded: &certs::Loaded, hostname: &HeloName) {
    if let (Source::SelfSigned { .. }, Some(tlsa)) = (source, &loaded.tlsa) {
        let what = if loaded.made { "made" } else { "using" };
        tracing::info!(
            target: "relay",
            "STARTTLS: {what} self-signed certificate {}; publish its TLSA record: _25._tcp.{}. IN TLSA {tlsa}",
            loaded.default_chain.display(),
            hostname.as_str()
        );
    } else {
        tracing::info!(target: "relay", "STARTTLS: default chain {}", loaded.default_chain.display());
    }
}
