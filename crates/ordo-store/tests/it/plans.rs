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

on_both!(every_valid_spec_migrates_and_compiles, |backend| async move {
    let mut specs = specs_in(&root().join("specs"));
    specs.extend(specs_in(&root().join("crates/ordo-spec/tests/corpus/good")));
    for (name, source) in specs {
        let (store, _db) = crate::open_source(backend, &name, &source).await;
        assert_eq!(store.plans().machines.len(), store.spec().machines.len(), "{name}");
    }
});

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
