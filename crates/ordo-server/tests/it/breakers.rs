//! The circuit breakers: a failing Redis or database trips its breaker, calls are refused
//! at once instead of waiting out timeouts, and the breaker closes by itself once the
//! dependency answers again.

use crate::metrics::sample;
use crate::*;
use ordo_testkit::FaultProxy;
use poem::http::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// A breaker's samples on `/metrics`: state (0 closed, 1 half-open, 2 open), trips,
/// recoveries, refused calls.
async fn breaker(api: &Api, name: &str) -> [f64; 4] {
    let text = api.get("/metrics").await.text;
    let label = format!("breaker=\"{name}\"");
    [
        "ordo_breaker_state{",
        "ordo_breaker_trips_total{",
        "ordo_breaker_recoveries_total{",
        "ordo_breaker_refused_total{",
    ]
    .map(|metric| sample(&text, &[metric, &label]))
}

/// Sends restocks (each its own key) until `done` says the breaker got where it should,
/// for at most `within`.
async fn until(api: &Api, name: &str, within: Duration, done: impl Fn([f64; 4]) -> bool) -> [f64; 4] {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let seen = breaker(api, name).await;
        if done(seen) {
            return seen;
        }
        assert!(start.elapsed() < within, "breaker {name} stuck at {seen:?}");
        n += 1;
        api.post("/inventory/s/restock", &format!("wait-{n}"), json!({"quantity": 1})).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis hangs (connections open, nothing answered): the first requests each wait out the
/// Redis timeout, then the breaker opens and requests go on without leases at once, every
/// one still applied exactly once; when Redis answers again a probe closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_redis_trips_its_breaker_which_closes_by_itself() {
    let proxy = FaultProxy::start(ordo_testkit::socket_of(&ordo_testkit::redis_url())).await;
    let via = proxy.url_via(&ordo_testkit::redis_url());
    let api = api(ordo_testkit::Backend::Postgres, |c| {
        c.redis_url = Some(via);
        c.breaker_failures = 3;
        // Long enough (1.5 to 3 s, jittered) that the checks of the open breaker below
        // run before its first probe.
        c.breaker_cooldown_ms = 3_000;
    })
    .await;
    assert_eq!(breaker(&api, "redis").await, [0.0; 4]);
    proxy.set_stalled(true);
    for i in 0..3 {
        let r = api.post("/inventory/s/restock", &format!("k{i}"), json!({"quantity": 1})).await;
        assert_eq!(r.status, StatusCode::OK, "served without a lease");
    }
    let [state, trips, _, refused] = breaker(&api, "redis").await;
    assert_eq!((state, trips), (2.0, 1.0), "open after three failures in a row");
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "Redis does not make the server unready: {}", ready.text);
    assert!(ready.text.contains("redis: circuit open"), "{}", ready.text);
    // While open, claims are refused at once (not tried), and requests still apply once.
    for i in 0..10 {
        let key = format!("open-{i}");
        let first = api.post("/inventory/s/restock", &key, json!({"quantity": 1})).await;
        let again = api.post("/inventory/s/restock", &key, json!({"quantity": 1})).await;
        assert_eq!((first.status, again.status), (StatusCode::OK, StatusCode::OK));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    let [state, _, _, refused_now] = breaker(&api, "redis").await;
    assert_eq!(state, 2.0);
    assert!(refused_now >= refused + 20.0, "claims refused by the open breaker: {refused} -> {refused_now}");
    assert_eq!(api.get("/inventory/s").await.body["available"], 13, "each restock applied once");
    // Redis answers again (the hung connections are dropped, as a restarted Redis's are).
    proxy.set_stalled(false);
    proxy.cut_all();
    let [_, trips, recoveries, _] = until(&api, "redis", Duration::from_secs(15), |s| s[0] == 0.0).await;
    assert_eq!((trips, recoveries), (1.0, 1.0), "closed by itself, after one trip");
    let r = api.post("/inventory/s/restock", "after", json!({"quantity": 1})).await;
    assert_eq!(r.status, StatusCode::OK);
    let held = api.get("/readyz").await;
    assert!(held.text.contains("redis: ok"), "{}", held.text);
}

/// The database goes away: requests fail (503) until the breaker opens, then are refused
/// at once with Retry-After and `/readyz` says so; once the database is back a probe
/// closes the breaker and requests are served again, with nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_database_trips_its_breaker_which_closes_by_itself() {
    let proxy = FaultProxy::start(ordo_testkit::socket_of(&ordo_testkit::pg_admin_url())).await;
    let api = api(ordo_testkit::Backend::Postgres, |c| {
        c.database_url = proxy.url_via(&c.database_url);
        c.acquire_timeout_ms = 500;
        c.breaker_failures = 3;
        c.breaker_cooldown_ms = 200;
    })
    .await;
    assert_eq!(
        api.post("/inventory/s/restock", "before", json!({"quantity": 1})).await.status,
        StatusCode::OK
    );
    proxy.set_down(true);
    let state = until(&api, "database", Duration::from_secs(30), |s| s[0] == 2.0).await;
    assert_eq!(state[1], 1.0, "one trip");
    let refused = api.post("/inventory/s/restock", "refused", json!({"quantity": 1})).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.body["type"], "urn:ordo:problem:overloaded");
    assert_eq!(api.get("/inventory/s").await.status, StatusCode::SERVICE_UNAVAILABLE, "reads too");
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text.contains("circuit open"), "{}", ready.text);
    assert!(breaker(&api, "database").await[3] >= 2.0, "refused at once, not tried");
    proxy.set_down(false);
    let [_, trips, recoveries, _] = until(&api, "database", Duration::from_secs(30), |s| s[0] == 0.0).await;
    assert_eq!((trips, recoveries), (1.0, 1.0));
    let r = api.post("/inventory/s/restock", "refused", json!({"quantity": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "the refused request's retry is served: {}", r.text);
    assert!(r.header("idempotent-replayed").is_none(), "it was never applied");
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);
    let waits = breaker(&api, "database").await;
    let available = api.get("/inventory/s").await.body["available"].as_i64().unwrap();
    let restocks = api.count("ordo_idempotency").await;
    assert_eq!(available, restocks, "each recorded restock applied once, none lost ({waits:?})");
}
