//! The database issue's races, driven through HTTP, every request retried on its own key:
//! exactly the right number of effects.

use crate::*;
use poem::http::StatusCode;
use serde_json::json;
use std::sync::Arc;

on_both!(flash_sale_over_http_with_retries, |backend| async move {
    let api = Arc::new(api(backend, |_| {}).await);
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
                assert_eq!(retry.status, first.status, "a retry gets the same answer");
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
});

on_both!(double_pay_over_http_with_retries, |backend| async move {
    let api = Arc::new(stocked(backend).await);
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
});

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
    let api = Api { client: poem::test::TestClient::new(Arc::new(app.into_endpoint())), db };
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
