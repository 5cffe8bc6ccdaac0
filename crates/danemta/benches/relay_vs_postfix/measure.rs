//! What the relay bench measures besides its own clock: CPU time and peak memory of a relay's
//! processes (from /proc), and per-message receipt at the lab receiver (from its Postfix log).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch, as a float (microsecond resolution is plenty).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The processes of one relay.
#[derive(Clone, Copy, Debug)]
pub enum Watched {
    /// One process (with all its threads): danemta serve.
    Process(u32),
    /// A process group led by a process that reaps every member when it exits (Postfix's
    /// `master`, which forks every Postfix daemon of the instance).
    Group(u32),
}

/// The fields of /proc/PID/stat the bench uses.
struct Stat {
    pgrp: u32,
    /// utime + stime of the process (all its threads), in clock ticks.
    own: u64,
    /// cutime + cstime: CPU time of children it has waited for, in clock ticks.
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after the
    // last ')' start with field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(Stat {
        pgrp: u32::try_from(field(5)?).ok()?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

/// The `VmHWM` (peak resident set) of `pid`, in KiB.
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The proportional set size (`Pss` of /proc/PID/smaps_rollup: each shared page divided
/// among the processes mapping it) of `pid`, in KiB.
fn pss(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Live members of the process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid))
        .collect()
}

impl Watched {
    fn pids(self) -> Vec<u32> {
        match self {
            Watched::Process(pid) => vec![pid],
            Watched::Group(pgid) => group_members(pgid),
        }
    }

    /// CPU time so far, in clock ticks: utime + stime of every live member, plus the leader's
    /// cutime + cstime (members that exited and were reaped). The difference of two readings is
    /// the CPU time spent in between, including by processes that started and exited meanwhile.
    pub fn cpu_ticks(self) -> u64 {
        let leader = match self {
            Watched::Process(pid) | Watched::Group(pid) => pid,
        };
        let live: u64 = self
            .pids()
            .into_iter()
            .filter_map(stat)
            .map(|s| s.own)
            .sum();
        live + stat(leader).map_or(0, |s| s.reaped)
    }

    /// The sums of `VmHWM` and of `Pss` over the live members, in KiB.
    pub fn memory_kib(self) -> (u64, u64) {
        self.pids().into_iter().fold((0, 0), |(h, p), pid| {
            (h + vm_hwm(pid).unwrap_or(0), p + pss(pid).unwrap_or(0))
        })
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// Samples [`Watched::memory_kib`] every 100 ms on a thread of its own until stopped.
pub struct MemSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, u64)>>,
}

impl MemSampler {
    pub fn start(watched: Watched) -> MemSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut hwm, mut pss) = (0, 0);
            loop {
                let (h, p) = watched.memory_kib();
                hwm = hwm.max(h);
                pss = pss.max(p);
                if flag.load(Ordering::Relaxed) {
                    return (hwm, pss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        MemSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// The largest sums seen of `VmHWM` and of `Pss`, in KiB (one last sample is taken now).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver's log

/// Follows a Postfix `maillog_file` from where it was when created and joins, by queue id,
/// cleanup's `message-id=<…>` lines with delivery agents' `status=sent` lines, for messages
/// whose Message-ID starts with a given prefix.
///
/// Postfix 3.7 stamps `maillog_file` lines to the second only, so the time of a line is when
/// [`ReceiverLogWatch`] first reads it: it polls every 2 ms, and `postlogd` writes each line
/// as soon as it gets it.
pub struct ReceiverLog {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    prefix: String,
    queue_ids: HashMap<String, String>,
    /// Message-ID → when the receiver's cleanup line for it was first read (epoch seconds).
    pub received: HashMap<String, f64>,
    /// Message-IDs the receiver reports `status=sent` for.
    pub sent: HashSet<String>,
}

impl ReceiverLog {
    pub fn new(path: PathBuf, prefix: &str) -> ReceiverLog {
        let offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        ReceiverLog {
            path,
            offset,
            partial: Vec::new(),
            prefix: prefix.to_owned(),
            queue_ids: HashMap::new(),
            received: HashMap::new(),
            sent: HashSet::new(),
        }
    }

    /// Reads what was appended since the last call.
    pub fn poll(&mut self) {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(read) = file.read_to_end(&mut buf) else {
            return;
        };
        let seen = now();
        self.offset += read as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&complete).lines() {
            self.line(line, seen);
        }
    }

    fn line(&mut self, line: &str, seen: f64) {
        // "Dec 02 07:31:57 host postfix/cleanup[123]: 4Fxyz: message-id=<…>"
        let Some((_, rest)) = line.split_once("]: ") else {
            return;
        };
        let Some((qid, what)) = rest.split_once(": ") else {
            return;
        };
        if let Some(id) = what.strip_prefix("message-id=<") {
            let id = id.split('>').next().unwrap_or(id);
            if id.starts_with(&self.prefix) {
                self.queue_ids.insert(qid.to_owned(), id.to_owned());
                self.received.insert(id.to_owned(), seen);
            }
        } else if what.contains(" status=sent ")
            && let Some(id) = self.queue_ids.get(qid)
        {
            self.sent.insert(id.clone());
        }
    }
}

/// A [`ReceiverLog`] polled every 2 ms on a thread of its own until stopped.
pub struct ReceiverLogWatch {
    log: Arc<Mutex<ReceiverLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReceiverLogWatch {
    pub fn start(log: ReceiverLog) -> ReceiverLogWatch {
        let log = Arc::new(Mutex::new(log));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, flag) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Ok(mut log) = l.lock() {
                    log.poll();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        ReceiverLogWatch {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// How many messages the receiver has confirmed so far.
    pub fn sent(&self) -> usize {
        self.log.lock().map(|l| l.sent.len()).unwrap_or(0)
    }

    /// Stops polling (after one last poll) and returns the receipts: Message-ID → time.
    pub fn stop(mut self) -> HashMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut log = match self.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        log.poll();
        std::mem::take(&mut log.received)
    }
}

impl Drop for ReceiverLogWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
