//! Route discovery throughput against the DNSSEC lab: every lab domain resolved with a cold
//! and then a warm answer cache, for each back-end. Prints routes per second and DNS queries
//! sent upstream per route. (The lab's Unbound caches too; "cold" means our cache is empty.)

use std::time::{Duration, Instant};

use danemta_lab::{Lab, standard_zones};
use dns::{Backend, DnsName, NextHop, ResolverSpec, discover};
use futures_util::future::join_all;

const COLD_ROUNDS: usize = 5;
const WARM_ROUNDS: usize = 50;

async fn backend(lab: &Lab, spec: &ResolverSpec) -> Backend {
    Backend::open(spec, Some(lab.trust_anchor_file()), Duration::from_secs(3))
        .await
        .expect("back-end")
}

async fn round(backend: &Backend, hops: &[NextHop]) {
    join_all(hops.iter().map(|h| discover(backend, h))).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lab = Lab::standard().expect("the DNSSEC lab (needs nsd, unbound, ldnsutils and root)");
    let mut domains: Vec<String> = standard_zones().iter().map(|z| z.name.clone()).collect();
    domains.extend(["mail.alias.test".to_owned(), "www.alias.test".to_owned()]);
    let hops: Vec<NextHop> = domains
        .iter()
        .map(|d| NextHop::Domain {
            domain: d.parse::<DnsName>().unwrap(),
            port: 25,
        })
        .collect();
    let specs = [
        (
            "validating",
            ResolverSpec::Validating(Some(lab.plain_resolver())),
        ),
        ("trust-ad", ResolverSpec::TrustAd(lab.validating_resolver())),
    ];
    println!(
        "{:<11} {:<5} {:>7} {:>10} {:>10} {:>14}",
        "back-end", "cache", "routes", "seconds", "routes/s", "queries/route"
    );
    for (label, spec) in &specs {
        // Warm the lab's own Unbound caches so both back-ends start alike.
        round(&backend(&lab, spec).await, &hops).await;

        let (mut elapsed, mut queries) = (Duration::ZERO, 0);
        for _ in 0..COLD_ROUNDS {
            let b = backend(&lab, spec).await;
            let start = Instant::now();
            round(&b, &hops).await;
            elapsed += start.elapsed();
            queries += b.queries_sent();
        }
        report(label, "cold", hops.len() * COLD_ROUNDS, elapsed, queries);

        let b = backend(&lab, spec).await;
        round(&b, &hops).await;
        let before = b.queries_sent();
        let start = Instant::now();
        for _ in 0..WARM_ROUNDS {
            round(&b, &hops).await;
        }
        report(
            label,
            "warm",
            hops.len() * WARM_ROUNDS,
            start.elapsed(),
            b.queries_sent() - before,
        );
    }
}

fn report(label: &str, cache: &str, routes: usize, elapsed: Duration, queries: u64) {
    println!(
        "{label:<11} {cache:<5} {routes:>7} {:>10.3} {:>10.0} {:>14.2}",
        elapsed.as_secs_f64(),
        routes as f64 / elapsed.as_secs_f64(),
        queries as f64 / routes as f64
    );
}
