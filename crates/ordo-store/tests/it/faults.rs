//! A database that goes away mid-transaction: typed errors, no partial writes, and the
//! pool recovers when it comes back (PostgreSQL behind a proxy that cuts connections).

use crate::*;
use ordo_store::{Outcome, StoreConfig, StoreError};
use ordo_testkit::{FaultProxy, TestDb, socket_of};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_lost_mid_transaction() {
    let db = TestDb::postgres().await;
    let proxy = FaultProxy::start(socket_of(&db.url)).await;
    let spec = ordo_spec::compile(&spec_source("order")).unwrap();
    let mut config = StoreConfig::new(proxy.url_via(&db.url));
    config.acquire_timeout_ms = 2_000;
    config.retries_max = 2;
    let store = Arc::new(ordo_store::Store::open(config, "order", spec, true).await.unwrap());
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 100_000}))).await;

    // Orders flow in while the connection is cut twice and then stays down.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i % 50)).await;
                let input = json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 1});
                store.execute(&create("Order", input)).await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    proxy.cut_all();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    proxy.set_down(true);
    let (mut ok, mut unavailable) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(done) => {
                assert!(matches!(done.outcome, Outcome::Applied { .. }));
                ok += 1;
            }
            Err(StoreError::Unavailable(_)) => unavailable += 1,
            Err(other) => panic!("a lost database must be reported as unavailable, got: {other}"),
        }
    }
    assert!(unavailable > 0, "the cut was felt ({ok} applied first)");
    let down = store
        .execute(&create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 1})))
        .await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");

    // Back up: the same pool serves again, without a restart.
    proxy.set_down(false);
    let mut recovered = None;
    for _ in 0..50 {
        match store
            .execute(&create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 1})))
            .await
        {
            Ok(done) => {
                recovered = Some(done);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    applied(&recovered.expect("the pool recovers when the database returns"));

    // No partial write: every order has its journal and outbox rows and took its stock,
    // whatever happened to the connection around it.
    let orders = count(&store, "orders", "1 = 1").await;
    assert!(orders > ok, "the applied orders and the one after recovery exist");
    assert_eq!(count(&store, "ordo_transitions", "machine = 'Order'").await, orders);
    assert_eq!(count(&store, "ordo_outbox", "machine = 'Order'").await, orders);
    let stock = store.resource("t1", "Inventory", &json!("sku")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(100_000 - orders));
}
