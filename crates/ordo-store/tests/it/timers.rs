//! Durable timers: armed on entering a state, gone on leaving it, fired at most once by the
//! sweeper however many run at once.

use crate::*;
use serde_json::json;
use std::sync::Arc;

fn later(minutes: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::minutes(minutes)
}

on_both!(an_unpaid_order_is_cancelled_by_its_timer, |backend| async move {
    let (store, _db) = open(backend, "order").await;
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 10}))).await;
    run(&store, &operate("Wallet", "a", "deposit", json!({"amount": 1000}))).await;
    let unpaid = applied(
        &run(&store, &create("Order", json!({"sku": "sku", "quantity": 4, "account": "a", "amount": 5})))
            .await,
    )
    .clone();
    let paid = applied(
        &run(&store, &create("Order", json!({"sku": "sku", "quantity": 3, "account": "a", "amount": 5})))
            .await,
    )
    .clone();
    applied(&run(&store, &fire("Order", &paid.id, "pay", json!({}))).await);
    assert_eq!(store.fire_due_timers(chrono::Utc::now(), 100).await.unwrap(), 0, "nothing is due yet");
    assert_eq!(
        store.fire_due_timers(later(31), 100).await.unwrap(),
        1,
        "only the unpaid order's timer fires"
    );
    let cancelled = store.instance("t1", "Order", unpaid.id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(cancelled.state.as_deref(), Some("cancelled"));
    let still_paid = store.instance("t1", "Order", paid.id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(still_paid.state.as_deref(), Some("paid"), "paying cancelled its timer");
    let stock = store.resource("t1", "Inventory", &json!("sku")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(7), "the unpaid order's stock came back");
    assert_eq!(store.fire_due_timers(later(31), 100).await.unwrap(), 0, "a timer fires once");
    assert_eq!(count(&store, "ordo_timers", "1 = 1").await, 0);
});

on_both!(two_sweepers_fire_each_timer_once, |backend| async move {
    let (store, _db) = open(backend, "order").await;
    let store = Arc::new(store);
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 1000}))).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let o = applied(
            &run(&store, &create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 5})))
                .await,
        )
        .clone();
        ids.push(o.id);
    }
    let due = later(31);
    let sweepers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut fired = 0;
                loop {
                    let n = store.fire_due_timers(due, 7).await.unwrap();
                    if n == 0 {
                        return fired;
                    }
                    fired += n;
                }
            })
        })
        .collect();
    let mut total = 0;
    for s in sweepers {
        total += s.await.unwrap();
    }
    assert_eq!(total, 40, "every timer taken exactly once");
    assert_eq!(count(&store, "ordo_transitions", "event = 'cancel'").await, 40, "one cancel per order");
    assert_eq!(count(&store, "ordo_idempotency", "key LIKE 'timer:%'").await, 40);
    for id in ids {
        let o = store.instance("t1", "Order", id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(o.state.as_deref(), Some("cancelled"));
    }
    let stock = store.resource("t1", "Inventory", &json!("sku")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(1000));
});

/// A sweeper meets an order a command holds (a pay that will delete the order's timer as it
/// leaves `pending`): it leaves the timer for the next round instead of holding the timer's
/// row while waiting for the order's, the lock order that deadlocked under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweeper_passes_over_an_instance_a_command_holds() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let (store, db) = open(Backend::Postgres, "order").await;
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 10}))).await;
    let order = applied(
        &run(&store, &create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 5})))
            .await,
    )
    .clone();
    // Another session holds the order's row, as a command mid-transaction does.
    let other = sea_orm::Database::connect(&db.url).await.unwrap();
    let held = other.begin().await.unwrap();
    held.execute_unprepared(&format!("SELECT id FROM orders WHERE id = '{}' FOR UPDATE", order.id))
        .await
        .unwrap();
    let sweep = store.fire_due_timers(later(31), 100);
    let fired = tokio::time::timeout(std::time::Duration::from_secs(5), sweep)
        .await
        .expect("the sweeper waited on the row the command holds");
    assert_eq!(fired.unwrap(), 0, "the held order's timer waits for the next round");
    assert_eq!(count(&store, "ordo_timers", "1 = 1").await, 1, "the timer is still armed");
    held.rollback().await.unwrap();
    assert_eq!(store.fire_due_timers(later(31), 100).await.unwrap(), 1, "released, it fires");
    let o = store.instance("t1", "Order", order.id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(o.state.as_deref(), Some("cancelled"));
}
