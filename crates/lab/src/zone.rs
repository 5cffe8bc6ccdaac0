//! Zone specifications, and turning them into signed zone files with ldns.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::LabError;
use crate::dns::rtype;

/// One zone of the lab: its name, its records, and how it is signed.
///
/// `records` is zone-file text with `$ORIGIN` set to the zone and `$TTL 300`, so relative owner
/// names work (`mx1 A 127.0.0.1`, `_25._tcp.mx1 TLSA 3 1 1 …`, `@ MX 10 mx1`). Leave out the SOA,
/// the apex NS RRset, DNSKEYs and delegations to other lab zones: the lab adds those. The lab
/// names every zone's server `ns.<zone>`, so don't use the owner `ns` yourself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSpec {
    /// The zone name, e.g. `"secure.test"` (a trailing dot is optional; `"."` is the root).
    pub name: String,
    /// Zone-file text, see above.
    pub records: String,
    /// Signed or not, and how it is broken.
    pub signing: Signing,
}

impl ZoneSpec {
    /// A zone with the given records and signing.
    pub fn new(name: impl Into<String>, records: impl Into<String>, signing: Signing) -> Self {
        ZoneSpec {
            name: name.into(),
            records: records.into(),
            signing,
        }
    }

    /// A correctly signed (NSEC) zone.
    pub fn secure(name: impl Into<String>, records: impl Into<String>) -> Self {
        Self::new(name, records, Signing::Secure)
    }
}

/// How a zone is signed, and how it is deliberately broken.
///
/// `owner` is relative to the zone (`"mx1"`, `"_25._tcp.mx1"`, `"@"` for the apex) or absolute
/// with a trailing dot; `rtype` is a mnemonic such as `"A"`, `"TLSA"` or `"NSEC"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signing {
    /// Signed with NSEC, DS in the parent: answers are secure.
    Secure,
    /// Signed with NSEC3 (no salt, 0 extra iterations, RFC 9276), DS in the parent: secure.
    Nsec3,
    /// Not signed and no DS in the parent: an insecure delegation, answers are insecure.
    Unsigned,
    /// Signed, DS in the parent, but every signature expired 30 days ago: bogus.
    ExpiredSignatures,
    /// Signed, but the DS in the parent matches no DNSKEY of the zone: bogus.
    DsMatchesNoKey,
    /// Signed, then the RDATA of the first `rtype` record at `owner` is changed (A/AAAA: the
    /// last bit of the address; MX: the preference; TLSA: the last digest digit; other types:
    /// the RRSIG's signature bytes instead), so its RRSIG no longer verifies: that RRset is
    /// bogus, the rest of the zone secure.
    BadSignature {
        /// Owner of the tampered RRset.
        owner: String,
        /// Type of the tampered RRset.
        rtype: String,
    },
    /// Signed, then the RRSIG covering the `rtype` RRset at `owner` is removed: that RRset (or,
    /// for `NSEC`, the denial it proves) is bogus, the rest of the zone secure.
    StripSignature {
        /// Owner of the RRset whose signature is removed.
        owner: String,
        /// Type of that RRset (`"NSEC"` breaks the denials that NSEC record proves).
        rtype: String,
    },
}

impl Signing {
    /// Whether the zone is signed (and has a DS in its parent).
    pub fn is_signed(&self) -> bool {
        !matches!(self, Signing::Unsigned)
    }
}

/// Which authoritative server (NSD instance) serves a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tier {
    Root,
    Tld,
    Leaf,
}

impl Tier {
    pub(crate) const ALL: [Tier; 3] = [Tier::Root, Tier::Tld, Tier::Leaf];

    /// Last octet of the server address in the lab block.
    pub(crate) fn host(self) -> u8 {
        match self {
            Tier::Root => 1,
            Tier::Tld => 2,
            Tier::Leaf => 3,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Root => "nsd-root",
            Tier::Tld => "nsd-tld",
            Tier::Leaf => "nsd-leaf",
        }
    }
}

/// A zone after validation: absolute lower-case name, parent, server.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    /// `"secure.test."`, or `"."` for the root.
    pub(crate) fqdn: String,
    pub(crate) records: String,
    pub(crate) signing: Signing,
    pub(crate) tier: Tier,
    /// `None` for the root.
    pub(crate) parent: Option<String>,
}

impl Zone {
    /// The file name of the zone (`root.zone`, `secure.test.zone`).
    pub(crate) fn file_stem(&self) -> String {
        if self.fqdn == "." {
            "root".into()
        } else {
            self.fqdn.trim_end_matches('.').to_string()
        }
    }

    /// The name of the zone's server, `ns.<zone>` (`ns.` for the root).
    pub(crate) fn ns_name(&self) -> String {
        if self.fqdn == "." {
            "ns.".into()
        } else {
            format!("ns.{}", self.fqdn)
        }
    }
}

/// Normalizes a zone or owner name to absolute lower-case form; `"."`/`""` is the root.
pub(crate) fn normalize_zone_name(name: &str) -> Result<String, String> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() {
        return Ok(".".into());
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("empty or over-long label".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("labels may only hold letters, digits, '-' and '_'".into());
        }
    }
    if n.len() > 250 {
        return Err("name too long".into());
    }
    Ok(format!("{n}."))
}

fn label_count(fqdn: &str) -> usize {
    if fqdn == "." {
        0
    } else {
        fqdn.trim_end_matches('.').split('.').count()
    }
}

/// The zone set: the given zones plus the root and every missing TLD (both secure), each with its
/// parent and server.
pub(crate) fn plan(specs: &[ZoneSpec]) -> Result<Vec<Zone>, LabError> {
    let mut by_name: BTreeMap<String, ZoneSpec> = BTreeMap::new();
    for spec in specs {
        let fqdn = normalize_zone_name(&spec.name).map_err(|e| LabError::zone(&spec.name, e))?;
        if by_name.insert(fqdn.clone(), spec.clone()).is_some() {
            return Err(LabError::zone(&spec.name, "given twice"));
        }
    }
    let tlds: Vec<String> = by_name
        .keys()
        .filter(|n| label_count(n) > 1)
        .map(|n| {
            let last = n
                .trim_end_matches('.')
                .rsplit('.')
                .next()
                .unwrap_or_default();
            format!("{last}.")
        })
        .collect();
    for tld in tlds.into_iter().chain([".".to_string()]) {
        by_name
            .entry(tld.clone())
            .or_insert_with(|| ZoneSpec::secure(tld, ""));
    }
    let names: Vec<String> = by_name.keys().cloned().collect();
    let mut zones = Vec::with_capacity(by_name.len());
    for (fqdn, spec) in by_name {
        let depth = label_count(&fqdn);
        let parent = (depth > 0).then(|| {
            // The longest proper suffix that is a lab zone (the root at least).
            let mut candidate = fqdn.as_str();
            loop {
                candidate = match candidate.split_once('.') {
                    Some((_, "")) | None => ".",
                    Some((_, rest)) => rest,
                };
                if candidate == "." || names.iter().any(|n| n == candidate) {
                    break candidate.to_string();
                }
            }
        });
        let tier = match depth {
            0 => Tier::Root,
            1 => Tier::Tld,
            _ => Tier::Leaf,
        };
        if let Signing::BadSignature { owner, rtype } | Signing::StripSignature { owner, rtype } =
            &spec.signing
        {
            resolve_owner(owner, &fqdn).map_err(|e| LabError::zone(&spec.name, e))?;
            rtype::from_name(rtype)
                .ok_or_else(|| LabError::zone(&spec.name, format!("unknown type {rtype:?}")))?;
        }
        if depth == 0 && !matches!(spec.signing, Signing::Secure | Signing::Nsec3) {
            return Err(LabError::zone(
                ".",
                "the root zone must be Secure or Nsec3 (it holds the trust anchor)",
            ));
        }
        zones.push(Zone {
            fqdn,
            records: spec.records,
            signing: spec.signing,
            tier,
            parent,
        });
    }
    Ok(zones)
}

/// Resolves a tamper target owner relative to `zone`.
fn resolve_owner(owner: &str, zone: &str) -> Result<String, String> {
    let o = owner.trim();
    if o == "@" || o.is_empty() {
        return Ok(zone.to_string());
    }
    let absolute = if o.ends_with('.') || zone == "." {
        normalize_zone_name(o)?
    } else {
        normalize_zone_name(&format!("{o}.{zone}"))?
    };
    if zone != "." && absolute != zone && !absolute.ends_with(&format!(".{zone}")) {
        return Err(format!("owner {owner:?} is not in zone {zone}"));
    }
    Ok(absolute)
}

/// A zone's key: the DNSKEY and DS lines ldns-keygen wrote, and the key's base path.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) base: PathBuf,
    /// `owner IN DNSKEY 257 3 13 <base64>` (no comment).
    pub(crate) dnskey: String,
    /// `owner IN DS <tag> 13 2 <hex>`.
    pub(crate) ds: String,
}

/// Programs the lab runs, resolved to absolute paths.
#[derive(Clone, Debug)]
pub(crate) struct Tools {
    pub(crate) nsd: PathBuf,
    pub(crate) unbound: PathBuf,
    pub(crate) keygen: PathBuf,
    pub(crate) signzone: PathBuf,
}

fn run(mut cmd: Command, program: &str, context: &str) -> Result<String, LabError> {
    let out = cmd
        .output()
        .map_err(|e| LabError::io(format!("running {program} ({context})"), e))?;
    if !out.status.success() {
        return Err(LabError::Tool {
            program: program.into(),
            context: context.into(),
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

/// Strips the `;` comment of a record line and re-joins its fields with single spaces.
fn clean_record_line(line: &str) -> String {
    let without_comment = line.split(';').next().unwrap_or_default();
    without_comment
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Generates the zone's key (one ECDSAP256SHA256 CSK, flags 257) in `dir`.
pub(crate) fn keygen(tools: &Tools, zone: &Zone, dir: &Path) -> Result<Key, LabError> {
    fs::create_dir_all(dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    let mut cmd = Command::new(&tools.keygen);
    cmd.current_dir(dir)
        .args(["-a", "ECDSAP256SHA256", "-k"])
        .arg(&zone.fqdn);
    let context = format!("generating the key of {}", zone.fqdn);
    let stdout = run(cmd, "ldns-keygen", &context)?;
    let base_name = stdout.trim();
    if base_name.is_empty() {
        return Err(LabError::Tool {
            program: "ldns-keygen".into(),
            context,
            status: "success".into(),
            output: "printed no key name".into(),
        });
    }
    let base = dir.join(base_name);
    let read = |ext: &str| {
        let path = dir.join(format!("{base_name}.{ext}"));
        fs::read_to_string(&path)
            .map(|s| clean_record_line(s.lines().next().unwrap_or_default()))
            .map_err(|e| LabError::io(format!("reading {}", path.display()), e))
    };
    Ok(Key {
        dnskey: read("key")?,
        ds: read("ds")?,
        base,
    })
}

/// Inserts a TTL after the owner of a `owner IN TYPE …` line.
fn with_ttl(line: &str, ttl: u32) -> String {
    match line.split_once(' ') {
        Some((owner, rest)) => format!("{owner} {ttl} {rest}"),
        None => line.to_string(),
    }
}

/// The trust anchor lines: `. 3600 IN DNSKEY …` and `. 3600 IN DS …`.
pub(crate) fn anchor_lines(root_key: &Key) -> (String, String) {
    (
        with_ttl(&root_key.dnskey, 3600),
        with_ttl(&root_key.ds, 3600),
    )
}

/// Flips the last hex digit of a DS line's digest, so it matches no key.
fn corrupt_ds(ds: &str) -> String {
    let mut fields: Vec<String> = ds.split_whitespace().map(str::to_string).collect();
    if let Some(digest) = fields.last_mut() {
        let flipped = match digest.pop() {
            Some('0') => '1',
            Some(_) => '0',
            None => '0',
        };
        digest.push(flipped);
    }
    fields.join(" ")
}

/// The unsigned zone file text: SOA, NS, the server address, delegations to child zones
/// (NS + glue + DS), then the caller's records.
pub(crate) fn zone_text(
    zone: &Zone,
    zones: &[Zone],
    keys: &BTreeMap<String, Key>,
    block: Ipv4Addr,
) -> String {
    let server = |tier: Tier| {
        let [a, b, c, _] = block.octets();
        Ipv4Addr::new(a, b, c, tier.host())
    };
    let origin = &zone.fqdn;
    let mut t = String::new();
    t.push_str(&format!("$ORIGIN {origin}\n$TTL 300\n"));
    t.push_str(&format!(
        "{origin} IN SOA {ns} hostmaster.{mbox} 1 3600 600 86400 300\n",
        ns = zone.ns_name(),
        mbox = if origin == "." { "" } else { origin },
    ));
    t.push_str(&format!("{origin} IN NS {}\n", zone.ns_name()));
    t.push_str(&format!("{} IN A {}\n", zone.ns_name(), server(zone.tier)));
    for child in zones.iter().filter(|c| c.parent.as_deref() == Some(origin)) {
        t.push_str(&format!("; delegation to {}\n", child.fqdn));
        t.push_str(&format!("{} IN NS {}\n", child.fqdn, child.ns_name()));
        t.push_str(&format!(
            "{} IN A {}\n",
            child.ns_name(),
            server(child.tier)
        ));
        if let (true, Some(key)) = (child.signing.is_signed(), keys.get(&child.fqdn)) {
            let ds = if child.signing == Signing::DsMatchesNoKey {
                corrupt_ds(&key.ds)
            } else {
                key.ds.clone()
            };
            t.push_str(&ds);
            t.push('\n');
        }
    }
    t.push_str(&format!(
        "; records of the ZoneSpec\n$ORIGIN {origin}\n$TTL 300\n"
    ));
    t.push_str(&zone.records);
    t.push('\n');
    t
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes the zone file (signed with `key` unless the zone is unsigned) to `out`.
pub(crate) fn write_zone(
    tools: &Tools,
    zone: &Zone,
    text: &str,
    key: Option<&Key>,
    work: &Path,
    out: &Path,
) -> Result<(), LabError> {
    let unsigned = work.join(format!("{}.unsigned", zone.file_stem()));
    fs::write(&unsigned, text)
        .map_err(|e| LabError::io(format!("writing {}", unsigned.display()), e))?;
    let key = match (zone.signing.is_signed(), key) {
        (false, _) => {
            return fs::copy(&unsigned, out)
                .map(drop)
                .map_err(|e| LabError::io(format!("writing {}", out.display()), e));
        }
        (true, Some(key)) => key,
        (true, None) => return Err(LabError::zone(&zone.fqdn, "internal: no key generated")),
    };
    const DAY: i64 = 86_400;
    let now = unix_now();
    // Validators tolerate clock skew (Unbound: up to a day, val-sig-skew-max), so "expired"
    // means a month ago.
    let (inception, expiration) = if zone.signing == Signing::ExpiredSignatures {
        (now - 90 * DAY, now - 30 * DAY)
    } else {
        (now - DAY, now + 30 * DAY)
    };
    let signed = work.join(format!("{}.signed", zone.file_stem()));
    let mut cmd = Command::new(&tools.signzone);
    cmd.arg("-i")
        .arg(inception.to_string())
        .arg("-e")
        .arg(expiration.to_string())
        .arg("-f")
        .arg(&signed)
        .arg("-o")
        .arg(&zone.fqdn);
    if zone.signing == Signing::Nsec3 {
        cmd.args(["-n", "-t", "0"]); // no salt: the default
    }
    cmd.arg(&unsigned).arg(&key.base);
    run(cmd, "ldns-signzone", &format!("signing {}", zone.fqdn))?;
    let signed_text = fs::read_to_string(&signed)
        .map_err(|e| LabError::io(format!("reading {}", signed.display()), e))?;
    let final_text = match &zone.signing {
        Signing::BadSignature { owner, rtype } => tamper(&signed_text, &zone.fqdn, owner, rtype)?,
        Signing::StripSignature { owner, rtype } => {
            strip_rrsig(&signed_text, &zone.fqdn, owner, rtype)?
        }
        _ => signed_text,
    };
    fs::write(out, final_text).map_err(|e| LabError::io(format!("writing {}", out.display()), e))
}

/// Signs the zone text a second time with `key`, with every signature expired 30 days ago
/// (inception 90 days ago), into `out`: the same records, keys and denial chain (NSEC or
/// NSEC3 as the zone's [`Signing`]) as the served zone, but signatures that no validator may
/// accept. No tampering of [`Signing`] is applied. No server loads this file.
pub(crate) fn write_expired_copy(
    tools: &Tools,
    zone: &Zone,
    text: &str,
    key: &Key,
    work: &Path,
    out: &Path,
) -> Result<(), LabError> {
    const DAY: i64 = 86_400;
    let unsigned = work.join(format!("{}.expired-unsigned", zone.file_stem()));
    fs::write(&unsigned, text)
        .map_err(|e| LabError::io(format!("writing {}", unsigned.display()), e))?;
    let now = unix_now();
    let mut cmd = Command::new(&tools.signzone);
    cmd.arg("-i")
        .arg((now - 90 * DAY).to_string())
        .arg("-e")
        .arg((now - 30 * DAY).to_string())
        .arg("-f")
        .arg(out)
        .arg("-o")
        .arg(&zone.fqdn);
    if zone.signing == Signing::Nsec3 {
        cmd.args(["-n", "-t", "0"]);
    }
    cmd.arg(&unsigned).arg(&key.base);
    run(
        cmd,
        "ldns-signzone",
        &format!("signing {} with expired signatures", zone.fqdn),
    )
    .map(drop)
}

/// The fields of an ldns-signzone output line: owner, ttl, class, type, rdata fields.
fn fields(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn is_rr(f: &[&str], owner: &str, rtype: &str) -> bool {
    f.len() >= 5 && f[0].eq_ignore_ascii_case(owner) && f[3].eq_ignore_ascii_case(rtype)
}

fn is_rrsig_over(f: &[&str], owner: &str, rtype: &str) -> bool {
    is_rr(f, owner, "RRSIG") && f[4].eq_ignore_ascii_case(rtype)
}

/// Changes the first `rtype` record at `owner` (or, for types without a data tamper, the
/// signature of its RRSIG) so that the RRSIG no longer verifies.
fn tamper(signed: &str, zone: &str, owner: &str, rtype: &str) -> Result<String, LabError> {
    let target = resolve_owner(owner, zone).map_err(|e| LabError::zone(zone, e))?;
    let upper = rtype.to_ascii_uppercase();
    let mut done = false;
    let mut lines: Vec<String> = Vec::new();
    // First try the data itself.
    for line in signed.lines() {
        let f = fields(line);
        if !done
            && is_rr(&f, &target, &upper)
            && let Some(changed) = tamper_rdata(&upper, &f[4..])
        {
            lines.push(format!(
                "{}\t{}\t{}\t{}\t{}",
                f[0], f[1], f[2], f[3], changed
            ));
            done = true;
            continue;
        }
        lines.push(line.to_string());
    }
    if !done {
        // Fall back to corrupting the signature of the covering RRSIG.
        lines.clear();
        for line in signed.lines() {
            let f = fields(line);
            if !done && is_rrsig_over(&f, &target, &upper) && f.len() >= 13 {
                let sig = corrupt_base64(f[f.len() - 1]);
                let head = f[..f.len() - 1].join("\t");
                lines.push(format!("{head}\t{sig}"));
                done = true;
                continue;
            }
            lines.push(line.to_string());
        }
    }
    if !done {
        return Err(LabError::zone(
            zone,
            format!("BadSignature: no signed {upper} RRset at {target}"),
        ));
    }
    Ok(lines.join("\n") + "\n")
}

/// New RDATA text for a tampered record, for the types that have an obvious valid change.
fn tamper_rdata(rtype: &str, rdata: &[&str]) -> Option<String> {
    match rtype {
        "A" => {
            let a: Ipv4Addr = rdata.first()?.parse().ok()?;
            let mut o = a.octets();
            o[3] ^= 1;
            Some(Ipv4Addr::from(o).to_string())
        }
        "AAAA" => {
            let a: Ipv6Addr = rdata.first()?.parse().ok()?;
            let mut o = a.octets();
            o[15] ^= 1;
            Some(Ipv6Addr::from(o).to_string())
        }
        "MX" => {
            let pref: u16 = rdata.first()?.parse().ok()?;
            Some(format!("{} {}", pref.wrapping_add(1), rdata.get(1)?))
        }
        "TLSA" if rdata.len() >= 4 => {
            let mut data: String = rdata[3..].concat();
            let last = data.pop()?;
            data.push(if last == '0' { '1' } else { '0' });
            Some(format!("{} {} {} {}", rdata[0], rdata[1], rdata[2], data))
        }
        _ => None,
    }
}

/// Changes one base64 character in the middle of a signature.
fn corrupt_base64(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.len() / 3;
    if let Some(c) = chars.get_mut(i) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// Removes the RRSIG(s) covering `rtype` at `owner`.
fn strip_rrsig(signed: &str, zone: &str, owner: &str, rtype: &str) -> Result<String, LabError> {
    let target = resolve_owner(owner, zone).map_err(|e| LabError::zone(zone, e))?;
    let mut removed = 0;
    let mut out = String::with_capacity(signed.len());
    for line in signed.lines() {
        if is_rrsig_over(&fields(line), &target, rtype) {
            removed += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if removed == 0 {
        return Err(LabError::zone(
            zone,
            format!(
                "StripSignature: no RRSIG over {} at {target}",
                rtype.to_ascii_uppercase()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_the_hierarchy() {
        let zones = plan(&[
            ZoneSpec::secure("Secure.Test.", "mx1 A 127.0.0.1"),
            ZoneSpec::new("insecure.test", "", Signing::Unsigned),
            ZoneSpec::secure("sub.secure.test", ""),
            ZoneSpec::secure("other.example", ""),
        ])
        .unwrap();
        let get = |n: &str| zones.iter().find(|z| z.fqdn == n).unwrap();
        assert_eq!(zones.len(), 7); // 4 + root + test. + example.
        assert_eq!(get(".").parent, None);
        assert_eq!(get(".").tier, Tier::Root);
        assert_eq!(get("test.").parent.as_deref(), Some("."));
        assert_eq!(get("test.").tier, Tier::Tld);
        assert_eq!(get("secure.test.").parent.as_deref(), Some("test."));
        assert_eq!(
            get("sub.secure.test.").parent.as_deref(),
            Some("secure.test.")
        );
        assert_eq!(get("sub.secure.test.").tier, Tier::Leaf);
        assert_eq!(get("other.example.").parent.as_deref(), Some("example."));
        assert_eq!(get("secure.test.").ns_name(), "ns.secure.test.");
        assert_eq!(get(".").ns_name(), "ns.");
        assert_eq!(get(".").file_stem(), "root");
    }

    #[test]
    fn rejects_bad_specs() {
        let dup = plan(&[
            ZoneSpec::secure("a.test", ""),
            ZoneSpec::secure("A.test.", ""),
        ]);
        assert!(dup.unwrap_err().to_string().contains("twice"));
        assert!(plan(&[ZoneSpec::secure("a b.test", "")]).is_err());
        let outside = Signing::StripSignature {
            owner: "mx.other.test.".into(),
            rtype: "A".into(),
        };
        assert!(plan(&[ZoneSpec::new("a.test", "", outside)]).is_err());
        let bad_type = Signing::BadSignature {
            owner: "mx".into(),
            rtype: "NOPE".into(),
        };
        assert!(plan(&[ZoneSpec::new("a.test", "", bad_type)]).is_err());
        assert!(plan(&[ZoneSpec::new(".", "", Signing::Unsigned)]).is_err());
    }

    #[test]
    fn resolves_owners() {
        assert_eq!(resolve_owner("@", "a.test.").unwrap(), "a.test.");
        assert_eq!(
            resolve_owner("_25._tcp.MX1", "a.test.").unwrap(),
            "_25._tcp.mx1.a.test."
        );
        assert_eq!(
            resolve_owner("mx.a.test.", "a.test.").unwrap(),
            "mx.a.test."
        );
        assert!(resolve_owner("mx.b.test.", "a.test.").is_err());
    }

    const SIGNED: &str = "a.test.\t300\tIN\tSOA\tns.a.test. hostmaster.a.test. 1 3600 600 86400 300\n\
        mx1.a.test.\t300\tIN\tA\t127.0.0.2\n\
        mx1.a.test.\t300\tIN\tRRSIG\tA 13 3 300 20270101000000 20260101000000 1234 a.test. AAAABBBBCCCC\n\
        mx1.a.test.\t300\tIN\tNSEC\tns.a.test. A RRSIG NSEC\n\
        mx1.a.test.\t300\tIN\tRRSIG\tNSEC 13 3 300 20270101000000 20260101000000 1234 a.test. DDDDEEEEFFFF\n";

    #[test]
    fn tampers_data_or_signature() {
        let t = tamper(SIGNED, "a.test.", "mx1", "a").unwrap();
        assert!(t.contains("mx1.a.test.\t300\tIN\tA\t127.0.0.3"), "{t}");
        assert!(t.contains("AAAABBBBCCCC"));
        let t = tamper(SIGNED, "a.test.", "mx1", "NSEC").unwrap();
        assert!(
            !t.contains("DDDDEEEEFFFF") && t.contains("DDDDAEEEFFFF"),
            "{t}"
        );
        assert!(tamper(SIGNED, "a.test.", "mx2", "A").is_err());
        assert_eq!(
            tamper_rdata("MX", &["10", "mx1.a.test."]).unwrap(),
            "11 mx1.a.test."
        );
        assert_eq!(
            tamper_rdata("TLSA", &["3", "1", "1", "ab", "cd"]).unwrap(),
            "3 1 1 abc0"
        );
        assert_eq!(
            tamper_rdata("AAAA", &["::ffff:127.0.0.1"]).unwrap(),
            "::ffff:127.0.0.0"
        );
    }

    #[test]
    fn strips_one_rrsig() {
        let t = strip_rrsig(SIGNED, "a.test.", "mx1", "NSEC").unwrap();
        assert!(!t.contains("DDDDEEEEFFFF") && t.contains("AAAABBBBCCCC"));
        assert!(strip_rrsig(SIGNED, "a.test.", "mx1", "TLSA").is_err());
    }

    #[test]
    fn corrupts_ds_digest() {
        assert_eq!(
            corrupt_ds("a.test. IN DS 1 13 2 abc0"),
            "a.test. IN DS 1 13 2 abc1"
        );
        assert_eq!(
            corrupt_ds("a.test. IN DS 1 13 2 abcf"),
            "a.test. IN DS 1 13 2 abc0"
        );
        assert_eq!(
            with_ttl(". IN DNSKEY 257 3 13 xyz", 3600),
            ". 3600 IN DNSKEY 257 3 13 xyz"
        );
        assert_eq!(
            clean_record_line("test.\tIN\tDNSKEY\t257 3 13 abc= ;{id = 1 (ksk)}"),
            "test. IN DNSKEY 257 3 13 abc="
        );
    }
}
