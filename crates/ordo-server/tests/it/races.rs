//! The database issue's races, driven through HTTP, every request retried on its own key:
//! exactly the right number of effects.

use crate::*;
use poem::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

on_both!(flash_sale_over_http_with_retries, |backend| flash_sale(backend, false));
on_both!(flash_sale_over_http_with_retries_and_group_commit, |backend| flash_sale(backend, true));

async fn flash_sale(backend: ordo_testkit::Backend, group_commit: bool) {
    let api = Arc::new(api(backend, |c| c.group_commit = group_commit).await);
    assert_eq!(
        api.post("/inventory/hot/restock", "seed", json!({"quantity": 50})).await.status,
        StatusCode::OK
    );
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let body = json!({"sku": "hot", "quantity": 1, "account": format!("a{i}"), "amount": 1});
                let key = format!("buy-{i}");
                let first = api.post("/orders", &key, body.clone()).await;
                // The client did not hear back, say, and retries with the same key.
                let retry = api.post("/orders", &key, body).await;
                assert_eq!(
                    retry.status, first.status,
                    "a retry gets the same answer: {} after {}",
                    retry.text, first.text
                );
                assert_eq!(retry.body, first.body);
                first.status
            })
        })
        .collect();
    let mut sold = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => sold += 1,
            StatusCode::CONFLICT => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(sold, 50);
    assert_eq!(api.count("orders").await, 50);
    assert_eq!(api.get("/inventory/hot").await.body["available"], 0);
}

on_both!(double_pay_over_http_with_retries, |backend| double_pay(backend, false));
on_both!(double_pay_over_http_with_retries_and_group_commit, |backend| double_pay(backend, true));

async fn double_pay(backend: ordo_testkit::Backend, group_commit: bool) {
    let api = Arc::new(stocked_with(backend, |c| c.group_commit = group_commit).await);
    let id = api.post("/orders", "o", order()).await.body["id"].as_str().unwrap().to_string();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move {
                let key = format!("pay-{i}");
                let first = api.post(&format!("/orders/{id}/pay"), &key, json!({})).await;
                let retry = api.post(&format!("/orders/{id}/pay"), &key, json!({})).await;
                assert_eq!((retry.status, retry.header("idempotent-replayed")), (first.status, Some("true")));
                first.status
            })
        })
        .collect();
    let mut paid = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            paid += 1;
        }
    }
    assert_eq!(paid, 1, "one pay wins");
    assert_eq!(api.get("/wallet/acct").await.body["balance"], 10_000 - 100, "charged once");
}

/// A database failure before commit is a 503 that is not stored: the retry on the same key
/// applies fresh once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_request_is_not_stored_and_its_retry_applies() {
    let db = ordo_testkit::TestDb::postgres().await;
    let proxy = ordo_testkit::FaultProxy::start(ordo_testkit::socket_of(&db.url)).await;
    let mut config = ordo_server::config::Config {
        database_url: proxy.url_via(&db.url),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ordo_server::config::Config::default()
    };
    config.acquire_timeout_ms = 1_000;
    let app = ordo_server::startup::Application::build(&config).await.unwrap();
    let api = Api { client: poem::test::TestClient::new(Arc::new(app.into_endpoint())), db, redis: None };
    proxy.set_down(true);
    let failed = api.post("/inventory/s/restock", "k", json!({"quantity": 7})).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.header("retry-after").is_some());
    proxy.set_down(false);
    let mut retried = None;
    for _ in 0..30 {
        let r = api.post("/inventory/s/restock", "k", json!({"quantity": 7})).await;
        if r.status == StatusCode::OK {
            retried = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let retried = retried.expect("the retry succeeds once the database is back");
    assert!(retried.header("idempotent-replayed").is_none(), "the failure was not stored");
    assert_eq!(retried.body["available"], 7);
}

/// Holds a row lock from outside the server until dropped, so a request that needs the row
/// waits (and holds its pooled connection) meanwhile.
async fn lock_wallet(url: &str, account: &str) -> sea_orm::DatabaseTransaction {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = sea_orm::Database::connect(url).await.unwrap();
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared(&format!("SELECT balance FROM wallets WHERE account = '{account}' FOR UPDATE"))
        .await
        .unwrap();
    txn
}

/// An exhausted pool answers 503 with Retry-After, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_is_503() {
    let api = Arc::new(
        api(ordo_testkit::Backend::Postgres, |c| {
            c.pool_size = 1;
            c.acquire_timeout_ms = 300;
        })
        .await,
    );
    assert_eq!(api.post("/wallet/w/deposit", "seed", json!({"amount": 10})).await.status, StatusCode::OK);
    let lock = lock_wallet(&api.db.url, "w").await;
    // This one waits for the row, holding the pool's only connection.
    let blocked = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/wallet/w/deposit", "slow", json!({"amount": 1})).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let shed = api.post("/wallet/w2/deposit", "shed", json!({"amount": 1})).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.body["type"], "urn:ordo:problem:overloaded");
    assert!(shed.header("retry-after").is_some());
    lock.rollback().await.unwrap();
    assert_eq!(blocked.await.unwrap().status, StatusCode::OK);
    let retry = api.post("/wallet/w2/deposit", "shed", json!({"amount": 1})).await;
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed")),
        (StatusCode::OK, None),
        "the 503 was not stored"
    );
}

/// SIGTERM's path: stop accepting, finish what is in flight, then return.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = ordo_testkit::TestDb::postgres().await;
    let config = ordo_server::config::Config {
        database_url: db.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ordo_server::config::Config::default()
    };
    let app = ordo_server::startup::Application::build(&config).await.unwrap();
    let addr = app.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    let send = |key: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = r#"{"amount": 1}"#;
        let req = format!(
            "POST /wallet/w/deposit HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<String, std::io::Error>(out)
    };
    assert!(send("first").await.unwrap().starts_with("HTTP/1.1 200"));
    let lock = lock_wallet(&db.url, "w").await;
    let in_flight = tokio::spawn(send("in-flight"));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop_tx.send(()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        send("late").await.is_err() || !server.is_finished(),
        "new connections are refused once stopping"
    );
    lock.rollback().await.unwrap();
    let answered = in_flight.await.unwrap().unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "the in-flight request finished: {answered}");
    tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

/// Redis loses the lease while the request holding it is in flight (a flush, a failover):
/// the duplicate gets a lease of its own, and the database's unique record still lets only
/// one of them apply; the other is answered with its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_flushed_mid_request_still_applies_once() {
    let prefix = ordo_testkit::redis_prefix();
    let api = Arc::new(
        api(ordo_testkit::Backend::Postgres, |c| {
            c.redis_prefix = prefix.to_string();
        })
        .await,
    );
    assert_eq!(api.post("/wallet/w/deposit", "seed", json!({"amount": 10})).await.status, StatusCode::OK);
    let lock = lock_wallet(&api.db.url, "w").await;
    let first = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // While `first` waits for the row, its lease is held: a duplicate is told to wait.
    let held = api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await;
    assert_eq!(held.status, StatusCode::CONFLICT);
    assert_eq!(held.body["type"], "urn:ordo:problem:idempotency-key-in-use");
    // Redis forgets every key of this server.
    prefix.forget();
    let second = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    lock.rollback().await.unwrap();
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    let replays = [&a, &b].iter().filter(|r| r.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replays, 1, "one applied, the other got its outcome back");
    assert_eq!(a.body, b.body);
    assert_eq!(api.get("/wallet/w").await.body["balance"], 15, "deposited once");
}

/// The server fires due timers by itself: an order left unpaid past its timeout (here the
/// timer row is moved into the past) is cancelled and its stock returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_fires_due_timers() {
    use sea_orm::ConnectionTrait;
    let api = api(ordo_testkit::Backend::Sqlite, |c| c.timer_interval_ms = 50).await;
    assert_eq!(
        api.post("/inventory/sku-1/restock", "s", json!({"quantity": 5})).await.status,
        StatusCode::OK
    );
    let id = api.post("/orders", "o", order()).await.body["id"].as_str().unwrap().to_string();
    assert_eq!(api.get("/inventory/sku-1").await.body["available"], 3);
    let db = sea_orm::Database::connect(&api.db.url).await.unwrap();
    db.execute_unprepared("UPDATE ordo_timers SET due_at = '2000-01-01T00:00:00+00:00'").await.unwrap();
    let mut state = String::new();
    for _ in 0..100 {
        state =
            api.get(&format!("/orders/{id}")).await.body["state"].as_str().unwrap_or_default().to_string();
        if state == "cancelled" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "cancelled");
    assert_eq!(api.get("/inventory/sku-1").await.body["available"], 5);
    let journal = api.get(&format!("/orders/{id}/transitions")).await;
    assert_eq!(journal.body["items"][1]["event"], "cancel");
}

/// A request that outlives the request timeout is answered 503, but its command still runs
/// to its end and releases its lease: the retry on the same key gets the replay (not a 409
/// until the lease expires, and not a second effect). PostgreSQL + Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_request_finishes_and_its_retry_replays() {
    let api = Arc::new(
        api(ordo_testkit::Backend::Postgres, |c| {
            c.request_timeout_ms = 300;
        })
        .await,
    );
    assert_eq!(api.post("/wallet/w/deposit", "seed", json!({"amount": 5})).await.status, StatusCode::OK);
    let lock = lock_wallet(&api.db.url, "w").await;
    let timed_out = api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await;
    assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE, "answered at the timeout");
    lock.rollback().await.unwrap();
    let mut retry = api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await;
    for _ in 0..50 {
        if retry.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        retry = api.post("/wallet/w/deposit", "k", json!({"amount": 5})).await;
    }
    assert_eq!((retry.status, retry.header("idempotent-replayed")), (StatusCode::OK, Some("true")));
    assert_eq!(api.get("/wallet/w").await.body["balance"], 10, "deposited once");
}
