//! The order workload on PostgreSQL through the executor, at 8 and 32 concurrent tasks,
//! next to `pgbench` running the very statements the executor runs (rendered from the same
//! compiled plans) on the same database in the same run. The ratio is the figure: what the
//! executor costs on top of the SQL it must send.
//!
//! `cargo bench -p ordo-store --bench pg_throughput` runs 10 s per measurement; under
//! `cargo test` (no `--bench`) it runs 1 s each as a smoke test and checks the books.
//! The database comes from `ORDO_TEST_PG_URL` (as `cargo xtask test` sets it) or the local
//! default; a database of its own is created and dropped.

#![allow(clippy::unwrap_used)]

use ordo_spec::ir;
use ordo_store::plan::{Source, Sql, SqlType};
use ordo_store::{Outcome, Store, StoreConfig};
use sea_orm::ConnectionTrait;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{ORDER, fire, operate, place};

/// Clients/tasks at most; each has its own SKU and account so that only the hot-SKU run contends.
const TASKS_MAX: usize = 32;

/// Transitions per second through the executor: each task places, pays, ships and
/// delivers orders until the time is up (or only places, on one SKU, when `hot`).
async fn api(store: Arc<Store>, tasks: usize, secs: u64, hot: bool) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let sku = if hot { "hot".to_string() } else { format!("sku-{i}") };
                let account = format!("acct-{i}");
                let mut transitions = 0u64;
                while Instant::now() < deadline {
                    let placed = store.execute(&place(&sku, &account)).await.unwrap();
                    let Outcome::Applied { instance } = placed.outcome else {
                        panic!("{:?}", placed.outcome)
                    };
                    transitions += 1;
                    if hot {
                        continue;
                    }
                    for (event, params) in
                        [("pay", json!({})), ("ship", json!({"carrier": "ups"})), ("deliver", json!({}))]
                    {
                        let done = store.execute(&fire(&instance.id, event, params)).await.unwrap();
                        assert!(matches!(done.outcome, Outcome::Applied { .. }), "{:?}", done.outcome);
                        transitions += 1;
                    }
                }
                transitions
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A statement with its `$n` replaced by pgbench expressions for each slot.
fn render(sql: &Sql, values: &BTreeMap<&str, String>) -> String {
    let mut text = sql.sql.clone();
    for (i, slot) in sql.slots.iter().enumerate().rev() {
        let expr = match &slot.source {
            Source::Tenant => "'t1'".to_string(),
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
/// statements, in the same transactions and savepoints, as the executor sends.
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
        ("tenant", "'t1'".to_string()),
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
    let timer = |state: &str, event: &str| {
        let v = with(&[
            ("state", format!("'{state}'")),
            ("event", format!("'{event}'")),
            ("due_at", "now()".to_string()),
        ]);
        format!("{};\n", render(&sys.timer_arm, &v))
    };
    let cancel =
        |state: &str| format!("{};\n", render(&sys.timer_cancel, &with(&[("state", format!("'{state}'"))])));
    let effect = |resource: &str, field: &str, op: ir::DeltaOp, key: &str, amount: &str| {
        let v = with(&[("key", key.to_string()), ("amount", amount.to_string())]);
        format!("{};\n", render(&plans.resources[resource].effects[&(field.to_string(), op)], &v))
    };
    let tx = |body: String| format!("BEGIN;\nSAVEPOINT s;\n{body}RELEASE SAVEPOINT s;\nCOMMIT;\n");
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
        let spec = ordo_spec::compile(ORDER).unwrap();
        let mut config = StoreConfig::new(db.url.clone());
        config.pool_size = TASKS_MAX as u32;
        let store = Arc::new(Store::open(config, "order", spec, true).await.unwrap());
        for i in 0..TASKS_MAX {
            let restock = json!({"quantity": 1_000_000_000});
            let deposit = json!({"amount": 1_000_000_000_000i64});
            store.execute(&operate("Inventory", &format!("sku-{i}"), "restock", restock)).await.unwrap();
            store.execute(&operate("Wallet", &format!("acct-{i}"), "deposit", deposit)).await.unwrap();
        }
        store
            .execute(&operate("Inventory", "hot", "restock", json!({"quantity": 1_000_000_000})))
            .await
            .unwrap();

        let pgbench_bin = pgbench_binary();
        println!("order workload on PostgreSQL, {secs} s per measurement (transitions/s)");
        println!("{:<28} {:>8} {:>12} {:>12} {:>9}", "workload", "tasks", "executor", "pgbench", "ratio");
        for (label, hot, levels) in
            [("place-pay-ship-deliver", false, &[8usize, 32][..]), ("hot SKU: place", true, &[32][..])]
        {
            for &tasks in levels {
                let api_rate = api(store.clone(), tasks, secs, hot).await;
                assert!(api_rate > 0.0);
                let raw = pgbench_bin.as_ref().map(|bin| {
                    let per_script = if hot { 1.0 } else { 4.0 };
                    pgbench(bin, &db.url, &script(&store, hot), tasks, secs) * per_script
                });
                match raw {
                    Some(raw) => println!(
                        "{label:<28} {tasks:>8} {api_rate:>12.0} {raw:>12.0} {:>9.2}",
                        api_rate / raw
                    ),
                    None => {
                        println!("{label:<28} {tasks:>8} {api_rate:>12.0} {:>12} {:>9}", "no pgbench", "-")
                    }
                }
            }
        }

        // The books balance: every order has its journal rows, and no stock went missing.
        let q = |sql: &str| sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql.to_string());
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
