//! Keys, fingerprints, and leases against a real Redis (a fresh key prefix per test).

#![allow(clippy::unwrap_used)]

use ordo_idempotency::{
    Answer, Claim, ClaimFailed, KEY_BYTES_MAX, KeyError, LeaseConfig, LeaseError, Leases, fingerprint,
    parse_key,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn check(header: &str, expected: Result<&str, KeyError>) {
    assert_eq!(parse_key(header), expected.map(str::to_string), "{header:?}");
}

#[test]
fn keys() {
    check("abc", Ok("abc"));
    check("6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab", Ok("6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab"));
    check("\"abc\"", Ok("abc"));
    check("\"with space and \\\"quotes\\\" and \\\\\"", Ok("with space and \"quotes\" and \\"));
    check(&"k".repeat(KEY_BYTES_MAX), Ok(&"k".repeat(KEY_BYTES_MAX)));
    check("", Err(KeyError::Empty));
    check("\"\"", Err(KeyError::Empty));
    check("   ", Err(KeyError::Empty));
    check(&"k".repeat(KEY_BYTES_MAX + 1), Err(KeyError::TooLong(256)));
    check(&format!("\"{}\"", "k".repeat(KEY_BYTES_MAX + 1)), Err(KeyError::TooLong(256)));
    check("a\tb", Err(KeyError::NotPrintable(1)));
    check("a\u{7f}", Err(KeyError::NotPrintable(1)));
    check("ключ", Err(KeyError::NotPrintable(0)));
    check("a b", Err(KeyError::NotPrintable(1)));
    check("a,b", Err(KeyError::NotPrintable(1)));
    check("\"abc", Err(KeyError::BadQuoting("no closing quote")));
    check("\"a\"b\"", Err(KeyError::BadQuoting("an unescaped quote inside")));
    check("\"a\\nb\"", Err(KeyError::BadQuoting("only \\\" and \\\\ may be escaped")));
}

#[test]
fn fingerprints_ignore_layout_and_key_order_but_nothing_else() {
    let a: serde_json::Value =
        serde_json::from_str(r#"{"sku": "x", "amount": 10, "nested": {"b": 1, "a": [1, 2]}}"#).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(r#"{"nested":{"a":[1,2],"b":1},"amount":10,"sku":"x"}"#).unwrap();
    let base = fingerprint("POST", "/orders", &a);
    assert_eq!(base, fingerprint("POST", "/orders", &b), "same meaning, same fingerprint");
    assert_eq!(base, fingerprint("post", "/orders", &b), "methods are case-insensitive");
    assert_eq!(base.len(), 64);
    for (method, route, body) in [
        ("PUT", "/orders", a.clone()),
        ("POST", "/orders/x/pay", a.clone()),
        ("POST", "/orders", json!({"sku": "x", "amount": 11, "nested": {"b": 1, "a": [1, 2]}})),
        ("POST", "/orders", json!({"sku": "x", "amount": 10, "nested": {"b": 1, "a": [2, 1]}})),
        ("POST", "/orders", json!({"sku": "x", "amount": "10", "nested": {"b": 1, "a": [1, 2]}})),
    ] {
        assert_ne!(base, fingerprint(method, route, &body), "{method} {route} {body}");
    }
    // The parts are length-prefixed: moving a byte between route and body changes it.
    assert_ne!(fingerprint("POST", "/a", &json!("b")), fingerprint("POST", "/a\"", &json!("")));
}

/// Leases under a prefix of their own, whose keys go with them.
struct TestLeases {
    leases: Leases,
    _prefix: ordo_testkit::RedisPrefix,
}

impl std::ops::Deref for TestLeases {
    type Target = Leases;
    fn deref(&self) -> &Leases {
        &self.leases
    }
}

async fn leases(lease_ms: u64) -> TestLeases {
    leases_keeping(lease_ms, ordo_idempotency::ANSWER_MS_DEFAULT).await
}

async fn leases_keeping(lease_ms: u64, answer_ms: u64) -> TestLeases {
    let prefix = ordo_testkit::redis_prefix();
    let mut config = LeaseConfig::new(ordo_testkit::redis_url(), prefix.to_string());
    config.lease_ms = lease_ms;
    config.answer_ms = answer_ms;
    TestLeases { leases: Leases::connect(config).await.unwrap(), _prefix: prefix }
}

#[tokio::test]
async fn a_lease_holds_a_key_until_released() {
    let l = leases(10_000).await;
    l.ping().await.unwrap();
    let Claim::Acquired(lease) = l.claim("tenant-a", "k1").await.unwrap() else { panic!("free key") };
    match l.claim("tenant-a", "k1").await.unwrap() {
        Claim::Held { retry_after_ms } => assert!(retry_after_ms > 0 && retry_after_ms <= 10_000),
        other => panic!("{other:?}"),
    }
    // Tenants never share keys: the same key of another tenant is free.
    assert!(matches!(l.claim("tenant-b", "k1").await.unwrap(), Claim::Acquired(_)));
    // The length prefix keeps ("a:b", "c") and ("a", "b:c") apart.
    assert!(matches!(l.claim("a:b", "c").await.unwrap(), Claim::Acquired(_)));
    assert!(matches!(l.claim("a", "b:c").await.unwrap(), Claim::Acquired(_)));
    assert!(l.release(&lease).await.unwrap());
    assert!(!l.release(&lease).await.unwrap(), "released once");
    let Claim::Acquired(again) = l.claim("tenant-a", "k1").await.unwrap() else { panic!("released key") };
    assert!(again.fencing_token > lease.fencing_token, "fencing tokens increase");
}

#[tokio::test]
async fn a_lease_expires_by_itself_and_the_late_holder_cannot_release_the_next() {
    let l = leases(150).await;
    let Claim::Acquired(old) = l.claim("t", "k").await.unwrap() else { panic!() };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let Claim::Acquired(new) = l.claim("t", "k").await.unwrap() else {
        panic!("expired lease frees the key")
    };
    assert!(!l.release(&old).await.unwrap(), "an expired holder does not release the new lease");
    assert!(matches!(l.claim("t", "k").await.unwrap(), Claim::Held { .. }));
    assert!(l.release(&new).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_claims_one_winner() {
    let l = Arc::new(leases(10_000).await);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.claim("t", "race").await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Claim::Acquired(_)) {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn redis_away_is_unavailable_fast() {
    // Nothing listens on this port: every call fails within the timeout, never hangs.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = LeaseConfig::new(format!("redis://127.0.0.1:{port}"), "nothing-listens:".to_string());
    config.timeout_ms = 100;
    let started = std::time::Instant::now();
    let l = Leases::connect(config).await.unwrap();
    assert!(matches!(l.claim("t", "k").await, Err(ClaimFailed { error: LeaseError::Unavailable(_), .. })));
    assert!(matches!(l.ping().await, Err(LeaseError::Unavailable(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_come_back_with_redis() {
    let proxy = ordo_testkit::FaultProxy::start(ordo_testkit::socket_of(&ordo_testkit::redis_url())).await;
    let prefix = ordo_testkit::redis_prefix();
    let mut config = LeaseConfig::new(proxy.url_via(&ordo_testkit::redis_url()), prefix.to_string());
    config.timeout_ms = 200;
    let l = Leases::connect(config).await.unwrap();
    assert!(matches!(l.claim("t", "before").await.unwrap(), Claim::Acquired(_)));
    proxy.set_down(true);
    assert!(matches!(
        l.claim("t", "during").await,
        Err(ClaimFailed { error: LeaseError::Unavailable(_), .. })
    ));
    proxy.set_down(false);
    let mut back = false;
    for _ in 0..300 {
        if let Ok(Claim::Acquired(_)) = l.claim("t", "after").await {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "the client reconnects by itself");
}

/// Redis holds what a claim leaves (the lease and the key's fencing counter) for a bounded
/// time: the counter expires `FENCE_LEASES` leases after its last claim, not a day later.
#[tokio::test]
async fn a_claim_leaves_nothing_in_redis_for_longer_than_its_fence() {
    use fred::prelude::*;
    let l = leases(1_000).await;
    let Claim::Acquired(lease) = l.claim("t", "k").await.unwrap() else { panic!("free key") };
    assert!(l.release(&lease).await.unwrap());
    let client = Client::new(Config::from_url(&ordo_testkit::redis_url()).unwrap(), None, None, None);
    client.init().await.unwrap();
    // The lease's key and its counter, as `Leases` names them.
    let key = format!("{}idem:{{1:t:k}}", &*l._prefix);
    let gone: i64 = client.exists(&key).await.unwrap();
    assert_eq!(gone, 0, "the released lease is gone");
    let ttl: i64 = client.pttl(format!("{key}:fence")).await.unwrap();
    let fence = i64::try_from(1_000 * ordo_idempotency::FENCE_LEASES).unwrap();
    assert!(ttl > 0 && ttl <= fence, "the counter expires within {fence} ms: {ttl}");
}

fn answer(fingerprint: &str) -> Answer {
    Answer { fingerprint: fingerprint.to_string(), outcome: r#"{"outcome":"applied"}"#.to_string() }
}

/// A settled key answers its claims with what settled it, for `answer_ms`, then is free;
/// a holder whose lease expired settles nothing.
#[tokio::test]
async fn a_settled_key_is_answered_by_its_claim_until_the_answer_expires() {
    let l = leases_keeping(10_000, 300).await;
    let Claim::Acquired(lease) = l.claim("t", "k").await.unwrap() else { panic!("free key") };
    assert!(l.settle(&lease, &answer("f1")).await.unwrap());
    for _ in 0..2 {
        assert_eq!(l.claim("t", "k").await.unwrap(), Claim::Answered(answer("f1")));
    }
    assert!(!l.release(&lease).await.unwrap(), "a settled key is no longer a lease to release");
    assert!(matches!(l.claim("t", "other").await.unwrap(), Claim::Acquired(_)), "keys are apart");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let Claim::Acquired(next) = l.claim("t", "k").await.unwrap() else { panic!("the answer expired") };
    assert!(next.fencing_token > lease.fencing_token);

    let l = leases_keeping(150, 10_000).await;
    let Claim::Acquired(late) = l.claim("t", "k").await.unwrap() else { panic!("free key") };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Claim::Acquired(winner) = l.claim("t", "k").await.unwrap() else { panic!("expired lease") };
    assert!(!l.settle(&late, &answer("late")).await.unwrap(), "an expired holder settles nothing");
    assert!(matches!(l.claim("t", "k").await.unwrap(), Claim::Held { .. }), "the winner still holds it");
    assert!(l.settle(&winner, &answer("winner")).await.unwrap());
    assert_eq!(l.claim("t", "k").await.unwrap(), Claim::Answered(answer("winner")));
}

/// Keeping no answers (`answer_ms` 0), settling is releasing.
#[tokio::test]
async fn with_no_answers_kept_settling_releases() {
    let l = leases_keeping(10_000, 0).await;
    let Claim::Acquired(lease) = l.claim("t", "k").await.unwrap() else { panic!("free key") };
    assert!(l.settle(&lease, &answer("f")).await.unwrap());
    assert!(matches!(l.claim("t", "k").await.unwrap(), Claim::Acquired(_)));
}

/// A lease lives as long as the work its holder does under `hold`, however much longer
/// than `lease_ms` that is; a holder that stops renewing (a killed process) frees the key
/// `lease_ms` later.
#[tokio::test]
async fn a_held_lease_outlives_its_term_and_dies_with_its_holder() {
    let l = leases(300).await;
    let Claim::Acquired(lease) = l.claim("t", "k").await.unwrap() else { panic!("free key") };
    let l2 = leases_sharing(&l, 300).await;
    let probe = async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        l2.claim("t", "k").await.unwrap()
    };
    let during = l.hold(&lease, probe).await;
    assert!(matches!(during, Claim::Held { .. }), "held three terms on: {during:?}");
    // The holder stops renewing, as a killed one does.
    let start = std::time::Instant::now();
    loop {
        match l.claim("t", "k").await.unwrap() {
            Claim::Acquired(_) => break,
            Claim::Held { .. } => {
                assert!(start.elapsed() < Duration::from_millis(1_000), "freed within a term")
            }
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Another client (another server) on the same prefix.
async fn leases_sharing(l: &TestLeases, lease_ms: u64) -> Leases {
    let mut config = LeaseConfig::new(ordo_testkit::redis_url(), l._prefix.to_string());
    config.lease_ms = lease_ms;
    Leases::connect(config).await.unwrap()
}

/// A claim whose answer never came (Redis hung past the timeout, then ran it) may hold the
/// key under its token: its holder ends it all the same, so the key does not hold the
/// client's retry for a lease's term.
#[tokio::test]
async fn a_claim_that_got_no_answer_is_ended_by_its_holder() {
    let proxy = ordo_testkit::FaultProxy::start(ordo_testkit::socket_of(&ordo_testkit::redis_url())).await;
    let l = leases(10_000).await;
    let mut config = LeaseConfig::new(proxy.url_via(&ordo_testkit::redis_url()), l._prefix.to_string());
    config.lease_ms = 10_000;
    config.timeout_ms = 200;
    let slow = Leases::connect(config).await.unwrap();
    slow.ping().await.unwrap();
    proxy.set_stalled(true);
    let failed = slow.claim("t", "k").await.unwrap_err();
    // Redis gets the claim late, and runs it: a ping on the same connection is answered
    // after it.
    proxy.set_stalled(false);
    slow.ping().await.unwrap();
    assert!(matches!(l.claim("t", "k").await.unwrap(), Claim::Held { .. }), "the late claim took the key");
    assert!(slow.settle(&failed.uncertain, &answer("late")).await.unwrap(), "its holder settles it");
    assert_eq!(l.claim("t", "k").await.unwrap(), Claim::Answered(answer("late")));
}
