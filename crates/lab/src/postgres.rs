//! A private PostgreSQL server for tests: the relay's shared queue store (`PgStore`) runs
//! against it.
//!
//! [`Postgres::start`] makes a cluster with `initdb` in a lab instance directory
//! (`/tmp/danemta-lab/pg-<pid>-…`), starts the `postgres` server on `127.0.0.1` and a free
//! port (its Unix socket in the instance directory, never in `/var/run/postgresql`), and waits
//! until it accepts connections. PostgreSQL refuses to run as root: when the tests run as root,
//! the cluster belongs to the `postgres` system user (the Debian package makes it) and the
//! server runs as that user. Every database user is trusted on the loopback address (the
//! cluster is a test fixture: nothing but this machine can reach it).
//!
//! The server can be stopped ([`Postgres::stop`], a fast shutdown), killed
//! ([`Postgres::kill`], SIGKILL of its process group: a crash) and started again on the same
//! port and data ([`Postgres::restart`]), for the tests of a database that goes away under
//! load. Dropping the [`Postgres`] stops the server by its PID and removes the directory; a
//! watchdog does the same if the test process dies first. Set `DANEMTA_LAB_KEEP=1` to keep the
//! directory (with `postgres.out`, the server's log).
//!
//! Needs the Debian package `postgresql` (the binaries are taken from
//! `/usr/lib/postgresql/<version>/bin`, the newest version installed, or from `$PATH`).
//!
//! ```no_run
//! let pg = danemta_lab::postgres::Postgres::start()?;
//! let url = pg.create_database()?; // postgres://danemta@127.0.0.1:PORT/test_1
//! // … open the store on `url` …
//! # Ok::<(), danemta_lab::LabError>(())
//! ```

use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::LabError;
use crate::process;

/// How long the server may take to accept connections after a start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown may take before the server's processes are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The database superuser `initdb` makes (trusted on loopback).
pub const USER: &str = "danemta";

/// How the cluster is made.
#[derive(Clone, Debug, Default)]
pub struct PostgresSpec {
    /// `fsync = on`, as in production: commits reach the disk. Off by default: a test server
    /// needs no protection from power failures (a killed server loses nothing either way, the
    /// kernel still has its writes), and tests run faster without.
    pub fsync: bool,
    /// TLS: the server's certificate chain and key (`ssl = on`); plaintext is still
    /// accepted too (`host` lines of `pg_hba.conf`), so a test can try both.
    pub tls: Option<crate::pki::TestCert>,
}

/// A private PostgreSQL server (see the module documentation).
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    addr: SocketAddr,
    /// Who runs the server and the client programs: `Some((uid, gid))` of `postgres` when the
    /// tests run as root.
    run_as: Option<(u32, u32)>,
    spec: PostgresSpec,
    server: Option<Child>,
    watchdog: Option<Child>,
    keep: bool,
}

impl Postgres {
    /// Makes a cluster and starts its server, with fsync off ([`PostgresSpec`]).
    pub fn start() -> Result<Self, LabError> {
        Self::start_with(PostgresSpec::default())
    }

    /// Makes a cluster as `spec` says and starts its server.
    pub fn start_with(spec: PostgresSpec) -> Result<Self, LabError> {
        let bin = find_bin()?;
        let run_as = if running_as_root() {
            Some(system_user("postgres")?)
        } else {
            None
        };
        let keep = std::env::var("DANEMTA_LAB_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
        let dir = process::instance_dir("pg")?;
        let mut pg = Postgres {
            bin,
            data: dir.join("data"),
            dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            run_as,
            spec,
            server: None,
            watchdog: None,
            keep,
        };
        // From here on, errors drop `pg`, which cleans up.
        pg.watchdog = Some(process::spawn_watchdog(&pg.dir, keep)?);
        if let Some((uid, gid)) = pg.run_as {
            std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid))
                .map_err(|e| LabError::io(format!("chown {}", pg.dir.display()), e))?;
        }
        pg.initdb()?;
        pg.write_tls()?;
        // A free port now may be taken by the time the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            pg.addr = free_port()?;
            match pg.spawn_and_wait() {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LabError::io("starting postgres", std::io::Error::other("?"))))
    }

    /// Where the server listens (127.0.0.1 and its port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `database` on this server, as user [`USER`] (no password: trusted).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}@{}:{}/{database}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// Creates a new, empty database with a name of its own (`test_<pid>_<n>`) and returns its
    /// URL. Each test takes one, so that tests sharing a server do not see each other's data.
    pub fn create_database(&self) -> Result<String, LabError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.client("createdb", &[OsStr::new(&name)])?;
        Ok(self.url(&name))
    }

    /// Runs `psql` with `sql` on `database` (as [`USER`]) and returns its output (unaligned,
    /// tuples only): for tests that look at or change the database behind the store's back.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, LabError> {
        self.client(
            "psql",
            &[
                OsStr::new("-X"),
                OsStr::new("-q"),
                OsStr::new("-A"),
                OsStr::new("-t"),
                OsStr::new("-v"),
                OsStr::new("ON_ERROR_STOP=1"),
                OsStr::new("-d"),
                OsStr::new(database),
                OsStr::new("-c"),
                OsStr::new(sql),
            ],
        )
    }

    /// The PID of the server (the postmaster), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The instance directory (`data/`, the cluster; `postgres.out`, the server's log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server: a fast shutdown (SIGINT to its PID: clients are disconnected, open
    /// transactions roll back, everything committed stays), SIGKILL of its process group if it
    /// takes longer than 10 s. Nothing happens if it is not running.
    pub fn stop(&mut self) -> Result<(), LabError> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        signal("INT", child.id());
        let exited = process::wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            process::terminate_groups(&[child.id()], Duration::ZERO);
            let _ = child.wait();
        }
        Ok(())
    }

    /// Kills the server and every process of it (SIGKILL of its process group), as a crash
    /// would; [`Postgres::restart`] then runs PostgreSQL's crash recovery.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            process::terminate_groups(&[child.id()], Duration::ZERO);
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`Postgres::stop`] or [`Postgres::kill`]) on the same
    /// address and data, and waits until it accepts connections. A running server is stopped
    /// first.
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// Writes the spec's certificate and key for the server (the key readable by the server's
    /// user only, as PostgreSQL demands).
    fn write_tls(&self) -> Result<(), LabError> {
        let Some(cert) = &self.spec.tls else {
            return Ok(());
        };
        for (name, pem) in [
            ("server.crt", &cert.chain_pem),
            ("server.key", &cert.key_pem),
        ] {
            let path = self.dir.join(name);
            fs::write(&path, pem)
                .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| LabError::io(format!("chmod {}", path.display()), e))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| LabError::io(format!("chown {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), LabError> {
        let out = self
            .command("initdb")
            .args([
                OsStr::new("-D"),
                self.data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(USER),
                OsStr::new("--auth=trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ])
            .output()
            .map_err(|e| LabError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(LabError::Tool {
                program: "initdb".into(),
                context: format!("making a cluster in {}", self.data.display()),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(())
    }

    /// Spawns the server in a process group of its own (recorded for the watchdog) and waits
    /// until it accepts connections.
    fn spawn_and_wait(&mut self) -> Result<(), LabError> {
        let log_path = self.dir.join("postgres.out");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LabError::io(format!("opening {}", log_path.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| LabError::io("duplicating a file handle", e))?;
        let fsync = if self.spec.fsync { "on" } else { "off" };
        let settings = [
            format!("listen_addresses={}", self.addr.ip()),
            format!("port={}", self.addr.port()),
            format!("unix_socket_directories={}", self.dir.display()),
            format!("fsync={fsync}"),
            "max_connections=200".to_owned(),
            "shared_buffers=32MB".to_owned(),
            "log_min_messages=warning".to_owned(),
        ];
        let tls = match self.spec.tls {
            Some(_) => vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", self.dir.join("server.crt").display()),
                format!("ssl_key_file={}", self.dir.join("server.key").display()),
            ],
            None => Vec::new(),
        };
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.data);
        for s in settings.iter().chain(&tls) {
            cmd.arg("-c").arg(s);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| LabError::io("starting postgres", e))?;
        let pid = child.id();
        self.server = Some(child);
        process::record_pgid(&self.dir, pid)?;
        let t0 = Instant::now();
        loop {
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.server = None;
                return Err(LabError::ServerExited {
                    server: "postgres".into(),
                    status: status.to_string(),
                    logs: process::tail(&log_path, 20),
                });
            }
            let last = match self.client("pg_isready", &[OsStr::new("-q")]) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if t0.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(LabError::Timeout {
                    server: "postgres".into(),
                    timeout: START_TIMEOUT,
                    last,
                    logs: process::tail(&log_path, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a client program of the server's version against it (over TCP, as [`USER`]).
    fn client(&self, program: &str, args: &[&OsStr]) -> Result<String, LabError> {
        let out = self
            .command(program)
            .arg("-h")
            .arg(self.addr.ip().to_string())
            .arg("-p")
            .arg(self.addr.port().to_string())
            .arg("-U")
            .arg(USER)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::io(format!("running {program}"), e))?;
        if !out.status.success() {
            return Err(LabError::Tool {
                program: program.into(),
                context: format!("talking to the test PostgreSQL at {}", self.addr),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command for one of the server's programs, run as the cluster's owner, in the instance
    /// directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
        // The watchdog's pipe closes with it: it kills what is left and removes the directory
        // (unless kept).
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        if self.keep {
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` (`INT`, `TERM`, …) to `pid` with kill(1).
fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A port on 127.0.0.1 free right now.
fn free_port() -> Result<SocketAddr, LabError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| LabError::io("finding a free port on 127.0.0.1", e))
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of a system user, from `/etc/passwd`.
fn system_user(name: &str) -> Result<(u32, u32), LabError> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| LabError::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            if f.next()? != name {
                return None;
            }
            let _password = f.next()?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .ok_or_else(|| LabError::MissingPrograms {
            missing: format!("the system user {name:?} (PostgreSQL refuses to run as root)"),
            packages: "postgresql".into(),
        })
}

/// The directory of the server's programs: the newest `/usr/lib/postgresql/<v>/bin` (Debian),
/// else where `$PATH` has `initdb`.
fn find_bin() -> Result<PathBuf, LabError> {
    let has_all = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb", "psql"]
            .iter()
            .all(|p| {
                fs::metadata(dir.join(p))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    };
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| has_all(dir))
        .ok_or_else(|| LabError::MissingPrograms {
            missing: "initdb, postgres, pg_isready, createdb, psql".into(),
            packages: "postgresql".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_system_users() {
        assert_eq!(system_user("root").unwrap(), (0, 0));
        assert!(system_user("no-such-user-danemta").is_err());
    }

    /// Start, create a database, query it, stop, restart (the data is still there), kill,
    /// restart (crash recovery keeps it too), drop (the server is gone, the directory too).
    #[test]
    fn starts_stops_restarts_and_cleans_up() {
        let mut pg = Postgres::start().unwrap();
        let url = pg.create_database().unwrap();
        let db = url.rsplit('/').next().unwrap().to_owned();
        pg.psql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
            .unwrap();
        let pid = pg.pid().unwrap();
        pg.stop().unwrap();
        assert!(!process::is_alive(pid));
        assert!(pg.psql(&db, "SELECT 1").is_err(), "stopped");
        pg.restart().unwrap();
        assert_eq!(pg.psql(&db, "SELECT x FROM t").unwrap().trim(), "42");
        pg.kill();
        pg.restart().unwrap();
        assert_eq!(pg.psql(&db, "SELECT x FROM t").unwrap().trim(), "42");
        let (pid, dir) = (pg.pid().unwrap(), pg.dir().to_owned());
        drop(pg);
        assert!(!process::is_alive(pid));
        assert!(!dir.exists());
    }
}
