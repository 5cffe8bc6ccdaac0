//! `danemta queue`: look at and manage the relay's queue, as Postfix's `postqueue` and
//! `postsuper` do. Safe while the daemon runs: the store is opened as a second process
//! (no spool recovery scan), every change is one short transaction, and the daemon is rung
//! ([`relay::wake`]) afterwards so that it acts on the change now rather than at its next
//! scheduled wake-up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use relay::config::{Config, StoreKind};
use relay::queue::postgres::PgStore;
use relay::queue::{LocalStore, QueueEntry, QueueError, QueueId, QueueName, Store, Timestamp};
use relay::wake;

use crate::error::{CliError, EX_NOUSER};
use crate::escape::escape;

/// Options of `danemta queue`.
///
/// Exit status: 0 done; 67 (EX_NOUSER) some id given is not in the queue (the others were
/// handled); 64 usage error (including a malformed id: then nothing is done); 75 the queue
/// cannot be opened or written (a PostgreSQL queue out of reach included); 78 the
/// configuration is refused.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 done; 67 an id is not in the queue (the others were \
    handled); 64 usage error; 75 the queue cannot be read or written; 78 bad \
    configuration."
)]
pub struct QueueArgs {
    /// The configuration file; default /etc/danemta/danemta.toml when present, else the
    /// embedded defaults (as `serve`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Debug, clap::Subcommand)]
enum QueueCommand {
    /// List every queued message (like `postqueue -p`): id (`*` being delivered, `!` held),
    /// size, arrival, sender, then each recipient with why it is still queued.
    List {
        /// One JSON object per message and line, with the field names of `postqueue -j`.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: every recipient and the history of attempts, as JSON.
    Show {
        /// The queue id.
        id: String,
    },
    /// Make messages due now (all of them without ids) and wake the daemon.
    Flush {
        /// Queue ids; none for every message.
        ids: Vec<String>,
    },
    /// Remove messages without delivering them (no bounce is sent).
    Delete {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Hold messages: they are not delivered until released.
    Hold {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages.
    Release {
        /// Queue ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// The reason `hold` records.
const HOLD_REASON: &str = "held by the operator (danemta queue hold)";

/// Runs `danemta queue`.
pub fn run(args: QueueArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let dir = config.queue.dir.clone();
    let store = open_queue(&config)?;
    let now = now();
    let mut out = std::io::stdout().lock();
    match args.command {
        QueueCommand::List { json } => {
            // Streamed: each message is printed as it is read, so a queue of 100,000
            // messages is never held in memory.
            let mut table = Table::default();
            let mut failed = None;
            store.scan(now, &mut |entry| {
                let text = if json {
                    match serde_json::to_string(&entry) {
                        Ok(line) => line + "\n",
                        Err(e) => {
                            failed.get_or_insert(QueueError::Json(e));
                            return;
                        }
                    }
                } else {
                    table.row(&entry)
                };
                let _ = out.write_all(text.as_bytes());
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            if !json {
                let _ = out.write_all(table.footer().as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Show { id } => {
            let id = parse_id(&id)?;
            let entry = store.show(&id, now)?;
            let text = serde_json::to_string_pretty(&entry).map_err(QueueError::Json)?;
            let _ = writeln!(out, "{text}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Flush { ids } => {
            let ids = parse_ids(&ids)?;
            let mut failed = false;
            let flushed = if ids.is_empty() {
                store.flush(&[], now)?
            } else {
                let mut known = Vec::with_capacity(ids.len());
                for id in ids {
                    match store.show(&id, now) {
                        Ok(entry) if entry.queue_name == QueueName::Hold => {
                            eprintln!("danemta: {id} is held: release it to deliver it");
                        }
                        Ok(_) => known.push(id),
                        Err(e @ QueueError::NotFound(_)) => {
                            eprintln!("danemta: error: {e}");
                            failed = true;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if known.is_empty() {
                    return Ok(exit(failed));
                }
                store.flush(&known, now)?
            };
            let plural = if flushed == 1 { "" } else { "s" };
            let _ = writeln!(out, "{flushed} message{plural} flushed; {}", doorbell(&dir));
            Ok(exit(failed))
        }
        QueueCommand::Delete { ids } => each(&*store, &dir, &ids, "deleted", |s, id| s.delete(id)),
        QueueCommand::Hold { ids } => {
            each(&*store, &dir, &ids, "held", |s, id| s.hold(id, HOLD_REASON))
        }
        QueueCommand::Release { ids } => {
            each(&*store, &dir, &ids, "released", |s, id| s.release(id))
        }
    }
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(EX_NOUSER)
    } else {
        ExitCode::SUCCESS
    }
}

/// Applies `action` to each id, reports each, rings the daemon once.
fn each(
    store: &dyn Store,
    dir: &Path,
    ids: &[String],
    done: &str,
    action: impl Fn(&dyn Store, &QueueId) -> Result<(), QueueError>,
) -> Result<ExitCode, CliError> {
    let ids = parse_ids(ids)?;
    let mut failed = false;
    let mut changed = 0;
    for id in &ids {
        // Existence first: the store's checks differ in order (release looks for the body
        // before the row), and an unknown id must read the same for every command.
        match store.show(id, now()).and_then(|_| action(store, id)) {
            Ok(()) => {
                println!("{id}: {done}");
                changed += 1;
            }
            Err(e @ QueueError::NotFound(_)) => {
                eprintln!("danemta: error: {e}");
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if changed > 0 {
        // The daemon learns of the change now (a held message leaves its timers, a released
        // one is due). Not being able to ring changes nothing about what was done.
        let _ = wake::ring(dir);
    }
    Ok(exit(failed))
}

/// Opens the configured queue as a client (not the daemon), whatever its store: see
/// [`LocalStore::open`]; with `store = "postgres"`, [`PgStore::open`] on `[queue] url` (the
/// whole queue, every node's mail: what any node's `danemta queue` sees and changes is the
/// same).
pub(crate) fn open_queue(config: &Config) -> Result<Box<dyn Store>, CliError> {
    match config.queue.store {
        StoreKind::Local => {
            become_spool_owner(&config.queue.dir)?;
            let (store, _recovery) = LocalStore::open(&config.queue.dir, now())?;
            Ok(Box::new(store))
        }
        StoreKind::Postgres => {
            let url = config.queue.url.as_deref().unwrap_or_default();
            Ok(Box::new(PgStore::open(url)?))
        }
    }
}

/// The owner (uid, gid) of the spool `dir` when this process runs as root and the spool
/// belongs to another user (the packaged daemon's `danemta`); `None` otherwise (not root, no
/// spool yet, a root-owned spool).
pub(crate) fn foreign_spool_owner(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;

    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let meta = std::fs::metadata(dir).ok()?;
    (meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
}

/// Run as root against a spool that belongs to another user, becomes that user and group
/// for the rest of the command, as Postfix's `postdrop` and `postsuper` work as the mail
/// owner: what root would create in the spool (the queue database's journal, message files)
/// the daemon could then neither read nor write.
fn become_spool_owner(dir: &Path) -> Result<(), CliError> {
    let Some((uid, gid)) = foreign_spool_owner(dir) else {
        return Ok(());
    };
    let failed = |source| CliError::Privileges {
        dir: dir.display().to_string(),
        uid,
        gid,
        source,
    };
    // Group first (setgid is no longer allowed once the uid is dropped); no supplementary
    // groups of root's. glibc applies each call to every thread of the process.
    // SAFETY: plain system calls with integer arguments (and an empty group list).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        if libc::setuid(uid) != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Rings the daemon and says what that means for the mail just changed.
pub(crate) fn doorbell(dir: &Path) -> String {
    match wake::ring(dir) {
        Ok(true) => "the daemon was woken".into(),
        Ok(false) => "no daemon is running: mail goes out when `danemta serve` next starts".into(),
        Err(e) => format!(
            "the daemon could not be woken ({}): it delivers at its next scheduled run",
            escape(&e.to_string())
        ),
    }
}

fn parse_id(id: &str) -> Result<QueueId, CliError> {
    QueueId::try_from(id.to_owned())
        .map_err(|_| CliError::Usage(format!("{:?} is not a queue id", escape(id))))
}

fn parse_ids(ids: &[String]) -> Result<Vec<QueueId>, CliError> {
    ids.iter().map(|id| parse_id(id)).collect()
}

pub(crate) use relay::queue::now;

/// Width of the id column: the id (24 characters), then its `*`/`!` mark.
const ID_WIDTH: usize = 24 + 1;

/// The `postqueue -p` style listing, a row at a time: the header before the first row, the
/// totals (or "Mail queue is empty") at the end.
#[derive(Debug, Default)]
struct Table {
    messages: usize,
    bytes: u64,
}

impl Table {
    /// The lines of one message (after the header, for the first).
    fn row(&mut self, entry: &QueueEntry) -> String {
        let mut text = String::new();
        if self.messages == 0 {
            text.push_str(&format!(
                "{:<ID_WIDTH$} {:>9} {:<23} {}\n",
                "-Queue ID-", "--Size--", "----Arrival Time (UTC)-", "-Sender/Recipient-------"
            ));
        }
        self.messages += 1;
        self.bytes = self.bytes.saturating_add(entry.message_size);
        let indent = " ".repeat(ID_WIDTH + 1 + 9 + 1 + 23 + 1);
        let mark = match entry.queue_name {
            QueueName::Active => "*",
            QueueName::Hold => "!",
            QueueName::Deferred | QueueName::Incoming => "",
        };
        let sender = if entry.sender.is_empty() {
            "MAILER-DAEMON".into()
        } else {
            escape(&entry.sender)
        };
        text.push_str(&format!(
            "{:<ID_WIDTH$} {:>9} {:<23} {sender}\n",
            format!("{}{mark}", entry.queue_id),
            entry.message_size,
            arrival(entry.arrival_time),
        ));
        if let Some(reason) = &entry.hold_reason {
            text.push_str(&format!("{indent}(held: {})\n", escape(reason)));
        }
        for rcpt in &entry.recipients {
            if let Some(reason) = &rcpt.delay_reason {
                text.push_str(&format!("{indent}({})\n", escape(reason)));
            }
            text.push_str(&format!("{indent}{}\n", escape(&rcpt.address)));
        }
        text.push('\n');
        text
    }

    /// The last line.
    fn footer(&self) -> String {
        if self.messages == 0 {
            return "Mail queue is empty\n".into();
        }
        let kbytes = self.bytes.div_ceil(1024);
        let n = self.messages;
        let plural = if n == 1 { "" } else { "s" };
        format!("-- {kbytes} Kbytes in {n} Request{plural}.\n")
    }
}

#[cfg(test)]
fn table(entries: &[QueueEntry]) -> String {
    let mut t = Table::default();
    let mut text: String = entries.iter().map(|e| t.row(e)).collect();
    text.push_str(&t.footer());
    text
}

/// `2026-12-02 06:50:50` (UTC).
fn arrival(t: Timestamp) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay::queue::{RecipientState, RecipientView};

    fn entry(name: QueueName, sender: &str, reason: Option<&str>) -> QueueEntry {
        QueueEntry {
            queue_name: name,
            queue_id: QueueId::generate(),
            arrival_time: 1_764_658_250,
            message_size: 1500,
            sender: sender.into(),
            recipients: vec![RecipientView {
                address: "b@example.com".into(),
                delay_reason: reason.map(Into::into),
                state: RecipientState::Pending,
                attempts: u32::from(reason.is_some()),
                next_attempt: 0,
                security: None,
            }],
            hold_reason: (name == QueueName::Hold).then(|| "because".into()),
            history: Vec::new(),
        }
    }

    #[test]
    fn an_empty_queue_says_so() {
        assert_eq!(table(&[]), "Mail queue is empty\n");
    }

    #[test]
    fn the_listing_marks_states_and_escapes_remote_text() {
        let entries = [
            entry(QueueName::Active, "a@example.org", None),
            entry(
                QueueName::Deferred,
                "",
                Some("450 4.2.0 busy\x1b[2K\rdelivered"),
            ),
            entry(QueueName::Hold, "c@example.org", None),
        ];
        let text = table(&entries);
        assert!(
            text.contains(&format!("{}*", entries[0].queue_id)),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}!", entries[2].queue_id)),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} ", entries[1].queue_id)),
            "{text}"
        );
        assert!(text.contains("MAILER-DAEMON"));
        assert!(text.contains("2025-12-02 06:50:50"), "{text}");
        assert!(
            text.contains("(450 4.2.0 busy\\x1b[2K\\rdelivered)"),
            "{text}"
        );
        assert!(text.contains("(held: because)"));
        assert!(!text.contains('\x1b'));
        assert!(text.ends_with("-- 5 Kbytes in 3 Requests.\n"), "{text}");
    }

    #[test]
    fn ids_are_checked_before_anything_is_done() {
        assert!(matches!(
            parse_ids(&["nope".into()]),
            Err(CliError::Usage(_))
        ));
        let id = QueueId::generate();
        assert_eq!(parse_ids(&[id.to_string()]).expect("id"), vec![id]);
    }
}
