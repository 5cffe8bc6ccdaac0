//! The probe cache of a scan: one STARTTLS probe per address, port and SNI name, and one
//! comparison of the authoritative servers per TLSA owner, however many domains share them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns::{DnsName, Resolver};
use tokio::sync::{OnceCell, Semaphore};

use super::findings::ns_findings;
use super::model::Finding;
use crate::probe::{Presented, ProbeConfig, connect};

/// Probes shared by every domain of a scan: hosting is concentrated, so one probe per
/// address, port and SNI name serves all the domains that share an MX host.
#[derive(Default)]
pub struct ProbeCache {
    entries: Mutex<HashMap<ProbeKey, Arc<OnceCell<Presented>>>>,
    per_address: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    /// Comparisons of the authoritative servers, per TLSA owner name.
    servers: Mutex<HashMap<DnsName, Arc<OnceCell<Vec<Finding>>>>>,
}

/// Connections at once to one address: a scan must not look like an attack on a provider
/// that hosts thousands of the domains.
const PER_ADDRESS: usize = 2;

/// Address, port and SNI name: what makes two probes the same.
type ProbeKey = (IpAddr, u16, String);

impl ProbeCache {
    pub(crate) async fn get(
        &self,
        address: IpAddr,
        port: u16,
        sni: &str,
        cfg: &ProbeConfig,
    ) -> Presented {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .entry((address, port, sni.to_owned()))
                .or_default()
                .clone()
        };
        let limit = {
            let mut limits = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(address)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_ADDRESS)))
                .clone()
        };
        cell.get_or_init(|| async {
            let _permit = limit.acquire().await;
            connect(address, port, sni, cfg).await
        })
        .await
        .clone()
    }

    /// The findings about `owner`'s authoritative servers, asked once per scan.
    pub(crate) async fn servers<R: Resolver>(
        &self,
        resolver: &R,
        owner: &DnsName,
        timeout: Duration,
    ) -> Vec<Finding> {
        let cell = {
            let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
            servers.entry(owner.clone()).or_default().clone()
        };
        cell.get_or_init(|| async {
            let answers =
                dns::authoritative::ask_all(resolver, owner, dns::RecordType::Tlsa, timeout).await;
            ns_findings(owner, &answers)
        })
        .await
        .clone()
    }

    /// How many distinct probes were made.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none was made.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
