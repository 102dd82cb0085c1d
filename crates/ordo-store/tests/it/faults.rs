//! A database that goes away mid-transaction: typed errors, no partial writes, and the
//! pool recovers when it comes back (PostgreSQL behind a proxy that cuts connections).

use crate::*;
use ordo_store::{Command, Executed, Outcome, StoreConfig, StoreError};
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

/// Group commit with the connection cut during a batch's COMMIT, once after the COMMIT
/// reached the server (it committed; the answer is lost) and once before (it did not):
/// every command is retried with its key until answered, and then every answer that came
/// back is its stored record, each applied order exists once, and no stock was lost or
/// taken twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_cut_during_a_batch_commit_loses_and_doubles_nothing() {
    let db = TestDb::postgres().await;
    let proxy = FaultProxy::start(socket_of(&db.url)).await;
    let spec = ordo_spec::compile(&spec_source("order")).unwrap();
    // In the clear and without a statement cache, every statement, COMMIT too, goes out
    // with its text, which is what the proxy looks for.
    let url = proxy.url_via(&db.url);
    let url = format!(
        "{url}{}sslmode=disable&statement-cache-capacity=0",
        if url.contains('?') { '&' } else { '?' }
    );
    let mut config = StoreConfig::new(url);
    config.group_commit = true;
    config.retries_max = 2;
    let store = Arc::new(ordo_store::Store::open(config, "order", spec, true).await.unwrap());
    run(&store, &operate("Inventory", "hot", "restock", json!({"quantity": 300}))).await;
    let buyers: Vec<Command> = (0..400)
        .map(|i| {
            let order = json!({"sku": "hot", "quantity": 1, "account": "a", "amount": 1});
            with_key(create("Order", order), &format!("buyer-{i}"), "f")
        })
        .collect();
    let mut first: Vec<Option<Executed>> = vec![None; buyers.len()];
    let mut cuts = 0;
    // Half the buyers come while the cut lands after the COMMIT, half while before.
    for (round, forward) in [(0, true), (1, false)] {
        // Three cuts: the first COMMIT may be a command that ran alone, the next are batches'.
        proxy.cut_at(b"COMMIT\0", forward, 3);
        let tasks: Vec<_> = (round * 200..round * 200 + 200)
            .map(|i| {
                let (store, c) = (store.clone(), buyers[i].clone());
                (i, tokio::spawn(async move { store.execute_unrecorded(&c).await }))
            })
            .collect();
        for (i, t) in tasks {
            match t.await.unwrap() {
                Ok(done) => {
                    first[i].get_or_insert(done);
                }
                Err(StoreError::Unavailable(_) | StoreError::Busy { .. }) => {}
                Err(other) => panic!("a cut connection is unavailable or busy, got: {other}"),
            }
        }
        cuts += proxy.disarm();
    }
    assert_eq!(cuts, 6, "every cut happened during a COMMIT");
    assert!(store.stats().batch_splits >= 1, "a batch lost its COMMIT: {:?}", store.stats());
    // Every buyer retries with its key until it has an answer.
    let mut last = Vec::with_capacity(buyers.len());
    for c in &buyers {
        let mut answer = None;
        for _ in 0..50 {
            match store.execute(c).await {
                Ok(done) => {
                    answer = Some(done);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        last.push(answer.expect("answered once the connection is back"));
    }
    let mut applied = std::collections::BTreeSet::new();
    for (i, (c, done)) in buyers.iter().zip(&last).enumerate() {
        let recorded = store.recorded(c).await.unwrap().expect("every answered command has its record");
        assert_eq!(recorded.outcome, done.outcome, "buyer {i}: the retry is the record");
        if let Some(early) = &first[i] {
            assert_eq!(early.outcome, done.outcome, "buyer {i}: an acknowledged answer never changes");
        }
        if let Outcome::Applied { row: instance } = &done.outcome {
            assert!(applied.insert(instance.id.clone()), "one order per buyer");
        }
    }
    let orders = count(&store, "orders", "1 = 1").await;
    assert_eq!(orders, applied.len() as i64, "every order row is a buyer's answer, none twice");
    assert_eq!(orders, 300, "the stock went, to 300 buyers");
    let stock = store.resource("t1", "Inventory", &json!("hot")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(0));
    assert!(store.stats().fast_batches > 0, "batches took the fast path: {:?}", store.stats());
}
