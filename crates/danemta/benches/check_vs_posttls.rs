//! Bulk DANE checking: `danemta check --from-file` against Postfix's `posttls-finger` (run by
//! `xargs -P` at the same concurrency) on the same list of lab domains, in the same run.
//! Prints domains/s for both, their ratio, and danemta's peak memory.
//!
//! posttls-finger resolves through libc, so it runs in a private mount namespace whose
//! /etc/resolv.conf points at the lab's validating Unbound (`options trust-ad`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::smtp::{Receiver, ReceiverSpec};
use danemta_lab::{Lab, ZoneSpec};

const DOMAINS: usize = 400;
const CONCURRENCY: usize = 8;

/// Runs `cmd`, returning its wall time and peak resident memory (KiB, polled from /proc).
fn measure(cmd: &mut Command) -> (Duration, u64, bool) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines().filter(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak = peak.max(kib);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => return (start.elapsed(), peak, status.code().is_some()),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return (start.elapsed(), peak, false),
        }
    }
}

fn main() {
    let danemta = env!("CARGO_BIN_EXE_danemta");
    let cert = TestCert::self_signed(&["mx.bench.test"]).unwrap();
    let receiver =
        Receiver::start(ReceiverSpec::new("mx.bench.test", &["bench.test"]).with_tls(&cert))
            .expect("Postfix receiver");
    let records = format!(
        "mx A {}\n_25._tcp.mx TLSA {}\n{}",
        receiver.addr().ip(),
        tlsa_3_1_1(&cert),
        (0..DOMAINS)
            .map(|i| format!("d{i} MX 10 mx\n"))
            .collect::<String>()
    );
    let lab = Lab::builder()
        .zone(ZoneSpec::secure("bench.test", records))
        .start()
        .expect("lab");
    let list = lab.dir().join("domains.txt");
    std::fs::write(
        &list,
        (0..DOMAINS)
            .map(|i| format!("d{i}.bench.test\n"))
            .collect::<String>(),
    )
    .unwrap();
    let resolver = lab.validating_resolver();

    let (ours, peak, ok) = measure(
        Command::new(danemta)
            .args([
                "check",
                "--json",
                "--concurrency",
                &CONCURRENCY.to_string(),
                "--from-file",
            ])
            .arg(&list)
            .arg(format!("--resolver=trust-ad@{resolver}")),
    );
    assert!(ok, "danemta check did not finish");

    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {}\noptions trust-ad\n", resolver.ip()),
    )
    .unwrap();
    let posttls = Path::new("/usr/sbin/posttls-finger");
    // posttls-finger reads main.cf; the lab's Postfix package has none ("No configuration").
    let conf = lab.dir().join("posttls-finger");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("main.cf"),
        "compatibility_level = 3.6\nsmtp_dns_support_level = dnssec\n",
    )
    .unwrap();
    if posttls.exists() {
        // One run in the open, to show that posttls-finger really does the job here.
        let script = format!(
            "mount --bind {} /etc/resolv.conf && {} -c -l dane -L summary d0.bench.test",
            resolv.display(),
            posttls.display()
        );
        let out = Command::new("unshare")
            .args(["--mount", "sh", "-c", &script])
            .env("MAIL_CONFIG", &conf)
            .output()
            .expect("posttls-finger");
        println!("posttls-finger d0.bench.test says:");
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .take(6)
        {
            println!("  {line}");
        }
    }
    let theirs = if posttls.exists() {
        let script = format!(
            "mount --bind {} /etc/resolv.conf && xargs -P {CONCURRENCY} -n 1 {} -c -l dane -L summary < {}",
            resolv.display(),
            posttls.display(),
            list.display()
        );
        let (t, _, ok) = measure(
            Command::new("unshare")
                .args(["--mount", "sh", "-c", &script])
                .env("MAIL_CONFIG", &conf),
        );
        ok.then_some(t)
    } else {
        None
    };

    let rate = |d: Duration| DOMAINS as f64 / d.as_secs_f64();
    println!("{DOMAINS} lab domains sharing one DANE MX host, concurrency {CONCURRENCY}");
    println!("{:<28} {:>10} {:>12}", "tool", "seconds", "domains/s");
    println!(
        "{:<28} {:>10.2} {:>12.1}",
        "danemta check --from-file",
        ours.as_secs_f64(),
        rate(ours)
    );
    match theirs {
        Some(t) => {
            println!(
                "{:<28} {:>10.2} {:>12.1}",
                "posttls-finger (xargs -P)",
                t.as_secs_f64(),
                rate(t)
            );
            println!(
                "ratio danemta / posttls-finger: {:.1}x",
                rate(ours) / rate(t)
            );
        }
        None => println!("posttls-finger: not available (install the Debian package postfix)"),
    }
    println!("danemta peak memory: {} KiB", peak);
    println!(
        "(danemta probes each MX host once per scan and shares the result among the domains that use it;"
    );
    println!(
        " posttls-finger connects once per domain. That sharing is the point of a bulk scanner.)"
    );
}
