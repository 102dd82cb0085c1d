//! Races through the public executor API: one winner, no oversell, money conserved.

use crate::*;
use ordo_spec::ir;
use ordo_store::{Rejection, Store};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every transition of the spec taken with `lock pessimistic`.
fn pessimistic(mut spec: ir::Spec) -> ir::Spec {
    for m in &mut spec.machines {
        m.create.body.lock = ir::Lock::Pessimistic;
        for e in &mut m.events {
            for t in &mut e.transitions {
                t.body.lock = ir::Lock::Pessimistic;
            }
        }
    }
    spec
}

async fn open_ir(
    backend: ordo_testkit::Backend,
    name: &str,
    spec: ir::Spec,
) -> (Store, ordo_testkit::TestDb) {
    let db = ordo_testkit::TestDb::new(backend).await;
    let mut config = ordo_store::StoreConfig::new(db.url.clone());
    config.pool_size = 16;
    config.acquire_timeout_ms = 120_000;
    (Store::open(config, name, spec, true).await.unwrap(), db)
}

fn order_spec() -> ir::Spec {
    ordo_spec::compile(&spec_source("order")).unwrap()
}

async fn pay_race(backend: ordo_testkit::Backend, spec: ir::Spec) {
    let (store, _db) = open_ir(backend, "order", spec).await;
    let store = Arc::new(store);
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 5}))).await;
    run(&store, &operate("Wallet", "acct", "deposit", json!({"amount": 100_000}))).await;
    let o = applied(
        &run(
            &store,
            &create("Order", json!({"sku": "sku", "quantity": 1, "account": "acct", "amount": 250})),
        )
        .await,
    )
    .clone();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let id = o.id.clone();
            tokio::spawn(async move { run(&store, &fire("Order", &id, "pay", json!({}))).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        let done = t.await.unwrap();
        match &done.outcome {
            ordo_store::Outcome::Applied { .. } => wins += 1,
            ordo_store::Outcome::Rejected { rejection: Rejection::WrongState { state, .. } } => {
                assert_eq!(state, "paid")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one pay succeeds");
    let filter = format!("entity = '{}' AND event = 'pay'", o.id);
    assert_eq!(count(&store, "ordo_transitions", &filter).await, 1, "one journal row");
    assert_eq!(count(&store, "ordo_outbox", &filter).await, 1, "one outbox row");
    let wallet = store.resource("t1", "Wallet", &json!("acct")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(100_000 - 250), "charged once");
}

on_both!(two_hundred_pays_one_winner, |backend| async move { pay_race(backend, order_spec()).await });
on_both!(two_hundred_pays_one_winner_pessimistic, |backend| async move {
    pay_race(backend, pessimistic(order_spec())).await
});

async fn flash_sale(backend: ordo_testkit::Backend, spec: ir::Spec) {
    let (store, _db) = open_ir(backend, "order", spec).await;
    let store = Arc::new(store);
    run(&store, &operate("Inventory", "hot", "restock", json!({"quantity": 100}))).await;
    // A watcher reads the stock throughout the sale: it must never be negative.
    let selling = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (store, selling) = (store.clone(), selling.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while selling.load(Ordering::Relaxed) {
                let row = store.resource("t1", "Inventory", &json!("hot")).await.unwrap().unwrap();
                let available = row.fields["available"].as_i64().unwrap();
                assert!(available >= 0, "stock went negative: {available}");
                reads += 1;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            reads
        })
    };
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let input = json!({"sku": "hot", "quantity": 1, "account": format!("a{i}"), "amount": 10});
                run(&store, &create("Order", input)).await
            })
        })
        .collect();
    let (mut sold, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap().outcome {
            ordo_store::Outcome::Applied { .. } => sold += 1,
            ordo_store::Outcome::Rejected {
                rejection: Rejection::ResourceCheck { resource, key, field },
            } => {
                assert_eq!(
                    (resource.as_str(), key.as_str(), field.as_str()),
                    ("Inventory", "hot", "available")
                );
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    selling.store(false, Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);
    assert_eq!((sold, refused), (100, 900));
    assert_eq!(count(&store, "orders", "1 = 1").await, 100, "exactly 100 orders exist");
    let stock = store.resource("t1", "Inventory", &json!("hot")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(0));
}

on_both!(
    flash_sale_sells_exactly_the_stock,
    |backend| async move { flash_sale(backend, order_spec()).await }
);

on_both!(random_transfers_conserve_money, |backend| async move {
    const ACCOUNTS: usize = 20;
    const START: i64 = 10_000;
    let spec = ordo_spec::compile(&spec_source("transfer")).unwrap();
    let (store, _db) = open_ir(backend, "transfer", spec).await;
    let store = Arc::new(store);
    for w in 0..ACCOUNTS {
        run(&store, &operate("Account", &format!("w{w}"), "deposit", json!({"amount": START}))).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let tasks: Vec<_> = (0..32u64)
        .map(|seed| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut done = 0u32;
                while std::time::Instant::now() < deadline {
                    let payer = rng.usize(..ACCOUNTS);
                    let payee = (payer + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
                    let input = json!({"payer": format!("w{payer}"), "payee": format!("w{payee}"), "amount": rng.i64(1..=3000)});
                    // Every command must come back decided: a deadlock or serialization
                    // failure is retried inside the store and never reaches the caller.
                    let created = store.execute(&create("Transfer", input)).await.unwrap();
                    if let ordo_store::Outcome::Applied { row: instance } = &created.outcome {
                        let (event, params) =
                            if rng.bool() { ("settle", json!({"reference": "r"})) } else { ("fail", json!({})) };
                        if rng.u8(..10) > 0 {
                            let fired = store.execute(&fire("Transfer", &instance.id, event, params)).await.unwrap();
                            applied(&fired);
                        }
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut commands = 0;
    for t in tasks {
        commands += t.await.unwrap();
    }
    assert!(commands > 100, "the workload ran ({commands} transfers)");

    use sea_orm::ConnectionTrait;
    let db = store.connection();
    let q = |sql: &str| sea_orm::Statement::from_string(store.backend(), sql.to_string());
    let balances = db.query_all_raw(q("SELECT id, balance FROM accounts")).await.unwrap();
    let mut total = 0i64;
    for row in &balances {
        let balance: i64 = row.try_get("", "balance").unwrap();
        assert!(balance >= 0);
        total += balance;
    }
    let held = db.query_all_raw(q("SELECT amount FROM transfers WHERE state = 'pending'")).await.unwrap();
    let held: i64 = held.iter().map(|r| r.try_get::<i64>("", "amount").unwrap()).sum();
    assert_eq!(total + held, START * ACCOUNTS as i64, "money is conserved");

    // Replaying each transfer's journal gives its stored state and version.
    let rows = db
        .query_all_raw(q("SELECT entity, version, from_state, to_state FROM ordo_transitions WHERE machine = 'Transfer' ORDER BY entity, version"))
        .await
        .unwrap();
    let mut replayed: std::collections::BTreeMap<String, (String, i64)> = Default::default();
    for row in rows {
        let entity: String = row.try_get("", "entity").unwrap();
        let version: i64 = row.try_get("", "version").unwrap();
        let from: Option<String> = row.try_get("", "from_state").unwrap();
        let to: String = row.try_get("", "to_state").unwrap();
        let entry = replayed.entry(entity).or_insert_with(|| (String::new(), 0));
        assert_eq!(version, entry.1 + 1, "versions are contiguous");
        assert_eq!(from.unwrap_or_default(), entry.0, "each transition starts where the last ended");
        *entry = (to, version);
    }
    let stored = db.query_all_raw(q("SELECT id, state, version FROM transfers")).await.unwrap();
    assert_eq!(stored.len(), replayed.len());
    for row in stored {
        let id: uuid::Uuid = row.try_get("", "id").unwrap();
        let state: String = row.try_get("", "state").unwrap();
        let version: i64 = row.try_get("", "version").unwrap();
        assert_eq!(replayed[&id.to_string()], (state, version));
    }
});

/// A seeded random workload, one command at a time, described by what each command did.
async fn seeded_workload(store: &Store, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ids: Vec<String> = Vec::new();
    let mut log = Vec::new();
    let events = ["pay", "cancel", "ship", "deliver", "refund", "complete"];
    for _ in 0..300 {
        let sku = format!("s{}", rng.u8(..3));
        let account = format!("a{}", rng.u8(..3));
        let c = match rng.u8(..10) {
            0 => operate("Inventory", &sku, "restock", json!({"quantity": rng.i64(1..=5)})),
            1 => operate("Wallet", &account, "deposit", json!({"amount": rng.i64(1..=2000)})),
            2 => operate("Wallet", &account, "withdraw", json!({"amount": rng.i64(1..=500)})),
            3 | 4 => create(
                "Order",
                json!({"sku": sku, "quantity": rng.i64(1..=3), "account": account, "amount": rng.i64(0..=900)}),
            ),
            _ if ids.is_empty() => continue,
            _ => {
                let id = ids[rng.usize(..ids.len())].clone();
                let event = events[rng.usize(..events.len())];
                let params = match event {
                    "ship" => json!({"carrier": if rng.u8(..4) == 0 { "" } else { "ups" }}),
                    "refund" => json!({"reason": "r"}),
                    _ => json!({}),
                };
                fire("Order", &id, event, params)
            }
        };
        let done = run(store, &c).await;
        let line = match &done.outcome {
            ordo_store::Outcome::Applied { row: instance } => {
                if matches!(c.action, ordo_store::Action::Create { .. }) {
                    ids.push(instance.id.clone());
                }
                format!("applied {:?} v{} {:?}", instance.state, instance.version, instance.fields)
            }
            ordo_store::Outcome::Rejected { rejection } => format!("rejected {rejection:?}"),
        };
        log.push(line);
    }
    for id in &ids {
        let o = store.instance("t1", "Order", id.parse().unwrap()).await.unwrap().unwrap();
        log.push(format!("final {:?} v{} {:?}", o.state, o.version, o.fields));
    }
    for (r, key) in [
        ("Inventory", "s0"),
        ("Inventory", "s1"),
        ("Inventory", "s2"),
        ("Wallet", "a0"),
        ("Wallet", "a1"),
        ("Wallet", "a2"),
    ] {
        let row = store.resource("t1", r, &json!(key)).await.unwrap();
        log.push(format!("{r}[{key}] = {:?}", row.map(|r| (r.version, r.fields))));
    }
    log
}

on_both!(optimistic_and_pessimistic_agree, |backend| async move {
    for seed in [7, 42] {
        let (optimistic, _a) = open_ir(backend, "order", order_spec()).await;
        let (locking, _b) = open_ir(backend, "order", pessimistic(order_spec())).await;
        let a = seeded_workload(&optimistic, seed).await;
        let b = seeded_workload(&locking, seed).await;
        assert!(a.iter().any(|l| l.starts_with("applied")) && a.iter().any(|l| l.starts_with("rejected")));
        assert_eq!(a, b, "seed {seed}");
    }
});

on_both!(concurrent_retries_with_one_key_apply_once, |backend| async move {
    let (store, _db) = open_ir(backend, "order", order_spec()).await;
    let store = Arc::new(store);
    run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 1000}))).await;
    // Fifty copies of one request, in flight together: the database's unique index on
    // (tenant, key) lets one apply; every other gets that outcome back.
    let c = with_key(
        create("Order", json!({"sku": "sku", "quantity": 3, "account": "a", "amount": 1})),
        "retry-key",
        "fp",
    );
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { run(&store, &c).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|e| !e.replayed).count(), 1, "one applied, the rest replayed");
    assert!(outcomes.iter().all(|e| e.outcome == outcomes[0].outcome), "all saw the same outcome");
    assert_eq!(count(&store, "orders", "1 = 1").await, 1);
    let stock = store.resource("t1", "Inventory", &json!("sku")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(997), "the stock was taken once");
});

/// `lock pessimistic nowait` and `skip locked` answer at once when another transaction
/// holds the row, instead of waiting (PostgreSQL; SQLite has no row locks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nowait_and_skip_locked_do_not_wait() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    for mode in [ir::Lock::PessimisticNowait, ir::Lock::PessimisticSkipLocked] {
        let mut spec = order_spec();
        let m = spec.machines.iter_mut().find(|m| m.name == "Order").unwrap();
        for t in &mut m.events.iter_mut().find(|e| e.name == "pay").unwrap().transitions {
            t.body.lock = mode;
        }
        let (store, _db) = open_ir(ordo_testkit::Backend::Postgres, "order", spec).await;
        run(&store, &operate("Inventory", "sku", "restock", json!({"quantity": 5}))).await;
        run(&store, &operate("Wallet", "a", "deposit", json!({"amount": 100}))).await;
        let o = applied(
            &run(&store, &create("Order", json!({"sku": "sku", "quantity": 1, "account": "a", "amount": 5})))
                .await,
        )
        .clone();
        let holder = store.connection().begin().await.unwrap();
        holder
            .execute_unprepared(&format!("SELECT id FROM orders WHERE id = '{}' FOR UPDATE", o.id))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let r = store.execute(&fire("Order", &o.id, "pay", json!({}))).await;
        assert!(matches!(r, Err(ordo_store::StoreError::Busy { .. })), "{mode:?}: {r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{mode:?} answered at once");
        holder.rollback().await.unwrap();
        applied(&run(&store, &fire("Order", &o.id, "pay", json!({}))).await);
    }
}
