//! A tiny DNS client, enough to probe the lab's servers and to check answers in tests.
//!
//! It builds one query packet by hand (with an EDNS OPT record, optionally DO=1), sends it over
//! UDP (retrying over TCP when the reply is truncated) and decodes the header and the records
//! of the reply (owner, type, TTL, raw RDATA). It refuses any server outside 127.0.0.0/8 or
//! `::1`: the lab never sends traffic off the machine.
//!
//! ```no_run
//! use danemta_lab::dns::{self, rcode, rtype, QueryOptions};
//! let lab = danemta_lab::shared().expect("lab");
//! let r = dns::query(lab.validating_resolver(), "secure.test", rtype::MX, QueryOptions::recursive())?;
//! assert_eq!(r.rcode, rcode::NOERROR);
//! assert!(r.authentic_data);
//! # Ok::<(), danemta_lab::LabError>(())
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::LabError;

/// Resource record type numbers (RFC 1035, RFC 4034, RFC 5155, RFC 6698).
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Delegation signer.
    pub const DS: u16 = 43;
    /// DNSSEC signature.
    pub const RRSIG: u16 = 46;
    /// Authenticated denial.
    pub const NSEC: u16 = 47;
    /// DNSSEC public key.
    pub const DNSKEY: u16 = 48;
    /// Hashed authenticated denial.
    pub const NSEC3: u16 = 50;
    /// NSEC3 parameters.
    pub const NSEC3PARAM: u16 = 51;
    /// DANE TLSA.
    pub const TLSA: u16 = 52;

    /// The type number of a mnemonic such as `"TLSA"` (or `"TYPE52"`), case-insensitive.
    pub fn from_name(name: &str) -> Option<u16> {
        let upper = name.trim().to_ascii_uppercase();
        let known = [
            ("A", A),
            ("NS", NS),
            ("CNAME", CNAME),
            ("SOA", SOA),
            ("MX", MX),
            ("TXT", TXT),
            ("AAAA", AAAA),
            ("OPT", OPT),
            ("DS", DS),
            ("RRSIG", RRSIG),
            ("NSEC", NSEC),
            ("DNSKEY", DNSKEY),
            ("NSEC3", NSEC3),
            ("NSEC3PARAM", NSEC3PARAM),
            ("TLSA", TLSA),
        ];
        if let Some((_, n)) = known.iter().find(|(k, _)| *k == upper) {
            return Some(*n);
        }
        upper.strip_prefix("TYPE").and_then(|n| n.parse().ok())
    }

    /// The mnemonic of a type number (`TYPEnn` for the ones this module does not name).
    pub fn name(rtype: u16) -> String {
        let s = match rtype {
            A => "A",
            NS => "NS",
            CNAME => "CNAME",
            SOA => "SOA",
            MX => "MX",
            TXT => "TXT",
            AAAA => "AAAA",
            OPT => "OPT",
            DS => "DS",
            RRSIG => "RRSIG",
            NSEC => "NSEC",
            DNSKEY => "DNSKEY",
            NSEC3 => "NSEC3",
            NSEC3PARAM => "NSEC3PARAM",
            TLSA => "TLSA",
            other => return format!("TYPE{other}"),
        };
        s.to_string()
    }
}

/// Response codes (RFC 1035 §4.1.1, RFC 6891 extended codes included).
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure: what a validating resolver answers for bogus data.
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;

    /// The mnemonic of a response code.
    pub fn name(rcode: u16) -> String {
        match rcode {
            NOERROR => "NOERROR".into(),
            FORMERR => "FORMERR".into(),
            SERVFAIL => "SERVFAIL".into(),
            NXDOMAIN => "NXDOMAIN".into(),
            NOTIMP => "NOTIMP".into(),
            REFUSED => "REFUSED".into(),
            other => format!("RCODE{other}"),
        }
    }
}

/// Header flags and transport settings of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryOptions {
    /// RD: ask a resolver to recurse.
    pub recursion_desired: bool,
    /// EDNS DO: ask for DNSSEC records (RRSIG, NSEC, …) in the reply.
    pub dnssec_ok: bool,
    /// CD: ask a validating resolver not to validate.
    pub checking_disabled: bool,
    /// AD in the query (RFC 6840 §5.7): ask for the AD bit without needing DO.
    pub authentic_data: bool,
    /// How long to wait for the reply in total (UDP is resent every second meanwhile).
    pub timeout: Duration,
}

impl QueryOptions {
    /// A query to a recursive resolver: RD=1, AD=1, DO=0, 5 s timeout.
    pub fn recursive() -> Self {
        QueryOptions {
            recursion_desired: true,
            dnssec_ok: false,
            checking_disabled: false,
            authentic_data: true,
            timeout: Duration::from_secs(5),
        }
    }

    /// A query to a recursive resolver asking for DNSSEC records: RD=1, DO=1.
    pub fn recursive_dnssec() -> Self {
        QueryOptions {
            dnssec_ok: true,
            ..Self::recursive()
        }
    }

    /// A query to an authoritative server: RD=0, DO=1.
    pub fn authoritative() -> Self {
        QueryOptions {
            recursion_desired: false,
            dnssec_ok: true,
            authentic_data: false,
            ..Self::recursive()
        }
    }

    /// The same options with another timeout.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        QueryOptions { timeout, ..self }
    }
}

/// One decoded resource record of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower-case, absolute (`"secure.test."`).
    pub name: String,
    /// Type number, see [`rtype`].
    pub rtype: u16,
    /// Class (1 = IN; for OPT the UDP payload size).
    pub class: u16,
    /// TTL (for OPT the extended rcode and flags).
    pub ttl: u32,
    /// The raw RDATA (names in it may be compressed pointers into the message).
    pub rdata: Vec<u8>,
}

impl Record {
    /// For an RRSIG, the type it covers.
    pub fn covered_type(&self) -> Option<u16> {
        (self.rtype == rtype::RRSIG && self.rdata.len() >= 2)
            .then(|| u16::from_be_bytes([self.rdata[0], self.rdata[1]]))
    }

    /// For an A or AAAA record, the address.
    pub fn address(&self) -> Option<IpAddr> {
        match (self.rtype, self.rdata.len()) {
            (rtype::A, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                self.rdata[0],
                self.rdata[1],
                self.rdata[2],
                self.rdata[3],
            ))),
            (rtype::AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&self.rdata);
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    }
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Response code, including the EDNS extended bits, see [`rcode`].
    pub rcode: u16,
    /// AA: the answer comes from an authoritative server.
    pub authoritative: bool,
    /// TC: the UDP reply was truncated (never set after the TCP retry).
    pub truncated: bool,
    /// RA: the server offers recursion.
    pub recursion_available: bool,
    /// AD: a validating resolver says every record in the answer and authority sections is secure.
    pub authentic_data: bool,
    /// CD as echoed by the server.
    pub checking_disabled: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section.
    pub authorities: Vec<Record>,
    /// The additional section, without the OPT record.
    pub additionals: Vec<Record>,
    /// The Extended DNS Error (RFC 8914) option, if any: info code and extra text.
    pub extended_error: Option<(u16, String)>,
}

impl Response {
    /// Answer records of type `rtype`.
    pub fn answers_of(&self, rtype: u16) -> impl Iterator<Item = &Record> {
        self.answers.iter().filter(move |r| r.rtype == rtype)
    }

    /// Whether the answer section holds a record of type `rtype`.
    pub fn has_answer(&self, rtype: u16) -> bool {
        self.answers_of(rtype).next().is_some()
    }

    /// Whether the answer section holds an RRSIG covering `rtype`.
    pub fn has_rrsig_for(&self, covered: u16) -> bool {
        self.answers
            .iter()
            .any(|r| r.covered_type() == Some(covered))
    }

    /// A one-line summary for assertion messages: `NOERROR aa ad; answers: MX MX RRSIG(MX)`.
    pub fn summary(&self) -> String {
        let mut s = rcode::name(self.rcode);
        for (set, flag) in [
            (self.authoritative, " aa"),
            (self.truncated, " tc"),
            (self.recursion_available, " ra"),
            (self.authentic_data, " ad"),
            (self.checking_disabled, " cd"),
        ] {
            if set {
                s.push_str(flag);
            }
        }
        let list = |records: &[Record]| {
            records
                .iter()
                .map(|r| match r.covered_type() {
                    Some(c) => format!("{} RRSIG({})", r.name, rtype::name(c)),
                    None => format!("{} {}", r.name, rtype::name(r.rtype)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "; answers: [{}]; authority: [{}]",
            list(&self.answers),
            list(&self.authorities)
        ));
        if let Some((code, text)) = &self.extended_error {
            s.push_str(&format!("; EDE {code} {text:?}"));
        }
        s
    }
}

/// Sends one query for `name`/`qtype` (class IN) to `server` and decodes the reply.
///
/// `server` must be on loopback (127.0.0.0/8 or ::1). A truncated UDP reply is retried over TCP.
pub fn query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    options: QueryOptions,
) -> Result<Response, LabError> {
    let what = format!("{} {}", absolute(name), rtype::name(qtype));
    let fail = |detail: String| LabError::Query {
        what: what.clone(),
        server,
        detail,
    };
    if !server.ip().is_loopback() {
        return Err(fail(
            "refusing to query a server outside 127.0.0.0/8 and ::1".into(),
        ));
    }
    let id = next_id();
    let packet = encode_query(id, name, qtype, options).map_err(fail)?;
    let deadline = crate::deadline(options.timeout);
    let reply = udp_exchange(server, &packet, id, deadline).map_err(fail)?;
    let response = decode_response(&reply, id).map_err(fail)?;
    if !response.truncated {
        return Ok(response);
    }
    let reply = tcp_exchange(server, &packet, deadline).map_err(fail)?;
    decode_response(&reply, id).map_err(fail)
}

fn absolute(name: &str) -> String {
    let n = name.trim().trim_end_matches('.');
    format!("{}.", n.to_ascii_lowercase())
}

fn next_id() -> u16 {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = nanos ^ (std::process::id() << 7);
    (mix as u16) ^ ((mix >> 16) as u16) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed)
}

/// Encodes a name in wire format (no compression). Accepts relative or absolute names.
pub(crate) fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let trimmed = name.trim().trim_end_matches('.');
    let start = out.len();
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("bad label in name {name:?}"));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > 255 {
        return Err(format!("name too long: {name:?}"));
    }
    Ok(())
}

fn encode_query(id: u16, name: &str, qtype: u16, o: QueryOptions) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    let mut flags: u16 = 0;
    if o.recursion_desired {
        flags |= 0x0100;
    }
    if o.authentic_data {
        flags |= 0x0020;
    }
    if o.checking_disabled {
        flags |= 0x0010;
    }
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // QD=1, AN=0, NS=0, AR=1 (OPT)
    encode_name(name, &mut p)?;
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // IN
    // OPT: root owner, type 41, payload 1232, ext-rcode 0, version 0, DO flag, no options.
    p.push(0);
    p.extend_from_slice(&rtype::OPT.to_be_bytes());
    p.extend_from_slice(&1232u16.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&(if o.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    Ok(p)
}

fn udp_exchange(
    server: SocketAddr,
    packet: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Vec<u8>, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("connect: {e}"))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err("timed out (UDP)".into());
        }
        socket.send(packet).map_err(|e| format!("send: {e}"))?;
        let resend_at = (now + Duration::from_secs(1)).min(deadline);
        loop {
            let wait = resend_at.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(wait))
                .map_err(|e| format!("set timeout: {e}"))?;
            match socket.recv(&mut buf) {
                Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    return Ok(buf[..n].to_vec());
                }
                Ok(_) => continue, // a stale reply to an earlier send
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    return Err("connection refused (no server on that address yet)".into());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }
}

fn tcp_exchange(server: SocketAddr, packet: &[u8], deadline: Instant) -> Result<Vec<u8>, String> {
    let remaining = |what: &str| {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(format!("timed out (TCP {what})"))
        } else {
            Ok(d)
        }
    };
    let mut stream = TcpStream::connect_timeout(&server, remaining("connect")?)
        .map_err(|e| format!("TCP connect: {e}"))?;
    stream
        .set_write_timeout(Some(remaining("write")?))
        .map_err(|e| format!("TCP: {e}"))?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    stream
        .write_all(&framed)
        .map_err(|e| format!("TCP write: {e}"))?;
    stream
        .set_read_timeout(Some(remaining("read")?))
        .map_err(|e| format!("TCP: {e}"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("TCP read: {e}"))?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("TCP read: {e}"))?;
    Ok(reply)
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.msg.get(self.pos).ok_or("reply truncated")?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("reply truncated")?;
        let b = self.msg.get(self.pos..end).ok_or("reply truncated")?;
        self.pos = end;
        Ok(b)
    }

    /// Reads a possibly compressed name, lower-cased and absolute.
    fn name(&mut self) -> Result<String, String> {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = self.pos;
        let mut jumped = false;
        for _ in 0..256 {
            let len = *self.msg.get(pos).ok_or("name runs past the reply")? as usize;
            match len {
                0 => {
                    if !jumped {
                        self.pos = pos + 1;
                    }
                    let mut name = labels.join(".");
                    name.push('.');
                    return Ok(if labels.is_empty() { ".".into() } else { name });
                }
                l if l & 0xc0 == 0xc0 => {
                    let low = *self.msg.get(pos + 1).ok_or("name runs past the reply")?;
                    if !jumped {
                        self.pos = pos + 2;
                    }
                    jumped = true;
                    pos = ((l & 0x3f) << 8) | low as usize;
                }
                l if l < 64 => {
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + l)
                        .ok_or("name runs past the reply")?;
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    pos += 1 + l;
                }
                _ => return Err("bad label type in name".into()),
            }
        }
        Err("name compression loop".into())
    }

    fn record(&mut self) -> Result<Record, String> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = self.u16()? as usize;
        let rdata = self.bytes(len)?.to_vec();
        Ok(Record {
            name,
            rtype,
            class,
            ttl,
            rdata,
        })
    }
}

fn decode_response(msg: &[u8], id: u16) -> Result<Response, String> {
    let mut r = Reader { msg, pos: 0 };
    if r.u16()? != id {
        return Err("reply with the wrong id".into());
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("reply is not a response (QR=0)".into());
    }
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..counts[0] {
        r.name()?;
        r.u16()?;
        r.u16()?;
    }
    let mut sections: [Vec<Record>; 3] = Default::default();
    for (section, &count) in sections.iter_mut().zip(&counts[1..]) {
        for _ in 0..count {
            section.push(r.record()?);
        }
    }
    let [answers, authorities, mut additionals] = sections;
    let mut rcode = flags & 0x000f;
    let mut extended_error = None;
    if let Some(i) = additionals.iter().position(|rec| rec.rtype == rtype::OPT) {
        let opt = additionals.remove(i);
        rcode |= ((opt.ttl >> 24) as u16) << 4;
        let mut o = Reader {
            msg: &opt.rdata,
            pos: 0,
        };
        while o.pos + 4 <= opt.rdata.len() {
            let code = o.u16()?;
            let len = o.u16()? as usize;
            let data = o.bytes(len)?;
            if code == 15 && data.len() >= 2 {
                let info = u16::from_be_bytes([data[0], data[1]]);
                extended_error = Some((info, String::from_utf8_lossy(&data[2..]).into_owned()));
            }
        }
    }
    Ok(Response {
        rcode,
        authoritative: flags & 0x0400 != 0,
        truncated: flags & 0x0200 != 0,
        recursion_available: flags & 0x0080 != 0,
        authentic_data: flags & 0x0020 != 0,
        checking_disabled: flags & 0x0010 != 0,
        answers,
        authorities,
        additionals,
        extended_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_query_with_do() {
        let q = encode_query(
            0x1234,
            "Secure.test.",
            rtype::MX,
            QueryOptions::recursive_dnssec(),
        )
        .unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x20]);
        assert_eq!(&q[12..25], b"\x06Secure\x04test\x00");
        assert_eq!(&q[25..29], &[0, 15, 0, 1]);
        // OPT with DO.
        assert_eq!(&q[29..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        assert!(encode_query(1, "a..b", rtype::A, QueryOptions::recursive()).is_err());
        let root = encode_query(1, ".", rtype::SOA, QueryOptions::authoritative()).unwrap();
        assert_eq!(&root[12..17], &[0, 0, 6, 0, 1]);
    }

    #[test]
    fn decodes_compressed_names_and_edns() {
        // Reply to "a.test. A": answer with a compression pointer to the question name,
        // an OPT with extended rcode bits and an EDE option.
        let mut m = vec![0xab, 0xcd, 0x81, 0xa2, 0, 1, 0, 1, 0, 0, 0, 1];
        m.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9]);
        m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 1, 0, 0x80, 0]);
        m.extend_from_slice(&[0, 8, 0, 15, 0, 4, 0, 6, b'h', b'i']);
        let r = decode_response(&m, 0xabcd).unwrap();
        assert_eq!(r.rcode, 2 | 16);
        assert!(r.authentic_data && r.recursion_available && !r.authoritative);
        assert_eq!(r.answers[0].name, "a.test.");
        assert_eq!(r.answers[0].address(), Some("127.0.0.9".parse().unwrap()));
        assert_eq!(r.extended_error, Some((6, "hi".into())));
        assert!(r.additionals.is_empty());
        assert!(decode_response(&m, 1).is_err());
        assert!(decode_response(&m[..20], 0xabcd).is_err());
    }

    #[test]
    fn refuses_non_loopback_servers() {
        let err = query(
            "192.0.2.1:53".parse().unwrap(),
            "x.test",
            rtype::A,
            QueryOptions::recursive(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }

    #[test]
    fn type_names() {
        assert_eq!(rtype::from_name("tlsa"), Some(rtype::TLSA));
        assert_eq!(rtype::from_name("TYPE65"), Some(65));
        assert_eq!(rtype::from_name("bogus"), None);
        assert_eq!(rtype::name(rtype::NSEC3), "NSEC3");
        assert_eq!(rtype::name(65), "TYPE65");
    }
}
