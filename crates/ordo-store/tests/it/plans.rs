//! The plans: generic over the IR (every valid spec migrates and compiles on both
//! backends), and the checked-in SQL of the shipped specs is fresh.

use ordo_testkit::on_both;
use std::path::Path;

fn specs_in(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ordo"))
        .map(|p| {
            (p.file_stem().unwrap().to_str().unwrap().replace('-', "_"), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `docs/specs/<name>.sql` is what `cargo xtask spec docs` writes today.
#[test]
fn checked_in_sql_plans_are_fresh() {
    for (name, source) in specs_in(&root().join("specs")) {
        let spec = ordo_spec::compile(&source).unwrap();
        let expected = ordo_store::plan::render(&name, &spec, sea_orm::DbBackend::Postgres).unwrap();
        let path = root().join("docs/specs").join(format!("{name}.sql"));
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(actual == expected, "{} is stale: run `cargo xtask spec docs` and commit it", path.display());
    }
}

// Every valid spec migrates and compiles, and every primary key and unique index of its
// database leads with the tenant (docs/scaling.md: a distributed PostgreSQL shards a table
// by tenant only then). The spec history and the migrator's own table are per database.
on_both!(every_valid_spec_migrates_and_compiles, |backend| async move {
    let mut specs = specs_in(&root().join("specs"));
    specs.extend(specs_in(&root().join("crates/ordo-spec/tests/corpus/good")));
    for (name, source) in specs {
        let (store, _db) = crate::open_source(backend, &name, &source).await;
        assert_eq!(store.plans().machines.len(), store.spec().machines.len(), "{name}");
        let keys = unique_keys(store.connection()).await;
        for table in store
            .spec()
            .machines
            .iter()
            .map(|m| &m.table)
            .chain(store.spec().resources.iter().map(|r| &r.table))
        {
            assert!(keys.iter().any(|(t, _)| t == table), "{name}: no key seen on {table}: {keys:?}");
        }
        for (table, columns) in &keys {
            if ["ordo_schemas", "ordo_spec_versions", "seaql_migrations"].contains(&table.as_str()) {
                continue;
            }
            assert_eq!(
                columns.first().map(String::as_str),
                Some("tenant"),
                "{name} ({backend:?}): {table} {columns:?}"
            );
        }
    }
});

/// A database made before `m0006` (machine, journal, outbox and timer tables keyed by `id`)
/// is re-keyed `(tenant, id)` by it, keeps its rows, and serves commands after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_keys_reach_an_older_database() {
    use crate::{applied, create, fire, operate, run};
    use sea_orm::ConnectionTrait;
    use serde_json::json;
    let order = json!({"sku": "sku-1", "quantity": 1, "account": "acct-1", "amount": 10});
    let (store, db) = crate::open(ordo_testkit::Backend::Postgres, "order").await;
    applied(&run(&store, &operate("Inventory", "sku-1", "restock", json!({"quantity": 10}))).await);
    applied(&run(&store, &operate("Wallet", "acct-1", "deposit", json!({"amount": 5000}))).await);
    applied(&run(&store, &create("Order", order.clone())).await);
    let old = ["orders", "ordo_transitions", "ordo_outbox", "ordo_timers"];
    let counts = |store: &ordo_store::Store| {
        let db = store.connection().clone();
        async move {
            let mut n = Vec::new();
            for t in old {
                let sql = format!("SELECT count(*) AS n FROM {t}");
                let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql));
                n.push(row.await.unwrap().unwrap().try_get::<i64>("", "n").unwrap());
            }
            n
        }
    };
    for t in old {
        let sql = format!("ALTER TABLE {t} DROP CONSTRAINT {t}_pkey, ADD PRIMARY KEY (id)");
        store.connection().execute_unprepared(&sql).await.unwrap();
    }
    let sql = "DELETE FROM seaql_migrations WHERE version = 'm0006_ordo_tenant_keys'";
    store.connection().execute_unprepared(sql).await.unwrap();
    let before = (unique_keys(store.connection()).await, counts(&store).await);
    assert!(before.0.contains(&("orders".to_string(), vec!["id".to_string()])), "{before:?}");
    assert!(before.1.iter().all(|n| *n > 0), "{before:?}");
    drop(store);
    let mut config = ordo_store::StoreConfig::new(db.url.clone());
    config.pool_size = 4;
    let spec = ordo_spec::compile(&crate::spec_source("order")).unwrap();
    let store = ordo_store::Store::open(config, "order", spec, true).await.unwrap();
    let keys = unique_keys(store.connection()).await;
    for t in old {
        let keyed: Vec<&Vec<String>> = keys.iter().filter(|(table, _)| table == t).map(|(_, c)| c).collect();
        assert!(keyed.contains(&&vec!["tenant".to_string(), "id".to_string()]), "{t} not re-keyed: {keys:?}");
        assert!(!keyed.contains(&&vec!["id".to_string()]), "{t} keeps its old key: {keys:?}");
    }
    assert_eq!(counts(&store).await, before.1);
    let placed = applied(&run(&store, &create("Order", order)).await).clone();
    applied(&run(&store, &fire("Order", &placed.id.to_string(), "pay", json!({}))).await);
}

/// Every primary key and unique index of the database's tables: (table, its columns in order).
async fn unique_keys(db: &sea_orm::DatabaseConnection) -> Vec<(String, Vec<String>)> {
    use sea_orm::ConnectionTrait;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "SELECT c.relname AS tbl, i.indexrelid::regclass::text AS idx, a.attname::text AS col, k.n AS pos \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE i.indisunique AND c.relnamespace = current_schema()::regnamespace \
             ORDER BY tbl, idx, pos"
        }
        _ => {
            "SELECT m.name AS tbl, l.name AS idx, ii.name AS col, ii.seqno AS pos \
             FROM sqlite_master m, pragma_index_list(m.name) l, pragma_index_info(l.name) ii \
             WHERE m.type = 'table' AND l.\"unique\" = 1 ORDER BY tbl, idx, pos"
        }
    };
    let rows = db.query_all_raw(sea_orm::Statement::from_string(backend, sql)).await.unwrap();
    let mut keys: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in rows {
        let (tbl, idx, col): (String, String, String) =
            (r.try_get("", "tbl").unwrap(), r.try_get("", "idx").unwrap(), r.try_get("", "col").unwrap());
        match keys.last_mut() {
            Some((t, i, cols)) if *t == tbl && *i == idx => cols.push(col),
            _ => keys.push((tbl, idx, vec![col])),
        }
    }
    keys.into_iter().map(|(t, _, cols)| (t, cols)).collect()
}

/// Every statement a command runs on a spec's tables names its tenant: reads, updates and
/// deletes filter by `"tenant" = $n`, inserts write the tenant column. So a deployment that
/// distributes the tables by tenant (Citus, docs/scaling.md) routes each command to one shard.
#[test]
fn every_statement_of_a_command_carries_the_tenant() {
    let mut specs = specs_in(&root().join("specs"));
    specs.extend(specs_in(&root().join("crates/ordo-spec/tests/corpus/good")));
    let mut statements = 0;
    for (name, source) in specs {
        let spec = ordo_spec::compile(&source).unwrap();
        for backend in [sea_orm::DbBackend::Postgres, sea_orm::DbBackend::Sqlite] {
            let sql = ordo_store::plan::render(&name, &spec, backend).unwrap();
            for statement in sql.lines().filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
            {
                let carries = if statement.starts_with("INSERT") {
                    statement.split(" VALUES").next().is_some_and(|cols| cols.contains("\"tenant\""))
                } else if statement.starts_with("CREATE") {
                    continue;
                } else {
                    statement.split(" WHERE ").nth(1).is_some_and(|w| w.contains("\"tenant\" = "))
                };
                assert!(carries, "{name} ({backend:?}): a statement without its tenant:\n{statement}");
                statements += 1;
            }
        }
    }
    assert!(statements > 100, "only {statements} statements seen: has the rendering changed?");
}
