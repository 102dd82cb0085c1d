//! The database limit: the order workload through the HTTP API (a server on a socket, on
//! PostgreSQL + Redis), through the executor in process, and as raw SQL through `pgbench`
//! running the statements the executor runs (rendered from the same compiled plans), one
//! plain transaction per command as a hand-written service would send them, on the same
//! database in the same run. The ratios are the figures: the API and the executor against
//! the plainest SQL that does the job.
//! Three workloads: fresh transitions (place, pay, ship, deliver), replays (a pay re-sent
//! with its key: the idempotency path), and the hot SKU (every task places on one SKU).
//! Both servers relay every event written, pgbench's too; each measurement starts once
//! the relays have published what the one before left, and the events still waiting when
//! each API measurement ended are reported (a relay behind the API shows there).
//!
//! `cargo bench -p ordo-pressure --bench db_limit` (or `cargo xtask bench`) runs 10 s per
//! measurement; under `cargo test` (no `--bench`) 1 s each, as a smoke test that checks the
//! books. The database comes from `ORDO_TEST_PG_URL` (as `cargo xtask test` sets it) or the
//! local default; a database of its own is created and dropped.

#![allow(clippy::unwrap_used)]

/// The server binary's allocator (see crates/ordo-server/src/main.rs): the bench runs the
/// server in this process and measures it as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ordo_server::config::Config;
use ordo_server::startup::Application;
use ordo_spec::ir;
use ordo_store::plan::{Source, Sql, SqlType};
use ordo_store::{Outcome, Store, StoreConfig};
use sea_orm::ConnectionTrait;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../../ordo-store/benches/common/mod.rs"]
mod common;
use common::{ORDER, fire, operate, place};

/// The tenant of every row: the server runs single-tenant (tenant `default`), and the
/// executor and pgbench write as the same tenant.
const TENANT: &str = "default";

/// Clients/tasks of the fresh and replay runs; each has its own SKU and account so that
/// only the hot-SKU run contends.
const TASKS_MAX: usize = 32;
/// Buyers of the hot-SKU run (each with an account of its own), all at once: a flash sale
/// has thousands; one transaction per request cannot go faster with more of them (the
/// row's lock takes them one at a time), group commit can.
const HOT_TASKS_DEFAULT: usize = 256;
/// Database connections of each contender: the server's pool, the executor's pool and
/// pgbench's clients. Equal, so each gets the same share of the database; and together
/// well under PostgreSQL's default of 100.
const CONNECTIONS: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Fresh,
    Replays,
    Hot,
}

impl Workload {
    /// As `ORDO_BENCH_WORKLOADS` names it.
    fn name(self) -> &'static str {
        match self {
            Workload::Fresh => "fresh",
            Workload::Replays => "replays",
            Workload::Hot => "hot",
        }
    }
}

/// Per second through the executor: each task places, pays, ships and delivers orders
/// until the time is up (transitions); or re-sends one keyed pay (replays); or only
/// places, on one SKU (hot).
async fn executor(store: Arc<Store>, tasks: usize, secs: u64, workload: Workload) -> f64 {
    let hot = workload == Workload::Hot;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let sku = if hot { "hot".to_string() } else { format!("sku-{i}") };
                let account = format!("acct-{i}");
                let mut transitions = 0u64;
                if workload == Workload::Replays {
                    let placed = store.execute(&with_tenant(place(&sku, &account))).await.unwrap();
                    let Outcome::Applied { row: instance } = placed.outcome else {
                        panic!("{:?}", placed.outcome)
                    };
                    let mut pay = with_tenant(fire(&instance.id, "pay", json!({})));
                    pay.idempotency = Some(ordo_store::IdempotencyKey {
                        key: format!("exec-pay-{i}"),
                        fingerprint: "pay".to_string(),
                    });
                    store.execute(&pay).await.unwrap();
                    while Instant::now() < deadline {
                        assert!(store.execute(&pay).await.unwrap().replayed);
                        transitions += 1;
                    }
                    return transitions;
                }
                while Instant::now() < deadline {
                    let placed = store.execute(&with_tenant(place(&sku, &account))).await.unwrap();
                    let Outcome::Applied { row: instance } = placed.outcome else {
                        panic!("{:?}", placed.outcome)
                    };
                    transitions += 1;
                    if hot {
                        continue;
                    }
                    for (event, params) in
                        [("pay", json!({})), ("ship", json!({"carrier": "ups"})), ("deliver", json!({}))]
                    {
                        let done =
                            store.execute(&with_tenant(fire(&instance.id, event, params))).await.unwrap();
                        assert!(matches!(done.outcome, Outcome::Applied { .. }), "{:?}", done.outcome);
                        transitions += 1;
                    }
                }
                transitions
            })
        })
        .collect();
    per_second(start, handles).await
}

/// A statement with its `$n` replaced by pgbench expressions for each slot.
fn render(sql: &Sql, values: &BTreeMap<&str, String>) -> String {
    let mut text = sql.sql.clone();
    for (i, slot) in sql.slots.iter().enumerate().rev() {
        let expr = match &slot.source {
            Source::Tenant => format!("'{TENANT}'"),
            Source::Id => ":id".to_string(),
            Source::Key => values["key"].clone(),
            Source::Now => "now()".to_string(),
            Source::Version => "NULL".to_string(),
            Source::Param(p) | Source::Value(p) => values.get(p.as_str()).cloned().unwrap_or_else(|| {
                if slot.ty == SqlType::Uuid { "gen_random_uuid()".to_string() } else { "NULL".to_string() }
            }),
            Source::Const(c) => match c.to_json() {
                Json::String(s) => format!("'{}'", s.replace('\'', "''")),
                other => other.to_string(),
            },
        };
        // Typed NULLs, as the executor binds them.
        let expr = match (&expr[..], slot.ty) {
            ("NULL", SqlType::Of(ir::Type::Text)) => "NULL::text".to_string(),
            ("NULL", SqlType::Of(ir::Type::Int | ir::Type::Money)) => "NULL::bigint".to_string(),
            _ => expr,
        };
        text = text.replace(&format!("${}", i + 1), &expr);
    }
    text
}

/// The pgbench script of one order's lifecycle (or of one hot-SKU placement): the same
/// statements as the executor sends, one plain transaction per command, as a hand-written
/// service would (no idempotency record, no savepoint).
fn script(store: &Store, hot: bool) -> String {
    let plans = store.plans();
    let order = &plans.machines["Order"];
    let sys = &plans.system;
    let sku = if hot { "'hot'".to_string() } else { "'sku-' || :client_id".to_string() };
    let account = "'acct-' || :client_id".to_string();
    let base: BTreeMap<&str, String> = BTreeMap::from([
        ("sku", sku.clone()),
        ("quantity", "1".to_string()),
        ("account", account.clone()),
        ("amount", "10".to_string()),
        ("machine", "'Order'".to_string()),
        ("entity", ":id".to_string()),
        ("tenant", format!("'{TENANT}'")),
        ("params", "'{}'".to_string()),
        ("created_at", "now()".to_string()),
    ]);
    let with = |extra: &[(&'static str, String)]| {
        let mut v = base.clone();
        for (k, x) in extra {
            v.insert(k, x.clone());
        }
        v
    };
    let journal = |event: &str, from: &str, to: &str, version: i64| {
        let v = with(&[
            ("version", version.to_string()),
            ("event", format!("'{event}'")),
            ("from_state", if from.is_empty() { "NULL".to_string() } else { format!("'{from}'") }),
            ("to_state", format!("'{to}'")),
            ("payload", "'{}'".to_string()),
        ]);
        format!("{};\n{};\n", render(&sys.journal, &v), render(&sys.outbox, &v))
    };
    // Armed for when the spec says (a timer due at once would be fired by the server's
    // timer chore, and cancel the order under the benchmark).
    let machine = store.spec().machine("Order").unwrap();
    let timer = |state: &str, event: &str| {
        let after_ms = machine.timers.iter().find(|t| t.state == state).unwrap().after_ms;
        let v = with(&[
            ("state", format!("'{state}'")),
            ("event", format!("'{event}'")),
            ("due_at", format!("now() + interval '{after_ms} milliseconds'")),
        ]);
        format!("{};\n", render(&sys.timer_arm, &v))
    };
    let cancel =
        |state: &str| format!("{};\n", render(&sys.timer_cancel, &with(&[("state", format!("'{state}'"))])));
    let effect = |resource: &str, field: &str, op: ir::DeltaOp, key: &str, amount: &str| {
        let v = with(&[("key", key.to_string()), ("amount", amount.to_string())]);
        format!("{};\n", render(&plans.resources[resource].effects[&(field.to_string(), op)], &v))
    };
    let tx = |body: String| format!("BEGIN;\n{body}COMMIT;\n");
    let transition =
        |event: &str, from: &str| &order.events[event].iter().find(|t| t.from == from).unwrap().update;

    let mut out = String::from("SELECT gen_random_uuid() AS id \\gset\n");
    out += &tx(format!(
        "{};\n{}{}{}",
        render(&order.insert, &base),
        effect("Inventory", "available", ir::DeltaOp::Sub, &sku, "1"),
        journal("place", "", "pending", 1),
        timer("pending", "cancel"),
    ));
    if hot {
        return out;
    }
    out += &tx(format!(
        "{};\n{}{}{}",
        render(transition("pay", "pending"), &base),
        effect("Wallet", "balance", ir::DeltaOp::Sub, &account, "10"),
        journal("pay", "pending", "paid", 2),
        cancel("pending"),
    ));
    let ship = with(&[("carrier", "'ups'".to_string()), ("tracking", "NULL".to_string())]);
    out += &tx(format!(
        "{};\n{};\n{}",
        render(&order.lock, &base),
        render(transition("ship", "paid"), &ship),
        journal("ship", "paid", "shipped", 3),
    ));
    out += &tx(format!(
        "{};\n{}{}",
        render(transition("deliver", "shipped"), &base),
        journal("deliver", "shipped", "delivered", 4),
        timer("delivered", "complete"),
    ));
    out
}

/// Clock ticks per second of `/proc/self/stat`'s times (Linux's `USER_HZ`, 100 on every
/// architecture it ships for).
const USER_HZ: f64 = 100.0;

/// CPU seconds this process has used, user and system, where Linux tells (`None`
/// elsewhere): the servers, their relays and chores, and the bench's own clients.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which may hold spaces and parentheses: from the
    // state (field 3), so utime and stime (fields 14 and 15) are the 12th and 13th.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// What the tasks did, per second since `start`.
async fn per_second(start: Instant, tasks: Vec<tokio::task::JoinHandle<u64>>) -> f64 {
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Cost as the tables grow: fresh transitions through the API on the (nearly) empty
/// database, then again after `orders` placed orders were added with what placing leaves
/// (the journal row, the published outbox row, the idempotency record under a random key,
/// the unpaid-order timer), `ORDO_BENCH_PREFILL_ORDERS=10000000` for the figure.
async fn growth(base: &str, store: &Store, orders: u64, tasks: usize, secs: u64) {
    let conn = store.connection();
    let size = || async {
        let row = conn
            .query_one_raw(q("SELECT pg_size_pretty(pg_database_size(current_database())) AS s"))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<String>("", "s").unwrap()
    };
    let empty = api(base, tasks, secs, Workload::Fresh, 1000).await;
    let started = Instant::now();
    // In transactions of a million orders each; ids are time-ordered, as the executor's v7.
    let chunk = 1_000_000u64;
    let mut from = 0;
    while from < orders {
        let to = (from + chunk).min(orders);
        let rows = format!(
            "CREATE TEMP TABLE fill AS SELECT g,                 (lpad(to_hex((extract(epoch FROM now() - interval '1 day') * 1000)::bigint + g / 1000), 12, '0')                  || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid AS id,                 now() - interval '1 day' + g * interval '1 microsecond' AS at              FROM generate_series({from}, {to} - 1) g"
        );
        let statements = [
            rows.as_str(),
            "INSERT INTO orders (id, tenant, state, version, sku, quantity, account, amount, carrier, tracking, created_at, updated_at)              SELECT id, 'default', 'pending', 1, 'fill-' || (g % 1000), 1, 'fill-' || (g % 1000), 10, NULL, NULL, at, at FROM fill",
            "INSERT INTO ordo_transitions (id, tenant, machine, entity, version, event, from_state, to_state, params, idempotency_key, created_at)              SELECT id, 'default', 'Order', id::text, 1, 'place', NULL, 'pending', '{}', 'fill-' || md5(g::text), at FROM fill",
            "INSERT INTO ordo_outbox (id, tenant, machine, entity, version, event, payload, created_at, sent_at)              SELECT id, 'default', 'Order', id::text, 1, 'place', '{}', at, at FROM fill",
            "INSERT INTO ordo_idempotency (tenant, key, fingerprint, outcome, created_at, expires_at)              SELECT 'default', 'fill-' || md5(g::text), 'f', '{}', now(), now() + interval '1 day' FROM fill",
            "INSERT INTO ordo_timers (id, tenant, machine, entity, state, event, due_at, created_at)              SELECT id, 'default', 'Order', id::text, 'pending', 'cancel', now() + interval '1 day', at FROM fill",
            "DROP TABLE fill",
        ];
        let txn = sea_orm::TransactionTrait::begin(conn).await.unwrap();
        for sql in statements {
            txn.execute_unprepared(sql).await.unwrap();
        }
        txn.commit().await.unwrap();
        from = to;
        eprintln!("prefilled {to} orders, {:.0?}", started.elapsed());
    }
    conn.execute_unprepared("VACUUM ANALYZE").await.unwrap();
    let filled = started.elapsed();
    let full = api(base, tasks, secs, Workload::Fresh, 1001).await;
    println!(
        "fresh transitions (place-pay-ship-deliver) through the API, {tasks} tasks: {empty:.0}/s on the empty database, \
         {full:.0}/s with {orders} more orders and their journal, outbox, record and timer rows \
         (prefilled and vacuumed in {filled:.0?}; the database {}): {:.2}x",
        size().await,
        full / empty
    );
}

fn q(sql: &str) -> sea_orm::Statement {
    sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql.to_string())
}

/// The pgbench script of a replay: what the executor sends for a keyed command whose
/// record exists (the record's read, outside any transaction).
fn replay_script(store: &Store) -> String {
    let values = BTreeMap::from([("key", "'api-pay-' || :client_id".to_string())]);
    format!("{};\n", render(&store.plans().system.idempotency_get, &values))
}

fn with_tenant(mut c: ordo_store::Command) -> ordo_store::Command {
    c.tenant = TENANT.to_string();
    c
}

/// How long the bench waits for the relays to publish what a measurement left behind.
const RELAY_CATCH_UP_MAX: Duration = Duration::from_secs(120);

/// Waits until the relays have published every event (at most `RELAY_CATCH_UP_MAX`), so
/// that no measurement pays for the publishing of the one before it; returns how many
/// events were waiting when it was called. A relay that falls behind the API shows here,
/// rather than as a faster API and a slower pgbench after it.
async fn relays_caught_up(store: &Store) -> usize {
    let (first, left) =
        ordo_pressure::audit::relayed(store.connection(), TENANT, RELAY_CATCH_UP_MAX).await.unwrap();
    if left > 0 {
        eprintln!(
            "the relays still had {left} events to publish after {RELAY_CATCH_UP_MAX:?}: the next measurement pays for them"
        );
    }
    first
}

/// Per second through the HTTP API, by tasks each sending one request at a time (the
/// same workloads as `executor`).
async fn api(base: &str, tasks: usize, secs: u64, workload: Workload, round: usize) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (client, base) = (client.clone(), base.to_string());
            tokio::spawn(async move {
                let post = |path: String, key: String, body: Json| {
                    client
                        .post(format!("{base}{path}"))
                        .header("Idempotency-Key", key)
                        .header("Content-Type", "application/json")
                        .body(body.to_string())
                        .send()
                };
                let sku = if workload == Workload::Hot { "hot".to_string() } else { format!("sku-{i}") };
                let order = json!({"sku": sku, "quantity": 1, "account": format!("acct-{i}"), "amount": 10});
                let mut done = 0u64;
                let mut n = 0u64;
                // Random, as clients' keys (UUIDs) are: their records' index takes them anywhere.
                let random = std::hash::RandomState::new();
                let mut key = |what: &str| {
                    n += 1;
                    let h = |salt: u64| std::hash::BuildHasher::hash_one(&random, (what, round, i, n, salt));
                    format!("api-{:016x}{:016x}", h(0), h(1))
                };
                if workload == Workload::Replays {
                    let placed = post("/orders".into(), key("place"), order.clone()).await.unwrap();
                    let placed: Json = serde_json::from_slice(&placed.bytes().await.unwrap()).unwrap();
                    let path = format!("/orders/{}/pay", placed["id"].as_str().unwrap());
                    // The key pgbench's replay script reads.
                    let first = post(path.clone(), format!("api-pay-{i}"), json!({})).await.unwrap();
                    assert!(first.status().is_success() || first.status() == 409, "{}", first.status());
                    while Instant::now() < deadline {
                        let r = post(path.clone(), format!("api-pay-{i}"), json!({})).await.unwrap();
                        assert_eq!(r.headers()["idempotent-replayed"], "true");
                        done += 1;
                    }
                    return done;
                }
                while Instant::now() < deadline {
                    let placed = post("/orders".into(), key("place"), order.clone()).await.unwrap();
                    assert_eq!(placed.status(), 201);
                    done += 1;
                    if workload == Workload::Hot {
                        continue;
                    }
                    let placed: Json = serde_json::from_slice(&placed.bytes().await.unwrap()).unwrap();
                    let id = placed["id"].as_str().unwrap().to_string();
                    for (event, body) in
                        [("pay", json!({})), ("ship", json!({"carrier": "ups"})), ("deliver", json!({}))]
                    {
                        let r = post(format!("/orders/{id}/{event}"), key(event), body).await.unwrap();
                        assert_eq!(r.status(), 200, "{event}");
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    per_second(start, handles).await
}

/// The mean batch size the group-commit server saw, from its `/metrics`.
async fn batch_sizes(base: &str) -> String {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("shadow=\"false\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (batches, commands) = (sum("ordo_batches_total"), sum("ordo_batched_commands_total"));
    let (fast, splits) = (sum("ordo_batches_fast_total"), sum("ordo_batch_splits_total"));
    let wait = sum("ordo_batch_wait_seconds_total");
    format!(
        "group commit: {commands:.0} commands in {batches:.0} transactions ({fast:.0} on the fast path, {splits:.0} split), \
         {:.1} per transaction on average, {:.2} ms mean wait for a key",
        commands / batches.max(1.0),
        1e3 * wait / commands.max(1.0)
    )
}

/// The server on a socket, on a runtime (and threads) of its own; without `group_commit`
/// every command runs in a transaction of its own.
fn serve(url: &str, group_commit: bool, redis_prefix: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = Config {
        database_url: url.to_string(),
        redis_url: Some(ordo_testkit::redis_url()),
        redis_prefix,
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: CONNECTIONS as u32,
        rate_per_s: 1_000_000,
        rate_burst: 1_000_000,
        group_commit,
        // The group-commit settings as the server reads them, to compare:
        // ORDO_BATCH_LANES=8 (or ORDO_BATCH_MAX, ORDO_BATCH_LINGER_MS) cargo bench ...
        ..Config::load(None, |name| {
            name.starts_with("ORDO_BATCH_").then(|| std::env::var(name).ok()).flatten()
        })
        .unwrap()
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = Application::build(&config).await.unwrap();
            tx.send(format!("http://{}", app.addr)).unwrap();
            app.run_until(std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn pgbench_binary() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench"))).filter(|p| p.exists()).collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().or_else(|| {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("pgbench")).find(|p| p.is_file()))
    })
}

/// Transactions of the script per second, from pgbench's own report.
fn pgbench(binary: &PathBuf, url: &str, script: &str, clients: usize, secs: u64) -> f64 {
    let file = std::env::temp_dir().join(format!("ordo-pgbench-{}.sql", uuid::Uuid::now_v7().simple()));
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new(binary)
        .args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(&file)
        .arg(url)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pgbench failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {stdout}"))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = if full { 10 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = ordo_testkit::TestDb::postgres().await;
        // Both servers' keys, deleted at the end.
        let redis = ordo_testkit::redis_prefix();
        // The server migrates the database (both shipped specs); the executor opens it.
        let base = serve(&db.url, true, format!("{redis}grouped:"));
        let solo = serve(&db.url, false, format!("{redis}alone:"));
        let spec = ordo_spec::compile(ORDER).unwrap();
        let mut config = StoreConfig::new(db.url.clone());
        config.pool_size = CONNECTIONS as u32;
        let store = Arc::new(Store::open(config, "order", spec, false).await.unwrap());
        let hot_tasks =
            std::env::var("ORDO_BENCH_HOT_TASKS").ok().and_then(|n| n.parse().ok()).unwrap_or(HOT_TASKS_DEFAULT);
        for i in 0..TASKS_MAX.max(hot_tasks) {
            let restock = json!({"quantity": 1_000_000_000});
            let deposit = json!({"amount": 1_000_000_000_000i64});
            store
                .execute(&with_tenant(operate("Inventory", &format!("sku-{i}"), "restock", restock)))
                .await
                .unwrap();
            store
                .execute(&with_tenant(operate("Wallet", &format!("acct-{i}"), "deposit", deposit)))
                .await
                .unwrap();
        }
        store
            .execute(&with_tenant(operate("Inventory", "hot", "restock", json!({"quantity": 1_000_000_000}))))
            .await
            .unwrap();

        let tasks = TASKS_MAX;
        if let Some(orders) = std::env::var("ORDO_BENCH_PREFILL_ORDERS").ok().and_then(|n| n.parse().ok()) {
            growth(&base, &store, orders, tasks, secs).await;
            return;
        }
        let pgbench_bin = pgbench_binary();
        println!(
            "order workload on PostgreSQL (+ Redis for the API), {tasks} tasks ({hot_tasks} buyers on the hot SKU) \
             on {CONNECTIONS} connections (pgbench: {CONNECTIONS} clients), {secs} s per measurement, per second"
        );
        println!("API: with group commit (the default); API 1:1: one transaction per request (ORDO_GROUP_COMMIT=false)");
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "workload", "API", "API 1:1", "executor", "pgbench", "API/raw", "1:1/raw", "exec/raw"
        );
        let workloads = [
            ("fresh transitions (place-pay-ship-deliver)", Workload::Fresh),
            ("replays (pay re-sent with its key)", Workload::Replays),
            ("hot SKU (place on one SKU)", Workload::Hot),
        ];
        // Some of them only: ORDO_BENCH_WORKLOADS=hot,fresh cargo bench ...
        let only = std::env::var("ORDO_BENCH_WORKLOADS").ok();
        let chosen = |name: &str| only.as_ref().is_none_or(|o| o.split(',').any(|w| w.trim() == name));
        // Our process's CPU per API command: less at the mercy of pgbench's drift than the
        // ratios, so a small saving shows in one run.
        let mut cpu = Vec::new();
        // The events the relays had yet to publish when each API measurement ended.
        let mut backlog = Vec::new();
        for (round, (label, workload)) in workloads.into_iter().enumerate().filter(|(_, w)| chosen(w.1.name())) {
            let tasks = if workload == Workload::Hot { hot_tasks } else { tasks };
            let (cpu_before, wall) = (process_cpu_s(), Instant::now());
            let api_rate = api(&base, tasks, secs, workload, round).await;
            if let (Some(before), Some(after)) = (cpu_before, process_cpu_s()) {
                let commands = api_rate * wall.elapsed().as_secs_f64();
                cpu.push(format!("{} {:.0} µs", workload.name(), 1e6 * (after - before) / commands.max(1.0)));
            }
            backlog.push(format!("{} {}", workload.name(), relays_caught_up(&store).await));
            // Replays are answered by the claim, from the answer Redis keeps, before any queue:
            // one server measures them (their keys are shared with pgbench's script).
            let solo_rate = match workload {
                Workload::Replays => None,
                _ => Some(api(&solo, tasks, secs, workload, round + 100).await),
            };
            relays_caught_up(&store).await;
            let exec_rate = executor(store.clone(), tasks, secs, workload).await;
            relays_caught_up(&store).await;
            assert!(api_rate > 0.0 && exec_rate > 0.0);
            let raw = pgbench_bin.as_ref().map(|bin| match workload {
                Workload::Fresh => pgbench(bin, &db.url, &script(&store, false), CONNECTIONS, secs) * 4.0,
                Workload::Hot => pgbench(bin, &db.url, &script(&store, true), CONNECTIONS, secs),
                Workload::Replays => pgbench(bin, &db.url, &replay_script(&store), CONNECTIONS, secs),
            });
            relays_caught_up(&store).await;
            let solo_text = solo_rate.map_or("-".to_string(), |r| format!("{r:.0}"));
            match raw {
                Some(raw) => println!(
                    "{label:<44} {api_rate:>10.0} {solo_text:>10} {exec_rate:>10.0} {raw:>10.0} {:>10.2} {:>10} {:>10.2}",
                    api_rate / raw,
                    solo_rate.map_or("-".to_string(), |r| format!("{:.2}", r / raw)),
                    exec_rate / raw
                ),
                None => println!(
                    "{label:<44} {api_rate:>10.0} {solo_text:>10} {exec_rate:>10.0} {:>10} {:>10} {:>10} {:>10}",
                    "no pgbench", "-", "-", "-"
                ),
            }
        }
        println!("{}", batch_sizes(&base).await);
        if !backlog.is_empty() {
            println!(
                "events not yet relayed when each API measurement ended (each measurement starts with none): {}",
                backlog.join(", ")
            );
        }
        if !cpu.is_empty() {
            println!(
                "this process's CPU per API command (the group-commit server's requests, both servers' relays \
                 and chores, and the bench's HTTP client): {}",
                cpu.join(", ")
            );
        }

        // The books balance: every order has its journal rows, and no stock went missing.
        let conn = store.connection();
        let n = |row: Option<sea_orm::QueryResult>| row.unwrap().try_get::<i64>("", "n").unwrap();
        let orders = n(conn.query_one_raw(q("SELECT COUNT(*) AS n FROM orders")).await.unwrap());
        let journal = n(conn
            .query_one_raw(q("SELECT COUNT(*) AS n FROM ordo_transitions WHERE machine = 'Order'"))
            .await
            .unwrap());
        let versions = n(conn
            .query_one_raw(q("SELECT COALESCE(SUM(version), 0)::bigint AS n FROM orders"))
            .await
            .unwrap());
        assert_eq!(journal, versions, "one journal row per version");
        let taken = n(conn
            .query_one_raw(q("SELECT (SUM(1000000000 - available))::bigint AS n FROM inventories"))
            .await
            .unwrap());
        assert_eq!(taken, orders, "each order took one item");
        println!("{orders} orders, {journal} journal rows: consistent");
    });
}
