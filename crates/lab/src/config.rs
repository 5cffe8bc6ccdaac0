//! Configuration files of the NSD and Unbound instances.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// `nsd.conf` for one authoritative instance serving `zones` (`(name, zone file)`) on
/// `addr` port 53. Everything lives in `dir`: no chroot, no privilege drop, no control socket,
/// no rate limiting (Unbound's queries all come from one /24).
pub(crate) fn nsd_conf(
    dir: &Path,
    name: &str,
    addr: Ipv4Addr,
    zones: &[(String, String)],
) -> String {
    let d = dir.display();
    let mut c = format!(
        r#"# {name}: an authoritative server of the danemta DNSSEC test lab
server:
    ip-address: {addr}
    port: 53
    do-ip4: yes
    do-ip6: no
    reuseport: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/{name}.zonelist"
    xfrdfile: "{d}/{name}.xfrd.state"
    xfrdir: "{d}"
    zonefiles-write: 0
    pidfile: "{d}/{name}.pid"
    logfile: "{d}/{name}.log"
    log-time-ascii: yes
    verbosity: 1
    hide-version: yes
    hide-identity: yes
    refuse-any: no
    round-robin: no
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
"#
    );
    for (zone, file) in zones {
        c.push_str(&format!(
            "zone:\n    name: \"{zone}\"\n    zonefile: \"{d}/{file}\"\n"
        ));
    }
    c
}

/// `unbound.conf` for a recursive resolver on `addr` port 53 that iterates from the lab root
/// (`root.hints`). `anchor` set: a validating resolver trusting that file; `None`: iterator only
/// (it still asks with DO=1 and hands RRSIGs and NSEC(3) records to clients that set DO).
/// `tlds` are the lab's top-level domains, released from Unbound's built-in local zones
/// (`test.` is one, RFC 6761).
pub(crate) fn unbound_conf(
    dir: &Path,
    name: &str,
    addr: Ipv4Addr,
    anchor: Option<&Path>,
    tlds: &[String],
) -> String {
    let d = dir.display();
    let (modules, validation) = match anchor {
        Some(anchor) => (
            "validator iterator",
            format!(
                r#"    trust-anchor-file: "{}"
    val-permissive-mode: no
    val-log-level: 2
    val-clean-additional: yes
    harden-dnssec-stripped: yes
    trust-anchor-signaling: no
    root-key-sentinel: no
"#,
                anchor.display()
            ),
        ),
        None => ("iterator", String::new()),
    };
    let mut c = format!(
        r#"# {name}: a recursive resolver of the danemta DNSSEC test lab
server:
    interface: {addr}
    port: 53
    outgoing-interface: {addr}
    interface-automatic: no
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    so-reuseport: no
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/{name}.pid"
    logfile: "{d}/{name}.log"
    use-syslog: no
    log-time-ascii: yes
    log-servfail: yes
    verbosity: 1
    do-daemonize: no
    root-hints: "{d}/root.hints"
    do-not-query-localhost: no
    module-config: "{modules}"
    ede: yes
    prefetch: no
    minimal-responses: no
    hide-identity: yes
    hide-version: yes
    harden-glue: yes
    harden-below-nxdomain: yes
    harden-referral-path: no
    qname-minimisation: yes
    aggressive-nsec: yes
    unblock-lan-zones: no
    insecure-lan-zones: no
{validation}"#
    );
    for tld in tlds {
        c.push_str(&format!("    local-zone: \"{tld}\" nodefault\n"));
    }
    c.push_str("remote-control:\n    control-enable: no\n");
    c
}

/// `unbound.conf` for a validating resolver on `addr` port 53 that sends every query to
/// `forward` (`forward-zone: "."`) instead of iterating: the reference validator behind a
/// [`DnsTamper`](crate::DnsTamper). Otherwise as the lab's validating resolver.
pub(crate) fn unbound_forwarder_conf(
    dir: &Path,
    name: &str,
    addr: Ipv4Addr,
    anchor: &Path,
    tlds: &[String],
    forward: SocketAddr,
) -> String {
    let mut c = unbound_conf(dir, name, addr, Some(anchor), tlds);
    c.push_str(&format!(
        "forward-zone:\n    name: \".\"\n    forward-addr: {}@{}\n    forward-first: no\n",
        forward.ip(),
        forward.port()
    ));
    c
}

/// Unbound's root hints: the lab root server only.
pub(crate) fn root_hints(root: Ipv4Addr) -> String {
    format!(". 3600000 IN NS ns.\nns. 3600000 IN A {root}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validating_and_plain_differ_only_in_validation() {
        let dir = Path::new("/tmp/x");
        let addr = Ipv4Addr::new(127, 53, 1, 4);
        let tlds = ["test.".to_string()];
        let v = unbound_conf(dir, "v", addr, Some(Path::new("/tmp/x/ta")), &tlds);
        let p = unbound_conf(dir, "p", addr, None, &tlds);
        assert!(v.contains("module-config: \"validator iterator\""));
        assert!(v.contains("trust-anchor-file: \"/tmp/x/ta\""));
        assert!(v.contains("val-permissive-mode: no"));
        assert!(p.contains("module-config: \"iterator\""));
        assert!(!p.contains("trust-anchor"));
        for c in [&v, &p] {
            assert!(c.contains("local-zone: \"test.\" nodefault"));
            assert!(c.contains("do-not-query-localhost: no"));
            assert!(c.contains("control-enable: no"));
        }
        let f = unbound_forwarder_conf(
            dir,
            "f",
            addr,
            Path::new("/tmp/x/ta"),
            &tlds,
            "127.53.1.16:53".parse().unwrap(),
        );
        assert!(f.contains("module-config: \"validator iterator\""));
        assert!(f.ends_with(
            "forward-zone:\n    name: \".\"\n    forward-addr: 127.53.1.16@53\n    forward-first: no\n"
        ));
        let n = nsd_conf(dir, "nsd-root", addr, &[(".".into(), "root.zone".into())]);
        assert!(n.contains("name: \".\"\n    zonefile: \"/tmp/x/root.zone\""));
    }
}
