use super::*;

const DIGEST: &str = "b9ba0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";

/// The example of PRODUCT.md, with the optional lines uncommented and the digest complete.
fn example() -> String {
    format!(
        r#"[server]
hostname = "relay.example.org"                  # greeting, EHLO, Received:, DSN reporting MTA
relay_networks = ["127.0.0.0/8", "::1/128"]     # clients that may relay anywhere
accept_domains = ["example.org"]                # mail for these is accepted from anyone (inbound gateway)
max_message_size = "50MB"
max_header_size = "256KB"
[[server.listen]]
address = "0.0.0.0:25"
mode = "smtp"                                   # smtp | submission (AUTH required, after STARTTLS) | submissions (implicit TLS)
[[server.tls]]                                  # chains offered by STARTTLS, chosen by SNI; the first is the default
cert = "/etc/danemta/ecdsa-chain.pem"
key = "/etc/danemta/ecdsa-key.pem"
[auth]
users_file = "/etc/danemta/users"               # user:password-hash lines, for submission

[dns]
resolver = "validating"                         # same syntax as --resolver
trust_anchor = "/etc/danemta/root.key"          # optional, as --trust-anchor
timeout = "5s"
negative_trust_anchors = ["lab.example", "test."]

[queue]
dir = "/var/spool/danemta"
store = "postgres"                            # several nodes sharing one queue (default "local")
url = "postgres://danemta@db.example.org:5432/danemta"
retry_first = "5m"                              # first retry after a deferral, doubling…
retry_max = "1h"                                # …up to this interval
lifetime = "5d"                                 # then bounce
lease_time = "2m"                               # a dead node's claims pass to the others after this

[delivery]
policy = "dane"                                 # default level for every destination
port = 25
ca_file = "/etc/danemta/extra-roots.pem"      # extra PKIX anchors (MTA-STS, verify/secure)
max_connections = 200
max_connections_per_destination = 20

[[policy]]                                      # per destination, most specific match wins
domain = "example.com"                          # ".example.com" matches its subdomains
level = "dane-only"
next_hop = "[192.0.2.25]:25"                    # optional: a host name (MX lookup skipped) or [address]:port

[[policy]]
domain = ".example.net"
level = "verify"
match = ["mx.example.com"]                      # for verify / secure

[[policy]]
domain = "example.net"
level = "fingerprint"
fingerprint = ["3 1 1 {DIGEST}"]                   # for fingerprint

[metrics]
listen = "127.0.0.1:9325"                       # Prometheus text format at /metrics
"#
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("danemta-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/danemta/test.toml"))
}

#[test]
fn full_example_parses() {
    let dir = temp_dir("example");
    let file = dir.join("danemta.toml");
    std::fs::write(&file, example()).unwrap();
    let c = Config::load(Some(&file)).unwrap();
    assert_eq!(c.file(), Some(file.as_path()));
    assert_eq!(
        c.server.hostname,
        Some("relay.example.org".parse().unwrap())
    );
    assert_eq!(
        c.server.relay_networks,
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    );
    assert_eq!(
        c.server.accept_domains,
        vec!["example.org".parse().unwrap()]
    );
    assert_eq!(c.server.max_message_size, 50_000_000);
    assert_eq!(c.server.max_header_size, 256_000);
    assert_eq!(
        c.server.listen,
        vec![Listen {
            address: "0.0.0.0:25".parse().unwrap(),
            mode: ListenMode::Smtp
        }]
    );
    assert_eq!(
        c.server.tls[0].cert,
        Path::new("/etc/danemta/ecdsa-chain.pem")
    );
    assert_eq!(c.server.tls[0].key, Path::new("/etc/danemta/ecdsa-key.pem"));
    assert_eq!(
        c.auth.users_file.as_deref(),
        Some(Path::new("/etc/danemta/users"))
    );
    assert_eq!(c.dns.resolver, ResolverSpec::Validating(None));
    assert_eq!(
        c.dns.trust_anchor.as_deref(),
        Some(Path::new("/etc/danemta/root.key"))
    );
    assert_eq!(c.dns.timeout, Duration::from_secs(5));
    assert_eq!(
        c.dns.negative_trust_anchors,
        vec!["lab.example".parse().unwrap(), "test".parse().unwrap()]
    );
    assert_eq!(c.queue.dir, Path::new("/var/spool/danemta"));
    assert_eq!(c.queue.store, StoreKind::Postgres);
    assert_eq!(
        c.queue.url.as_deref(),
        Some("postgres://danemta@db.example.org:5432/danemta")
    );
    assert_eq!(c.queue.retry_first, Duration::from_secs(300));
    assert_eq!(c.queue.retry_max, Duration::from_secs(3600));
    assert_eq!(c.queue.lifetime, Duration::from_secs(432_000));
    assert_eq!(c.delivery.policy, Level::Dane);
    assert_eq!(c.delivery.port, 25);
    assert_eq!(
        c.delivery.ca_file.as_deref(),
        Some(Path::new("/etc/danemta/extra-roots.pem"))
    );
    assert_eq!(c.delivery.max_connections, 200);
    assert_eq!(c.delivery.max_connections_per_destination, 20);
    assert_eq!(c.policy.len(), 3);
    assert_eq!(c.policy[0].level, Level::DaneOnly);
    assert_eq!(
        c.policy[0].next_hop,
        Some(NextHop::Address("192.0.2.25".parse().unwrap(), Some(25)))
    );
    assert_eq!(
        c.policy[1].match_names,
        vec!["mx.example.com".parse().unwrap()]
    );
    assert_eq!(c.policy[2].fingerprint, vec![format!("3 1 1 {DIGEST}")]);
    assert_eq!(c.metrics.listen, "127.0.0.1:9325".parse().unwrap());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn defaults() {
    let c = Config::defaults();
    assert!(c.validate().is_ok());
    assert_eq!(c.file(), None);
    assert_eq!(
        c.server.listen,
        vec![Listen {
            address: "127.0.0.1:2525".parse().unwrap(),
            mode: ListenMode::Smtp
        }]
    );
    assert!(c.server.relay_networks[0].contains("127.0.0.1".parse().unwrap()));
    assert!(c.server.relay_networks[1].contains("::1".parse().unwrap()));
    assert!(
        !c.server
            .relay_networks
            .iter()
            .any(|n| n.contains("192.0.2.1".parse().unwrap()))
    );
    assert!(c.server.accept_domains.is_empty());
    assert_eq!(c.server.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(c.server.max_header_size, 1_000_000);
    assert_eq!(c.max_content_memory(), 200_000_000);
    assert_eq!(c.delivery.policy, Level::Dane);
    assert_eq!(c.dns.resolver, ResolverSpec::Validating(None));
    assert_eq!(c.metrics.listen, "127.0.0.1:9325".parse().unwrap());
    assert_eq!(c.queue.retry_first, Duration::from_secs(300));
    assert_eq!(c.queue.retry_max, Duration::from_secs(3600));
    assert_eq!(c.queue.lifetime, Duration::from_secs(5 * 86_400));
    assert_eq!(c.queue.store, StoreKind::Local);
    // An empty file is the defaults too.
    let empty = parse("").unwrap();
    assert_eq!(empty.server.listen, c.server.listen);
    assert_eq!(empty.queue.retry_max, c.queue.retry_max);
}

#[test]
fn spool_choice() {
    assert_eq!(
        spool_for(true, Some("/x".into()), Some("/home/u".into())),
        Path::new("/var/spool/danemta")
    );
    assert_eq!(
        spool_for(false, Some("/state".into()), Some("/home/u".into())),
        Path::new("/state/danemta")
    );
    assert_eq!(
        spool_for(false, Some("relative".into()), Some("/home/u".into())),
        Path::new("/home/u/.local/state/danemta")
    );
    assert_eq!(
        spool_for(false, None, Some("/home/u".into())),
        Path::new("/home/u/.local/state/danemta")
    );
}

#[test]
fn load_without_path() {
    let dir = temp_dir("system");
    let system = dir.join("danemta.toml");
    let c = Config::load_with_system(None, &system).unwrap();
    assert_eq!(c.file(), None);
    std::fs::write(&system, "[delivery]\npolicy = \"dane-only\"\n").unwrap();
    let c = Config::load_with_system(None, &system).unwrap();
    assert_eq!(c.file(), Some(system.as_path()));
    assert_eq!(c.delivery.policy, Level::DaneOnly);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_file() {
    let e = Config::load(Some(Path::new("/nonexistent/danemta.toml"))).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("/nonexistent/danemta.toml"), "{m}");
    assert!(m.contains("No such file"), "{m}");
}

/// Each bad input: the error message names the file, the key and the reason.
#[test]
fn errors_name_file_key_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        // syntax
        (
            "[queue]\nretry_first = \"5m\nlifetime = \"5d\"\n",
            "queue.retry_first",
            "syntax",
        ),
        // unknown keys and tables
        (
            "[queue]\nretry_frist = \"5m\"\n",
            "queue.retry_frist",
            "unknown field",
        ),
        ("[quue]\ndir = \"/x\"\n", "quue", "unknown field"),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"dane\"\nnxt_hop = \"x\"\n",
            "policy[0].nxt_hop",
            "unknown field",
        ),
        // bad values
        (
            "[queue]\nretry_first = \"5 minutes\"\n",
            "queue.retry_first",
            "not a duration",
        ),
        (
            "[queue]\nlifetime = \"0s\"\n",
            "queue.lifetime",
            "not a duration",
        ),
        ("[dns]\ntimeout = 5\n", "dns.timeout", "invalid type"),
        (
            "[server]\nmax_message_size = \"10 parsecs\"\n",
            "server.max_message_size",
            "not a size",
        ),
        (
            "[server]\nmax_message_size = \"100MB\"\nmax_content_memory = \"50MB\"\n",
            "server.max_content_memory",
            "could never be received",
        ),
        (
            "[server]\nrelay_networks = [\"10.0.0.0/33\"]\n",
            "server.relay_networks",
            "not an IP network",
        ),
        (
            "[dns]\nresolver = \"google\"\n",
            "dns.resolver",
            "--resolver",
        ),
        (
            "[delivery]\npolicy = \"strict\"\n",
            "delivery.policy",
            "unknown TLS policy",
        ),
        ("[delivery]\nport = 70000\n", "delivery.port", "70000"),
        (
            "[queue]\nstore = \"mysql\"\n",
            "queue.store",
            "unknown variant",
        ),
        (
            "[[server.listen]]\naddress = \"0.0.0.0:25\"\n[[server.listen]]\naddress = \"[::]:587\"\nmode = \"smtps\"\n",
            "server.listen[1].mode",
            "unknown variant",
        ),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"dane\"\nnext_hop = \"192.0.2.1\"\n",
            "policy[0].next_hop",
            "not a next hop",
        ),
        (
            "[[policy]]\ndomain = \"..x\"\nlevel = \"dane\"\n",
            "policy[0].domain",
            "not a policy domain",
        ),
        // rules across values
        ("[server]\nlisten = []\n", "server.listen", "at least one"),
        (
            "[server]\nhostname = \".\"\n",
            "server.hostname",
            "not a host name",
        ),
        (
            "[queue]\nretry_first = \"2h\"\n",
            "queue.retry_first",
            "longer than queue.retry_max",
        ),
        (
            "[queue]\nstore = \"postgres\"\n",
            "queue.url",
            "needs the database url",
        ),
        (
            "[delivery]\nmax_connections = 0\n",
            "delivery.max_connections",
            "at least 1",
        ),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"verify\"\n",
            "policy[0].match",
            "needs at least one name",
        ),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"fingerprint\"\n",
            "policy[0].fingerprint",
            "needs at least one fingerprint",
        ),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"fingerprint\"\nfingerprint = [\"zz\"]\n",
            "policy[0].fingerprint[0]",
            "digest",
        ),
        (
            "[[policy]]\ndomain = \"a.example\"\nlevel = \"dane\"\n[[policy]]\ndomain = \"A.example.\"\nlevel = \"may\"\n",
            "policy[1].domain",
            "already has",
        ),
        (
            "[[server.listen]]\naddress = \"0.0.0.0:25\"\n[[server.listen]]\naddress = \"0.0.0.0:25\"\n",
            "server.listen[1].address",
            "twice",
        ),
    ];
    for (text, key, reason) in cases {
        let e = match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        };
        let m = e.to_string();
        assert!(m.starts_with("/etc/danemta/test.toml"), "{m}");
        assert!(
            m.contains(&format!(" {key}:")) || m.contains(&format!(" at {key}:")),
            "{key}: {m}"
        );
        assert!(m.contains(reason), "{reason}: {m}");
    }
}

#[test]
fn value_errors_carry_a_position() {
    let e = parse("[server]\nhostname = \"relay.example.org\"\n\n[queue]\nretry_max = \"1y\"\n")
        .unwrap_err();
    match e {
        ConfigError::Value { line, key, .. } => {
            assert_eq!(line, 5);
            assert_eq!(key, "queue.retry_max");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn policy_matching() {
    let c = parse(
        r#"
[delivery]
policy = "may"
[[policy]]
domain = "example.com"
level = "dane-only"
[[policy]]
domain = ".example.com"
level = "encrypt"
[[policy]]
domain = ".mail.example.com"
level = "secure"
[[policy]]
domain = "other.example"
level = "none"
"#,
    )
    .unwrap();
    for (domain, level, entry) in [
        ("example.com", Level::DaneOnly, Some("example.com")),
        ("EXAMPLE.com.", Level::DaneOnly, Some("example.com")),
        ("a.example.com", Level::Encrypt, Some(".example.com")),
        ("a.b.example.com", Level::Encrypt, Some(".example.com")),
        ("mail.example.com", Level::Encrypt, Some(".example.com")),
        (
            "x.mail.example.com",
            Level::Secure,
            Some(".mail.example.com"),
        ),
        ("badexample.com", Level::May, None),
        ("com", Level::May, None),
        ("other.example", Level::None, Some("other.example")),
        ("sub.other.example", Level::May, None),
        ("", Level::May, None),
    ] {
        let (l, e) = c.policy_for(domain);
        assert_eq!(l, level, "{domain}");
        assert_eq!(
            e.map(|e| e.domain.to_string()),
            entry.map(str::to_owned),
            "{domain}"
        );
    }
    assert_eq!(
        Config::defaults().policy_for("example.com"),
        (Level::Dane, None)
    );
}

#[test]
fn effective_settings_name_their_source() {
    let c = parse("[queue]\nretry_first = \"30s\"\n[[policy]]\ndomain = \"a.example\"\nlevel = \"dane-only\"\n").unwrap();
    let text = c.to_string();
    assert!(
        text.contains("queue.retry_first = 30s  (/etc/danemta/test.toml)\n"),
        "{text}"
    );
    assert!(text.contains("queue.retry_max = 1h  (default)\n"), "{text}");
    assert!(
        text.contains("policy[0] = a.example dane-only  (/etc/danemta/test.toml)\n"),
        "{text}"
    );
    assert!(
        text.contains("server.listen[0] = 127.0.0.1:2525 smtp  (default)\n"),
        "{text}"
    );
    assert!(
        text.contains("delivery.policy = dane  (default)\n"),
        "{text}"
    );
    assert!(
        text.contains("metrics.listen = 127.0.0.1:9325  (default)\n"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.contains(" = ")), "{text}");
    let defaults = Config::defaults().to_string();
    assert!(
        defaults.lines().all(|l| l.ends_with("(default)")),
        "{defaults}"
    );
    let pg = parse("[queue]\nstore = \"postgres\"\nurl = \"postgres://u:secret@db/x\"\n").unwrap();
    assert!(!pg.to_string().contains("secret"));
}

/// PRODUCT.md's example exactly as printed (commented lines, the elided digest and the
/// `match`/`fingerprint` keys on a `dane-only` entry included): it parses, with warnings for
/// the keys its level does not use.
#[test]
fn product_example_verbatim() {
    let text = r#"[server]
hostname = "relay.example.org"                  # greeting, EHLO, Received:, DSN reporting MTA
relay_networks = ["127.0.0.0/8", "::1/128"]     # clients that may relay anywhere
accept_domains = ["example.org"]                # mail for these is accepted from anyone (inbound gateway)
max_message_size = "50MB"
[[server.listen]]
address = "0.0.0.0:25"
mode = "smtp"                                   # smtp | submission (AUTH required, after STARTTLS) | submissions (implicit TLS)
[[server.tls]]                                  # chains offered by STARTTLS, chosen by SNI; the first is the default
cert = "/etc/danemta/ecdsa-chain.pem"
key = "/etc/danemta/ecdsa-key.pem"
[auth]
users_file = "/etc/danemta/users"               # user:password-hash lines, for submission

[dns]
resolver = "validating"                         # same syntax as --resolver
trust_anchor = "/etc/danemta/root.key"          # optional, as --trust-anchor
timeout = "5s"

[queue]
dir = "/var/spool/danemta"
# store = "postgres"                            # several nodes sharing one queue (default "local")
# url = "postgres://danemta@db.example.org:5432/danemta"
retry_first = "5m"                              # first retry after a deferral, doubling…
retry_max = "1h"                                # …up to this interval
lifetime = "5d"                                 # then bounce
lease_time = "2m"                               # a dead node's claims pass to the others after this

[delivery]
policy = "dane"                                 # default level for every destination
port = 25
# ca_file = "/etc/danemta/extra-roots.pem"      # extra PKIX anchors (MTA-STS, verify/secure)
max_connections = 200
max_connections_per_destination = 20

[[policy]]                                      # per destination, most specific match wins
domain = "example.com"                          # ".example.com" matches its subdomains
level = "dane-only"
next_hop = "[192.0.2.25]:25"                    # optional: a host name (MX lookup skipped) or [address]:port
match = ["mx.example.com"]                      # for verify / secure
fingerprint = ["3 1 1 b9ba…"]                   # for fingerprint

[metrics]
listen = "127.0.0.1:9325"                       # Prometheus text format at /metrics
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.queue.store, StoreKind::Local);
    assert_eq!(c.delivery.ca_file, None);
    assert_eq!(c.policy_for("example.com").0, Level::DaneOnly);
    assert_eq!(c.policy_for("www.example.com").0, Level::Dane);
    let w = c.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("policy[0].match: ignored"), "{w:?}");
    assert!(w[1].starts_with("policy[0].fingerprint: ignored"), "{w:?}");
    assert!(Config::defaults().warnings().is_empty());
}

#[test]
fn rule_errors_carry_the_line() {
    let text = "[server]\nhostname = \"relay.example.org\"\n\n[queue]\nretry_max = \"1m\"\nretry_first = \"2m\"\n";
    let e = parse(text).unwrap_err();
    assert!(
        matches!(e, ConfigError::Invalid { line: Some(6), .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("/etc/danemta/test.toml:6: queue.retry_first: "),
        "{e}"
    );
    let text = "[[policy]]\ndomain = \"a.example\"\nlevel = \"dane\"\n[[policy]]\ndomain = \"b.example\"\nlevel = \"fingerprint\"\nfingerprint = [\"zz\"]\n";
    let e = parse(text).unwrap_err();
    assert!(
        matches!(e, ConfigError::Invalid { line: Some(7), .. }),
        "{e:?}"
    );
    // A rule broken by defaults alone names no line.
    let e = parse("[queue]\nstore = \"postgres\"\n").unwrap_err();
    assert!(
        matches!(e, ConfigError::Invalid { line: None, .. }),
        "{e:?}"
    );
}

#[test]
fn value_errors_in_multi_line_arrays_name_the_key() {
    let text = "[server]\nrelay_networks = [\n  \"127.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n";
    let e = parse(text).unwrap_err();
    let m = e.to_string();
    assert!(m.contains(" server.relay_networks: "), "{m}");
    assert!(m.contains("10.0.0.0/33"), "{m}");
}

#[test]
fn short_durations_are_accepted() {
    let c =
        parse("[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\nlifetime = \"10s\"\n").unwrap();
    assert_eq!(c.queue.retry_first, Duration::from_secs(1));
    assert_eq!(c.queue.retry_max, Duration::from_secs(2));
    assert_eq!(c.queue.lifetime, Duration::from_secs(10));
}
