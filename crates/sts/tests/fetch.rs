//! The policy fetch (RFC 8461 §3.3) and discovery (§5.1) against the lab's HTTPS server, with a
//! private CA as the only trust anchor. Addresses are given, not looked up, except in one test
//! with a fake resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use danemta_lab::https::{HttpsServer, HttpsSpec, Reply};
use danemta_lab::pki::{TestCa, TestCert};
use dns::{DnsName, Failure, Lookup, Outcome, Record, RecordType, Resolver, Status};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use sts::fetch::POLICY_PATH;
use sts::{
    AddressError, Discovery, DiscoveryError, FetchError, Fetcher, FixedAddresses, MemoryStore,
    Mode, Policy, PolicyStore, ResolverAddresses, ResultType, Source, Sts, TxtAnswer, TxtResolver,
};

const HOST: &str = "mta-sts.example.test";
const ENFORCE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.mx.example.test\r\nmax_age: 86400\r\n";

fn domain() -> DnsName {
    "example.test".parse().unwrap()
}

/// A private CA (the only trust anchor) and a policy host certificate it signed.
struct Pki {
    ca: TestCa,
    cert: TestCert,
}

impl Pki {
    fn new() -> Self {
        let ca = TestCa::new("Policy CA").unwrap();
        let cert = TestCert::ca_signed(&[HOST], &ca, false).unwrap();
        Self { ca, cert }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.cert_der().to_vec()))
            .unwrap();
        roots
    }
}

/// A server on a claimed loopback address presenting `cert` for the policy host, answering
/// `reply` on the policy path.
fn server(cert: &TestCert, reply: Reply) -> HttpsServer {
    HttpsServer::start(
        HttpsSpec::new(SocketAddr::from(([0, 0, 0, 0], 443)))
            .host(HOST, cert)
            .route(HOST, POLICY_PATH, reply),
    )
    .unwrap()
}

fn fetcher(pki: &Pki, server: &HttpsServer) -> Fetcher {
    Fetcher::new(pki.roots())
        .unwrap()
        .with_port(server.addr().port())
        .with_timeout(Duration::from_secs(5))
}

fn at(server: &HttpsServer) -> FixedAddresses {
    FixedAddresses(vec![server.addr().ip()])
}

#[tokio::test]
async fn a_valid_policy_is_fetched_with_sni_and_host_of_the_policy_host() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    let body = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap();
    assert_eq!(body, ENFORCE.as_bytes());
    let policy = Policy::parse(&body, "1".parse().unwrap()).unwrap();
    assert_eq!(policy.mode(), Mode::Enforce);
    assert!(policy.matches_mx("a.mx.example.test"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].server_name.as_deref(), Some(HOST));
    assert_eq!(requests[0].host.as_deref(), Some(HOST));
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, POLICY_PATH);
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_pkix() {
    let pki = Pki::new();
    let other_ca = TestCa::new("Someone else").unwrap();
    let foreign = TestCert::ca_signed(&[HOST], &other_ca, true).unwrap();
    let server = server(&foreign, Reply::text(ENFORCE));
    let err = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap_err();
    assert!(err.is_webpki(), "{err}");
    assert!(matches!(err, FetchError::Certificate { .. }), "{err:?}");
    assert_eq!(
        DiscoveryError::Fetch(err).result_type(),
        Some(ResultType::StsWebpkiInvalid)
    );
    assert!(
        server.requests().is_empty(),
        "no request over an untrusted connection"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_pkix() {
    let pki = Pki::new();
    let wrong = TestCert::ca_signed(&["www.example.test"], &pki.ca, false).unwrap();
    let server = server(&wrong, Reply::text(ENFORCE));
    let err = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap_err();
    match &err {
        FetchError::Certificate { source, .. } => {
            assert!(
                source.to_string().contains("not valid for name"),
                "{source}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_failed_handshake_without_a_certificate_verdict_is_not_a_pkix_failure() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    // The server has no certificate for mta-sts.other.test: it refuses the handshake.
    let other: DnsName = "other.test".parse().unwrap();
    let err = fetcher(&pki, &server)
        .fetch(&other, &at(&server))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
    assert!(!err.is_webpki());
    assert_eq!(
        server.server_names(),
        [Some("mta-sts.other.test".to_owned())]
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let pki = Pki::new();
    let server = server(
        &pki.cert,
        Reply::redirect("https://mta-sts.example.test/elsewhere.txt"),
    );
    server.set_reply(HOST, "/elsewhere.txt", Reply::text(ENFORCE));
    let err = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap_err();
    match err {
        FetchError::Redirect { status, location } => {
            assert_eq!(status, 301);
            assert_eq!(
                location.as_deref(),
                Some("https://mta-sts.example.test/elsewhere.txt")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn only_status_200_is_a_policy() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::content(404, Some("text/plain"), ENFORCE));
    let err = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Status(404)), "{err:?}");
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::content(204, Some("text/plain"), ""),
    );
    let err = fetcher(&pki, &server)
        .fetch(&domain(), &at(&server))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Status(204)), "{err:?}");
}

#[tokio::test]
async fn the_media_type_must_be_text_plain() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::content(200, Some("text/html"), ENFORCE));
    let fetcher = fetcher(&pki, &server);
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::ContentType(Some(t)) if t == "text/html"),
        "{err:?}"
    );
    server.set_reply(HOST, POLICY_PATH, Reply::content(200, None, ENFORCE));
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(matches!(err, FetchError::ContentType(None)), "{err:?}");
    // Parameters are fine.
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::content(200, Some("Text/Plain; charset=us-ascii"), ENFORCE),
    );
    assert!(fetcher.fetch(&domain(), &at(&server)).await.is_ok());
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let pki = Pki::new();
    let limit = sts::fetch::DEFAULT_BODY_LIMIT;
    let server = server(
        &pki.cert,
        Reply::content(200, Some("text/plain"), vec![b'#'; limit]),
    );
    let fetcher = fetcher(&pki, &server);
    // Exactly the limit: fetched (and then no valid policy, which is not this layer's concern).
    assert_eq!(
        fetcher.fetch(&domain(), &at(&server)).await.unwrap().len(),
        limit
    );
    // One byte more, announced by Content-Length.
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::content(200, Some("text/plain"), vec![b'#'; limit + 1]),
    );
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: l } if l == limit),
        "{err:?}"
    );
    // A chunked body that never ends: the client stops at the limit.
    server.set_reply(HOST, POLICY_PATH, Reply::Endless);
    let started = Instant::now();
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A smaller limit of the caller's choosing.
    server.set_reply(HOST, POLICY_PATH, Reply::text(ENFORCE));
    let small = fetcher.clone().with_body_limit(16);
    let err = small.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { limit: 16 }), "{err:?}");
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::Stall);
    let fetcher = fetcher(&pki, &server).with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout(t) if t == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.requests().len(), 1, "the request was sent");
}

#[tokio::test]
async fn a_refused_connection_is_a_fetch_error() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    // Nothing listens on port 1 of the server's address.
    let fetcher = fetcher(&pki, &server).with_port(1);
    let err = fetcher.fetch(&domain(), &at(&server)).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    assert_eq!(
        DiscoveryError::Fetch(err).result_type(),
        Some(ResultType::StsPolicyFetchError)
    );
}

/// TXT answers from a table the test changes as it goes.
#[derive(Default)]
struct Txt(Mutex<HashMap<String, TxtAnswer>>);

impl Txt {
    fn publish(&self, id: &str) {
        self.set(TxtAnswer::Records(vec![
            b"v=spf1 -all".to_vec(),
            format!("v=STSv1; id={id};").into_bytes(),
        ]));
    }

    fn set(&self, answer: TxtAnswer) {
        self.0
            .lock()
            .unwrap()
            .insert("_mta-sts.example.test".into(), answer);
    }
}

impl TxtResolver for Txt {
    async fn txt(&self, name: &DnsName) -> TxtAnswer {
        self.0
            .lock()
            .unwrap()
            .get(name.as_str())
            .cloned()
            .unwrap_or(TxtAnswer::NoRecords)
    }
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

type TestSts = Sts<Arc<Txt>, FixedAddresses, Arc<MemoryStore>>;

fn discovery(pki: &Pki, server: &HttpsServer) -> (TestSts, Arc<Txt>, Arc<MemoryStore>) {
    let txt = Arc::new(Txt::default());
    let store = Arc::new(MemoryStore::new());
    // Retry at once after a failure, so each step below really fetches.
    let sts = Sts::new(txt.clone(), at(server), store.clone(), fetcher(pki, server))
        .with_retry_after(Duration::ZERO);
    (sts, txt, store)
}

#[tokio::test]
async fn a_cached_enforce_policy_survives_a_blocked_fetch_and_a_vanished_record() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    let (sts, txt, store) = discovery(&pki, &server);
    txt.publish("a1");
    let fresh = sts.policy_for(&domain(), t(0)).await.unwrap();
    assert!(
        matches!(
            fresh,
            Discovery::Policy {
                source: Source::Fetched,
                ..
            }
        ),
        "{fresh:?}"
    );
    assert_eq!(store.get(&domain()).unwrap().unwrap().fetched_at, t(0));

    // The attacker announces a new policy and blocks its fetch (the host stalls, or answers
    // with garbage): the cached enforce policy still applies.
    txt.publish("a2");
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::content(500, Some("text/plain"), "no"),
    );
    let got = sts.policy_for(&domain(), t(60)).await.unwrap();
    let Discovery::Policy {
        policy,
        source: Source::CachedFallback(why),
    } = got
    else {
        panic!("{got:?}");
    };
    assert_eq!((policy.mode(), policy.id().as_str()), (Mode::Enforce, "a1"));
    assert!(
        matches!(why, DiscoveryError::Fetch(FetchError::Status(500))),
        "{why:?}"
    );

    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::text("version: STSv1\nmode: nonsense\n"),
    );
    let got = sts.policy_for(&domain(), t(61)).await.unwrap();
    assert_eq!(got.policy().map(Policy::mode), Some(Mode::Enforce));
    assert_eq!(
        got.error().and_then(DiscoveryError::result_type),
        Some(ResultType::StsPolicyInvalid)
    );

    // The TXT record disappears, or its lookup fails: still the cached policy.
    for answer in [TxtAnswer::NoRecords, TxtAnswer::Failed(Failure::Timeout)] {
        txt.set(answer.clone());
        let got = sts.policy_for(&domain(), t(120)).await.unwrap();
        assert_eq!(
            got.policy().map(Policy::mode),
            Some(Mode::Enforce),
            "{answer:?}"
        );
        assert!(matches!(
            got,
            Discovery::Policy {
                source: Source::CachedFallback(_),
                ..
            }
        ));
    }
    // The cache still holds the fetched policy, untouched.
    let cached = store.get(&domain()).unwrap().unwrap();
    assert_eq!(
        (cached.policy.id().as_str(), cached.fetched_at),
        ("a1", t(0))
    );

    // Once it has expired (max_age 86400), nothing protects the domain any more.
    let got = sts.policy_for(&domain(), t(86_400)).await.unwrap();
    assert!(
        matches!(got, Discovery::NoPolicy(DiscoveryError::TxtLookup { .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_new_txt_id_triggers_a_refetch_and_mode_none_withdraws() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    let (sts, txt, store) = discovery(&pki, &server);
    txt.publish("v1");
    assert!(matches!(
        sts.policy_for(&domain(), t(0)).await.unwrap(),
        Discovery::Policy {
            source: Source::Fetched,
            ..
        }
    ));
    // Same id: the cache, no request.
    let got = sts.policy_for(&domain(), t(10)).await.unwrap();
    assert!(
        matches!(
            got,
            Discovery::Policy {
                source: Source::Cached,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(server.requests().len(), 1);

    // A new id: fetched again, and the new policy replaces the old one.
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::text("version: STSv1\nmode: testing\nmx: mx2.example.test\nmax_age: 3600\n"),
    );
    txt.publish("v2");
    let got = sts.policy_for(&domain(), t(20)).await.unwrap();
    let Discovery::Policy {
        policy,
        source: Source::Fetched,
    } = got
    else {
        panic!("{got:?}");
    };
    assert_eq!((policy.mode(), policy.id().as_str()), (Mode::Testing, "v2"));
    assert!(policy.matches_mx("mx2.example.test") && !policy.matches_mx("mx1.example.test"));
    assert_eq!(server.requests().len(), 2);
    assert_eq!(store.get(&domain()).unwrap().unwrap().policy, policy);

    // Mode none is cached like any other policy: the domain has withdrawn.
    server.set_reply(
        HOST,
        POLICY_PATH,
        Reply::text("version: STSv1\nmode: none\nmax_age: 3600\n"),
    );
    txt.publish("v3");
    let got = sts.policy_for(&domain(), t(30)).await.unwrap();
    assert_eq!(got.policy().map(Policy::mode), Some(Mode::None));
    txt.set(TxtAnswer::NoRecords);
    let got = sts.policy_for(&domain(), t(40)).await.unwrap();
    assert_eq!(got.policy().map(Policy::mode), Some(Mode::None));
    assert_eq!(server.requests().len(), 3);
}

/// A and AAAA from a table; anything else is a secure NXDOMAIN.
struct Zone(HashMap<(String, RecordType), Lookup>);

impl Resolver for Zone {
    async fn lookup(&self, name: &DnsName, rtype: RecordType) -> Lookup {
        self.0
            .get(&(name.as_str().to_owned(), rtype))
            .cloned()
            .unwrap_or_else(|| {
                dns::testing::lookup(
                    name.clone(),
                    rtype,
                    Status::Secure,
                    Outcome::NxDomain,
                    vec![],
                    60,
                )
            })
    }
}

fn address(
    name: &str,
    rtype: RecordType,
    status: Status,
    ip: IpAddr,
) -> ((String, RecordType), Lookup) {
    let lookup = dns::testing::lookup(
        name.parse().unwrap(),
        rtype,
        status,
        Outcome::Records(vec![Record::Address(ip)]),
        vec![],
        60,
    );
    ((name.to_owned(), rtype), lookup)
}

#[tokio::test]
async fn the_policy_host_is_found_through_a_resolver_and_bogus_addresses_are_not_used() {
    let pki = Pki::new();
    let server = server(&pki.cert, Reply::text(ENFORCE));
    let ip = server.addr().ip();
    // Insecure is fine for the policy host (PKIX authenticates it).
    let zone = Zone(HashMap::from([
        address(HOST, RecordType::A, Status::Insecure, ip),
        address("mta-sts.bogus.test", RecordType::A, Status::Bogus, ip),
    ]));
    let addresses = ResolverAddresses(Arc::new(zone));
    let fetcher = fetcher(&pki, &server);
    let body = fetcher.fetch(&domain(), &addresses).await.unwrap();
    assert_eq!(body, ENFORCE.as_bytes());

    let bogus: DnsName = "bogus.test".parse().unwrap();
    let err = fetcher.fetch(&bogus, &addresses).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Addresses {
                source: AddressError::Unusable {
                    status: Status::Bogus,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    let nowhere: DnsName = "nowhere.test".parse().unwrap();
    let err = fetcher.fetch(&nowhere, &addresses).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Addresses {
                source: AddressError::NoAddresses,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}
