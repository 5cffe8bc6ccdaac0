//! The standard scenario set (documented in the crate-level table).

use crate::{Signing, ZoneSpec};

/// A deterministic, valid-looking 32-byte digest (64 hex digits) derived from `seed`, for TLSA
/// records whose data no certificate needs to match.
pub fn fake_digest(seed: &str) -> String {
    // FNV-1a, four rounds with different suffixes: not cryptographic, just distinct and stable.
    (0u8..4)
        .map(|round| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in seed.bytes().chain([b'#', b'0' + round]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// A/AAAA records of a host: `127.0.<k>.<h>` and its IPv4-mapped IPv6 form.
fn host(owner: &str, k: u8, h: u8) -> String {
    format!("{owner} A 127.0.{k}.{h}\n{owner} AAAA ::ffff:127.0.{k}.{h}\n")
}

fn tlsa(owner: &str, usage: u8, zone: &str) -> String {
    format!(
        "_25._tcp.{owner} TLSA {usage} 1 1 {}\n",
        fake_digest(&format!("{usage}:{owner}.{zone}"))
    )
}

/// MX 10 mx1 / 20 mx2, A+AAAA for both, `3 1 1` TLSA at `_25._tcp.mx1` and `_25._tcp.mx2`.
fn two_mx_zone(zone: &str, k: u8) -> String {
    let mut r = String::from("@ MX 10 mx1\n@ MX 20 mx2\n");
    r += &host("mx1", k, 1);
    r += &host("mx2", k, 2);
    r += &tlsa("mx1", 3, zone);
    r += &tlsa("mx2", 3, zone);
    r
}

/// The standard scenarios, in the order of the crate-level table (`k` = row number, used in
/// the host addresses `127.0.k.h`).
pub fn standard_zones() -> Vec<ZoneSpec> {
    let mut zones = Vec::new();
    let mut add = |name: &str, records: String, signing: Signing| {
        zones.push(ZoneSpec::new(name, records, signing));
    };

    // 1 secure.test
    add(
        "secure.test",
        two_mx_zone("secure.test", 1),
        Signing::Secure,
    );
    // 2 nsec3.test
    add("nsec3.test", two_mx_zone("nsec3.test", 2), Signing::Nsec3);
    // 3 insecure.test, also the CNAME targets of unexpanded.test and cname-insecure.test.
    {
        let mut r = two_mx_zone("insecure.test", 3);
        r += &host("target", 3, 3);
        r += &host("cname-target", 3, 4);
        r += &tlsa("cname-target", 3, "insecure.test");
        add("insecure.test", r, Signing::Unsigned);
    }
    // 4 expired.test
    add(
        "expired.test",
        two_mx_zone("expired.test", 4),
        Signing::ExpiredSignatures,
    );
    // 5 badds.test
    add(
        "badds.test",
        two_mx_zone("badds.test", 5),
        Signing::DsMatchesNoKey,
    );
    // 6 badsig.test: the A RRset of mx1 is tampered.
    add(
        "badsig.test",
        two_mx_zone("badsig.test", 6),
        Signing::BadSignature {
            owner: "mx1".into(),
            rtype: "A".into(),
        },
    );
    // 7 striptlsa.test
    add(
        "striptlsa.test",
        two_mx_zone("striptlsa.test", 7),
        Signing::StripSignature {
            owner: "_25._tcp.mx1".into(),
            rtype: "TLSA".into(),
        },
    );
    // 8 cname-mx.test
    add(
        "cname-mx.test",
        "@ MX 10 mail\nmail CNAME mx1.secure.test.\n".into(),
        Signing::Secure,
    );
    // 9 shared-tlsa.test
    {
        let mut r = String::from("@ MX 10 mx1\n@ MX 20 mx2\n");
        r += &host("mx1", 9, 1);
        r += &host("mx2", 9, 2);
        r += "_25._tcp.mx1 CNAME _tlsa\n_25._tcp.mx2 CNAME _tlsa\n";
        r += &format!(
            "_tlsa TLSA 3 1 1 {}\n_tlsa TLSA 2 1 1 {}\n",
            fake_digest("3:_tlsa.shared-tlsa.test"),
            fake_digest("2:_tlsa.shared-tlsa.test")
        );
        add("shared-tlsa.test", r, Signing::Secure);
    }
    // 10 alias.test: mail.alias.test -> secure.test (cross-zone), www.alias.test -> target.
    {
        let mut r = String::from("mail CNAME secure.test.\nwww CNAME target\n");
        r += "target MX 10 mx1\n";
        r += &host("mx1", 10, 1);
        r += &tlsa("mx1", 3, "alias.test");
        add("alias.test", r, Signing::Secure);
    }
    // 11 implicit.test
    {
        let mut r = host("@", 11, 1);
        r += &format!("_25._tcp TLSA 3 1 1 {}\n", fake_digest("3:implicit.test"));
        add("implicit.test", r, Signing::Secure);
    }
    // 12 nullmx.test
    add("nullmx.test", "@ MX 0 .\n".into(), Signing::Secure);
    // 13 unexpanded.test
    {
        let mut r = String::from("@ MX 10 mx\nmx CNAME target.insecure.test.\n");
        r += &tlsa("mx", 3, "unexpanded.test");
        add("unexpanded.test", r, Signing::Secure);
    }
    // 14 cname-insecure.test
    add(
        "cname-insecure.test",
        "@ MX 10 mx\nmx CNAME cname-target.insecure.test.\n".into(),
        Signing::Secure,
    );
    // 15 noaaaa-broken.test: mx1 has A only; the NSEC at mx1 (which proves "no AAAA") lost
    // its RRSIG.
    {
        let mut r = String::from("@ MX 10 mx1\nmx1 A 127.0.15.1\n");
        r += &tlsa("mx1", 3, "noaaaa-broken.test");
        add(
            "noaaaa-broken.test",
            r,
            Signing::StripSignature {
                owner: "mx1".into(),
                rtype: "NSEC".into(),
            },
        );
    }
    // 16 notlsa.test: _25._tcp.mx1 does not exist, _25._tcp.mx2 exists without TLSA.
    {
        let mut r = String::from("@ MX 10 mx1\n@ MX 20 mx2\n");
        r += &host("mx1", 16, 1);
        r += &host("mx2", 16, 2);
        r += "_25._tcp.mx2 TXT \"no TLSA here\"\n";
        add("notlsa.test", r, Signing::Secure);
    }
    // 17 mx-bogus-host.test
    add(
        "mx-bogus-host.test",
        "@ MX 10 mx1.expired.test.\n@ MX 20 mx1.secure.test.\n".into(),
        Signing::Secure,
    );
    zones
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_64_hex_and_distinct() {
        let a = fake_digest("a");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, fake_digest("b"));
        assert_eq!(a, fake_digest("a"));
    }

    #[test]
    fn standard_set_plans() {
        let zones = standard_zones();
        assert_eq!(zones.len(), 17);
        let planned = crate::zone::plan(&zones).unwrap();
        assert_eq!(planned.len(), 19); // + test. + the root
    }
}
