//! The idempotency contract over HTTP.

use crate::*;
use poem::http::{Method, StatusCode};
use serde_json::json;

on_both!(no_key_is_400_and_writes_nothing, |backend| async move {
    let api = stocked(backend).await;
    let r = api.call(Method::POST, "/orders", None, Some(&order().to_string()), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["type"], "urn:ordo:problem:missing-idempotency-key");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(api.count("orders").await, 0);
});

on_both!(bad_keys_are_400, |backend| async move {
    let api = stocked(backend).await;
    for key in ["", &"k".repeat(256), "a\tb", "\"unterminated"] {
        let r = api.call(Method::POST, "/orders", Some(key), Some(&order().to_string()), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(r.body["type"], "urn:ordo:problem:bad-idempotency-key", "{key:?}");
    }
    assert_eq!(api.count("orders").await, 0);
});

on_both!(same_key_twice_replays_the_first_answer, |backend| async move {
    let api = stocked(backend).await;
    let first = api.post("/orders", "order-1", order()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.header("idempotent-replayed").is_none());
    let id = first.body["id"].as_str().unwrap().to_string();
    assert_eq!(first.header("location"), Some(format!("/orders/{id}").as_str()));
    assert_eq!(first.header("etag"), Some("\"1\""));
    // Same JSON, other key order and layout: a replay, not a conflict.
    let reordered = r#"{ "amount": 100, "account": "acct",   "quantity": 2, "sku": "sku-1" }"#;
    let second = api.call(Method::POST, "/orders", Some("order-1"), Some(reordered), None).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(api.count("orders").await, 1);
    // Two resource operations seeded the stock; the order adds one journal and outbox row.
    assert_eq!(api.count("ordo_transitions").await, 3);
    assert_eq!(api.count("ordo_outbox").await, 3);
    let stock = api.get("/inventory/sku-1").await;
    assert_eq!(stock.body["available"], 98, "the stock was taken once");
});

on_both!(a_key_reused_for_another_request_is_422_and_the_original_still_replays, |backend| async move {
    let api = stocked(backend).await;
    let first = api.post("/orders", "k", order()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.body["id"].as_str().unwrap().to_string();
    let mut other = order();
    other["amount"] = json!(101);
    for (method, path, body) in [
        (Method::POST, "/orders".to_string(), other.to_string()),
        (Method::POST, format!("/orders/{id}/pay"), "{}".to_string()),
    ] {
        let r = api.call(method, &path, Some("k"), Some(&body), None).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(r.body["type"], "urn:ordo:problem:idempotency-key-reused");
    }
    let again = api.post("/orders", "k", order()).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (StatusCode::CREATED, Some("true")));
    assert_eq!(again.body, first.body);
});

on_both!(tenants_have_their_own_keys, |backend| async move {
    let a = "aaaaaaaaaaaaaaaaaaaa";
    let b = "bbbbbbbbbbbbbbbbbbbb";
    let api = api(backend, |c| c.api_keys = format!("ta:{a},tb:{b}")).await;
    let body = json!({"quantity": 5}).to_string();
    let unauth = api.call(Method::POST, "/inventory/s/restock", Some("k"), Some(&body), None).await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    let wrong = api
        .call(Method::POST, "/inventory/s/restock", Some("k"), Some(&body), Some("nope-nope-nope-nope"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ra = api.call(Method::POST, "/inventory/s/restock", Some("k"), Some(&body), Some(a)).await;
    let rb = api.call(Method::POST, "/inventory/s/restock", Some("k"), Some(&body), Some(b)).await;
    assert_eq!((ra.status, rb.status), (StatusCode::OK, StatusCode::OK));
    assert!(rb.header("idempotent-replayed").is_none(), "tenant B's key is its own");
    let read_a = api.call(Method::GET, "/inventory/s", None, None, Some(a)).await;
    assert_eq!(read_a.body["available"], 5, "tenant A's row holds only A's stock");
});

on_both!(a_malformed_body_does_not_burn_the_key, |backend| async move {
    let api = stocked(backend).await;
    let bad = api.call(Method::POST, "/orders", Some("k"), Some("{\"sku\": "), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["type"], "urn:ordo:problem:malformed-request");
    let wrong_type = api
        .call(
            Method::POST,
            "/orders",
            Some("k"),
            Some(r#"{"sku":"x","quantity":"2","account":"a","amount":1}"#),
            None,
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    let good = api.post("/orders", "k", order()).await;
    assert_eq!(good.status, StatusCode::CREATED);
    assert!(good.header("idempotent-replayed").is_none());
});

on_both!(rejections_are_remembered_and_replayed, |backend| async move {
    let api = stocked(backend).await;
    let id = api.post("/orders", "o", order()).await.body["id"].as_str().unwrap().to_string();
    let ship = api.post(&format!("/orders/{id}/ship"), "s", json!({"carrier": "ups"})).await;
    assert_eq!(ship.status, StatusCode::CONFLICT);
    assert_eq!(ship.body["type"], "urn:ordo:problem:invalid-transition");
    assert_eq!(ship.body["state"], "pending");
    assert_eq!(ship.body["allowed"], json!(["pay", "cancel"]));
    // Paying now would make `ship` legal, but the key's answer stays the recorded 409.
    assert_eq!(api.post(&format!("/orders/{id}/pay"), "p", json!({})).await.status, StatusCode::OK);
    let again = api.post(&format!("/orders/{id}/ship"), "s", json!({"carrier": "ups"})).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (StatusCode::CONFLICT, Some("true")));
    assert_eq!(again.body, ship.body);
    // Other rejections map to their statuses.
    let guard = api.post(&format!("/orders/{id}/ship"), "g", json!({"carrier": ""})).await;
    assert_eq!(
        (guard.status, guard.body["guard"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("has_carrier"))
    );
    let stale = api
        .client
        .post(format!("/orders/{id}/ship"))
        .header("Idempotency-Key", "st")
        .header("If-Match", "\"1\"")
        .body_json(&json!({"carrier": "ups"}))
        .send()
        .await;
    stale.assert_status(StatusCode::PRECONDITION_FAILED);
    let missing = api.post("/orders/01a22269-0ece-7462-b161-5788e23c3750/pay", "m", json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let oversold = api
        .post("/orders", "big", json!({"sku": "sku-1", "quantity": 1000, "account": "a", "amount": 1}))
        .await;
    assert_eq!(
        (oversold.status, oversold.body["resource"].clone()),
        (StatusCode::CONFLICT, json!("Inventory"))
    );
    let invalid = api
        .post("/orders", "zero", json!({"sku": "sku-1", "quantity": 0, "account": "a", "amount": 1}))
        .await;
    assert_eq!(
        (invalid.status, invalid.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("quantity"))
    );
});

on_both!(a_record_past_its_retention_is_processed_as_new, |backend| async move {
    let api = api(backend, |c| c.idempotency_ttl_ms = 200).await;
    let first = api.post("/inventory/s/restock", "k", json!({"quantity": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let second = api.post("/inventory/s/restock", "k", json!({"quantity": 1})).await;
    assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK));
    assert!(second.header("idempotent-replayed").is_none());
    assert_eq!(second.body["available"], 2);
});

on_both!(fifty_parallel_requests_with_one_key_apply_once, |backend| async move {
    let api = std::sync::Arc::new(stocked(backend).await);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.post("/orders", "race", order()).await })
        })
        .collect();
    let (mut fresh, mut replayed, mut in_flight) = (0, 0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match (r.status, r.header("idempotent-replayed")) {
            (StatusCode::CREATED, None) => fresh += 1,
            (StatusCode::CREATED, Some("true")) => replayed += 1,
            (StatusCode::CONFLICT, None) => {
                assert_eq!(r.body["type"], "urn:ordo:problem:idempotency-key-in-use");
                assert!(r.header("retry-after").is_some());
                in_flight += 1;
            }
            other => panic!("{other:?} {}", r.body),
        }
    }
    assert_eq!(fresh, 1, "exactly one fresh 201 ({replayed} replays, {in_flight} in flight)");
    assert_eq!(api.count("orders").await, 1);
    assert_eq!(api.get("/inventory/sku-1").await.body["available"], 98);
});

/// Redis away: requests still succeed and the database still stops duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_still_stops_duplicates() {
    let proxy = ordo_testkit::FaultProxy::start(ordo_testkit::socket_of(&ordo_testkit::redis_url())).await;
    proxy.set_down(true);
    let redis = proxy.url_via(&ordo_testkit::redis_url());
    let api = api(ordo_testkit::Backend::Postgres, |c| c.redis_url = Some(redis)).await;
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "Redis away does not make the server unready");
    assert!(ready.text.contains("redis: redis unavailable"), "readiness reports Redis: {}", ready.text);
    let first = api.post("/inventory/s/restock", "k", json!({"quantity": 3})).await;
    let second = api.post("/inventory/s/restock", "k", json!({"quantity": 3})).await;
    assert_eq!((first.status, second.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(api.get("/inventory/s").await.body["available"], 3, "applied once");
}

on_both!(the_sweeper_purges_expired_records, |backend| async move {
    let api = api(backend, |c| {
        c.idempotency_ttl_ms = 100;
        c.sweep_interval_ms = 100;
    })
    .await;
    for k in ["a", "b", "c"] {
        assert_eq!(api.post("/inventory/s/restock", k, json!({"quantity": 1})).await.status, StatusCode::OK);
    }
    let mut left = api.count("ordo_idempotency").await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = api.count("ordo_idempotency").await;
    }
    assert_eq!(left, 0, "expired records are purged by the sweeper");
});

on_both!(journal_allowed_events_and_diagram, |backend| async move {
    let api = stocked(backend).await;
    let id = api.post("/orders", "o", order()).await.body["id"].as_str().unwrap().to_string();
    assert_eq!(api.post(&format!("/orders/{id}/pay"), "p", json!({})).await.status, StatusCode::OK);
    let events = api.get(&format!("/orders/{id}/events")).await;
    assert_eq!(events.body, json!({"state": "paid", "events": ["cancel", "ship"]}));
    let page = api.get(&format!("/orders/{id}/transitions?limit=1")).await;
    assert_eq!(page.body["items"][0]["event"], "place");
    assert_eq!(page.body["next_after"], 1);
    let next = api.get(&format!("/orders/{id}/transitions?after=1")).await;
    assert_eq!(next.body["items"][0]["event"], "pay");
    assert_eq!(next.body["items"][0]["from"], "pending");
    assert!(next.body.get("next_after").is_none());
    let missing = api.get("/orders/01a22269-0ece-7462-b161-5788e23c3750/transitions").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The feed shows a transaction once every older one in the database cluster has ended;
    // other tests' transactions may hold it back for a moment.
    for _ in 0..200 {
        if api.get("/events").await.body["items"].as_array().map_or(0, Vec::len) >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let feed = api.get("/events?limit=2").await;
    assert_eq!(feed.body["items"][0]["event"]["event"], "restock");
    let next = feed.body["next"].as_str().unwrap().to_string();
    let rest = api.get(&format!("/events?after={next}")).await;
    let names: Vec<&str> = rest.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["place", "pay"]);
    assert_eq!(api.get("/events?after=bad").await.status, StatusCode::BAD_REQUEST);
    let diagram = api.get("/machines/Order/diagram").await;
    assert!(diagram.body.as_str().unwrap().contains("stateDiagram-v2"));
    assert_eq!(api.get("/machines/Nope/diagram").await.status, StatusCode::NOT_FOUND);
});

on_both!(a_tenant_over_its_rate_gets_429_and_the_key_is_not_burned, |backend| async move {
    let api = api(backend, |c| {
        c.rate_per_s = 1;
        c.rate_burst = 2;
    })
    .await;
    assert_eq!(api.post("/inventory/s/restock", "a", json!({"quantity": 1})).await.status, StatusCode::OK);
    assert_eq!(api.post("/inventory/s/restock", "b", json!({"quantity": 1})).await.status, StatusCode::OK);
    let limited = api.post("/inventory/s/restock", "c", json!({"quantity": 1})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["type"], "urn:ordo:problem:rate-limited");
    assert!(limited.header("retry-after").is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = api.post("/inventory/s/restock", "c", json!({"quantity": 1})).await;
    assert_eq!(later.status, StatusCode::OK);
    assert!(later.header("idempotent-replayed").is_none(), "a 429 is not stored");
});

#[test]
fn configuration_layers() {
    use ordo_server::config::Config;
    let dir = std::env::temp_dir().join(format!("ordo-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ordo.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\npool_size = 4\n").unwrap();
    let env = |k: &str| match k {
        "DATABASE_URL" => Some("postgres://db/x".to_string()),
        "ORDO_POOL_SIZE" => Some("8".to_string()),
        _ => None,
    };
    let c = Config::load(Some(&file), env).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9000", "from the file");
    assert_eq!(c.pool_size, 8, "the environment wins over the file");
    assert_eq!(c.database_url, "postgres://db/x");
    assert_eq!(c.body_bytes_max, ordo_server::config::BODY_BYTES_MAX_DEFAULT, "defaults fill the rest");
    std::fs::write(&file, "no_such_setting = 1\n").unwrap();
    assert!(Config::load(Some(&file), |_| None).unwrap_err().to_string().contains("no_such_setting"));
    assert!(Config::load(None, |k| (k == "ORDO_LISTEN").then(|| "nowhere".to_string())).is_err());
    // Telemetry, shadow traffic and recording: ORDO_OTLP_ENDPOINT wins over the standard name.
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
        "ORDO_SHADOW_TENANTS" => Some("shop,*".to_string()),
        "ORDO_RECORD" => Some("/tmp/traffic.jsonl".to_string()),
        _ => None,
    };
    std::fs::write(&file, "").unwrap();
    let c = Config::load(Some(&file), env).unwrap();
    assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!(c.shadow_tenants, "shop,*");
    assert_eq!(c.record.as_deref(), Some(std::path::Path::new("/tmp/traffic.jsonl")));
    let both = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://standard:4318".to_string()),
        "ORDO_OTLP_ENDPOINT" => Some("http://ours:4318".to_string()),
        _ => None,
    };
    assert_eq!(Config::load(Some(&file), both).unwrap().otlp_endpoint.as_deref(), Some("http://ours:4318"));
    let none = Config::load(Some(&file), |_| None).unwrap();
    assert_eq!(
        (none.otlp_endpoint, none.record, none.shadow_tenants.as_str()),
        (None, None, ""),
        "all off by default"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refuses_to_serve_a_public_address_without_api_keys() {
    let config = ordo_server::config::Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..ordo_server::config::Config::default()
    };
    let err = ordo_server::startup::Application::build(&config).await.err().unwrap();
    assert!(matches!(err, ordo_server::startup::StartError::PublicWithoutKeys { .. }), "{err}");
    assert!(err.to_string().contains("refusing"), "{err}");
}

/// What a client sees of an answer: status, body as sent, and the headers that carry it.
fn seen(r: &Reply) -> (StatusCode, String, [Option<String>; 4]) {
    let h = |n: &str| r.header(n).map(str::to_string);
    (r.status, r.text.clone(), [h("content-type"), h("location"), h("etag"), h("idempotent-replayed")])
}

/// A retry answered by the answer Redis keeps is the same, byte for byte, as one answered
/// by the database record once Redis has forgotten the key: for an applied command, a
/// rejected one, and another request under a used key (422 either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_answer_replays_exactly_as_the_record_does() {
    let api = stocked(Backend::Postgres).await;
    let placed = api.post("/orders", "place", order()).await;
    assert_eq!(placed.status, StatusCode::CREATED);
    let id = placed.body["id"].as_str().unwrap().to_string();
    let ship = format!("/orders/{id}/ship");
    let refused = api.post(&ship, "ship", json!({"carrier": "ups"})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "an unpaid order is not shipped: {}", refused.text);
    let mut other = order();
    other["amount"] = json!(1);
    let retries = [
        ("/orders", "place", order()),
        (ship.as_str(), "ship", json!({"carrier": "ups"})),
        ("/orders", "place", other),
    ];
    let mut kept = Vec::new();
    for (path, key, body) in &retries {
        kept.push(seen(&api.post(path, key, body.clone()).await));
    }
    // Redis holds the answers (another server's claim is answered by them)...
    let prefix = api.redis.as_ref().unwrap();
    let mut config = ordo_idempotency::LeaseConfig::new(ordo_testkit::redis_url(), prefix.to_string());
    config.lease_ms = 10_000;
    let other_server = ordo_idempotency::Leases::connect(config).await.unwrap();
    for key in ["place", "ship"] {
        let claim = other_server.claim("default", key).await.unwrap();
        assert!(matches!(claim, ordo_idempotency::Claim::Answered(_)), "{key}: {claim:?}");
    }
    // ...then forgets them, and the records answer.
    prefix.forget();
    let mut recorded = Vec::new();
    for (path, key, body) in &retries {
        recorded.push(seen(&api.post(path, key, body.clone()).await));
    }
    assert_eq!(kept, recorded);
    assert_eq!(kept[0].0, StatusCode::CREATED);
    assert_eq!(kept[0].1, placed.text);
    assert_eq!(kept[0].2[3].as_deref(), Some("true"));
    assert_eq!(kept[1].1, refused.text);
    assert_eq!(kept[2].0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.count("orders").await, 1);
    assert_eq!(api.get("/inventory/sku-1").await.body["available"], 98, "the stock was taken once");
}

/// A server killed mid-request leaves its lease behind, never renewed: a retry (here on
/// another server) is told to wait, for at most the lease's term, then runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_left_by_a_killed_server_holds_its_key_for_one_term_only() {
    let lease_ms = 1_000;
    let api = stocked_with(Backend::Postgres, |c| c.lease_ms = lease_ms).await;
    let mut config = ordo_idempotency::LeaseConfig::new(
        ordo_testkit::redis_url(),
        api.redis.as_ref().unwrap().to_string(),
    );
    config.lease_ms = lease_ms;
    let killed = ordo_idempotency::Leases::connect(config).await.unwrap();
    let claim = killed.claim("default", "k").await.unwrap();
    assert!(matches!(claim, ordo_idempotency::Claim::Acquired(_)), "{claim:?}");
    let start = std::time::Instant::now();
    let held = api.post("/orders", "k", order()).await;
    assert_eq!(held.status, StatusCode::CONFLICT);
    assert_eq!(held.body["type"], "urn:ordo:problem:idempotency-key-in-use");
    assert_eq!(held.header("retry-after"), Some("1"), "wait at most the lease's term");
    let placed = loop {
        let r = api.post("/orders", "k", order()).await;
        if r.status != StatusCode::CONFLICT {
            break r;
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(3 * lease_ms), "the key stays held");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(placed.status, StatusCode::CREATED);
    assert!(placed.header("idempotent-replayed").is_none());
    assert_eq!(api.count("orders").await, 1);
}
