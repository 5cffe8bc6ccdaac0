//! contrib/certbot/danemta-deploy-hook.sh against the lab's authoritative servers: a renewed
//! certificate is installed (and the daemon reloaded) only once `danemta tlsa rollover --gate`
//! passes; otherwise nothing is installed, nothing reloaded, and the hook names the record to
//! publish.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use danemta_lab::pki::{TestCert, tlsa_3_1_1};
use danemta_lab::{Lab, ZoneSpec};
use serde_json::Value;

struct World {
    lab: Lab,
    current: TestCert,
    next: TestCert,
    next_tlsa: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let current = TestCert::self_signed(&["mx.published.hook.test"]).unwrap();
        let next = TestCert::self_signed(&["mx.published.hook.test"]).unwrap();
        let (cur, nxt) = (tlsa_3_1_1(&current), tlsa_3_1_1(&next));
        let lab = Lab::builder()
            .zone(ZoneSpec::secure(
                "published.hook.test",
                format!("mx A 127.0.50.1\n_25._tcp.mx TLSA {cur}\n_25._tcp.mx TLSA {nxt}\n"),
            ))
            .zone(ZoneSpec::secure(
                "unpublished.hook.test",
                format!("mx A 127.0.50.1\n_25._tcp.mx TLSA {cur}\n"),
            ))
            .start()
            .expect("lab");
        World {
            lab,
            current,
            next,
            next_tlsa: nxt,
        }
    })
}

fn hook_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/certbot/danemta-deploy-hook.sh")
}

/// One case's files: a certbot lineage holding `renewed`, danemta's installed copy of
/// `installed`, the gate's state directory and the reload marker.
struct Case {
    root: PathBuf,
    host: String,
    lineage: PathBuf,
    cert_dir: PathBuf,
    marker: PathBuf,
}

impl Case {
    fn new(tag: &str, host: &str, installed: &TestCert, renewed: &TestCert) -> Case {
        let root = world().lab.dir().join(format!("hook-{tag}"));
        let lineage = root.join("live").join(host);
        let cert_dir = root.join("danemta-tls");
        std::fs::create_dir_all(&lineage).unwrap();
        std::fs::create_dir_all(cert_dir.join(host)).unwrap();
        std::fs::write(lineage.join("fullchain.pem"), &renewed.chain_pem).unwrap();
        std::fs::write(lineage.join("privkey.pem"), &renewed.key_pem).unwrap();
        std::fs::write(
            cert_dir.join(host).join("fullchain.pem"),
            &installed.chain_pem,
        )
        .unwrap();
        std::fs::write(cert_dir.join(host).join("privkey.pem"), &installed.key_pem).unwrap();
        Case {
            marker: root.join("reloaded"),
            root,
            host: host.into(),
            lineage,
            cert_dir,
        }
    }

    /// Runs the hook as certbot would; its exit status and its output (stdout and stderr).
    fn run(&self) -> (i32, String) {
        let out = Command::new("sh")
            .arg(hook_script())
            .env_remove("DANEMTA_TLSA_NAMES")
            .env_remove("DANEMTA_LINEAGES")
            .env_remove("DANEMTA_TRUST_ANCHOR")
            .env("RENEWED_LINEAGE", &self.lineage)
            .env("RENEWED_DOMAINS", format!("{} *.hook.test", self.host))
            .env("DANEMTA_HOOK_CONFIG", self.root.join("no-such-config"))
            .env("DANEMTA_BIN", env!("CARGO_BIN_EXE_danemta"))
            .env("DANEMTA_CERT_DIR", &self.cert_dir)
            .env("DANEMTA_GROUP", "root")
            .env("DANEMTA_STATE_DIR", self.state_dir())
            .env(
                "DANEMTA_RESOLVER",
                format!("trust-ad@{}", world().lab.validating_resolver()),
            )
            .env(
                "DANEMTA_RELOAD_CMD",
                format!("echo reloaded >> '{}'", self.marker.display()),
            )
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    fn installed_chain(&self) -> String {
        std::fs::read_to_string(self.cert_dir.join(&self.host).join("fullchain.pem")).unwrap()
    }

    fn installed_key(&self) -> String {
        std::fs::read_to_string(self.cert_dir.join(&self.host).join("privkey.pem")).unwrap()
    }

    fn reloads(&self) -> usize {
        std::fs::read_to_string(&self.marker)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Pretends the gate first saw both records at every server two TTLs and a second ago.
    fn age_state(&self) {
        let path = self
            .state_dir()
            .join(format!("rollover-25-{}.json", self.host));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut remembered: Value = serde_json::from_str(&text).unwrap();
        let since = remembered["both_since"].as_u64().unwrap();
        remembered["both_since"] = (since - 601).into();
        std::fs::write(&path, remembered.to_string()).unwrap();
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_published_next_key_is_installed_and_reloaded_after_two_ttls() {
    let w = world();
    let case = Case::new("published", "mx.published.hook.test", &w.current, &w.next);

    // Both records are at every server, but only just seen: caches may still hold the old
    // RRset, so the gate says "not yet" and nothing changes.
    let (code, out) = case.run();
    assert_eq!(code, 75, "{out}");
    assert_eq!(case.installed_chain(), w.current.chain_pem, "{out}");
    assert_eq!(case.reloads(), 0, "{out}");

    // Two TTLs later (the run from a timer, or by hand): installed, reloaded.
    case.age_state();
    let (code, out) = case.run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(case.installed_chain(), w.next.chain_pem, "{out}");
    assert_eq!(case.installed_key(), w.next.key_pem, "{out}");
    assert_eq!(case.reloads(), 1, "{out}");
    let dir = case.cert_dir.join(&case.host);
    assert_eq!(mode(&dir.join("privkey.pem")), 0o640);
    assert_eq!(mode(&dir.join("fullchain.pem")), 0o640);
    assert_eq!(mode(&dir), 0o750);
    assert!(out.contains(&w.next_tlsa), "{out}");

    // Once installed, running it again (a timer) does nothing.
    let (code, out) = case.run();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(case.reloads(), 1, "{out}");
}

#[test]
fn an_unpublished_next_key_is_not_installed_and_the_record_is_named() {
    let w = world();
    let case = Case::new(
        "unpublished",
        "mx.unpublished.hook.test",
        &w.current,
        &w.next,
    );
    let (code, out) = case.run();
    assert_eq!(code, 75, "{out}");
    assert_eq!(case.installed_chain(), w.current.chain_pem, "{out}");
    assert_eq!(case.installed_key(), w.current.key_pem, "{out}");
    assert_eq!(case.reloads(), 0, "{out}");
    let record = format!("_25._tcp.mx.unpublished.hook.test. IN TLSA {}", w.next_tlsa);
    assert!(out.contains(&record), "the hook must name {record}:\n{out}");
    assert!(out.contains("NOT installed"), "{out}");

    // However long one waits, an unpublished key never passes.
    let (code, out) = case.run();
    assert_eq!((code, case.reloads()), (75, 0), "{out}");
}

#[test]
fn a_renewal_with_the_same_key_is_installed_at_once() {
    // certbot --reuse-key: a new certificate, the same key, so the same 3 1 1 record.
    let w = world();
    let mut renewed = w.current.clone();
    renewed.chain_pem = format!("{}{}", w.current.chain_pem, w.current.chain_pem);
    let case = Case::new("same-key", "mx.unpublished.hook.test", &w.current, &renewed);
    let (code, out) = case.run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(case.installed_chain(), renewed.chain_pem, "{out}");
    assert_eq!(case.reloads(), 1, "{out}");
}

#[test]
fn the_first_installation_is_not_gated_and_names_the_record() {
    // Nothing installed yet: no key to roll over from.
    let w = world();
    let case = Case::new("first", "mx.unpublished.hook.test", &w.current, &w.next);
    std::fs::remove_dir_all(case.cert_dir.join(&case.host)).unwrap();
    let (code, out) = case.run();
    assert_eq!(code, 0, "{out}");
    assert_eq!(case.installed_chain(), w.next.chain_pem, "{out}");
    assert_eq!(case.reloads(), 1, "{out}");
    let record = format!("_25._tcp.mx.unpublished.hook.test. IN TLSA {}", w.next_tlsa);
    assert!(out.contains(&record), "{out}");
}
