//! Group commit through `Store::execute_unrecorded`: keyed commands run many to a
//! transaction, in arrival order per key, each with its own outcome and record.

use crate::*;
use ordo_testkit::Backend;
use serde_json::json;
use std::sync::Arc;

/// A store of the shipped order spec with group commit on, over a fresh database.
async fn grouped(backend: Backend, tweak: impl FnOnce(&mut StoreConfig)) -> (Store, ordo_testkit::TestDb) {
    grouped_source(backend, &spec_source("order"), tweak).await
}

/// A store of a spec's text with group commit on, over a fresh database.
async fn grouped_source(
    backend: Backend,
    source: &str,
    tweak: impl FnOnce(&mut StoreConfig),
) -> (Store, ordo_testkit::TestDb) {
    let db = ordo_testkit::TestDb::new(backend).await;
    let mut config = StoreConfig::new(db.url.clone());
    config.group_commit = true;
    tweak(&mut config);
    let spec = ordo_spec::compile(source).unwrap();
    (Store::open(config, "spec", spec, true).await.unwrap(), db)
}

/// 5,000 buyers for 1,000 items of one SKU, queued in this order: exactly the first 1,000
/// get one, the stock ends at 0, every answer is the stored record's, and it took far
/// fewer transactions than buyers.
async fn flash_sale(backend: Backend) {
    // All 5,000 are queued at once: let them wait as long as the sale takes (the default
    // answers those that wait past 2 s with 503, which a real overload wants).
    let (store, _db) = grouped(backend, |c| c.batch_wait_ms_max = 600_000).await;
    let store = Arc::new(store);
    applied(&run(&store, &operate("Inventory", "hot", "restock", json!({"quantity": 1000}))).await);
    let buyers: Vec<Command> = (0..5000)
        .map(|i| {
            let order = json!({"sku": "hot", "quantity": 1, "account": format!("a{i}"), "amount": 0});
            with_key(create("Order", order), &format!("buyer-{i}"), &format!("fp-{i}"))
        })
        .collect();
    // Arrival order is buyer order (see `queued`).
    let answers = queued(&store, &buyers).await;
    let won: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a.outcome, Outcome::Applied { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(won, (0..1000).collect::<Vec<_>>(), "the first 1,000 buyers, and only they, get an item");
    for a in &answers[1000..] {
        assert!(matches!(rejected(a), Rejection::ResourceCheck { .. }), "{a:?}");
    }
    let stock = store.resource("t1", "Inventory", &json!("hot")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(0));
    assert_eq!(count(&store, "orders", "1 = 1").await, 1000);
    for (c, a) in buyers.iter().zip(&answers) {
        let again = store.recorded(c).await.unwrap().expect("every answer was recorded");
        assert!(again.replayed);
        assert_eq!(again.outcome, a.outcome, "the replay is the answer");
    }
    let s = store.stats();
    assert!(s.batched_commands >= 5000 && s.batches * 4 <= s.batched_commands, "batched: {s:?}");
    assert!(s.fast_batches * 2 >= s.batches, "most batches took the fast path: {s:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_flash_sale_serves_the_first_buyers_in_batches_postgres() {
    flash_sale(Backend::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_flash_sale_serves_the_first_buyers_in_batches_sqlite() {
    flash_sale(Backend::Sqlite).await;
}

/// Queued in this order (a current-thread runtime keeps spawn order), all on one lane.
async fn rejections_in_a_batch(backend: Backend) {
    let (store, _db) = grouped(backend, |_| {}).await;
    let store = Arc::new(store);
    // All on one wallet, so one lane: deposits, an overdraft (resource check), an amount
    // that breaks the parameter's check, and a key reused for another request.
    let amounts = [10, 20, -5, 30, 0, 40];
    let mut cmds: Vec<Command> = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (op, amount) = if *a < 0 { ("withdraw", 1_000_000) } else { ("deposit", *a) };
            with_key(
                operate("Wallet", "w", op, json!({"amount": amount})),
                &format!("k{i}"),
                &format!("f{i}"),
            )
        })
        .collect();
    cmds.push(with_key(operate("Wallet", "w", "deposit", json!({"amount": 7})), "k0", "another"));
    let outcomes = queued(&store, &cmds).await;
    let wallet = store.resource("t1", "Wallet", &json!("w")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(100), "10 + 20 + 30 + 40, and nothing of the rest");
    for (i, o) in outcomes.iter().enumerate() {
        match i {
            2 => assert!(matches!(rejected(o), Rejection::ResourceCheck { .. }), "{o:?}"),
            4 => assert!(matches!(rejected(o), Rejection::InvalidInput { .. }), "{o:?}"),
            6 => assert!(matches!(rejected(o), Rejection::KeyReused), "{o:?}"),
            _ => {
                applied(o);
            }
        }
    }
    for (c, o) in cmds.iter().zip(&outcomes).take(6) {
        assert_eq!(store.recorded(c).await.unwrap().unwrap().outcome, o.outcome);
    }
    let s = store.stats();
    assert!(s.batches < s.batched_commands, "they shared transactions: {s:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn rejections_in_a_batch_undo_only_their_own_command_postgres() {
    rejections_in_a_batch(Backend::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn rejections_in_a_batch_undo_only_their_own_command_sqlite() {
    rejections_in_a_batch(Backend::Sqlite).await;
}

// An overload sheds: commands that waited past `batch_wait_ms_max` for their key are
// answered busy, never run, and their keys stay free for a retry.
on_both!(commands_that_wait_too_long_are_answered_busy_and_not_run, |backend| async move {
    let (store, _db) = grouped(backend, |c| {
        c.batch_wait_ms_max = 1;
        c.batch_max = 1;
    })
    .await;
    let store = Arc::new(store);
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let c = with_key(operate("Wallet", "w", "deposit", json!({"amount": 1})), &format!("d{i}"), "f");
            tokio::spawn(async move { (c.clone(), store.execute_unrecorded(&c).await) })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    let mut shed = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            (_, Ok(e)) => {
                applied(&e);
                ok += 1;
            }
            (c, Err(ordo_store::StoreError::Busy { .. })) => {
                busy += 1;
                shed.push(c);
            }
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert!(ok > 0 && busy > 0, "some ran, some were shed: {ok} / {busy}");
    let wallet = store.resource("t1", "Wallet", &json!("w")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(ok), "only those that ran took effect");
    for c in &shed {
        assert!(store.recorded(c).await.unwrap().is_none(), "a shed command left no record");
    }
    assert_eq!(store.stats().batch_shed, busy as u64);
});

/// The comparable part of an outcome: what applied (state, version, fields) or the
/// rejection; ids and times differ from one run to the next.
fn gist(e: &Executed) -> Json {
    match &e.outcome {
        Outcome::Applied { row: instance } => {
            json!({"state": instance.state, "version": instance.version, "fields": instance.fields})
        }
        Outcome::Rejected { rejection } => json!({"rejected": rejection}),
    }
}

/// Runs the commands on a store concurrently and returns the answers. On a current-thread
/// runtime, tasks first run in the order they were spawned, and each command is queued
/// before its first await: arrival order is the commands' order.
async fn queued(store: &Arc<Store>, cmds: &[Command]) -> Vec<Executed> {
    let handles: Vec<_> = cmds
        .iter()
        .cloned()
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move { store.execute_unrecorded(&c).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Creates on one SKU take the fast path (one statement per table for the whole batch)
/// and decide exactly as the same commands run one after another without group commit:
/// the same outcomes in the same order, the same stock, the same rows; a rejected create
/// (input, field check, not enough stock, a SKU with no row) leaves nothing behind.
async fn fast_path_equals_one_by_one(backend: Backend) {
    let order =
        |sku: &str, quantity: Json| json!({"sku": sku, "quantity": quantity, "account": "a", "amount": 5});
    let mut inputs = vec![
        order("hot", json!(1)),
        order("hot", json!(0)),     // breaks the field's check
        order("hot", json!(5)),     // more than is left
        order("hot", json!("two")), // not an int
        order("hot", json!(2)),     // takes the last two
        order("hot", json!(1)),     // none left
    ];
    let mut unknown = order("hot", json!(1));
    unknown["colour"] = json!("red");
    inputs.push(unknown);
    inputs.push(order("hot", json!(1)));
    let cmds: Vec<Command> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| with_key(create("Order", input), &format!("c{i}"), &format!("f{i}")))
        .collect();
    // A SKU nobody restocked: its row starts from zeros, so every create on it is refused,
    // and refused creates leave no row behind.
    let cold: Vec<Command> = (0..3)
        .map(|i| with_key(create("Order", order("cold", json!(1))), &format!("cold{i}"), "f"))
        .collect();

    let mut answers = Vec::new();
    let mut books = Vec::new();
    for group_commit in [false, true] {
        let (store, _db) = grouped(backend, |c| c.group_commit = group_commit).await;
        let store = Arc::new(store);
        applied(&run(&store, &operate("Inventory", "hot", "restock", json!({"quantity": 3}))).await);
        let mut got = Vec::new();
        if group_commit {
            got.extend(queued(&store, &cmds).await);
            got.extend(queued(&store, &cold).await);
        } else {
            for c in cmds.iter().chain(&cold) {
                got.push(store.execute_unrecorded(c).await.unwrap());
            }
        }
        for (c, a) in cmds.iter().chain(&cold).zip(&got) {
            assert_eq!(store.recorded(c).await.unwrap().unwrap().outcome, a.outcome, "recorded as answered");
        }
        let stock = store.resource("t1", "Inventory", &json!("hot")).await.unwrap().unwrap();
        books.push(json!({
            "stock": stock.fields["available"],
            "stock_version": stock.version,
            "cold_rows": count(&store, "inventories", "sku = 'cold'").await,
            "orders": count(&store, "orders", "1 = 1").await,
            "journal": count(&store, "ordo_transitions", "machine = 'Order'").await,
            "outbox": count(&store, "ordo_outbox", "1 = 1").await, // and the restock's
            "timers": count(&store, "ordo_timers", "state = 'pending'").await,
            "records": count(&store, "ordo_idempotency", "1 = 1").await,
        }));
        if group_commit {
            let s = store.stats();
            assert!(s.fast_batches >= 1 && s.batches < s.batched_commands, "the fast path ran: {s:?}");
        }
        answers.push(got.iter().map(gist).collect::<Vec<_>>());
    }
    assert_eq!(answers[0], answers[1], "group commit decides as one command after another");
    assert_eq!(books[0], books[1], "and leaves the same rows");
    assert_eq!(books[1]["stock"], json!(0));
    assert_eq!(books[1]["cold_rows"], json!(0), "refused creates leave no row: {}", books[1]);
    assert_eq!(books[1]["orders"], json!(2), "{}", books[1]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_fast_path_decides_as_one_command_after_another_postgres() {
    fast_path_equals_one_by_one(Backend::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_fast_path_decides_as_one_command_after_another_sqlite() {
    fast_path_equals_one_by_one(Backend::Sqlite).await;
}

/// Keyed commands (keys `<prefix><i>`) run queued at once with group commit, or one after
/// another without; every answer is its stored record's.
async fn keyed_answers(
    store: &Arc<Store>,
    batch: impl IntoIterator<Item = Command>,
    prefix: &str,
    group_commit: bool,
) -> Vec<Executed> {
    let cmds: Vec<Command> = batch
        .into_iter()
        .enumerate()
        .map(|(i, c)| with_key(c, &format!("{prefix}{i}"), &format!("f{i}")))
        .collect();
    let got = if group_commit {
        queued(store, &cmds).await
    } else {
        let mut got = Vec::new();
        for c in &cmds {
            got.push(store.execute_unrecorded(c).await.unwrap());
        }
        got
    };
    for (c, a) in cmds.iter().zip(&got) {
        assert_eq!(store.recorded(c).await.unwrap().unwrap().outcome, a.outcome, "recorded as answered");
    }
    got
}

/// The `i`th answer's gist mentions `what`.
fn says(answers: &[Json], i: usize, what: &str) {
    assert!(answers[i].to_string().contains(what), "{i}: {}", answers[i]);
}

/// Events on many instances (and a create) share one fast-path transaction (with lanes on)
/// and decide exactly as the same commands run one after another without group commit: a
/// payment, a payment from a wallet that has nothing, a wrong state, a false guard, a transition that
/// sets fields, a stale If-Match, an instance that does not exist, an unknown parameter, a
/// cancellation that gives stock back and leaves a state with a timer, a second event on
/// an instance of the batch, a create; the same outcomes, stock, wallets, journal, outbox,
/// timers and records.
async fn events_in_a_batch_equal_one_by_one(backend: Backend) {
    let mut answers = Vec::new();
    let mut books = Vec::new();
    for group_commit in [false, true] {
        let (store, _db) = grouped(backend, |c| {
            c.group_commit = group_commit;
            c.batch_lanes = 4;
        })
        .await;
        let store = Arc::new(store);
        applied(&run(&store, &operate("Inventory", "s", "restock", json!({"quantity": 10}))).await);
        applied(&run(&store, &operate("Wallet", "a", "deposit", json!({"amount": 17}))).await);
        let mut ids = Vec::new();
        for i in 0..8 {
            let account = if i == 1 { "b" } else { "a" };
            let order = json!({"sku": "s", "quantity": 1, "account": account, "amount": 5});
            ids.push(applied(&run(&store, &create("Order", order)).await).id.clone());
        }
        for i in [2, 3, 6] {
            applied(&run(&store, &fire("Order", &ids[i], "pay", json!({}))).await);
        }
        let mut stale = fire("Order", &ids[4], "pay", json!({}));
        if let Action::Fire { if_match, .. } = &mut stale.action {
            *if_match = Some(7);
        }
        let batch = [
            fire("Order", &ids[0], "pay", json!({})), // wallet a: 17 - 3*5 < 5 -> refused
            fire("Order", &ids[1], "pay", json!({})), // wallet b has no row
            fire("Order", &ids[2], "deliver", json!({})), // paid, not shipped
            fire("Order", &ids[3], "ship", json!({"carrier": ""})), // has_carrier is false
            fire("Order", &ids[6], "ship", json!({"carrier": "ups", "tracking": "T1"})),
            stale,
            fire("Order", &uuid::Uuid::now_v7().to_string(), "pay", json!({})),
            fire("Order", &ids[5], "pay", json!({"tip": 1})),
            fire("Order", &ids[7], "cancel", json!({})),
            fire("Order", &ids[6], "deliver", json!({})), // after its ship, in arrival order
            create("Order", json!({"sku": "s", "quantity": 2, "account": "a", "amount": 1})),
            fire("Order", &ids[5], "pay", json!({})),
        ];
        let got = keyed_answers(&store, batch, "e", group_commit).await;
        let stock = store.resource("t1", "Inventory", &json!("s")).await.unwrap().unwrap();
        let wallet = store.resource("t1", "Wallet", &json!("a")).await.unwrap().unwrap();
        let mut by_state = Vec::new();
        for state in ["pending", "paid", "shipped", "delivered", "cancelled"] {
            by_state.push(count(&store, "orders", &format!("state = '{state}'")).await);
        }
        books.push(json!({
            "stock": [stock.fields["available"], stock.version],
            "wallet": [wallet.fields["balance"], wallet.version],
            "wallet_b_rows": count(&store, "wallets", "account = 'b'").await,
            "orders": by_state,
            "journal": count(&store, "ordo_transitions", "machine = 'Order'").await,
            "outbox": count(&store, "ordo_outbox", "1 = 1").await,
            "timers": [
                count(&store, "ordo_timers", "state = 'pending'").await,
                count(&store, "ordo_timers", "state = 'delivered'").await,
            ],
            "records": count(&store, "ordo_idempotency", "1 = 1").await,
        }));
        if group_commit {
            let s = store.stats();
            assert!(
                s.fast_batches >= 1 && s.batches < s.batched_commands,
                "keys shared a transaction: {s:?}"
            );
        }
        answers.push(got.iter().map(gist).collect::<Vec<_>>());
    }
    assert_eq!(answers[0], answers[1], "group commit decides as one command after another");
    assert_eq!(books[0], books[1], "and leaves the same rows");
    let expect = |i: usize, what: &str| says(&answers[1], i, what);
    expect(0, "resource_check");
    expect(1, "resource_check");
    expect(2, "wrong_state");
    expect(3, "has_carrier");
    expect(4, "\"ups\"");
    expect(5, "stale_version");
    expect(6, "not_found");
    expect(7, "tip");
    expect(8, "cancelled");
    expect(9, "delivered");
    expect(10, "pending");
    expect(11, "resource_check");
}

#[tokio::test(flavor = "current_thread")]
async fn events_in_a_batch_decide_as_one_command_after_another_postgres() {
    events_in_a_batch_equal_one_by_one(Backend::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn events_in_a_batch_decide_as_one_command_after_another_sqlite() {
    events_in_a_batch_equal_one_by_one(Backend::Sqlite).await;
}

/// A spec whose event sets a checked field, has two sources and takes from a resource.
const COUNTERS: &str = r#"
resource Pool key name: text {
    units: int check >= 0
    op fill(n: int check >= 1) { units += n }
}
machine Counter {
    pool: text check != ""
    n: int check <= 3
    note: text?
    initial open
    state bumped
    final closed
    create start
    on bump(by: int): open, bumped -> bumped {
        require positive: by >= 1
        set n = n + by
        set note = "bumped"
        Pool[pool].units -= by
    }
    on close: open, bumped -> closed
}
"#;

/// Sets checked against the field's checks, a guard on a parameter, a second source state
/// and effects in arrival order decide in a batch as one after another.
async fn sets_in_a_batch_equal_one_by_one(backend: Backend) {
    let mut answers = Vec::new();
    let mut books = Vec::new();
    for group_commit in [false, true] {
        let (store, _db) = grouped_source(backend, COUNTERS, |c| {
            c.group_commit = group_commit;
            c.batch_lanes = 4;
        })
        .await;
        let store = Arc::new(store);
        applied(&run(&store, &operate("Pool", "p", "fill", json!({"n": 5}))).await);
        let mut ids = Vec::new();
        for _ in 0..7 {
            ids.push(
                applied(&run(&store, &create("Counter", json!({"pool": "p", "n": 0}))).await).id.clone(),
            );
        }
        applied(&run(&store, &fire("Counter", &ids[1], "bump", json!({"by": 2}))).await);
        let batch = [
            fire("Counter", &ids[0], "bump", json!({"by": 1})), // open -> bumped
            fire("Counter", &ids[1], "bump", json!({"by": 2})), // 2 + 2 breaks n <= 3
            fire("Counter", &ids[2], "bump", json!({"by": 0})), // positive is false
            fire("Counter", &ids[3], "bump", json!({"by": "x"})),
            fire("Counter", &ids[4], "bump", json!({"by": 3})), // the pool has 2 left
            fire("Counter", &ids[5], "bump", json!({"by": 1})), // 1 left
            fire("Counter", &ids[1], "bump", json!({"by": 1})), // bumped -> bumped, 3, the last unit
            fire("Counter", &ids[6], "close", json!({})),
            fire("Counter", &ids[6], "bump", json!({"by": 1})), // closed
        ];
        let got = keyed_answers(&store, batch, "s", group_commit).await;
        let pool = store.resource("t1", "Pool", &json!("p")).await.unwrap().unwrap();
        books.push(json!({
            "pool": [pool.fields["units"], pool.version],
            "journal": count(&store, "ordo_transitions", "machine = 'Counter'").await,
            "records": count(&store, "ordo_idempotency", "1 = 1").await,
        }));
        if group_commit {
            assert!(store.stats().fast_batches >= 1, "{:?}", store.stats());
        }
        answers.push(got.iter().map(gist).collect::<Vec<_>>());
    }
    assert_eq!(answers[0], answers[1], "group commit decides as one command after another");
    assert_eq!(books[0], books[1], "and leaves the same rows");
    let expect = |i: usize, what: &str| says(&answers[1], i, what);
    expect(0, "bumped");
    expect(1, "check_failed");
    expect(2, "positive");
    expect(3, "invalid_input");
    expect(4, "resource_check");
    expect(5, "bumped");
    expect(6, "\"n\":3");
    expect(7, "closed");
    expect(8, "wrong_state");
}

#[tokio::test(flavor = "current_thread")]
async fn sets_in_a_batch_decide_as_one_command_after_another_postgres() {
    sets_in_a_batch_equal_one_by_one(Backend::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sets_in_a_batch_decide_as_one_command_after_another_sqlite() {
    sets_in_a_batch_equal_one_by_one(Backend::Sqlite).await;
}

/// Wallets whose keys sort differently by bytes than by most collations.
const ACCOUNTS: [&str; 6] = ["B", "a", "A", "b", "a-b", "ab"];

/// A move takes money from one wallet to another: one command, two rows of one table.
const MOVES: &str = r#"
resource Wallet key account: text {
    balance: money check >= 0
    op deposit(amount: money check >= 1) {
        balance += amount
    }
}

machine Move {
    payer: text check != ""
    payee: text check != ""
    amount: money check >= 1
    initial made
    final undone

    create make {
        require distinct: payer != payee
        Wallet[payer].balance -= amount
        Wallet[payee].balance += amount
    }

    on undo: made -> undone {
        Wallet[payee].balance -= amount
        Wallet[payer].balance += amount
    }
}
"#;

/// Batches sharing transactions across keys (lanes) and commands run one by one, all at
/// once, moving money between the same wallets in both directions: every transaction
/// takes its rows in the one lock order (instances, then resource rows by table, tenant
/// and key), so none ever waits for another in a cycle: no deadlock (which would be
/// retried), and the money is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_lone_commands_on_shared_rows_never_deadlock() {
    let (store, _db) = grouped_source(Backend::Postgres, MOVES, |c| {
        c.batch_lanes = 4;
        c.batch_wait_ms_max = 600_000;
    })
    .await;
    let store = Arc::new(store);
    for account in ACCOUNTS {
        applied(&run(&store, &operate("Wallet", account, "deposit", json!({"amount": 1_000_000}))).await);
    }
    // Each task makes a move and undoes it, every other task through group commit, the
    // rest one by one; the pairs go both ways round.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            let (payer, payee) = (ACCOUNTS[i % 6], ACCOUNTS[(i + 1 + i / 6) % 6]);
            let payee = if payee == payer { ACCOUNTS[(i + 3) % 6] } else { payee };
            let input = json!({"payer": payer, "payee": payee, "amount": 1 + i % 7});
            tokio::spawn(async move {
                let go = |c: Command, step: &str| {
                    let store = store.clone();
                    let c = with_key(c, &format!("k{i}-{step}"), &format!("f{i}-{step}"));
                    async move {
                        if i % 2 == 0 { store.execute_unrecorded(&c).await } else { store.execute(&c).await }
                            .unwrap_or_else(|e| panic!("{c:?}: {e}"))
                    }
                };
                let id = applied(&go(create("Move", input), "make").await).id.clone();
                applied(&go(fire("Move", &id, "undo", json!({})), "undo").await);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = store.stats();
    assert_eq!(s.retries, 0, "no transaction was retried (a deadlock is retried): {s:?}");
    assert!(s.fast_batches > 0, "batches took the fast path: {s:?}");
    assert_eq!(count(&store, "moves", "state = 'undone'").await, 300);
    for account in ACCOUNTS {
        let wallet = store.resource("t1", "Wallet", &json!(account)).await.unwrap().unwrap();
        assert_eq!(wallet.fields["balance"], json!(1_000_000), "{account}: all money back");
    }
}
