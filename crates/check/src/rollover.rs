//! Is it safe to switch to the next key? The assessment behind `danemta tlsa rollover`
//! (RFC 7671 §8.1): the TLSA RRset must hold the records of both the current and the next key
//! at every authoritative server, and then stay so for at least twice its TTL, so that no
//! cache anywhere still holds an RRset without the next key when the server switches.
//!
//! Pure: the caller asks the servers ([`dns::authoritative::ask_all`]) and remembers since
//! when every server publishes both records ([`Remembered`]).

use dane::Tlsa;
use dns::authoritative::ServerAnswer;
use dns::{DnsName, Record};
use serde::{Deserialize, Serialize};

/// Where the rollover stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Not every server publishes both records yet.
    Publish,
    /// Every server does; wait until `safe_at`.
    Wait,
    /// Safe to switch keys; afterwards remove the old record.
    Safe,
    /// Some server did not answer: cannot tell.
    Unknown,
}

/// What is remembered between runs: since when every server publishes both records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remembered {
    /// The TLSA owner name.
    pub owner: String,
    /// The current key's record.
    pub current: String,
    /// The next key's record.
    pub next: String,
    /// Seconds since the epoch when every server was first seen publishing both.
    pub both_since: u64,
}

/// One authoritative server's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerView {
    /// The name server.
    pub server: DnsName,
    /// The address asked.
    pub address: std::net::IpAddr,
    /// The TTL of its TLSA RRset.
    pub ttl: Option<u32>,
    /// Whether it publishes the current key's record.
    pub current: bool,
    /// Whether it publishes the next key's record.
    pub next: bool,
    /// Why it gave no answer.
    pub error: Option<String>,
}

/// The assessment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// Where the rollover stands.
    pub stage: Stage,
    /// The longest TTL any server gives the RRset.
    pub ttl: u32,
    /// When it is (or was) safe to switch, seconds since the epoch; once every server
    /// publishes both records.
    pub safe_at: Option<u64>,
    /// Each server's view.
    pub servers: Vec<ServerView>,
    /// What to remember for the next run: `Some` once every server publishes both (keep
    /// it), `None` otherwise (forget anything remembered, except when the servers could not
    /// all be asked).
    pub remember: Option<Remembered>,
}

/// RFC 7671 §8.1: assesses the switch from `current` to `next` at `owner` from the servers'
/// `answers`, what was `remembered` from earlier runs (ignored unless it is about the same
/// owner and records), and the time `now` (seconds since the epoch).
pub fn assess(
    owner: &DnsName,
    current: &Tlsa,
    next: &Tlsa,
    answers: &[ServerAnswer],
    remembered: Option<&Remembered>,
    now: u64,
) -> Assessment {
    let has = |a: &ServerAnswer, t: &Tlsa| {
        a.records
            .iter()
            .any(|r| matches!(r, Record::Tlsa(x) if x == t))
    };
    let servers: Vec<ServerView> = answers
        .iter()
        .map(|a| ServerView {
            server: a.server.clone(),
            address: a.address,
            ttl: a.ttl,
            current: has(a, current),
            next: has(a, next),
            error: a.error.clone(),
        })
        .collect();
    let ttl = answers.iter().filter_map(|a| a.ttl).max().unwrap_or(0);
    let same = |r: &&Remembered| {
        r.owner == owner.as_str() && r.current == current.to_string() && r.next == next.to_string()
    };
    let unanswered = servers.iter().any(|s| s.error.is_some());
    let all_both = !servers.is_empty() && servers.iter().all(|s| s.current && s.next);
    if unanswered {
        return Assessment {
            stage: Stage::Unknown,
            ttl,
            safe_at: None,
            servers,
            remember: remembered.filter(same).cloned(),
        };
    }
    if !all_both {
        return Assessment {
            stage: Stage::Publish,
            ttl,
            safe_at: None,
            servers,
            remember: None,
        };
    }
    let remember = remembered
        .filter(same)
        .cloned()
        .unwrap_or_else(|| Remembered {
            owner: owner.to_string(),
            current: current.to_string(),
            next: next.to_string(),
            both_since: now,
        });
    let safe_at = remember.both_since + 2 * u64::from(ttl);
    Assessment {
        stage: if now >= safe_at {
            Stage::Safe
        } else {
            Stage::Wait
        },
        ttl,
        safe_at: Some(safe_at),
        servers,
        remember: Some(remember),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";
    const NEXT: &str = "3 1 1 0202020202020202020202020202020202020202020202020202020202020202";

    fn answer(records: &[&str], ttl: u32) -> ServerAnswer {
        ServerAnswer {
            server: "ns1.example.test".parse().unwrap(),
            address: "192.0.2.53".parse().unwrap(),
            records: records
                .iter()
                .map(|r| Record::Tlsa(r.parse().unwrap()))
                .collect(),
            ttl: Some(ttl),
            error: None,
        }
    }

    fn run(answers: &[ServerAnswer], remembered: Option<&Remembered>, now: u64) -> Assessment {
        assess(
            &"_25._tcp.mx.example.test".parse().unwrap(),
            &CURRENT.parse().unwrap(),
            &NEXT.parse().unwrap(),
            answers,
            remembered,
            now,
        )
    }

    #[test]
    fn stages_follow_publication_and_twice_the_ttl() {
        // One server still lacks the next key.
        let a = run(
            &[answer(&[CURRENT, NEXT], 300), answer(&[CURRENT], 300)],
            None,
            1000,
        );
        assert_eq!((a.stage, a.remember), (Stage::Publish, None));
        // Both everywhere: remember now, wait twice the TTL.
        let both = [answer(&[CURRENT, NEXT], 300), answer(&[NEXT, CURRENT], 600)];
        let a = run(&both, None, 1000);
        assert_eq!(a.stage, Stage::Wait);
        assert_eq!(a.safe_at, Some(1000 + 2 * 600));
        let since = a.remember.expect("remembered");
        assert_eq!(since.both_since, 1000);
        // Later runs count from then.
        assert_eq!(run(&both, Some(&since), 2199).stage, Stage::Wait);
        assert_eq!(run(&both, Some(&since), 2200).stage, Stage::Safe);
    }

    #[test]
    fn a_silent_server_means_unknown_and_other_keys_are_not_remembered() {
        let mut silent = answer(&[], 300);
        silent.error = Some("timed out".into());
        let since = Remembered {
            owner: "_25._tcp.mx.example.test".into(),
            current: CURRENT.into(),
            next: NEXT.into(),
            both_since: 5,
        };
        let a = run(&[answer(&[CURRENT, NEXT], 300), silent], Some(&since), 1000);
        assert_eq!(a.stage, Stage::Unknown);
        assert_eq!(a.remember, Some(since.clone()), "kept for the next run");
        // A memory about another next key does not count.
        let other = Remembered {
            next: CURRENT.into(),
            ..since
        };
        let a = run(&[answer(&[CURRENT, NEXT], 300)], Some(&other), 1000);
        assert_eq!((a.stage, a.safe_at), (Stage::Wait, Some(1600)));
        // No servers at all is never "published everywhere".
        assert_eq!(run(&[], None, 1000).stage, Stage::Publish);
    }
}
