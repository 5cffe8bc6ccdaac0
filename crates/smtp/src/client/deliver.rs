//! Delivering one message along a route: which hosts to try, how each connection must be
//! secured (policy level × the host's DANE state), and what each attempt means for each
//! recipient.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dane::{ReferenceName, Tlsa};
use dns::route::{Candidate, DaneState, DaneTrust};
use dns::{DnsName, Route};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;

use crate::envelope::HeloName;
use crate::message::{BodySource, Message};
use crate::outcome::{
    Attempt, DaneReport, DaneStatus, Delivery, Failure, Fate, LookupStatus, Mechanism,
    RecipientOutcome, RemoteMta, Response, Rule, Security, ServerReply,
};
use crate::policy::Level;
use crate::reply::Reply;
use crate::requiretls::TlsRequest;
use crate::resume::SessionCache;
use crate::session::{
    AuthUnavailable, Envelope, RequireTlsRefusal, Resumption, Session, SessionError, Stage,
    Timeouts, TlsInfo, Transaction,
};
use crate::tls::{Auth, Mode, PeerAuth};

/// Most addresses connected to per delivery, over all hosts of the route (Postfix
/// `smtp_mx_address_limit`, whose default this is). RFC 5321 §5.1 allows such a limit and asks
/// for at least two.
pub const MAX_ADDRESSES: usize = 5;

/// Most SMTP sessions per delivery: connections that got through EHLO (and the TLS handshake,
/// when there was one) without delivering (Postfix `smtp_mx_session_limit`, whose default
/// this is).
pub const MAX_SESSIONS: usize = 2;

/// How much one delivery may try before it defers: a hostile domain with thousands of MX
/// hosts or addresses must not tie a delivery up (or make it a port scanner). Hosts skipped
/// before connecting cost nothing and do not count; a plaintext retry after a failed
/// opportunistic handshake is the same address and counts once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Addresses connected to, at most ([`MAX_ADDRESSES`] by default; 0 tries none).
    pub addresses: usize,
    /// Sessions that got through EHLO and TLS, at most ([`MAX_SESSIONS`] by default).
    pub sessions: usize,
}

impl Limits {
    /// Which limit, if any, forbids another connection after `tried` addresses and
    /// `sessions` sessions (RFC 5321 §5.1), as the outcome names it ("5 addresses").
    pub fn reached(&self, tried: usize, sessions: usize) -> Option<String> {
        if tried >= self.addresses {
            Some(format!("{} addresses", self.addresses))
        } else if sessions >= self.sessions {
            Some(format!("{} sessions", self.sessions))
        } else {
            None
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            addresses: MAX_ADDRESSES,
            sessions: MAX_SESSIONS,
        }
    }
}

/// How to deliver: policy and client settings.
#[derive(Clone)]
pub struct Config {
    /// Our name in EHLO.
    pub helo_name: HeloName,
    /// The destination's TLS policy level.
    pub level: Level,
    /// Protocol timeouts.
    pub timeouts: Timeouts,
    /// The TLS crypto provider.
    pub provider: Arc<CryptoProvider>,
    /// For `fingerprint`: the accepted digests, as DANE-EE records (`3 0 1`, `3 1 1`, …).
    pub fingerprints: Vec<Tlsa>,
    /// For `verify` and `secure`: the PKIX trust anchors.
    pub roots: Arc<RootCertStore>,
    /// For `verify` and `secure`: the names the certificate must carry; when empty, the MX
    /// host name (`verify`) or the next-hop domain (`secure`).
    pub match_names: Vec<ReferenceName>,
    /// AUTH PLAIN credentials (submission), sent only over TLS to a `verified` peer: DANE
    /// under a secure SRV/MX lookup, PKIX against the next-hop domain (or configured names, or
    /// the host name from a secure lookup), or a configured fingerprint. A host that cannot be
    /// verified that way is not even connected to.
    pub credentials: Option<(String, String)>,
    /// How many addresses and sessions one delivery may use.
    pub limits: Limits,
    /// TLS sessions to resume, shared by the connections of a relay (RFC 8446 §2.2, RFC
    /// 5077), keyed by host, address, port, SNI, mode and everything the authentication
    /// depends on (RFC 7672 §3.1: the TLSA RRset); `None` resumes nothing.
    pub sessions: Option<Arc<SessionCache>>,
    /// Whether [`Config::level`] was configured for this destination (a `[[policy]]` entry,
    /// `send --policy`): it then overrides MTA-STS, as Postfix's policy table does.
    pub level_configured: bool,
    /// The recipient domain's MTA-STS policy (RFC 8461), found by the caller. It applies at
    /// level `dane` when the level is not configured, to hosts without secure TLSA records
    /// (RFC 8461 §2: where DANE applies, DANE decides).
    pub mta_sts: Option<Arc<sts::Policy>>,
}

/// How to treat one host: connect under a mode, or skip it; either way the rule and the
/// mechanism that decided.
enum Plan {
    Connect {
        mode: Mode,
        rule: Rule,
        mechanism: Mechanism,
    },
    Skip {
        reason: String,
        rule: Rule,
        mechanism: Mechanism,
    },
}

/// Policy level × DANE state × MTA-STS policy → what a connection to this host must do
/// (PRODUCT.md policy levels; RFC 7672 §2.2 for `dane` and `dane-only`; RFC 8461 §2, §4 and
/// §5 for MTA-STS, which applies only where DANE does not).
fn plan(cfg: &Config, c: &Candidate, next_hop: &DnsName) -> Plan {
    let dane = |records: &Vec<Tlsa>| {
        Mode::Required(Auth::Dane {
            records: records.clone(),
            names: c.reference_names.clone(),
        })
    };
    let pkix = |names: Vec<ReferenceName>| {
        Mode::Required(Auth::Pkix {
            roots: cfg.roots.clone(),
            names,
        })
    };
    let configured = |default: &DnsName| {
        if cfg.match_names.is_empty() {
            default.reference_name().into_iter().collect()
        } else {
            cfg.match_names.clone()
        }
    };
    let table = |mode| Plan::Connect {
        mode,
        rule: Rule::Policy,
        mechanism: Mechanism::PolicyTable,
    };
    let by_dane = |mode, rule| Plan::Connect {
        mode,
        rule,
        mechanism: Mechanism::Dane,
    };
    match (cfg.level, &c.dane) {
        (Level::None, _) => table(Mode::Plaintext),
        (Level::May, _) => table(Mode::Opportunistic),
        (Level::Encrypt, _) => table(Mode::Required(Auth::None)),
        (Level::Fingerprint, _) => {
            table(Mode::Required(Auth::Fingerprint(cfg.fingerprints.clone())))
        }
        (Level::Verify, _) => table(pkix(configured(&c.name))),
        (Level::Secure, _) => table(pkix(configured(next_hop))),
        (Level::Dane | Level::DaneOnly, DaneState::HostUnusable { reason }) => Plan::Skip {
            reason: reason.clone(),
            rule: Rule::HostUnusable,
            mechanism: Mechanism::Dane,
        },
        (Level::Dane | Level::DaneOnly, DaneState::Usable { records }) => {
            by_dane(dane(records), Rule::DaneMandatory)
        }
        (Level::DaneOnly, _) => Plan::Skip {
            reason: format!(
                "no usable secure TLSA records for {} ({})",
                c.name,
                c.dane.code()
            ),
            rule: Rule::DaneOnly,
            mechanism: Mechanism::Dane,
        },
        (Level::Dane, DaneState::Unusable) => {
            by_dane(Mode::Required(Auth::None), Rule::DaneUnusableRecords)
        }
        (Level::Dane, DaneState::NotApplicable { .. }) => match cfg.mta_sts.as_deref() {
            Some(policy) if !cfg.level_configured => by_mta_sts(policy, c, pkix),
            // The configured level overrides the domain's MTA-STS policy.
            Some(_) => Plan::Connect {
                mode: Mode::Opportunistic,
                rule: Rule::Policy,
                mechanism: Mechanism::PolicyTable,
            },
            None => Plan::Connect {
                mode: Mode::Opportunistic,
                rule: Rule::Opportunistic,
                mechanism: Mechanism::Opportunistic,
            },
        },
    }
}

/// MTA-STS for a host without secure TLSA records (RFC 8461 §4, §5): in mode `enforce`, a
/// host that matches no `mx` pattern is not used, and one that does must present a PKIX
/// certificate valid for its own name (§4.2: the MX host name, not the recipient domain);
/// in mode `testing` delivery goes on as without a policy; mode `none` is no policy.
fn by_mta_sts(
    policy: &sts::Policy,
    c: &Candidate,
    pkix: impl Fn(Vec<ReferenceName>) -> Mode,
) -> Plan {
    let opportunistic = |rule, mechanism| Plan::Connect {
        mode: Mode::Opportunistic,
        rule,
        mechanism,
    };
    match policy.mode() {
        sts::Mode::None => opportunistic(Rule::Opportunistic, Mechanism::Opportunistic),
        sts::Mode::Testing => opportunistic(Rule::StsTesting, Mechanism::MtaSts),
        sts::Mode::Enforce if !policy.matches_mx(c.name.as_str()) => Plan::Skip {
            reason: format!(
                "{} matches none of the MTA-STS policy's mx patterns ({})",
                c.name,
                policy
                    .mx()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            rule: Rule::StsMxMismatch,
            mechanism: Mechanism::MtaSts,
        },
        sts::Mode::Enforce => Plan::Connect {
            mode: pkix(c.name.reference_name().into_iter().collect()),
            rule: Rule::StsEnforce,
            mechanism: Mechanism::MtaSts,
        },
    }
}

/// How the sender's RFC 8689 request bears on the plan of one message: the request as
/// delivery applies it. A REQUIRETLS message from the null sender (the bounce of a REQUIRETLS
/// message) is planned as any other: RFC 8689 §5 says its REQUIRETLS "SHOULD NOT cause a
/// bounce message to be discarded even if the next-hop relay does not advertise REQUIRETLS",
/// so it carries the parameter where the connection allows ([`Connection::send`]), and is
/// not held back where it does not.
pub fn effective_request(envelope: &Envelope) -> TlsRequest {
    match envelope.tls_request() {
        TlsRequest::Required if envelope.sender().is_empty() => TlsRequest::Default,
        request => request,
    }
}

/// A host's plan for one message: the policy's [`Plan`], adjusted for the sender's request
/// (RFC 8689), and what it means for REQUIRETLS.
struct MessagePlan {
    plan: Plan,
    /// For a connection: whether a peer authenticated as its mode demands may take a
    /// REQUIRETLS message (RFC 8689 §4.2.1 steps 2 and 4, before the handshake; the
    /// handshake's verdict and the EHLO after it are checked on the connection).
    requiretls: Result<(), RequireTlsRefusal>,
    /// `TLS-Required: No` changed the policy's plan for this host (RFC 8689 §4.2.2).
    relaxed: bool,
    /// For a host skipped on REQUIRETLS's account: why. Such a refusal is a property of the
    /// host as published (no DANE, no MTA-STS, an unsigned MX name), not of the moment.
    refusal: Option<RequireTlsRefusal>,
}

/// The plan of host `c` for a message with the sender's `request` (see
/// [`effective_request`]):
///
/// - [`TlsRequest::Default`]: the policy's [`plan`];
/// - [`TlsRequest::Required`] (RFC 8689 §4.2.1): the policy's plan when its mode authenticates
///   the peer and the host's name is vouched for ([`requiretls_vouched`]); a weaker plan
///   (plaintext, opportunistic, unauthenticated TLS: whether from the domain or from a
///   configured `[[policy]]` level, which never weakens REQUIRETLS) is raised to DANE where
///   the host has usable secure TLSA records, else to PKIX for the MX name where the domain's
///   MTA-STS policy lists it; otherwise the host is skipped with the refusal. A host the
///   policy skips stays skipped (a failed lookup, `dane-only`, an MTA-STS mismatch);
/// - [`TlsRequest::Optional`] (`TLS-Required: No`, RFC 8689 §4.2.2): where the recipient
///   domain's DANE or MTA-STS policy decided (level `dane` not configured for the
///   destination), opportunistic TLS instead, including for a host DANE or MTA-STS would
///   have skipped. A configured `[[policy]]` level (or `dane-only`) is the operator's own
///   policy and is kept, as Postfix keeps it.
fn plan_for(cfg: &Config, c: &Candidate, next_hop: &DnsName, request: TlsRequest) -> MessagePlan {
    let base = plan(cfg, c, next_hop);
    let vouched = |plan: &Plan| match plan {
        Plan::Connect { mode, .. } => requiretls_vouched(cfg, c, mode),
        Plan::Skip { .. } => Err(RequireTlsRefusal::NotAuthenticated(format!(
            "{} is not used",
            c.name
        ))),
    };
    let keep = |plan: Plan| MessagePlan {
        requiretls: vouched(&plan),
        plan,
        relaxed: false,
        refusal: None,
    };
    match request {
        TlsRequest::Default => keep(base),
        TlsRequest::Optional => {
            let recipient_policy = !cfg.level_configured
                && cfg.level == Level::Dane
                && match &base {
                    Plan::Connect {
                        mode, mechanism, ..
                    } => {
                        !matches!(mode, Mode::Opportunistic)
                            && matches!(mechanism, Mechanism::Dane | Mechanism::MtaSts)
                    }
                    Plan::Skip { mechanism, .. } => {
                        matches!(mechanism, Mechanism::Dane | Mechanism::MtaSts)
                    }
                };
            if !recipient_policy {
                return keep(base);
            }
            let mechanism = match &base {
                Plan::Connect { mechanism, .. } | Plan::Skip { mechanism, .. } => *mechanism,
            };
            let plan = Plan::Connect {
                mode: Mode::Opportunistic,
                rule: Rule::TlsRequiredNo,
                mechanism,
            };
            MessagePlan {
                requiretls: vouched(&plan),
                plan,
                relaxed: true,
                refusal: None,
            }
        }
        TlsRequest::Required => {
            let mode = match &base {
                Plan::Skip { .. } => return keep(base),
                Plan::Connect { mode, .. } => mode,
            };
            let raised = if mode.authenticates() {
                base
            } else {
                match &c.dane {
                    // A failed lookup: the host is unusable now, not for good (RFC 7672 §2.2).
                    DaneState::HostUnusable { reason } => {
                        return keep(Plan::Skip {
                            reason: reason.clone(),
                            rule: Rule::HostUnusable,
                            mechanism: Mechanism::Dane,
                        });
                    }
                    DaneState::Usable { records } => Plan::Connect {
                        mode: Mode::Required(Auth::Dane {
                            records: records.clone(),
                            names: c.reference_names.clone(),
                        }),
                        rule: Rule::RequireTls,
                        mechanism: Mechanism::Dane,
                    },
                    DaneState::NotApplicable { .. } if sts_lists(cfg, c) => Plan::Connect {
                        mode: Mode::Required(Auth::Pkix {
                            roots: cfg.roots.clone(),
                            names: c.name.reference_name().into_iter().collect(),
                        }),
                        rule: Rule::RequireTls,
                        mechanism: Mechanism::MtaSts,
                    },
                    _ => {
                        let refusal = RequireTlsRefusal::NotAuthenticated(format!(
                            "{} has no usable secure TLSA records ({}) and no MTA-STS policy \
                             lists it",
                            c.name,
                            c.dane.code()
                        ));
                        return MessagePlan {
                            plan: Plan::Skip {
                                reason: SessionError::RequireTls(refusal.clone()).to_string(),
                                rule: Rule::RequireTls,
                                mechanism: Mechanism::Dane,
                            },
                            requiretls: Err(refusal.clone()),
                            relaxed: false,
                            refusal: Some(refusal),
                        };
                    }
                }
            };
            match vouched(&raised) {
                Ok(()) => keep(raised),
                Err(refusal) => {
                    let mechanism = match &raised {
                        Plan::Connect { mechanism, .. } | Plan::Skip { mechanism, .. } => {
                            *mechanism
                        }
                    };
                    MessagePlan {
                        plan: Plan::Skip {
                            reason: SessionError::RequireTls(refusal.clone()).to_string(),
                            rule: Rule::RequireTls,
                            mechanism,
                        },
                        requiretls: Err(refusal.clone()),
                        relaxed: false,
                        refusal: Some(refusal),
                    }
                }
            }
        }
    }
}

/// Whether the recipient domain's MTA-STS policy (mode `enforce` or `testing`) lists host
/// `c`: the MX host validation of RFC 8461 §4.1, which RFC 8689 §4.2.1 step 2 accepts in
/// place of a DNSSEC-signed MX lookup. A policy in mode `none` lists nothing.
fn sts_lists(cfg: &Config, c: &Candidate) -> bool {
    cfg.mta_sts.as_deref().is_some_and(|p| {
        matches!(p.mode(), sts::Mode::Enforce | sts::Mode::Testing) && p.matches_mx(c.name.as_str())
    })
}

/// Whether a peer authenticated as `mode` demands may take a REQUIRETLS message (RFC 8689
/// §4.2.1), as far as can be told before connecting:
///
/// - step 4: the mode authenticates the server: DANE (RFC 7672), PKIX (RFC 6125), or a
///   configured fingerprint (the operator's pin of that very key);
/// - step 2: the host's name is vouched for: named by a DNSSEC-signed MX lookup or
///   configured by the operator ([`DaneTrust::Verified`]), or listed by the domain's MTA-STS
///   policy. PKIX against names the operator configured (`secure`, or `verify` with `match`)
///   binds the certificate to those names, not to the MX name, so it needs neither.
pub(crate) fn requiretls_vouched(
    cfg: &Config,
    c: &Candidate,
    mode: &Mode,
) -> Result<(), RequireTlsRefusal> {
    let named = c.dane_trust == DaneTrust::Verified || sts_lists(cfg, c);
    match mode {
        Mode::Plaintext | Mode::Opportunistic | Mode::Required(Auth::None) => {
            Err(RequireTlsRefusal::NotAuthenticated(format!(
                "{} would not be authenticated (policy {}, DANE {})",
                c.name,
                cfg.level,
                c.dane.code()
            )))
        }
        Mode::Required(Auth::Fingerprint(_)) => Ok(()),
        Mode::Required(Auth::Pkix { .. })
            if cfg.level == Level::Secure || !cfg.match_names.is_empty() =>
        {
            Ok(())
        }
        Mode::Required(Auth::Dane { .. } | Auth::Pkix { .. }) if named => Ok(()),
        Mode::Required(_) => Err(RequireTlsRefusal::NameNotValidated(c.name.to_string())),
    }
}

/// The security label of a finished handshake (PRODUCT.md security statuses): `plaintext`
/// without TLS; `verified` for PKIX with a name check, a configured fingerprint, or DANE on a
/// host a secure lookup named; `trusted` for DANE on a host an insecure MX/SRV lookup named
/// (RFC 7672 §2.2.1, PRODUCT.md rule 2: the route's `trust` decides, nowhere else);
/// `untrusted` for TLS whose peer nothing authenticated.
///
/// `verified` and `trusted` follow only from a `peer` that carries its proof: a
/// [`dane::Verified`] from the DANE verifier or a [`PkixVerified`](crate::tls::PkixVerified)
/// from the PKIX one, neither of which can be made elsewhere.
pub fn security(
    tls: Option<&TlsInfo>,
    peer: Option<&PeerAuth>,
    mode: &Mode,
    trust: DaneTrust,
) -> Security {
    match (tls, peer, mode) {
        (None, _, _) => Security::Plaintext,
        (Some(_), Some(PeerAuth::Dane(_)), Mode::Required(Auth::Dane { .. })) => match trust {
            DaneTrust::Verified => Security::Verified,
            DaneTrust::Trusted => Security::Trusted,
        },
        (Some(_), Some(PeerAuth::Dane(_)), Mode::Required(_)) => Security::Verified,
        (Some(_), Some(PeerAuth::Pkix(_)), _) => Security::Verified,
        (Some(_), _, _) => Security::Untrusted,
    }
}

/// Whether a peer authenticated as `mode` demands is proven to be the next hop's server, so
/// that credentials may go to it (RFC 6186 §6: without DNSSEC the SRV target is not to be
/// trusted; RFC 7673 §3: DANE for SRV needs a secure SRV lookup). Whether the lookup that
/// named the host was secure is the route's [`DaneTrust`]. `Err` says why not.
fn credentials_may_go(cfg: &Config, c: &Candidate, mode: &Mode) -> Result<(), String> {
    let named_securely = c.dane_trust == DaneTrust::Verified;
    match mode {
        Mode::Plaintext => Err(format!("policy {} sends in plaintext", cfg.level)),
        Mode::Opportunistic | Mode::Required(Auth::None) => Err(format!(
            "{} would not be authenticated: no usable secure TLSA records ({}) and policy {}",
            c.name,
            c.dane.code(),
            cfg.level
        )),
        Mode::Required(Auth::Dane { .. }) if !named_securely => Err(format!(
            "{} would be DANE-authenticated, but it was named by an insecure SRV/MX lookup: \
             it would be `trusted`, not `verified`",
            c.name
        )),
        Mode::Required(Auth::Dane { .. } | Auth::Fingerprint(_)) => Ok(()),
        Mode::Required(Auth::Pkix { .. })
            if named_securely || cfg.level == Level::Secure || !cfg.match_names.is_empty() =>
        {
            Ok(())
        }
        Mode::Required(Auth::Pkix { .. }) => Err(format!(
            "policy {} would check the certificate against {}, a name from an insecure SRV/MX \
             lookup (use policy secure, or --match the domain)",
            cfg.level, c.name
        )),
    }
}

/// Delivers `message` along `route` (the result of route discovery for `next_hop`).
/// `mx_looked_up` tells whether the route came from an MX/SRV lookup (so its status is
/// reported) or from a configured host. One message: [`deliver_many`] with one.
pub async fn deliver(
    route: &Route,
    next_hop: &DnsName,
    mx_looked_up: bool,
    envelope: &Envelope,
    message: &Message,
    cfg: &Config,
) -> Delivery {
    let one = [Outgoing {
        envelope,
        body: message,
    }];
    let mut deliveries = deliver_many(route, next_hop, mx_looked_up, &one, cfg).await;
    deliveries.pop().unwrap_or_else(|| {
        Delivery::new(
            gave_up(envelope.recipients(), "no delivery was made"),
            Vec::new(),
        )
    })
}

/// One message of a batch: its envelope and where its body comes from (a [`Message`] in
/// memory, or a [`BodySource`] that streams a spool file).
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    /// The envelope.
    pub envelope: &'a Envelope,
    /// The body, opened anew for each attempt.
    pub body: &'a dyn BodySource,
}

/// Delivers several messages to one next hop over as few sessions as possible (RFC 5321
/// §4.1.1.5: transactions follow one another on a connection, RSET between them), each with
/// its own outcome, in the order given. See [`deliver_batch`].
pub async fn deliver_many(
    route: &Route,
    next_hop: &DnsName,
    mx_looked_up: bool,
    messages: &[Outgoing<'_>],
    cfg: &Config,
) -> Vec<Delivery> {
    let batch = deliver_batch(route, next_hop, mx_looked_up, messages, cfg, None).await;
    if let Some(connection) = batch.connection {
        connection.close().await;
    }
    batch.deliveries
}

/// What [`deliver_batch`] did: each message's delivery, in the order given, and the
/// connection it leaves open (reusable, idle) for a connection cache.
pub struct Batch {
    /// Each message's outcome.
    pub deliveries: Vec<Delivery>,
    /// The last connection, when it is still reusable.
    pub connection: Option<Connection>,
}

/// Delivers several messages along `route` over as few sessions as possible:
///
/// - the first message walks the route as [`deliver`] does (hosts in order, addresses, the
///   limits, a plaintext retry under opportunistic TLS);
/// - once a transaction ran on a connection, the next messages follow on it, RSET between
///   them (RFC 5321 §4.1.1.5), while it stays reusable;
/// - a connection found dead before a message's transaction began (the RSET failed: 421,
///   closed, timed out) costs that message nothing: it goes over a new connection; a
///   message whose transaction failed on the reused connection (MAIL deferred, a 421, the
///   connection lost mid-DATA) walks the route itself, with that attempt on its record, so
///   it is delivered elsewhere or deferred, never lost (a message cut short without its final
///   dot was not accepted, RFC 5321 §4.1.1.4);
/// - when a walk gives up without any session getting through EHLO and TLS (every address
///   unreachable, every host skipped), the destination is down for all: the messages not yet
///   tried are deferred with the same reason and attempts, without connecting again.
///
/// `reuse` is an idle connection from an earlier batch (a scheduler's cache): it is used only
/// when it was opened under this `cfg`'s level for one of this route's candidates exactly as
/// it stands now (same DANE state, TLSA RRset, reference names and DNSSEC trust) and at one of
/// its addresses; otherwise it is closed. The last connection is returned while reusable.
pub async fn deliver_batch(
    route: &Route,
    next_hop: &DnsName,
    mx_looked_up: bool,
    messages: &[Outgoing<'_>],
    cfg: &Config,
    reuse: Option<Connection>,
) -> Batch {
    let everyone = |fate: Fate, reason: &str| -> Vec<Delivery> {
        messages
            .iter()
            .map(|m| {
                let recipients = m
                    .envelope
                    .recipients()
                    .iter()
                    .map(|address| RecipientOutcome {
                        address: address.clone(),
                        outcome: fate,
                        reply: Response::Local(reason.to_owned()),
                    })
                    .collect();
                Delivery::new(recipients, Vec::new())
            })
            .collect()
    };
    let (mx_dnssec, candidates) = match route {
        Route::Defer { reason, .. } | Route::Bounce { reason, .. } => {
            if let Some(connection) = reuse {
                connection.close().await;
            }
            let fate = match route {
                Route::Bounce { .. } => Fate::Bounced,
                _ => Fate::Deferred,
            };
            return Batch {
                deliveries: everyone(fate, reason),
                connection: None,
            };
        }
        Route::Deliver {
            mx_dnssec,
            candidates,
        } => (*mx_dnssec, candidates),
    };
    let walker = Walker {
        candidates,
        next_hop,
        mx_looked_up,
        mx_dnssec,
        cfg,
    };
    let mut results: Vec<Option<Delivery>> = messages.iter().map(|_| None).collect();
    let mut carried: Vec<Vec<Attempt>> = messages.iter().map(|_| Vec::new()).collect();
    let mut pending: VecDeque<usize> = (0..messages.len()).collect();
    let mut open = match reuse {
        Some(c) if c.fits(candidates, cfg) => Some(c),
        Some(c) => {
            c.close().await;
            None
        }
        None => None,
    };
    loop {
        // Follow on the open connection while it lasts.
        if let Some(mut connection) = open.take() {
            // Messages this connection may not carry (RFC 8689: REQUIRETLS where it does not
            // qualify, or any message `TLS-Required: No` does not relax over one it relaxed):
            // each walks the route for a connection of its own.
            let mut unfit = VecDeque::new();
            while connection.is_reusable()
                && let Some(j) = pending.pop_front()
            {
                let m = &messages[j];
                if !connection.may_carry(m.envelope) {
                    unfit.push_back(j);
                    continue;
                }
                let (mut attempt, result) = connection.send(m.envelope, m.body).await;
                log(&attempt);
                let mta = remote(&connection.candidate, connection.address);
                let next = after_attempt(&connection.mode, &result, m.envelope.recipients(), &mta);
                if result.as_ref().is_err_and(SessionError::before_transaction) {
                    // Dead while idle: this message was not tried; it takes a new connection.
                    pending.push_front(j);
                    break;
                }
                match next {
                    Next::Finish(recipients) => {
                        attempt.delivered = recipients.iter().any(|r| r.outcome == Fate::Delivered);
                        carried[j].push(attempt);
                        results[j] =
                            Some(Delivery::new(recipients, std::mem::take(&mut carried[j])));
                    }
                    Next::RetryPlaintext | Next::NextAddress => {
                        carried[j].push(attempt);
                        pending.push_front(j);
                        break;
                    }
                }
            }
            while let Some(j) = unfit.pop_back() {
                pending.push_front(j);
            }
            if connection.is_reusable() && pending.is_empty() {
                open = Some(connection);
                break;
            }
            connection.close().await;
        }
        let Some(head) = pending.pop_front() else {
            break;
        };
        let walked = walker.walk(&messages[head]).await;
        let mut attempts = std::mem::take(&mut carried[head]);
        attempts.extend(walked.attempts.iter().cloned());
        results[head] = Some(Delivery::new(walked.recipients, attempts));
        if walked.connection.is_none()
            && !walked.attempts.iter().any(|a| a.security != Security::None)
        {
            // Nothing got through EHLO and TLS anywhere: the same for every message planned
            // as this one was (the same RFC 8689 request); the others walk on their own.
            let request = effective_request(messages[head].envelope);
            let (same, others): (VecDeque<usize>, VecDeque<usize>) = pending
                .drain(..)
                .partition(|&j| effective_request(messages[j].envelope) == request);
            for j in same {
                let mut attempts = std::mem::take(&mut carried[j]);
                attempts.extend(walked.attempts.iter().cloned());
                let to = messages[j].envelope.recipients();
                let recipients = match &walked.requiretls_bounce {
                    Some(reply) => bounced(to, reply),
                    None => gave_up(to, &walked.last_reason),
                };
                results[j] = Some(Delivery::new(recipients, attempts));
            }
            pending = others;
            if pending.is_empty() {
                break;
            }
            continue;
        }
        open = walked.connection;
    }
    let deliveries = results
        .into_iter()
        .zip(messages)
        .map(|(d, m)| {
            d.unwrap_or_else(|| {
                Delivery::new(gave_up(m.envelope.recipients(), "not tried"), Vec::new())
            })
        })
        .collect();
    Batch {
        deliveries,
        connection: open,
    }
}

/// The route walk of one message: the hosts of a route in order, as [`deliver`] describes.
struct Walker<'a> {
    candidates: &'a [Candidate],
    next_hop: &'a DnsName,
    mx_looked_up: bool,
    mx_dnssec: dns::Status,
    cfg: &'a Config,
}

/// What a walk ended with: each recipient's fate, the attempts, the connection the message
/// went over when it is still reusable, and the last reason (for messages deferred with it).
struct Walked {
    recipients: Vec<RecipientOutcome>,
    attempts: Vec<Attempt>,
    connection: Option<Connection>,
    last_reason: String,
    /// The walk gave up because no host can take a REQUIRETLS message, for good (RFC 8689
    /// §4.2.1): the reply every recipient bounces with.
    requiretls_bounce: Option<Reply>,
}

impl Walker<'_> {
    async fn walk(&self, m: &Outgoing<'_>) -> Walked {
        let (cfg, candidates, next_hop) = (self.cfg, self.candidates, self.next_hop);
        let envelope = m.envelope;
        let request = effective_request(envelope);
        let mut attempts = Vec::new();
        let mut last_reason = format!("no usable host for {next_hop}");
        // RFC 8689 §4.2.1: hosts refused for REQUIRETLS for good, and whether any other
        // failure (a lookup, the network, a handshake: all of the moment, or an attacker's
        // doing) leaves hope for a later try.
        let mut refusals = RequireTlsTally::default();
        // Addresses connected to, and sessions that got through EHLO and TLS (see Limits).
        let (mut tried, mut sessions) = (0usize, 0usize);
        'hosts: for (index, c) in candidates.iter().enumerate() {
            let lookups = LookupStatus {
                mx: self.mx_looked_up.then_some(self.mx_dnssec),
                a: c.a_dnssec,
                aaaa: c.aaaa_dnssec,
                tlsa: c.tlsa_dnssec,
            };
            let planned = plan_for(cfg, c, next_hop, request);
            let (mode, rule, mechanism) = match planned.plan {
                Plan::Skip {
                    reason,
                    rule,
                    mechanism,
                } => {
                    let mut attempt = skipped(c, &lookups, reason, rule, mechanism);
                    if request == TlsRequest::Required {
                        attempt.tls_request = Some(TlsRequest::Required);
                        refusals.skipped(planned.refusal);
                    } else if planned.relaxed {
                        attempt.tls_request = Some(TlsRequest::Optional);
                    }
                    tracing::warn!("{}", attempt.log_line());
                    last_reason = attempt.reason.clone();
                    attempts.push(attempt);
                    continue;
                }
                Plan::Connect {
                    mode,
                    rule,
                    mechanism,
                } => (mode, rule, mechanism),
            };
            let fit = Fit {
                requiretls: planned.requiretls,
                relaxed: planned.relaxed,
            };
            if cfg.credentials.is_some()
                && let Err(why) = credentials_may_go(cfg, c, &mode)
            {
                let error = SessionError::AuthUnavailable(AuthUnavailable::NotVerified(why));
                let attempt = skipped(c, &lookups, error.to_string(), Rule::Credentials, mechanism);
                tracing::warn!("{}", attempt.log_line());
                last_reason = format!("{}: {}", c.name, attempt.reason);
                attempts.push(attempt);
                refusals.skipped(None);
                continue;
            }
            for (at, address) in c.addresses.iter().map(|a| a.address).enumerate() {
                if let Some(limit) = cfg.limits.reached(tried, sessions) {
                    let untried = c.addresses.len() - at
                        + candidates[index + 1..]
                            .iter()
                            .map(|c| c.addresses.len())
                            .sum::<usize>();
                    let mut attempt = skipped(
                        c,
                        &lookups,
                        format!(
                            "not tried: the limit of {limit} per delivery was reached \
                             ({untried} address(es) of {} host(s) left untried)",
                            candidates.len() - index
                        ),
                        Rule::Limits,
                        mechanism,
                    );
                    attempt.address = Some(address);
                    tracing::warn!("{}", attempt.log_line());
                    last_reason = format!("{}: {}", c.name, attempt.reason);
                    attempts.push(attempt);
                    refusals.skipped(None);
                    break 'hosts;
                }
                tried += 1;
                let planned = Planned {
                    mode: &mode,
                    rule,
                    mechanism,
                };
                let (mut attempt, mut result, mut connection) =
                    connect(c, address, planned, &fit, &lookups, m, cfg).await;
                let mta = remote(c, address);
                let mut next = after_attempt(&mode, &result, envelope.recipients(), &mta);
                if next == Next::RetryPlaintext {
                    log(&attempt);
                    attempts.push(attempt);
                    let retry = Planned {
                        mode: &Mode::Plaintext,
                        rule: Rule::PlaintextRetry,
                        mechanism,
                    };
                    (attempt, result, connection) =
                        connect(c, address, retry, &fit, &lookups, m, cfg).await;
                    next = after_attempt(&Mode::Plaintext, &result, envelope.recipients(), &mta);
                }
                if request == TlsRequest::Required && next == Next::NextAddress {
                    refusals.failed(&result);
                }
                log(&attempt);
                // A session is a connection that got through EHLO and TLS (Postfix 2.3+).
                if attempt.security != Security::None {
                    sessions += 1;
                }
                match next {
                    Next::Finish(recipients) => {
                        attempt.delivered = recipients.iter().any(|r| r.outcome == Fate::Delivered);
                        attempts.push(attempt);
                        let connection = match connection {
                            Some(c) if c.is_reusable() => Some(c),
                            Some(c) => {
                                c.close().await;
                                None
                            }
                            None => None,
                        };
                        return Walked {
                            recipients,
                            attempts,
                            connection,
                            last_reason,
                            requiretls_bounce: None,
                        };
                    }
                    Next::RetryPlaintext | Next::NextAddress => {
                        if let Some(c) = connection {
                            c.close().await;
                        }
                        last_reason = format!("{}: {}", c.name, attempt.reason);
                        attempts.push(attempt);
                    }
                }
            }
        }
        let requiretls_bounce = refusals.bounce();
        Walked {
            recipients: match &requiretls_bounce {
                Some(reply) => bounced(envelope.recipients(), reply),
                None => gave_up(envelope.recipients(), &last_reason),
            },
            attempts,
            connection: None,
            last_reason,
            requiretls_bounce,
        }
    }
}

/// What a REQUIRETLS message's walk met (RFC 8689 §4.2.1): the refusals that are properties
/// of the hosts as published or as they answered over authenticated TLS, and whether
/// anything else failed.
#[derive(Default)]
struct RequireTlsTally {
    /// The most telling refusal so far: one for REQUIRETLS (5.7.30) over one for TLS
    /// (5.7.10).
    refusal: Option<RequireTlsRefusal>,
    /// A host or address failed for a reason of the moment: a lookup, the network, a
    /// refusal, a handshake or an authentication that failed (what an on-path attacker can
    /// cause, and what DANE never bounces for before the message's lifetime).
    transient: bool,
}

impl RequireTlsTally {
    /// A host skipped before connecting, with the REQUIRETLS refusal that made it, or
    /// `None` for a skip of the policy's own (a failed lookup, a limit): transient.
    fn skipped(&mut self, refusal: Option<RequireTlsRefusal>) {
        match refusal {
            Some(r) => self.note(r),
            None => self.transient = true,
        }
    }

    /// An address that failed with `result`: a REQUIRETLS refusal on an established,
    /// authenticated session counts for good; anything else is of the moment.
    fn failed(&mut self, result: &Result<Transaction, SessionError>) {
        match result {
            Err(SessionError::RequireTls(r)) => self.note(r.clone()),
            _ => self.transient = true,
        }
    }

    fn note(&mut self, refusal: RequireTlsRefusal) {
        if self.refusal.is_none() || matches!(self.refusal, Some(RequireTlsRefusal::NoTls)) {
            self.refusal = Some(refusal);
        }
    }

    /// The bounce when every host refused for good (RFC 8689 §4.2.1: "If there are no more
    /// MX hosts, the client MUST NOT transmit the message to the domain", and a
    /// non-delivery notification follows with 5.7.30 or 5.7.10); `None` defers.
    fn bounce(&self) -> Option<Reply> {
        match &self.refusal {
            Some(r) if !self.transient => Some(r.reply()),
            _ => None,
        }
    }
}

/// Every recipient bounced with `reply`, ours (no MTA sent it).
fn bounced(recipients: &[String], reply: &Reply) -> Vec<RecipientOutcome> {
    recipients
        .iter()
        .map(|address| RecipientOutcome {
            address: address.clone(),
            outcome: Fate::Bounced,
            reply: Response::Smtp(ServerReply::new(reply, None)),
        })
        .collect()
}

/// What a connection is fit to carry besides the messages of its own plan (RFC 8689).
#[derive(Clone, Debug)]
struct Fit {
    /// REQUIRETLS messages, once the handshake authenticated the peer and the EHLO after it
    /// advertised REQUIRETLS ([`requiretls_vouched`] before that).
    requiretls: Result<(), RequireTlsRefusal>,
    /// Opened under a plan `TLS-Required: No` relaxed: only such messages may follow.
    relaxed: bool,
}

/// What the delivery does after one attempt (the async loop only performs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Connect to the same address again, in plaintext: opportunistic TLS whose handshake
    /// failed (RFC 7435 §4; Postfix `may`). Never after a missing STARTTLS or AUTH, never under
    /// a mode that requires TLS.
    RetryPlaintext,
    /// This address failed: try the next address of the host, then the next MX host (RFC 5321
    /// §5.1); when none is left (or a limit is reached), every recipient is deferred
    /// ([`gave_up`]).
    NextAddress,
    /// Every recipient's fate is decided (delivered, deferred or bounced, each with the reply
    /// that decided it): stop.
    Finish(Vec<RecipientOutcome>),
}

/// The decision after an attempt under `mode` that ended in `result`, for `recipients` (in
/// envelope order), whose replies came from `mta`:
///
/// - a transaction: each recipient by its own RCPT reply and the reply to the message;
/// - MAIL FROM refused permanently (RFC 5321 §4.2.1, 5yz): everyone bounces, no other host
///   would take the sender either;
/// - larger than the server's SIZE (RFC 1870 §6.1, 552 5.3.4), addresses that need
///   SMTPUTF8 from a server without it (RFC 6531 §3.2, 553 5.6.7), or a streamed body that
///   SMTP cannot carry (a line over 998 bytes, a NUL: 554 5.6.0): everyone bounces;
/// - the body could not be read from its source (our spool): everyone is deferred, since
///   no other host would fare better;
/// - a failed TLS handshake under opportunistic TLS: once more in plaintext (RFC 7435 §4);
/// - anything else: the next address or host (RFC 5321 §5.1; RFC 7672 §2.2 for DANE).
pub fn after_attempt(
    mode: &Mode,
    result: &Result<Transaction, SessionError>,
    recipients: &[String],
    mta: &RemoteMta,
) -> Next {
    let everyone = |fate, reply: Response| {
        recipients
            .iter()
            .map(|address| RecipientOutcome {
                address: address.clone(),
                outcome: fate,
                reply: reply.clone(),
            })
            .collect()
    };
    match result {
        Ok(transaction) => Next::Finish(fates(recipients, transaction, mta)),
        Err(SessionError::Refused {
            stage: Stage::Mail,
            reply,
        }) if reply.is_permanent() => Next::Finish(everyone(
            Fate::Bounced,
            Response::Smtp(ServerReply::new(reply, Some(mta.clone()))),
        )),
        // Refusals we decide ourselves before sending (the reply is ours, in the form the
        // server would have given; no MTA sent it): larger than the server accepts (no other
        // host of this domain will differ), addresses that need SMTPUTF8 (RFC 6531 §3.2), or
        // a streamed body SMTP cannot carry (RFC 5321 §4.5.3.1.6, §2.3.8).
        Err(
            e @ (SessionError::TooBig { .. }
            | SessionError::SmtpUtf8Unsupported
            | SessionError::Body(_)),
        ) => match e.reply() {
            Some(reply) => Next::Finish(everyone(
                Fate::Bounced,
                Response::Smtp(ServerReply::new(&reply, None)),
            )),
            None => Next::NextAddress,
        },
        // Our own copy of the message could not be read: no other host would fare better,
        // and nothing was accepted (a body cut short gets no final dot). Defer, to retry later.
        Err(e @ SessionError::Read(_)) => {
            Next::Finish(everyone(Fate::Deferred, Response::Local(e.to_string())))
        }
        Err(e) if matches!(mode, Mode::Opportunistic) && e.is_tls_handshake() => {
            Next::RetryPlaintext
        }
        Err(_) => Next::NextAddress,
    }
}

/// Every host and address tried (or skipped, or a limit reached): every recipient is
/// deferred with the last reason (RFC 5321 §5.1: defer when no host is left).
pub fn gave_up(recipients: &[String], last_reason: &str) -> Vec<RecipientOutcome> {
    recipients
        .iter()
        .map(|address| RecipientOutcome {
            address: address.clone(),
            outcome: Fate::Deferred,
            reply: Response::Local(format!("{last_reason} ({})", Rule::NextMx)),
        })
        .collect()
}

fn log(attempt: &Attempt) {
    if attempt.security == Security::None {
        tracing::warn!("{}", attempt.log_line());
    } else {
        tracing::info!("{}", attempt.log_line());
    }
}

fn dane_report(c: &Candidate) -> DaneReport {
    DaneReport {
        state: DaneStatus::from(&c.dane),
        tlsa: c.tlsa.clone(),
        matched: None,
        depth: None,
    }
}

fn skipped(
    c: &Candidate,
    lookups: &LookupStatus,
    reason: String,
    rule: Rule,
    mechanism: Mechanism,
) -> Attempt {
    Attempt {
        host: c.name.clone(),
        address: None,
        port: c.port,
        sni: c.tlsa_base.clone(),
        security: Security::None,
        delivered: false,
        dane: dane_report(c),
        tls: None,
        dnssec: lookups.clone(),
        reason,
        failure: None,
        rule,
        mechanism,
        replies: Vec::new(),
        reused: false,
        tls_request: None,
    }
}

/// What a connection is opened under: the mode, and the rule and mechanism that chose it.
#[derive(Clone, Copy)]
struct Planned<'a> {
    mode: &'a Mode,
    rule: Rule,
    mechanism: Mechanism,
}

/// The rule behind a connection that failed before its transaction with `e`, under `mode`
/// planned by `planned`: a DANE mismatch is RFC 7672 §3.1's; no TLS where DANE demands it,
/// §2.2's; no TLS or no valid certificate under an MTA-STS enforce policy, RFC 8461 §5's; a
/// plaintext retry keeps its own; a failed opportunistic handshake is RFC 7435's;
/// anything else sends the delivery on to the next host (RFC 5321 §5.1).
pub fn rule_of_failure(e: &SessionError, mode: &Mode, planned: Rule) -> Rule {
    match (e, mode) {
        (SessionError::Dane(_), _) => Rule::DaneAuth,
        (
            SessionError::StartTlsNotOffered
            | SessionError::Tls(_)
            | SessionError::StartTlsInjection,
            Mode::Required(Auth::Dane { .. }),
        ) => Rule::DaneMandatory,
        // RFC 8461 §5: no TLS, or no valid certificate, under an enforce policy.
        (
            SessionError::StartTlsNotOffered
            | SessionError::Tls(_)
            | SessionError::StartTlsInjection,
            Mode::Required(Auth::Pkix { .. }),
        ) if planned == Rule::StsEnforce => Rule::StsEnforce,
        _ if planned == Rule::PlaintextRetry => Rule::PlaintextRetry,
        (SessionError::Tls(_), Mode::Opportunistic) => Rule::Opportunistic,
        _ => Rule::NextMx,
    }
}

/// The rule behind a transaction: the server's reply when the message was not accepted
/// (RFC 5321 §4.2); DANE authentication when DANE authenticated the peer (RFC 7672 §3.1);
/// else the rule the connection was planned under.
pub fn rule_of_transaction(accepted: bool, security: Security, mode: &Mode, planned: Rule) -> Rule {
    match security {
        _ if !accepted => Rule::Smtp,
        Security::Verified | Security::Trusted
            if matches!(mode, Mode::Required(Auth::Dane { .. })) =>
        {
            Rule::DaneAuth
        }
        _ => planned,
    }
}

/// An open, greeted session to one address of a route's candidate, secured and
/// authenticated as the plan for its policy level demanded, with what it was opened under: a
/// scheduler may keep it and send more messages over it ([`Connection::send`]) while
/// [`Connection::is_reusable`], for this candidate only ([`deliver_batch`] checks).
pub struct Connection {
    session: Session,
    candidate: Candidate,
    address: IpAddr,
    mode: Mode,
    level: Level,
    /// The configured digests (`fingerprint`), names and anchors (`verify`, `secure`) it was
    /// authenticated under.
    fingerprints: Vec<Tlsa>,
    match_names: Vec<ReferenceName>,
    roots: Arc<RootCertStore>,
    /// Whether the level was configured, and the MTA-STS policy, it was opened under.
    level_configured: bool,
    mta_sts: Option<Arc<sts::Policy>>,
    /// Whether REQUIRETLS messages may go over it: TLS, a peer authenticated as RFC 8689
    /// §4.2.1 demands (the advertisement is read from the session when sending).
    requiretls: Result<(), RequireTlsRefusal>,
    /// Opened under a plan `TLS-Required: No` relaxed (RFC 8689 §4.2.2): it carries only
    /// messages with that header field, never one the policy's plan is owed to.
    relaxed: bool,
    /// The attempt as it stood once the session was up (TLS, DANE match, security, rule).
    base: Attempt,
    /// How many transcript lines the session's set-up took (greeting, EHLO, STARTTLS, AUTH).
    setup: usize,
}

impl Connection {
    /// Opens a session to `address` of `c` secured as `mode` (planned under `rule`), and
    /// sends the credentials when `cfg` has them and the peer is verified. `Err` is the
    /// attempt that failed.
    async fn open(
        c: &Candidate,
        address: IpAddr,
        planned: Planned<'_>,
        fit: &Fit,
        lookups: &LookupStatus,
        cfg: &Config,
    ) -> Result<Connection, (Attempt, SessionError)> {
        let Planned {
            mode,
            rule,
            mechanism,
        } = planned;
        let mut attempt = skipped(c, lookups, String::new(), rule, mechanism);
        attempt.address = Some(address);
        let sock = SocketAddr::new(address, c.port);
        let host = c.name.to_string();
        let resumption = cfg
            .sessions
            .as_deref()
            .map(|cache| Resumption { cache, host: &host });
        let opened = Session::open_resuming(
            sock,
            c.tlsa_base.as_str(),
            cfg.helo_name.as_str(),
            mode,
            &cfg.provider,
            &cfg.timeouts,
            resumption,
        )
        .await;
        let mut session = match opened {
            Ok(s) => s,
            Err(e) => {
                attempt.rule = rule_of_failure(&e, mode, rule);
                attempt.reason = e.to_string();
                attempt.failure = Some(Failure::of(&e, &remote(c, address)));
                return Err((attempt, e));
            }
        };
        attempt.tls = session.tls().cloned();
        if let Some(PeerAuth::Dane(v)) = session.peer() {
            attempt.dane.matched = Some(v.record().clone());
            attempt.dane.depth = Some(v.depth());
        }
        attempt.security = security(session.tls(), session.peer(), mode, c.dane_trust);
        if let Some((user, password)) = &cfg.credentials {
            // Planned for a verified peer (credentials_may_go); make sure it is one.
            let auth = if attempt.security == Security::Verified {
                session.auth_plain(user, password).await
            } else {
                Err(SessionError::AuthUnavailable(AuthUnavailable::NotVerified(
                    format!("the peer is {:?}, not verified", attempt.security).to_lowercase(),
                )))
            };
            if let Err(e) = auth {
                attempt.reason = e.to_string();
                attempt.failure = Some(Failure::of(&e, &remote(c, address)));
                if matches!(e, SessionError::AuthUnavailable(_)) {
                    attempt.rule = Rule::Credentials;
                }
                attempt.replies = session.transcript.clone();
                session.quit().await;
                return Err((attempt, e));
            }
        }
        Ok(Connection {
            setup: session.transcript.len(),
            session,
            candidate: c.clone(),
            address,
            mode: mode.clone(),
            level: cfg.level,
            fingerprints: cfg.fingerprints.clone(),
            match_names: cfg.match_names.clone(),
            roots: cfg.roots.clone(),
            level_configured: cfg.level_configured,
            mta_sts: cfg.mta_sts.clone(),
            requiretls: requiretls_after_handshake(&fit.requiretls, attempt.security, c),
            relaxed: fit.relaxed,
            base: attempt,
        })
    }

    /// Whether a message with `envelope` may go over this connection (RFC 8689): one with
    /// REQUIRETLS only where the peer is authenticated as §4.2.1 demands and advertised
    /// REQUIRETLS after STARTTLS; one without `TLS-Required: No` never over a connection that
    /// header field relaxed. The bounce of a REQUIRETLS message goes over any connection its
    /// policy allows (§5; see [`effective_request`]).
    pub fn may_carry(&self, envelope: &Envelope) -> bool {
        match effective_request(envelope) {
            TlsRequest::Required => self.requiretls_ready().is_ok(),
            TlsRequest::Default => !self.relaxed,
            TlsRequest::Optional => true,
        }
    }

    /// RFC 8689 §4.2.1 steps 2, 4 and 5 on this connection: `Ok` when a REQUIRETLS message
    /// may go over it.
    fn requiretls_ready(&self) -> Result<(), RequireTlsRefusal> {
        self.requiretls.clone()?;
        if !self.session.capabilities().requiretls {
            return Err(RequireTlsRefusal::NotAdvertised);
        }
        Ok(())
    }

    /// One message over this connection (RSET first when it is not the first): the attempt
    /// records the session's security and set-up replies followed by this transaction's.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        body: &dyn BodySource,
    ) -> (Attempt, Result<Transaction, SessionError>) {
        let mut attempt = self.base.clone();
        attempt.reused = self.session.transactions() > 0;
        let start = self.session.transcript.len();
        // RFC 8689: what the sender's request makes of this transaction.
        let downgraded;
        let mut envelope = envelope;
        let refused = match envelope.tls_request() {
            TlsRequest::Required if envelope.sender().is_empty() => {
                // §5: the bounce of a REQUIRETLS message carries REQUIRETLS where it can, and
                // is not held back where it cannot.
                if self.requiretls_ready().is_ok() {
                    attempt.tls_request = Some(TlsRequest::Required);
                } else {
                    downgraded = envelope.clone().with_tls_request(TlsRequest::Default);
                    envelope = &downgraded;
                }
                None
            }
            TlsRequest::Required => {
                attempt.tls_request = Some(TlsRequest::Required);
                self.requiretls_ready().err()
            }
            TlsRequest::Optional => {
                if self.relaxed {
                    attempt.tls_request = Some(TlsRequest::Optional);
                }
                None
            }
            TlsRequest::Default => None,
        };
        let result = match refused {
            // Nothing of the transaction is sent (§4.2.1: "MUST NOT transmit the message").
            Some(why) => Err(SessionError::RequireTls(why)),
            None => match body.open().await {
                Ok(body) => self.session.transact_body(envelope, body).await,
                Err(e) => Err(SessionError::Read(e.to_string())),
            },
        };
        let transcript = &self.session.transcript;
        attempt.replies = transcript[..self.setup.min(start)]
            .iter()
            .chain(&transcript[start..])
            .cloned()
            .collect();
        attempt.reason = match &result {
            Ok(t) => match &t.data {
                Some(reply) if reply.is_positive() => format!("message accepted: {reply}"),
                Some(reply) => format!("message not accepted: {reply}"),
                None => "no recipient accepted".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        match &result {
            Ok(t) => {
                let accepted = t.data.as_ref().is_some_and(Reply::is_positive);
                attempt.rule =
                    rule_of_transaction(accepted, attempt.security, &self.mode, attempt.rule);
            }
            Err(e) => {
                attempt.failure = Some(Failure::of(e, &remote(&self.candidate, self.address)))
            }
        }
        (attempt, result)
    }

    /// Whether another message may follow ([`Session::is_reusable`]).
    pub fn is_reusable(&self) -> bool {
        self.session.is_reusable()
    }

    /// The session (TLS parameters, peer authentication, capabilities).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The security label the connection was authenticated to ([`security`]).
    pub fn security(&self) -> Security {
        self.base.security
    }

    /// The route candidate it was opened for, as it stood then (DANE state, TLSA RRset).
    pub fn candidate(&self) -> &Candidate {
        &self.candidate
    }

    /// The address connected to.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The policy level it was opened under.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Whether this connection may carry mail for a route with `candidates` under `cfg`:
    /// the same level with the same configured digests, names and trust anchors, one of the
    /// candidates exactly as this one was opened for (DANE state, TLSA RRset, reference
    /// names, DNSSEC trust), at one of its addresses, and no credentials (a submission
    /// connection is not shared). A connection is never reused under a policy or records
    /// other than those it was authenticated under.
    fn fits(&self, candidates: &[Candidate], cfg: &Config) -> bool {
        self.is_reusable()
            && self.level == cfg.level
            && self.fingerprints == cfg.fingerprints
            && self.match_names == cfg.match_names
            // The same MTA-STS policy (it decides the mode of hosts without DANE).
            && self.level_configured == cfg.level_configured
            && self.mta_sts == cfg.mta_sts
            // PKIX anchors matter to `verify`, `secure` and MTA-STS only: the same store.
            && (!(matches!(cfg.level, Level::Verify | Level::Secure) || cfg.mta_sts.is_some())
                || Arc::ptr_eq(&self.roots, &cfg.roots))
            && cfg.credentials.is_none()
            // A connection `TLS-Required: No` relaxed serves only the batch it was opened for.
            && !self.relaxed
            && candidates.iter().any(|c| {
                *c == self.candidate && c.addresses.iter().any(|a| a.address == self.address)
            })
    }

    /// QUIT and close.
    pub async fn close(self) {
        self.session.quit().await;
    }
}

/// One connection to one address, and the transaction of `m` on it; the connection comes
/// back open when the session got that far.
async fn connect(
    c: &Candidate,
    address: IpAddr,
    planned: Planned<'_>,
    fit: &Fit,
    lookups: &LookupStatus,
    m: &Outgoing<'_>,
    cfg: &Config,
) -> (
    Attempt,
    Result<Transaction, SessionError>,
    Option<Connection>,
) {
    match Connection::open(c, address, planned, fit, lookups, cfg).await {
        Err((attempt, e)) => (attempt, Err(e), None),
        Ok(mut connection) => {
            let (attempt, result) = connection.send(m.envelope, m.body).await;
            (attempt, result, Some(connection))
        }
    }
}

/// RFC 8689 §4.2.1 step 4 after the handshake: the plan's verdict (`planned`, from
/// [`requiretls_vouched`]) holds only when the handshake authenticated the peer (`verified`
/// or `trusted`, [`security`]).
fn requiretls_after_handshake(
    planned: &Result<(), RequireTlsRefusal>,
    security: Security,
    c: &Candidate,
) -> Result<(), RequireTlsRefusal> {
    planned.clone()?;
    match security {
        Security::Verified | Security::Trusted => Ok(()),
        Security::Plaintext | Security::None => Err(RequireTlsRefusal::NoTls),
        Security::Untrusted => Err(RequireTlsRefusal::NotAuthenticated(format!(
            "{} is untrusted",
            c.name
        ))),
    }
}

/// The MTA at `address` of host `c`.
fn remote(c: &Candidate, address: IpAddr) -> RemoteMta {
    RemoteMta {
        host: c.name.clone(),
        address,
    }
}

/// Each recipient's fate from its RCPT reply and the final reply to the message, which
/// `mta` sent.
fn fates(recipients: &[String], t: &Transaction, mta: &RemoteMta) -> Vec<RecipientOutcome> {
    let classify = |reply: &Reply| {
        if reply.is_positive() {
            Fate::Delivered
        } else if reply.is_permanent() {
            Fate::Bounced
        } else {
            Fate::Deferred
        }
    };
    recipients
        .iter()
        .zip(&t.rcpt)
        .map(|(address, rcpt)| {
            let final_reply = match (&t.data, rcpt.is_positive()) {
                (Some(data), true) => data,
                _ => rcpt,
            };
            RecipientOutcome {
                address: address.clone(),
                outcome: classify(final_reply),
                reply: Response::Smtp(ServerReply::new(final_reply, Some(mta.clone()))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns::Status;
    use dns::route::Address;

    fn n(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn candidate(dane: DaneState) -> Candidate {
        Candidate {
            name: n("mx.example.test"),
            preference: 10,
            port: 25,
            tlsa_base: n("mx.example.test"),
            addresses: vec![Address {
                address: "192.0.2.1".parse().unwrap(),
                dnssec: Status::Secure,
            }],
            a_dnssec: Status::Secure,
            aaaa_dnssec: Status::Secure,
            tlsa_name: None,
            tlsa_dnssec: Some(Status::Secure),
            tlsa: vec![],
            dane,
            reference_names: vec!["mx.example.test".parse().unwrap()],
            dane_trust: dns::DaneTrust::Verified,
        }
    }

    fn config(level: Level) -> Config {
        Config {
            helo_name: "client.test".parse().unwrap(),
            level,
            timeouts: Timeouts::default(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            fingerprints: vec![],
            roots: Arc::new(RootCertStore::empty()),
            match_names: vec![],
            credentials: None,
            limits: Limits::default(),
            sessions: None,
            level_configured: false,
            mta_sts: None,
        }
    }

    const EE: &str = "3 1 1 0101010101010101010101010101010101010101010101010101010101010101";

    fn mode_of(level: Level, dane: DaneState) -> String {
        match plan(&config(level), &candidate(dane), &n("example.test")) {
            Plan::Skip { .. } => "skip".into(),
            Plan::Connect {
                mode: Mode::Plaintext,
                ..
            } => "plaintext".into(),
            Plan::Connect {
                mode: Mode::Opportunistic,
                ..
            } => "opportunistic".into(),
            Plan::Connect {
                mode: Mode::Required(Auth::None),
                ..
            } => "required".into(),
            Plan::Connect {
                mode: Mode::Required(Auth::Dane { .. }),
                ..
            } => "dane".into(),
            Plan::Connect {
                mode: Mode::Required(Auth::Fingerprint(_)),
                ..
            } => "fingerprint".into(),
            Plan::Connect {
                mode: Mode::Required(Auth::Pkix { .. }),
                ..
            } => "pkix".into(),
        }
    }

    #[test]
    fn the_dane_level_follows_the_host_dane_state() {
        let usable = || DaneState::Usable {
            records: vec![EE.parse().unwrap()],
        };
        let na = || DaneState::NotApplicable {
            reason: String::new(),
        };
        let bad = || DaneState::HostUnusable {
            reason: "bogus TLSA".into(),
        };
        assert_eq!(mode_of(Level::Dane, usable()), "dane");
        assert_eq!(mode_of(Level::Dane, DaneState::Unusable), "required");
        assert_eq!(mode_of(Level::Dane, na()), "opportunistic");
        assert_eq!(mode_of(Level::Dane, bad()), "skip");
        assert_eq!(mode_of(Level::DaneOnly, usable()), "dane");
        assert_eq!(mode_of(Level::DaneOnly, DaneState::Unusable), "skip");
        assert_eq!(mode_of(Level::DaneOnly, na()), "skip");
        assert_eq!(mode_of(Level::DaneOnly, bad()), "skip");
    }

    fn sts_policy(mode: &str) -> Arc<sts::Policy> {
        let body = format!("version: STSv1\nmode: {mode}\nmx: *.example.test\nmax_age: 86400\n");
        Arc::new(sts::Policy::parse(body.as_bytes(), "20261202".parse().unwrap()).unwrap())
    }

    /// The precedence of RFC 8461 §2 (DANE over MTA-STS) and of the policy table over both,
    /// as (mode, rule, mechanism) per host.
    #[test]
    fn dane_takes_precedence_over_mta_sts_and_the_table_over_both() {
        let usable = || DaneState::Usable {
            records: vec![EE.parse().unwrap()],
        };
        let na = || DaneState::NotApplicable {
            reason: String::new(),
        };
        let bad = || DaneState::HostUnusable {
            reason: "bogus TLSA".into(),
        };
        let decide = |cfg: &Config, dane: DaneState, host: &str| {
            let mut c = candidate(dane);
            c.name = n(host);
            match plan(cfg, &c, &n("example.test")) {
                Plan::Skip {
                    rule, mechanism, ..
                } => ("skip".to_owned(), rule, mechanism),
                Plan::Connect {
                    mode,
                    rule,
                    mechanism,
                } => {
                    let mode = match mode {
                        Mode::Plaintext => "plaintext".to_owned(),
                        Mode::Opportunistic => "opportunistic".to_owned(),
                        Mode::Required(Auth::None) => "required".to_owned(),
                        Mode::Required(Auth::Dane { .. }) => "dane".to_owned(),
                        Mode::Required(Auth::Fingerprint(_)) => "fingerprint".to_owned(),
                        Mode::Required(Auth::Pkix { names, .. }) => format!("pkix {names:?}"),
                    };
                    (mode, rule, mechanism)
                }
            }
        };
        let with = |level: Level, mode: &str, configured: bool| Config {
            mta_sts: Some(sts_policy(mode)),
            level_configured: configured,
            ..config(level)
        };
        let enforce = with(Level::Dane, "enforce", false);
        let host = "mx.example.test";
        // Where DANE applies, DANE decides, whatever the policy says (and a failing DANE
        // lookup is never rescued by MTA-STS).
        assert_eq!(
            decide(&enforce, usable(), "other.invalid"),
            ("dane".into(), Rule::DaneMandatory, Mechanism::Dane)
        );
        assert_eq!(
            decide(&enforce, bad(), host),
            ("skip".into(), Rule::HostUnusable, Mechanism::Dane)
        );
        assert_eq!(
            decide(&enforce, DaneState::Unusable, host),
            (
                "required".into(),
                Rule::DaneUnusableRecords,
                Mechanism::Dane
            )
        );
        // Without DANE: enforce demands PKIX for the MX name and skips non-matching hosts.
        assert_eq!(
            decide(&enforce, na(), host),
            (
                "pkix [ReferenceName(\"mx.example.test\")]".into(),
                Rule::StsEnforce,
                Mechanism::MtaSts
            )
        );
        assert_eq!(
            decide(&enforce, na(), "mx.other.test"),
            ("skip".into(), Rule::StsMxMismatch, Mechanism::MtaSts)
        );
        assert_eq!(
            decide(&enforce, na(), "a.b.example.test"),
            ("skip".into(), Rule::StsMxMismatch, Mechanism::MtaSts),
            "a wildcard covers one label"
        );
        // testing and none do not change delivery.
        assert_eq!(
            decide(&with(Level::Dane, "testing", false), na(), "mx.other.test"),
            ("opportunistic".into(), Rule::StsTesting, Mechanism::MtaSts)
        );
        assert_eq!(
            decide(&with(Level::Dane, "none", false), na(), "mx.other.test"),
            (
                "opportunistic".into(),
                Rule::Opportunistic,
                Mechanism::Opportunistic
            )
        );
        // A configured level overrides the policy.
        assert_eq!(
            decide(&with(Level::Dane, "enforce", true), na(), "mx.other.test"),
            ("opportunistic".into(), Rule::Policy, Mechanism::PolicyTable)
        );
        assert_eq!(
            decide(&with(Level::May, "enforce", true), na(), host),
            ("opportunistic".into(), Rule::Policy, Mechanism::PolicyTable)
        );
        assert_eq!(
            decide(&with(Level::DaneOnly, "enforce", false), na(), host),
            ("skip".into(), Rule::DaneOnly, Mechanism::Dane)
        );
        // No policy: opportunistic, as before.
        assert_eq!(
            decide(&config(Level::Dane), na(), host),
            (
                "opportunistic".into(),
                Rule::Opportunistic,
                Mechanism::Opportunistic
            )
        );
    }

    /// `plan_for` summed up: the mode ("skip" for a skipped host), the rule, whether the
    /// connection could carry REQUIRETLS, whether the header field relaxed the plan, and the
    /// REQUIRETLS refusal of a skip.
    fn plan_of(
        cfg: &Config,
        dane: DaneState,
        trust: DaneTrust,
        host: &str,
        request: TlsRequest,
    ) -> (&'static str, Rule, bool, bool, Option<&'static str>) {
        let mut c = candidate(dane);
        c.name = n(host);
        c.dane_trust = trust;
        let p = plan_for(cfg, &c, &n("example.test"), request);
        let refusal = p.refusal.as_ref().map(|r| match r {
            RequireTlsRefusal::NoTls => "no-tls",
            RequireTlsRefusal::NotAuthenticated(_) => "not-authenticated",
            RequireTlsRefusal::NameNotValidated(_) => "name-not-validated",
            RequireTlsRefusal::NotAdvertised => "not-advertised",
        });
        let (mode, rule) = match &p.plan {
            Plan::Skip { rule, .. } => ("skip", *rule),
            Plan::Connect { mode, rule, .. } => (
                match mode {
                    Mode::Plaintext => "plaintext",
                    Mode::Opportunistic => "opportunistic",
                    Mode::Required(Auth::None) => "required",
                    Mode::Required(Auth::Dane { .. }) => "dane",
                    Mode::Required(Auth::Fingerprint(_)) => "fingerprint",
                    Mode::Required(Auth::Pkix { .. }) => "pkix",
                },
                *rule,
            ),
        };
        (mode, rule, p.requiretls.is_ok(), p.relaxed, refusal)
    }

    /// RFC 8689 §4.2.1: a REQUIRETLS message is planned only to hosts that will be
    /// authenticated by DANE or PKIX and whose name DNSSEC or MTA-STS vouches for; a weak
    /// configured level is raised, never obeyed; what is refused for good says so.
    #[test]
    fn requiretls_plans_only_authenticated_hosts_with_vouched_names() {
        use DaneTrust::{Trusted, Verified};
        let usable = || DaneState::Usable {
            records: vec![EE.parse().unwrap()],
        };
        let na = || DaneState::NotApplicable {
            reason: String::new(),
        };
        let bad = || DaneState::HostUnusable {
            reason: "bogus TLSA".into(),
        };
        let sts = |mode: &str| Config {
            mta_sts: Some(sts_policy(mode)),
            ..config(Level::Dane)
        };
        let configured = |level| Config {
            level_configured: true,
            ..config(level)
        };
        let host = "mx.example.test";
        let req = TlsRequest::Required;
        let dane = config(Level::Dane);
        let refused = |rule, why| ("skip", rule, false, false, Some(why));
        // DANE under a signed MX: the message goes, with REQUIRETLS.
        assert_eq!(
            plan_of(&dane, usable(), Verified, host, req),
            ("dane", Rule::DaneMandatory, true, false, None)
        );
        // DANE under an unsigned MX: the name is not vouched for (step 2)...
        assert_eq!(
            plan_of(&dane, usable(), Trusted, host, req),
            refused(Rule::RequireTls, "name-not-validated")
        );
        // ...unless the MTA-STS policy lists the host (testing or enforce), not if not.
        for mode in ["testing", "enforce"] {
            assert_eq!(
                plan_of(&sts(mode), usable(), Trusted, host, req),
                ("dane", Rule::DaneMandatory, true, false, None),
                "{mode}"
            );
        }
        assert_eq!(
            plan_of(&sts("none"), usable(), Trusted, host, req),
            refused(Rule::RequireTls, "name-not-validated")
        );
        // No DANE: PKIX for the MX name where MTA-STS lists it (enforce as for any message,
        // testing raised); nothing to authenticate with otherwise: refused for good.
        assert_eq!(
            plan_of(&sts("enforce"), na(), Trusted, host, req),
            ("pkix", Rule::StsEnforce, true, false, None)
        );
        assert_eq!(
            plan_of(&sts("testing"), na(), Trusted, host, req),
            ("pkix", Rule::RequireTls, true, false, None)
        );
        assert_eq!(
            plan_of(&dane, na(), Verified, host, req),
            refused(Rule::RequireTls, "not-authenticated")
        );
        assert_eq!(
            plan_of(&dane, DaneState::Unusable, Verified, host, req),
            refused(Rule::RequireTls, "not-authenticated")
        );
        // What the policy skips stays skipped, as of the moment (no refusal: a retry may do).
        assert_eq!(
            plan_of(&sts("enforce"), na(), Trusted, "mx.other.test", req),
            ("skip", Rule::StsMxMismatch, false, false, None)
        );
        assert_eq!(
            plan_of(&dane, bad(), Verified, host, req),
            ("skip", Rule::HostUnusable, false, false, None)
        );
        assert_eq!(
            plan_of(&configured(Level::May), bad(), Verified, host, req),
            ("skip", Rule::HostUnusable, false, false, None)
        );
        // A configured level never weakens REQUIRETLS: `may`, `none`, `encrypt` are raised
        // to DANE where the host has it, and refused where it has not.
        for level in [Level::None, Level::May, Level::Encrypt] {
            assert_eq!(
                plan_of(&configured(level), usable(), Verified, host, req),
                ("dane", Rule::RequireTls, true, false, None),
                "{level}"
            );
            assert_eq!(
                plan_of(&configured(level), na(), Verified, host, req),
                refused(Rule::RequireTls, "not-authenticated"),
                "{level}"
            );
        }
        // Operator-configured authentication: a pinned key, PKIX against configured names.
        assert_eq!(
            plan_of(&configured(Level::Fingerprint), na(), Trusted, host, req),
            ("fingerprint", Rule::Policy, true, false, None)
        );
        assert_eq!(
            plan_of(&configured(Level::Secure), na(), Trusted, host, req),
            ("pkix", Rule::Policy, true, false, None)
        );
        assert_eq!(
            plan_of(&configured(Level::Verify), na(), Trusted, host, req),
            refused(Rule::RequireTls, "name-not-validated")
        );
        assert_eq!(
            plan_of(&configured(Level::Verify), na(), Verified, host, req),
            ("pkix", Rule::Policy, true, false, None)
        );
        // `dane-only` keeps its own skip.
        assert_eq!(
            plan_of(&config(Level::DaneOnly), na(), Verified, host, req),
            ("skip", Rule::DaneOnly, false, false, None)
        );
        // Without REQUIRETLS the policy's plan stands; whether the connection could also
        // carry a REQUIRETLS message is known before connecting.
        assert_eq!(
            plan_of(&dane, usable(), Verified, host, TlsRequest::Default),
            ("dane", Rule::DaneMandatory, true, false, None)
        );
        assert_eq!(
            plan_of(&dane, na(), Verified, host, TlsRequest::Default),
            ("opportunistic", Rule::Opportunistic, false, false, None)
        );
    }

    /// RFC 8689 §4.2.2: `TLS-Required: No` turns the recipient domain's DANE and MTA-STS
    /// policies into opportunistic TLS, and nothing the operator configured.
    #[test]
    fn tls_required_no_relaxes_only_the_recipient_domains_policy() {
        use DaneTrust::Verified;
        let usable = || DaneState::Usable {
            records: vec![EE.parse().unwrap()],
        };
        let na = || DaneState::NotApplicable {
            reason: String::new(),
        };
        let bad = || DaneState::HostUnusable {
            reason: "bogus TLSA".into(),
        };
        let sts = |mode: &str| Config {
            mta_sts: Some(sts_policy(mode)),
            ..config(Level::Dane)
        };
        let configured = |level| Config {
            level_configured: true,
            ..config(level)
        };
        let no = TlsRequest::Optional;
        let host = "mx.example.test";
        let relaxed = ("opportunistic", Rule::TlsRequiredNo, false, true, None);
        let dane = config(Level::Dane);
        assert_eq!(plan_of(&dane, usable(), Verified, host, no), relaxed);
        assert_eq!(
            plan_of(&dane, DaneState::Unusable, Verified, host, no),
            relaxed
        );
        assert_eq!(plan_of(&dane, bad(), Verified, host, no), relaxed);
        assert_eq!(plan_of(&sts("enforce"), na(), Verified, host, no), relaxed);
        assert_eq!(
            plan_of(&sts("enforce"), na(), Verified, "mx.other.test", no),
            relaxed
        );
        // Nothing to relax: the plan stands, and is not marked.
        assert_eq!(
            plan_of(&dane, na(), Verified, host, no),
            ("opportunistic", Rule::Opportunistic, false, false, None)
        );
        assert_eq!(
            plan_of(&sts("testing"), na(), Verified, host, no),
            ("opportunistic", Rule::StsTesting, false, false, None)
        );
        // The operator's policy is kept: a configured level, `dane-only`.
        assert_eq!(
            plan_of(&configured(Level::Dane), usable(), Verified, host, no),
            ("dane", Rule::DaneMandatory, true, false, None)
        );
        assert_eq!(
            plan_of(&configured(Level::Encrypt), na(), Verified, host, no),
            ("required", Rule::Policy, false, false, None)
        );
        assert_eq!(
            plan_of(&config(Level::DaneOnly), usable(), Verified, host, no),
            ("dane", Rule::DaneMandatory, true, false, None)
        );
        assert_eq!(
            plan_of(&config(Level::DaneOnly), na(), Verified, host, no),
            ("skip", Rule::DaneOnly, false, false, None)
        );
    }

    #[test]
    fn the_bounce_of_a_requiretls_message_is_planned_as_any_other() {
        let e = |from: &str, r| {
            Envelope::new(from, ["b@y.test"])
                .unwrap()
                .with_tls_request(r)
        };
        assert_eq!(
            effective_request(&e("a@x.test", TlsRequest::Required)),
            TlsRequest::Required
        );
        assert_eq!(
            effective_request(&e("", TlsRequest::Required)),
            TlsRequest::Default
        );
        assert_eq!(
            effective_request(&e("", TlsRequest::Optional)),
            TlsRequest::Optional
        );
    }

    /// RFC 8689 §4.2.1: the walk bounces (5.7.30, or 5.7.10 when only TLS was missing) only
    /// when every host refused for good; anything of the moment defers.
    #[test]
    fn a_requiretls_walk_bounces_only_when_every_refusal_is_for_good() {
        let code =
            |t: &RequireTlsTally| t.bounce().and_then(|r| r.enhanced()).map(|e| e.to_string());
        let mut t = RequireTlsTally::default();
        assert_eq!(code(&t), None, "nothing tried: defer");
        t.skipped(Some(RequireTlsRefusal::NotAuthenticated("mx".into())));
        assert_eq!(code(&t).as_deref(), Some("5.7.30"));
        t.failed(&Err(SessionError::RequireTls(
            RequireTlsRefusal::NotAdvertised,
        )));
        assert_eq!(code(&t).as_deref(), Some("5.7.30"));
        t.failed(&Err(SessionError::StartTlsNotOffered));
        assert_eq!(code(&t), None, "a stripped STARTTLS is not a verdict");
        let mut t = RequireTlsTally::default();
        t.failed(&Err(SessionError::RequireTls(RequireTlsRefusal::NoTls)));
        assert_eq!(code(&t).as_deref(), Some("5.7.10"));
        t.skipped(Some(RequireTlsRefusal::NameNotValidated("mx".into())));
        assert_eq!(code(&t).as_deref(), Some("5.7.30"), "5.7.30 says more");
        t.skipped(None);
        assert_eq!(code(&t), None, "a failed lookup leaves hope");
        let mut t = RequireTlsTally::default();
        t.failed(&Err(SessionError::Dane(dane::VerifyError::EmptyChain)));
        assert_eq!(
            code(&t),
            None,
            "a DANE failure is never a bounce before the lifetime"
        );
    }

    #[test]
    fn other_levels_ignore_dane() {
        for dane in [
            DaneState::Unusable,
            DaneState::HostUnusable {
                reason: String::new(),
            },
        ] {
            assert_eq!(mode_of(Level::None, dane.clone()), "plaintext");
            assert_eq!(mode_of(Level::May, dane.clone()), "opportunistic");
            assert_eq!(mode_of(Level::Encrypt, dane.clone()), "required");
            assert_eq!(mode_of(Level::Fingerprint, dane.clone()), "fingerprint");
            assert_eq!(mode_of(Level::Verify, dane.clone()), "pkix");
            assert_eq!(mode_of(Level::Secure, dane), "pkix");
        }
    }

    #[test]
    fn the_security_label_of_a_handshake() {
        use DaneTrust::{Trusted, Verified};
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            resumed: false,
        };
        let dane = || {
            Mode::Required(Auth::Dane {
                records: vec![EE.parse().unwrap()],
                names: vec![],
            })
        };
        let fingerprint = || Mode::Required(Auth::Fingerprint(vec![EE.parse().unwrap()]));
        let pkix = || {
            Mode::Required(Auth::Pkix {
                roots: Arc::new(RootCertStore::empty()),
                names: vec![],
            })
        };
        let leaf = danemta_lab::pki::TestCert::self_signed(&["mx.example.test"])
            .unwrap()
            .leaf_der;
        let leaf = rustls::pki_types::CertificateDer::from(leaf);
        let info = dane::cert::CertInfo::parse(&leaf).unwrap();
        let record = dane::matching::record_for(3u8.into(), 1u8.into(), 1u8.into(), &info).unwrap();
        let verified = dane::Authenticator::smtp(&[record], vec![])
            .verify(&[leaf], rustls::pki_types::UnixTime::now())
            .unwrap();
        let by_dane = || Some(PeerAuth::Dane(verified.clone()));
        let by_pkix = || {
            Some(PeerAuth::Pkix(crate::tls::PkixVerified::for_tests(
                "mx.example.test".parse().unwrap(),
            )))
        };
        let unchecked = || Some(PeerAuth::Unchecked);
        let table: [(bool, Option<PeerAuth>, Mode, DaneTrust, Security); 15] = [
            // No TLS: plaintext, whatever was planned.
            (false, None, Mode::Plaintext, Verified, Security::Plaintext),
            (
                false,
                None,
                Mode::Opportunistic,
                Verified,
                Security::Plaintext,
            ),
            (false, by_dane(), dane(), Verified, Security::Plaintext),
            // DANE: the route's trust decides verified or trusted (RFC 7672 §2.2.1).
            (true, by_dane(), dane(), Verified, Security::Verified),
            (true, by_dane(), dane(), Trusted, Security::Trusted),
            (true, unchecked(), dane(), Verified, Security::Untrusted),
            (true, None, dane(), Verified, Security::Untrusted),
            // A configured fingerprint or PKIX does not depend on the MX lookup.
            (true, by_dane(), fingerprint(), Trusted, Security::Verified),
            (true, by_dane(), fingerprint(), Verified, Security::Verified),
            (true, by_pkix(), pkix(), Trusted, Security::Verified),
            (true, by_pkix(), pkix(), Verified, Security::Verified),
            // Encryption only.
            (
                true,
                unchecked(),
                Mode::Opportunistic,
                Verified,
                Security::Untrusted,
            ),
            (
                true,
                unchecked(),
                Mode::Required(Auth::None),
                Verified,
                Security::Untrusted,
            ),
            (true, unchecked(), pkix(), Verified, Security::Untrusted),
            // A DANE match outside a required mode authenticates nothing that was asked.
            (
                true,
                by_dane(),
                Mode::Opportunistic,
                Verified,
                Security::Untrusted,
            ),
        ];
        for (has_tls, peer, mode, trust, expected) in table {
            let got = security(has_tls.then_some(&tls), peer.as_ref(), &mode, trust);
            assert_eq!(got, expected, "{has_tls} {peer:?} {mode:?} {trust:?}");
        }
    }

    /// A row of the `after_attempt` table: mode, result, the decision, each recipient's fate.
    type Row<'a> = (
        &'a Mode,
        Result<Transaction, SessionError>,
        &'static str,
        Vec<(Fate, String)>,
    );

    /// `after_attempt` summed up: the variant, and each recipient's fate with its reply.
    fn next_of(
        mode: &Mode,
        result: Result<Transaction, SessionError>,
    ) -> (String, Vec<(Fate, String)>) {
        let mta = RemoteMta {
            host: n("mx.y.test"),
            address: "192.0.2.7".parse().unwrap(),
        };
        let to = ["a@y.test".to_owned(), "b@y.test".to_owned()];
        match after_attempt(mode, &result, &to, &mta) {
            Next::RetryPlaintext => ("plaintext".into(), vec![]),
            Next::NextAddress => ("next".into(), vec![]),
            Next::Finish(r) => (
                "finish".into(),
                r.into_iter()
                    .map(|r| (r.outcome, r.reply.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn what_follows_an_attempt() {
        let r = |code, text: &str| Reply::new(code, vec![text.into()]);
        let ok = |data: Option<Reply>| -> Result<Transaction, SessionError> {
            Ok(Transaction {
                rcpt: vec![r(250, "2.1.5 Ok"), r(550, "5.1.1 unknown")],
                data,
            })
        };
        let refused = |stage, code, text: &str| -> Result<Transaction, SessionError> {
            Err(SessionError::Refused {
                stage,
                reply: r(code, text),
            })
        };
        let dane = Mode::Required(Auth::Dane {
            records: vec![EE.parse().unwrap()],
            names: vec![],
        });
        let none = || -> Vec<(Fate, String)> { vec![] };
        let both = |fate, text: &str| vec![(fate, text.to_owned()), (fate, text.to_owned())];
        let too_big = SessionError::TooBig { size: 10, limit: 5 };
        let table: Vec<Row> = vec![
            // A transaction decides each recipient by its own replies.
            (
                &dane,
                ok(Some(r(250, "2.0.0 queued"))),
                "finish",
                vec![
                    (Fate::Delivered, "250 2.0.0 queued".into()),
                    (Fate::Bounced, "550 5.1.1 unknown".into()),
                ],
            ),
            (
                &Mode::Plaintext,
                ok(Some(r(451, "4.3.0 later"))),
                "finish",
                vec![
                    (Fate::Deferred, "451 4.3.0 later".into()),
                    (Fate::Bounced, "550 5.1.1 unknown".into()),
                ],
            ),
            // The sender refused for good: no other host will take it.
            (
                &dane,
                refused(Stage::Mail, 553, "5.1.8 bad sender"),
                "finish",
                both(Fate::Bounced, "553 5.1.8 bad sender"),
            ),
            // Refused for now, or another step refused: the next address.
            (
                &dane,
                refused(Stage::Mail, 451, "4.3.0 later"),
                "next",
                none(),
            ),
            (&dane, refused(Stage::Greeting, 554, "no"), "next", none()),
            (
                &Mode::Opportunistic,
                refused(Stage::StartTls, 454, "4.7.0 no"),
                "next",
                none(),
            ),
            // Too big for the server: everyone bounces with our 552 5.3.4.
            (
                &Mode::Opportunistic,
                Err(too_big.clone()),
                "finish",
                both(Fate::Bounced, &format!("552 5.3.4 {too_big}")),
            ),
            // Addresses that need SMTPUTF8: our 553 5.6.7.
            (
                &dane,
                Err(SessionError::SmtpUtf8Unsupported),
                "finish",
                both(
                    Fate::Bounced,
                    &SessionError::SmtpUtf8Unsupported
                        .reply()
                        .unwrap()
                        .to_string(),
                ),
            ),
            // A failed handshake: plaintext only under opportunistic TLS (RFC 7435 §4).
            (
                &Mode::Opportunistic,
                Err(SessionError::Tls("alert".into())),
                "plaintext",
                none(),
            ),
            (
                &dane,
                Err(SessionError::Tls("alert".into())),
                "next",
                none(),
            ),
            (
                &Mode::Required(Auth::None),
                Err(SessionError::Tls("alert".into())),
                "next",
                none(),
            ),
            (
                &Mode::Plaintext,
                Err(SessionError::Tls("alert".into())),
                "next",
                none(),
            ),
            // No STARTTLS, a DANE mismatch, a timeout, a lost connection: the next address.
            (&dane, Err(SessionError::StartTlsNotOffered), "next", none()),
            (
                &Mode::Opportunistic,
                Err(SessionError::StartTlsInjection),
                "next",
                none(),
            ),
            (
                &dane,
                Err(SessionError::Timeout(Stage::Greeting)),
                "next",
                none(),
            ),
            (
                &dane,
                Err(SessionError::Connect("refused".into())),
                "next",
                none(),
            ),
            (
                &Mode::Opportunistic,
                Err(SessionError::AuthUnavailable(AuthUnavailable::NoTls)),
                "next",
                none(),
            ),
            // A streamed body SMTP cannot carry: no host would take it.
            (
                &dane,
                Err(SessionError::Body(crate::message::MessageError::Nul(3))),
                "finish",
                both(
                    Fate::Bounced,
                    "554 5.6.0 the message cannot be sent: line 3 contains a NUL byte",
                ),
            ),
            // Its source failed: deferred here, no other host would fare better.
            (
                &dane,
                Err(SessionError::Read("gone".into())),
                "finish",
                both(Fate::Deferred, "reading the message failed: gone"),
            ),
            // A reused connection was dead or died: the next address (a new connection).
            (&dane, Err(SessionError::Unusable), "next", none()),
            (
                &dane,
                refused(Stage::Rcpt, 421, "4.3.2 closing"),
                "next",
                none(),
            ),
        ];
        for (mode, result, kind, fates) in table {
            let what = format!("{mode:?} {result:?}");
            assert_eq!(next_of(mode, result), (kind.to_owned(), fates), "{what}");
        }
        // The bounce for a refused sender names the MTA; our own 552 names none.
        let mta = RemoteMta {
            host: n("mx.y.test"),
            address: "192.0.2.7".parse().unwrap(),
        };
        let to = ["a@y.test".to_owned()];
        let Next::Finish(r) =
            after_attempt(&dane, &refused(Stage::Mail, 550, "5.7.1 no"), &to, &mta)
        else {
            panic!("a refused sender bounces")
        };
        assert_eq!(r[0].reply.smtp().and_then(|s| s.mta.as_ref()), Some(&mta));
        let Next::Finish(r) = after_attempt(&dane, &Err(too_big), &to, &mta) else {
            panic!("too big bounces")
        };
        assert_eq!(
            r[0].reply
                .smtp()
                .map(|s| (s.code, s.enhanced, s.mta.is_none())),
            Some((552, Some(crate::reply::EnhancedStatus::new(5, 3, 4)), true))
        );
    }

    #[test]
    fn giving_up_defers_everyone_and_limits_stop_connecting() {
        let to = ["a@y.test".to_owned(), "b@y.test".to_owned()];
        let r = gave_up(&to, "mx.y.test: cannot connect");
        assert!(
            r.iter()
                .all(|r| r.outcome == Fate::Deferred && r.reply.smtp().is_none())
        );
        assert_eq!(
            r[1].reply.to_string(),
            format!("mx.y.test: cannot connect ({})", Rule::NextMx)
        );
        let limits = Limits::default();
        for (tried, sessions, reached) in [
            (0, 0, None),
            (4, 1, None),
            (5, 0, Some("5 addresses")),
            (3, 2, Some("2 sessions")),
            (5, 2, Some("5 addresses")),
        ] {
            assert_eq!(
                limits.reached(tried, sessions).as_deref(),
                reached,
                "{tried} {sessions}"
            );
        }
        let none = Limits {
            addresses: 0,
            sessions: 2,
        };
        assert_eq!(none.reached(0, 0).as_deref(), Some("0 addresses"));
    }

    #[test]
    fn the_rule_behind_an_attempt() {
        let dane = Mode::Required(Auth::Dane {
            records: vec![EE.parse().unwrap()],
            names: vec![],
        });
        let tls = || SessionError::Tls("alert".into());
        let dane_err = || SessionError::Dane(dane::VerifyError::EmptyChain);
        for (e, mode, planned, rule) in [
            (dane_err(), &dane, Rule::DaneMandatory, Rule::DaneAuth),
            (
                dane_err(),
                &Mode::Opportunistic,
                Rule::Policy,
                Rule::DaneAuth,
            ),
            (
                SessionError::StartTlsNotOffered,
                &dane,
                Rule::DaneMandatory,
                Rule::DaneMandatory,
            ),
            (
                SessionError::StartTlsInjection,
                &dane,
                Rule::DaneMandatory,
                Rule::DaneMandatory,
            ),
            (tls(), &dane, Rule::DaneMandatory, Rule::DaneMandatory),
            (
                tls(),
                &Mode::Opportunistic,
                Rule::Opportunistic,
                Rule::Opportunistic,
            ),
            (
                tls(),
                &Mode::Opportunistic,
                Rule::Policy,
                Rule::Opportunistic,
            ),
            (
                tls(),
                &Mode::Plaintext,
                Rule::PlaintextRetry,
                Rule::PlaintextRetry,
            ),
            (
                SessionError::Connect("refused".into()),
                &Mode::Plaintext,
                Rule::PlaintextRetry,
                Rule::PlaintextRetry,
            ),
            (
                SessionError::Connect("refused".into()),
                &dane,
                Rule::DaneMandatory,
                Rule::NextMx,
            ),
            (
                SessionError::StartTlsNotOffered,
                &Mode::Required(Auth::None),
                Rule::Policy,
                Rule::NextMx,
            ),
            (
                SessionError::Timeout(Stage::Greeting),
                &Mode::Opportunistic,
                Rule::Opportunistic,
                Rule::NextMx,
            ),
        ] {
            assert_eq!(
                rule_of_failure(&e, mode, planned),
                rule,
                "{e:?} {mode:?} {planned:?}"
            );
        }
        for (accepted, security, mode, planned, rule) in [
            (
                false,
                Security::Verified,
                &dane,
                Rule::DaneMandatory,
                Rule::Smtp,
            ),
            (
                true,
                Security::Verified,
                &dane,
                Rule::DaneMandatory,
                Rule::DaneAuth,
            ),
            (
                true,
                Security::Trusted,
                &dane,
                Rule::DaneMandatory,
                Rule::DaneAuth,
            ),
            (
                true,
                Security::Untrusted,
                &dane,
                Rule::DaneMandatory,
                Rule::DaneMandatory,
            ),
            (
                true,
                Security::Verified,
                &Mode::Required(Auth::None),
                Rule::Policy,
                Rule::Policy,
            ),
            (
                true,
                Security::Plaintext,
                &Mode::Plaintext,
                Rule::PlaintextRetry,
                Rule::PlaintextRetry,
            ),
            (
                false,
                Security::Plaintext,
                &Mode::Plaintext,
                Rule::PlaintextRetry,
                Rule::Smtp,
            ),
        ] {
            assert_eq!(
                rule_of_transaction(accepted, security, mode, planned),
                rule,
                "{accepted} {security:?} {mode:?} {planned:?}"
            );
        }
    }

    #[test]
    fn recipients_get_the_reply_that_decided_them() {
        let envelope =
            Envelope::new("a@x.test", ["ok@y.test", "later@y.test", "never@y.test"]).unwrap();
        let r = |code, text: &str| Reply::new(code, vec![text.into()]);
        let t = Transaction {
            rcpt: vec![
                r(250, "2.1.5 Ok"),
                r(451, "4.3.0 busy"),
                r(550, "5.1.1 unknown"),
            ],
            data: Some(r(250, "2.0.0 queued")),
        };
        let mta = RemoteMta {
            host: n("mx.y.test"),
            address: "192.0.2.7".parse().unwrap(),
        };
        let f: Vec<(Fate, String)> = fates(envelope.recipients(), &t, &mta)
            .into_iter()
            .map(|r| (r.outcome, r.reply.to_string()))
            .collect();
        assert_eq!(
            f,
            [
                (Fate::Delivered, "250 2.0.0 queued".into()),
                (Fate::Deferred, "451 4.3.0 busy".into()),
                (Fate::Bounced, "550 5.1.1 unknown".into())
            ]
        );
        let t = Transaction {
            rcpt: vec![r(250, "ok"), r(250, "ok"), r(250, "ok")],
            data: Some(r(452, "4.3.1 full")),
        };
        let f = fates(envelope.recipients(), &t, &mta);
        assert!(f.iter().all(|r| r.outcome == Fate::Deferred));
        // The typed reply: code, enhanced status, lines and who sent it.
        let smtp = f[0].reply.smtp().unwrap();
        assert_eq!(
            (smtp.code, smtp.enhanced, smtp.mta.as_ref()),
            (
                452,
                Some(crate::reply::EnhancedStatus::new(4, 3, 1)),
                Some(&mta)
            )
        );
    }
}
