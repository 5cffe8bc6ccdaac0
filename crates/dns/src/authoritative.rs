//! Asking every authoritative server of a zone directly (RD=0): what each one publishes at a
//! name, and with which TTL. A TLSA change is only safe to rely on once every server
//! publishes it (RFC 7671 §8.1); servers that disagree break some senders and not others.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::answer::build;
use crate::lookup::{Outcome, Record, RecordType};
use crate::name::DnsName;
use crate::resolver::Resolver;
use crate::status::Status;
use crate::wire;

/// What one authoritative server answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerAnswer {
    /// The server's name (NS record).
    pub server: DnsName,
    /// The address asked.
    pub address: IpAddr,
    /// The records of the type asked for (empty for a denial).
    pub records: Vec<Record>,
    /// Their TTL (the smallest), when there are records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Why there is no answer, when the server failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The zone holding `name`: the closest enclosing name with NS records, and their names.
pub async fn zone_of<R: Resolver>(
    resolver: &R,
    name: &DnsName,
) -> Result<(DnsName, Vec<DnsName>), String> {
    let mut candidate = name.as_str().to_owned();
    loop {
        let zone: DnsName = candidate.parse().map_err(|e| format!("{e}"))?;
        let ns = resolver.lookup(&zone, RecordType::Ns).await;
        let outcome = ns
            .require(Status::USABLE)
            .map_err(|status| format!("NS lookup for {zone} is {status}"))?;
        if let Outcome::Records(records) = outcome {
            let servers: Vec<DnsName> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Ns(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            // An answer that followed a CNAME is not the zone apex.
            if !servers.is_empty() && ns.cnames().is_empty() {
                return Ok((zone, servers));
            }
        }
        match candidate.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => candidate = parent.to_owned(),
            _ => return Err(format!("no zone with NS records above {name}")),
        }
    }
}

/// Asks every address of every authoritative server of `name`'s zone for `name`/`rtype`.
pub async fn ask_all<R: Resolver>(
    resolver: &R,
    name: &DnsName,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Vec<ServerAnswer>, String> {
    let (_, servers) = zone_of(resolver, name).await?;
    let mut targets = Vec::new();
    for server in servers {
        for family in [RecordType::A, RecordType::Aaaa] {
            let lookup = resolver.lookup(&server, family).await;
            // Any address will do: the answers are compared, not trusted.
            for record in lookup.records_if(Status::ANY).unwrap_or_default() {
                if let Record::Address(ip) = record {
                    targets.push((server.clone(), *ip));
                }
            }
        }
    }
    if targets.is_empty() {
        return Err(format!("no address for any name server of {name}"));
    }
    Ok(join_all(
        targets
            .into_iter()
            .map(|(server, address)| ask(server, address, name, rtype, timeout)),
    )
    .await)
}

async fn ask(
    server: DnsName,
    address: IpAddr,
    name: &DnsName,
    rtype: RecordType,
    timeout: Duration,
) -> ServerAnswer {
    let mut out = ServerAnswer {
        server,
        address,
        records: Vec::new(),
        ttl: None,
        error: None,
    };
    let request = match wire::request(name, rtype, false) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let addr = SocketAddr::new(address, 53);
    let udp = wire::udp(addr, timeout);
    let response =
        match tokio::time::timeout(timeout * 2, wire::exchange(&udp, addr, request, timeout)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                out.error = Some(e.to_string());
                return out;
            }
            Err(_) => {
                out.error = Some("timed out".into());
                return out;
            }
        };
    // Authoritative data, not validated here: the statuses do not matter, only the RRset.
    let lookup = build(
        name,
        rtype,
        response.metadata.response_code,
        &response.answers,
        |_| Status::Insecure,
        Status::Insecure,
    );
    // Asked of an authority directly: nothing is validated, everything is compared.
    match lookup.require(Status::ANY).unwrap_or(&Outcome::NoData) {
        Outcome::Records(records) => {
            out.records = records.clone();
            out.ttl = Some(lookup.ttl());
        }
        Outcome::Failed(f) => out.error = Some(f.to_string()),
        Outcome::NoData | Outcome::NxDomain => {}
    }
    out
}
