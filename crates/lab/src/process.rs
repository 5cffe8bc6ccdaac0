//! Processes and places: finding the programs, claiming an address block, spawning servers,
//! the watchdog, killing process groups, and cleaning up labs of killed test runs.
//!
//! Liveness of a lab is an advisory lock (`flock`) on `/tmp/danemta-lab/block-N.lock`, held by
//! the test process for as long as its [`Lab`](crate::Lab) lives. The kernel drops the lock when
//! that process dies, however it dies, so a `lab-N-*` directory whose block lock can be taken
//! belongs to a dead run: its processes are killed and the directory removed.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::LabError;
use crate::zone::Tools;

/// Where labs live: one `block-N.lock` per address block, one `lab-N-<pid>-<nanos>` directory
/// per running lab. Fixed (not `$TMPDIR`) because the address blocks are machine-wide.
pub const LAB_ROOT: &str = "/tmp/danemta-lab";

/// Second octet of every lab address: lab `N` owns `127.53.N.0/24`.
pub const BLOCK_OCTET: u8 = 53;

/// The last octets a lab binds in its block (NSD root, TLD, leaf; Unbound validating, plain).
pub(crate) const HOSTS: [u8; 5] = [1, 2, 3, 4, 5];

/// Address `host` in block `n`.
pub(crate) fn block_addr(n: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, BLOCK_OCTET, n, host)
}

/// Finds the programs the lab runs in `$PATH` and the usual system directories.
pub(crate) fn find_tools() -> Result<Tools, LabError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .collect();
    find_tools_in(&dirs)
}

/// Finds the programs the lab runs in `dirs`; names the Debian packages of the missing ones.
fn find_tools_in(dirs: &[PathBuf]) -> Result<Tools, LabError> {
    let needed = [
        ("nsd", "nsd"),
        ("unbound", "unbound"),
        ("ldns-keygen", "ldnsutils"),
        ("ldns-signzone", "ldnsutils"),
    ];
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for (program, package) in needed {
        match find_program(program, dirs) {
            Some(path) => found.push(path),
            None => {
                missing.push(program);
                if !packages.contains(&package) {
                    packages.push(package);
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(LabError::MissingPrograms {
            missing: missing.join(", "),
            packages: packages.join(" "),
        });
    }
    let mut it = found.into_iter();
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(nsd), Some(unbound), Some(keygen), Some(signzone)) => Ok(Tools {
            nsd,
            unbound,
            keygen,
            signzone,
        }),
        _ => Err(LabError::MissingPrograms {
            missing: "nsd, unbound, ldns-keygen, ldns-signzone".into(),
            packages: "nsd unbound ldnsutils".into(),
        }),
    }
}

fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|dir| dir.join(name)).find(|p| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Debian's unbound ships an AppArmor profile attached to `/usr/sbin/unbound` that forbids
/// reading and writing under /tmp. Where AppArmor is on, run a copy of the binary (profiles
/// attach by path) from the lab directory instead.
pub(crate) fn unconfined_copy(program: &Path, dir: &Path) -> Result<PathBuf, LabError> {
    let enabled = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false);
    if !enabled {
        return Ok(program.to_path_buf());
    }
    let name = program.file_name().unwrap_or(OsStr::new("unbound"));
    let copy = dir.join(name);
    fs::copy(program, &copy).map_err(|e| {
        LabError::io(
            format!("copying {} out of AppArmor's reach", program.display()),
            e,
        )
    })?;
    Ok(copy)
}

/// A claimed address block: its number, the lock that proves it, and the lab directory.
pub(crate) struct Claim {
    pub(crate) block: u8,
    pub(crate) lock: File,
    pub(crate) dir: PathBuf,
}

fn lock_path(root: &Path, n: u8) -> PathBuf {
    root.join(format!("block-{n}.lock"))
}

/// Tries to take block `n`'s lock; `Ok(None)` when a live lab holds it.
fn try_lock_block(root: &Path, n: u8) -> Result<Option<File>, LabError> {
    let path = lock_path(root, n);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LabError::io(format!("locking {}", path.display()), e))
        }
    }
}

/// The block number of a `lab-N-…` directory name.
fn dir_block(name: &str) -> Option<u8> {
    name.strip_prefix("lab-")?.split('-').next()?.parse().ok()
}

/// Removes every `lab-n-*` directory and kills its processes. Call with block `n`'s lock held
/// (so they all belong to dead runs) and `keep` naming the caller's own directory, if any.
fn clean_block_dirs(root: &Path, n: u8, keep: Option<&Path>) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let path = entry.path();
        if dir_block(&name.to_string_lossy()) != Some(n) || Some(path.as_path()) == keep {
            continue;
        }
        kill_processes_using(&path);
        let _ = fs::remove_dir_all(&path);
    }
}

/// Cleans up the labs of dead test runs in every block whose lock is free.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mut blocks: Vec<u8> = entries
        .flatten()
        .filter_map(|e| dir_block(&e.file_name().to_string_lossy()))
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    for n in blocks {
        if let Ok(Some(_lock)) = try_lock_block(root, n) {
            clean_block_dirs(root, n, None);
        }
    }
}

enum PortProbe {
    Free,
    Busy(String),
    Denied(String),
}

/// Whether every lab address of block `n` has port 53 free (UDP and TCP).
fn probe_ports(n: u8) -> PortProbe {
    for host in HOSTS {
        let addr = SocketAddrV4::new(block_addr(n, host), 53);
        let results = [
            UdpSocket::bind(addr).map(drop),
            TcpListener::bind(addr).map(drop),
        ];
        for r in results {
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return PortProbe::Denied(format!("{addr}: {e}"));
                }
                Err(e) => return PortProbe::Busy(format!("{addr}: {e}")),
            }
        }
    }
    PortProbe::Free
}

/// Claims the first free block: lock it, clean what dead runs left in it, check port 53 is free
/// on all its addresses, create the lab directory.
pub(crate) fn claim_block(root: &Path) -> Result<Claim, LabError> {
    fs::create_dir_all(root)
        .map_err(|e| LabError::io(format!("creating {}", root.display()), e))?;
    sweep_stale(root);
    let mut busy = Vec::new();
    for n in 1..=254u8 {
        let Some(lock) = try_lock_block(root, n)? else {
            continue;
        };
        clean_block_dirs(root, n, None);
        match probe_ports(n) {
            PortProbe::Free => {}
            PortProbe::Denied(detail) => {
                return Err(LabError::NoFreeBlock {
                    detail: format!(
                        "binding port 53 is not allowed ({detail}); run as root or grant \
                         CAP_NET_BIND_SERVICE"
                    ),
                });
            }
            PortProbe::Busy(detail) => {
                busy.push(detail);
                continue;
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = root.join(format!("lab-{n}-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        return Ok(Claim {
            block: n,
            lock,
            dir,
        });
    }
    let shown: Vec<&String> = busy.iter().take(3).collect();
    Err(LabError::NoFreeBlock {
        detail: if busy.is_empty() {
            "all 254 blocks are locked by running labs".into()
        } else {
            format!(
                "port 53 is busy ({shown:?}…); is a DNS server (a system nsd or unbound) listening \
                 on 0.0.0.0:53? Stop it, e.g. `systemctl disable --now nsd unbound`"
            )
        },
    })
}

/// Spawns a server in its own process group, output to `<dir>/<name>.out`.
pub(crate) fn spawn_server(
    name: &str,
    program: &Path,
    args: &[&OsStr],
    dir: &Path,
) -> Result<Child, LabError> {
    let out_path = dir.join(format!("{name}.out"));
    let out = File::create(&out_path)
        .map_err(|e| LabError::io(format!("creating {}", out_path.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| LabError::io("duplicating a file handle", e))?;
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::io(format!("starting {name} ({})", program.display()), e))
}

/// Appends a process group to `<dir>/pgids`, the list the watchdog kills.
pub(crate) fn record_pgid(dir: &Path, pgid: u32) -> Result<(), LabError> {
    let path = dir.join("pgids");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{pgid}"))
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

/// The watchdog: a shell in its own process group, blocked reading a pipe whose only writer is
/// this (test) process. The pipe closes when the process exits, however it exits (statics such
/// as [`shared`](crate::shared) are never dropped); the shell then kills the lab's process
/// groups (SIGTERM, then SIGKILL) and removes the lab directory.
const WATCHDOG: &str = r#"
dir=$1; keep=$2
exec 2>/dev/null
read -r _ignored
pgids=$(cat "$dir/pgids" 2>/dev/null)
# Whether a process group in $pgids still has a live (not zombie) member. Zombies do not count:
# they hold no sockets, and a slow init may take a while to reap the orphaned ones.
alive() {
    for stat in /proc/[0-9]*/stat; do
        read -r line < "$stat" || continue
        set -- ${line##*) }
        [ "$1" = Z ] && continue
        for g in $pgids; do [ "$3" = "$g" ] && return 0; done
    done
    return 1
}
for g in $pgids; do kill -s TERM -- "-$g" 2>/dev/null; done
i=0
while [ "$i" -lt 100 ] && alive; do sleep 0.02; i=$((i + 1)); done
for g in $pgids; do kill -s KILL -- "-$g" 2>/dev/null; done
[ "$keep" = 1 ] || rm -rf "$dir"
"#;

/// Starts the watchdog of the lab in `dir`. Keep the returned child (its stdin is the pipe).
pub(crate) fn spawn_watchdog(dir: &Path, keep: bool) -> Result<Child, LabError> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("danemta-lab-watchdog")
        .arg(dir)
        .arg(if keep { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::io("starting the lab watchdog (/bin/sh)", e))
}

/// Sends `signal` (`TERM`, `KILL`) to each target: a PID, or a process group when negative.
fn send_signal(signal: &str, targets: &[i64]) {
    if targets.is_empty() {
        return;
    }
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"sig=$1; shift; for p in "$@"; do kill -s "$sig" -- "$p" 2>/dev/null; done; exit 0"#)
        .arg("sh")
        .arg(signal)
        .args(targets.iter().map(i64::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `(pid, pgrp)` of every live (not zombie) process on the machine.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace();
            let state = f.next()?;
            let _ppid = f.next()?;
            let pgrp: u32 = f.next()?.parse().ok()?;
            (state != "Z" && state != "X").then_some((pid, pgrp))
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

/// Live processes in any of the process groups `pgids`.
pub(crate) fn group_members(pgids: &[u32]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, g)| pgids.contains(g))
        .map(|(p, _)| p)
        .collect()
}

/// SIGTERM to every group, up to `grace` for them to exit, then SIGKILL and up to a second more.
pub(crate) fn terminate_groups(pgids: &[u32], grace: Duration) {
    if pgids.is_empty() {
        return;
    }
    let groups: Vec<i64> = pgids.iter().map(|&g| -i64::from(g)).collect();
    send_signal("TERM", &groups);
    if wait_until(grace, || group_members(pgids).is_empty()) {
        return;
    }
    send_signal("KILL", &groups);
    wait_until(Duration::from_secs(1), || group_members(pgids).is_empty());
}

/// Polls `done` every 10 ms until it holds (true) or `limit` passes (false).
pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = crate::deadline(limit);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every process whose command line names `dir` (the servers of a dead lab read their
/// configuration from it; the forked children of NSD inherit the command line).
pub(crate) fn kill_processes_using(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let prefix = format!("{dir}/");
    let me = std::process::id();
    let pids: Vec<u32> = processes()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|&p| p != me)
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|cmd| {
                    cmd.split(|&b| b == 0).any(|arg| {
                        let arg = String::from_utf8_lossy(arg);
                        arg == dir.as_str() || arg.starts_with(&prefix)
                    })
                })
                .unwrap_or(false)
        })
        .collect();
    if pids.is_empty() {
        return;
    }
    let targets: Vec<i64> = pids.iter().map(|&p| i64::from(p)).collect();
    send_signal("TERM", &targets);
    if !wait_until(Duration::from_secs(2), || {
        pids.iter().all(|&p| !is_alive(p))
    }) {
        send_signal("KILL", &targets);
        wait_until(Duration::from_secs(1), || {
            pids.iter().all(|&p| !is_alive(p))
        });
    }
}

/// The owner PID in the name of a `<prefix>-<pid>-…` instance directory.
fn instance_owner(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_prefix('-')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Removes the `<prefix>-<pid>-…` directories of dead test processes (their watchdog was killed
/// too, or the machine rebooted) and kills the servers that still use them.
fn sweep_dead_instances(root: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = instance_owner(&name.to_string_lossy(), prefix) else {
            continue;
        };
        if owner == me || is_alive(owner) {
            continue;
        }
        let path = entry.path();
        kill_processes_using(&path);
        let _ = fs::remove_dir_all(&path);
    }
}

/// Creates `LAB_ROOT/<prefix>-<pid>-<seq>-<nanos>` (mode 0755: unprivileged server processes
/// must reach their files in it), after sweeping what dead test processes left there.
pub(crate) fn instance_dir(prefix: &str) -> Result<PathBuf, LabError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let root = Path::new(LAB_ROOT);
    fs::create_dir_all(root)
        .map_err(|e| LabError::io(format!("creating {}", root.display()), e))?;
    sweep_dead_instances(root, prefix);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("{prefix}-{}-{seq}-{nanos}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| LabError::io(format!("setting the mode of {}", dir.display()), e))?;
    Ok(dir)
}

/// Tries to take the lock file of an SMTP peer address, `LAB_ROOT/peer-IP-PORT.lock`;
/// `Ok(None)` when another claim (of this or another process) holds it.
fn try_lock_peer(root: &Path, addr: SocketAddr) -> Result<Option<File>, LabError> {
    let path = root.join(format!("peer-{}-{}.lock", addr.ip(), addr.port()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LabError::io(format!("locking {}", path.display()), e))
        }
    }
}

/// Takes the lock of an address a test chose itself, so that two lab peers never share it
/// (Postfix listens with `SO_REUSEPORT`: two instances on one address would split the
/// connections silently). `Ok(None)` when another lab peer holds it.
pub(crate) fn lock_peer_addr(addr: SocketAddr) -> Result<Option<File>, LabError> {
    let root = Path::new(LAB_ROOT);
    fs::create_dir_all(root)
        .map_err(|e| LabError::io(format!("creating {}", root.display()), e))?;
    try_lock_peer(root, addr)
}

/// Third octets of the addresses [`claim_peer_addr`] hands out: 127.0.40.0/24 to 127.0.49.0/24.
pub(crate) const PEER_AUTO_OCTETS: std::ops::RangeInclusive<u8> = 40..=49;

/// Claims a free loopback address for an SMTP peer on `port`: the first `127.0.K.H`
/// (K in [`PEER_AUTO_OCTETS`], H = 1…254) whose lock file `LAB_ROOT/peer-127.0.K.H-PORT.lock`
/// no open claim holds (in any process) and where `port` can be bound. Keep the returned lock
/// for as long as the address is used.
pub(crate) fn claim_peer_addr(port: u16) -> Result<(SocketAddrV4, File), LabError> {
    let root = Path::new(LAB_ROOT);
    fs::create_dir_all(root)
        .map_err(|e| LabError::io(format!("creating {}", root.display()), e))?;
    let mut last = String::from("every address is claimed");
    for k in PEER_AUTO_OCTETS {
        for h in 1..=254u8 {
            let addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, k, h), port);
            let Some(file) = try_lock_peer(root, SocketAddr::V4(addr))? else {
                continue;
            };
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    drop(listener);
                    return Ok((addr, file));
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(LabError::NoFreePeerAddr {
                        port,
                        detail: format!(
                            "binding {addr} is not allowed ({e}); run as root or grant \
                             CAP_NET_BIND_SERVICE"
                        ),
                    });
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
    }
    Err(LabError::NoFreePeerAddr {
        port,
        detail: format!(
            "{last}; is a server (a system Postfix?) listening on 0.0.0.0:{port}? Stop it, e.g. \
             `systemctl disable --now postfix`"
        ),
    })
}

/// Binds a TCP listener, retrying for a moment while the address is in use: a listener this
/// process just closed (e.g. the probe of [`claim_peer_addr`]) may live on for a few hundred
/// microseconds in a child being spawned by another thread, until that child's `exec`.
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && tries < 10 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// The last `lines` lines of a file ("" when it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_block_dir_names() {
        assert_eq!(dir_block("lab-7-123-456"), Some(7));
        assert_eq!(dir_block("lab-x-1"), None);
        assert_eq!(dir_block("block-7.lock"), None);
        assert_eq!(block_addr(9, 4), Ipv4Addr::new(127, 53, 9, 4));
    }

    #[test]
    fn names_the_packages_of_missing_programs() {
        let Err(e) = find_tools_in(&[]) else {
            panic!("found programs in no directory")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("nsd, unbound, ldns-keygen, ldns-signzone"),
            "{msg}"
        );
        assert!(
            msg.contains("apt-get install nsd unbound ldnsutils"),
            "{msg}"
        );
    }

    #[test]
    fn parses_instance_dir_names() {
        assert_eq!(instance_owner("smtp-123-0-456", "smtp"), Some(123));
        assert_eq!(instance_owner("smtpx-123-0-456", "smtp"), None);
        assert_eq!(instance_owner("lab-7-123-456", "smtp"), None);
    }

    #[test]
    fn sees_itself_alive() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
        let me = std::process::id();
        assert!(processes().iter().any(|&(p, _)| p == me));
    }
}
