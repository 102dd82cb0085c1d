//! The outbox as a feed: `events_after` pages a tenant's events in a commit-safe order.

use crate::*;
use serde_json::json;
use std::sync::Arc;

on_both!(events_page_in_order_per_tenant, |backend| async move {
    let (store, _db) = open(backend, "order").await;
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 10}))).await;
    run(&store, &operate("Wallet", "a", "deposit", json!({"amount": 100}))).await;
    let o = applied(
        &run(&store, &create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 5})))
            .await,
    )
    .clone();
    run(&store, &fire("Order", &o.id, "pay", json!({}))).await;
    let mut other = operate("Inventory", "sku", "restock", json!({"quantity": 1}));
    other.tenant = "t2".to_string();
    run(&store, &other).await;

    // The feed shows a transaction once every older one in the database cluster has ended;
    // other tests' transactions may hold it back for a moment.
    for _ in 0..200 {
        if store.events_after("t1", None, 100).await.unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.events_after("t1", cursor.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| e.cursor.clone());
        seen.extend(page.into_iter().map(|e| e.payload["event"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen, ["restock", "deposit", "place", "pay"], "t1's events in commit order, paged");
    let t2 = store.events_after("t2", None, 100).await.unwrap();
    assert_eq!(t2.len(), 1, "a tenant sees only its own events");
    assert!(matches!(
        store.events_after("t1", Some("nonsense"), 10).await,
        Err(ordo_store::StoreError::Invalid(_))
    ));
});

// Writers commit in any order while a reader follows the feed: every event is read once,
// none is skipped, and each instance's events arrive in version order.
on_both!(the_feed_never_skips_under_concurrent_writers, |backend| async move {
    let (store, _db) = open(backend, "order").await;
    let store = Arc::new(store);
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 100_000}))).await;
    run(&store, &operate("Wallet", "a", "deposit", json!({"amount": 1_000_000}))).await;
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    let o = applied(
                        &run(
                            &store,
                            &create(
                                "Order",
                                json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 1}),
                            ),
                        )
                        .await,
                    )
                    .clone();
                    run(&store, &fire("Order", &o.id, "pay", json!({}))).await;
                }
            })
        })
        .collect();
    let total = 2 + 8 * 15 * 2;
    let mut cursor: Option<String> = None;
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < total && std::time::Instant::now() < deadline {
        let page = store.events_after("t1", cursor.as_deref(), 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = Some(last.cursor.clone());
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        seen.extend(page.into_iter().map(|e| e.payload));
    }
    for w in writers {
        w.await.unwrap();
    }
    seen.extend(
        store.events_after("t1", cursor.as_deref(), 1000).await.unwrap().into_iter().map(|e| e.payload),
    );
    assert_eq!(seen.len(), total, "every event once");
    let ids: std::collections::BTreeSet<&str> = seen.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), total, "no event twice");
    let mut last_version: std::collections::BTreeMap<&str, i64> = Default::default();
    for p in &seen {
        let entity = p["entity"].as_str().unwrap();
        let version = p["version"].as_i64().unwrap();
        let before = last_version.insert(entity, version).unwrap_or(0);
        assert!(version > before, "{entity}: version {version} after {before}");
    }
});

on_both!(published_outbox_rows_go_after_their_retention_and_unpublished_ones_stay, |backend| async move {
    let (store, _db) = open(backend, "order").await;
    for i in 0..3 {
        run(&store, &operate("Inventory", &format!("s{i}"), "restock", json!({"quantity": 1}))).await;
    }
    let batch = store.claim_outbox(100).await.unwrap();
    assert_eq!(batch.events.len(), 3);
    let sent_at = chrono::Utc::now();
    batch.mark_sent(sent_at).await.unwrap();
    run(&store, &operate("Inventory", "unsent", "restock", json!({"quantity": 1}))).await;
    let earlier = sent_at - chrono::Duration::seconds(1);
    assert_eq!(store.purge_sent_outbox(earlier, 100).await.unwrap(), 0, "not past the retention yet");
    assert_eq!(store.purge_sent_outbox(sent_at, 2).await.unwrap(), 2, "at most the limit per call");
    assert_eq!(store.purge_sent_outbox(sent_at, 100).await.unwrap(), 1);
    assert_eq!(count(&store, "ordo_outbox", "1 = 1").await, 1, "the unpublished row stays");
    assert_eq!(store.purge_sent_outbox(chrono::Utc::now(), 100).await.unwrap(), 0);
});
