//! Shadow traffic: `X-Load-Test: true` from an allowed tenant is served from shadow tables
//! and Redis keys; the real tables never see it; other tenants get 403.

use crate::*;

const KEY_A: &str = "key-of-tenant-a-0123456789";
const KEY_B: &str = "key-of-tenant-b-0123456789";

async fn send(
    api: &Api,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
    auth: &str,
    shadow: &str,
) -> Reply {
    let method = if body.is_some() { Method::POST } else { Method::GET };
    let body = body.map(|b| b.to_string());
    api.call_with(method, path, key, body.as_deref(), Some(auth), &[("X-Load-Test", shadow)]).await
}

on_both!(shadow_traffic_never_touches_the_real_tables, |backend| async move {
    let api = api(backend, |c| {
        c.api_keys = format!("ta:{KEY_A},tb:{KEY_B}");
        c.shadow_tenants = "ta".to_string();
    })
    .await;
    let restock = Some(json!({"quantity": 10}));
    let r = send(&api, "/inventory/sku-1/restock", Some("s-1"), restock.clone(), KEY_A, "true").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let placed = send(&api, "/orders", Some("s-2"), Some(order()), KEY_A, "true").await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let id = placed.body["id"].as_str().unwrap().to_string();
    // The same key in the real lane is another key: it applies there, on its own stock.
    let real =
        send(&api, "/inventory/sku-1/restock", Some("s-1"), Some(json!({"quantity": 3})), KEY_A, "false")
            .await;
    assert_eq!(real.status, StatusCode::OK);
    assert_eq!(real.body["available"], 3, "the shadow restock is not in the real row");
    // The shadow order exists only in the shadow lane.
    assert_eq!(send(&api, &format!("/orders/{id}"), None, None, KEY_A, "true").await.status, StatusCode::OK);
    assert_eq!(
        send(&api, &format!("/orders/{id}"), None, None, KEY_A, "false").await.status,
        StatusCode::NOT_FOUND
    );
    let shadow_stock = send(&api, "/inventory/sku-1", None, None, KEY_A, "true").await;
    assert_eq!(shadow_stock.body["available"], 8);
    // A tenant not allowed to send load tests is refused, and nothing is written.
    let refused = send(&api, "/orders", Some("s-3"), Some(order()), KEY_B, "true").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["type"], "urn:ordo:problem:shadow-not-allowed");
    // A header that is neither true nor false is a bad request.
    let garbled = send(&api, "/orders", Some("s-4"), Some(order()), KEY_A, "yes").await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST);
    // The real tables: the one real restock, nothing else.
    assert_eq!(api.count("orders").await, 0);
    assert_eq!(api.count("ordo_transitions").await, 1);
    assert_eq!(api.count("ordo_idempotency").await, 1);
    assert_eq!(api.count("ordo_outbox").await, 1);
    // The shadow tables hold the shadow work.
    let shadow = ordo_store::StoreConfig::new(api.db.url.clone()).shadow().unwrap();
    let db = ordo_store::connect(&shadow).await.unwrap();
    use sea_orm::ConnectionTrait;
    let n = |sql: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap();
            row.unwrap().try_get::<i64>("", "n").unwrap()
        }
    };
    assert_eq!(n("SELECT COUNT(*) AS n FROM orders").await, 1);
    assert_eq!(n("SELECT COUNT(*) AS n FROM ordo_idempotency").await, 2);
    let _ = db.close().await;
    // Metrics tell the two apart.
    let text = api.get("/metrics").await.body.as_str().unwrap().to_string();
    assert!(
        text.lines().any(|l| l.starts_with("ordo_transitions_total{")
            && l.contains("event=\"place\"")
            && l.contains("shadow=\"true\"")
            && l.ends_with(" 1")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("ordo_transitions_total{")
        && l.contains("event=\"place\"")
        && l.contains("shadow=\"false\"")));
});

#[tokio::test]
async fn without_shadow_tenants_load_tests_are_refused() {
    let api = api(Backend::Sqlite, |_| {}).await;
    let r = api
        .client
        .post("/orders")
        .header("Idempotency-Key", "k")
        .header("X-Load-Test", "true")
        .body_json(&order())
        .send()
        .await;
    r.assert_status(StatusCode::FORBIDDEN);
    assert_eq!(api.count("ordo_idempotency").await, 0);
}

#[tokio::test]
async fn an_in_memory_database_has_no_shadow() {
    let config = ordo_store::StoreConfig::new("sqlite::memory:");
    assert!(config.shadow().is_err());
    let file = ordo_store::StoreConfig::new("sqlite:///tmp/x/ordo.db?mode=rwc").shadow().unwrap();
    assert_eq!(file.url, "sqlite:///tmp/x/ordo.ordo_shadow.db?mode=rwc");
}
