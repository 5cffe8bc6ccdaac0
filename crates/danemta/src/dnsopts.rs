//! The options every command that touches DNS shares (PRODUCT.md), and setting up the
//! resolver back-end from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dns::{Backend, ResolverSpec};

/// Where DNSSEC answers come from.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// validating (in-process DNSSEC validation, upstream from /etc/resolv.conf),
    /// validating@IP:PORT (same, asking that upstream; it must pass DNSSEC records through),
    /// or trust-ad@IP:PORT (trust the AD bit of a validating resolver, which should be on
    /// loopback).
    #[arg(long, value_name = "SPEC", default_value = "validating")]
    pub resolver: ResolverSpec,
    /// DS or DNSKEY records of the root zone (zone-file syntax) to trust instead of the IANA
    /// root anchors, e.g. for a private test root.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// A signed domain whose DNSSEC is known to be broken, to treat as unsigned (a negative
    /// trust anchor, RFC 7646): DANE is not used at or below it. Repeat for several. Only for
    /// the validating resolver; with trust-ad, configure the resolver (Unbound:
    /// domain-insecure).
    #[arg(long, value_name = "DOMAIN")]
    pub negative_trust_anchor: Vec<dns::DnsName>,
    /// Seconds to wait for each DNS answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub dns_timeout: u64,
}

impl DnsArgs {
    /// Opens the back-end; must run inside the tokio runtime.
    pub async fn backend(&self) -> Result<Backend, dns::SetupError> {
        if self.resolver.trusts_ad_off_loopback() {
            eprintln!(
                "danemta: WARNING: trusting the AD bit of {}, which is not on loopback: \
                 anyone on the network path can forge it (RFC 7672 §2.1.1)",
                self.resolver
            );
        }
        let mut backend = Backend::open(
            &self.resolver,
            self.trust_anchor.as_deref(),
            Duration::from_secs(self.dns_timeout.max(1)),
        )
        .await?;
        backend.set_negative_trust_anchors(&self.negative_trust_anchor);
        Ok(backend)
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
