//! The server on a database whose deployed spec differs from the one it was built from:
//! an older server on expanded tables serves (a rolling deploy), a changed spec stops the
//! start with one line, and `--migrate` applies safe, expand-only changes and nothing else.

use crate::*;
use ordo_store::evolve::{EvolveOptions, history};
use ordo_store::{Apply, MigrateAction, SpecSource, StoreConfig};

fn shipped_order() -> SpecSource {
    ordo_server::startup::specs().unwrap().into_iter().find(|s| s.name == "order").unwrap()
}

fn edited(pairs: &[(&str, &str)]) -> SpecSource {
    let mut spec = shipped_order();
    for (from, to) in pairs {
        assert!(spec.source.contains(from), "{from}");
        spec.source = spec.source.replacen(from, to, 1);
    }
    spec.ir = ordo_spec::compile(&spec.source)
        .unwrap_or_else(|d| panic!("{}", ordo_spec::render("order", &spec.source, &d)));
    spec
}

/// Deploys `spec` as the database's order spec (the transfer spec as shipped).
async fn deploy(db: &TestDb, spec: &SpecSource) {
    let conn = ordo_store::connect(&StoreConfig::new(db.url.clone())).await.unwrap();
    let mut specs = ordo_server::startup::specs().unwrap();
    specs.retain(|s| s.name != "order");
    specs.push(spec.clone());
    ordo_store::install(&conn, &specs).await.unwrap();
    let plans = ordo_store::migrate_specs(
        &conn,
        &specs,
        MigrateAction::Up,
        Apply::All { allow_destructive: true },
        &EvolveOptions::new(),
    )
    .await
    .unwrap();
    assert!(plans.iter().all(|p| p.refusals.is_empty()), "{plans:?}");
}

async fn build(db: &TestDb, migrate: bool) -> Result<Application, String> {
    let mut config = Config { database_url: db.url.clone(), migrate, ..Config::default() };
    config.listen = "127.0.0.1:0".parse().unwrap();
    Application::build(&config).await.map_err(|e| e.to_string())
}

ordo_testkit::on_both!(
    a_changed_spec_stops_the_start_with_one_line_and_migrate_applies_safe_changes,
    |backend| async move {
        // Deployed without `tracking`: the shipped spec adds an optional field, a safe change.
        let db = TestDb::new(backend).await;
        let older = edited(&[("    tracking: text?\n", ""), ("        set tracking = tracking\n", "")]);
        deploy(&db, &older).await;
        let Err(e) = build(&db, false).await else { panic!("must not start on a changed spec") };
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("spec `order`") && e.contains("migrate plan") && e.contains("--migrate"), "{e}");
        let app = build(&db, true).await.unwrap();
        drop(app);
        let conn = ordo_store::connect(&StoreConfig::new(db.url.clone())).await.unwrap();
        assert_eq!(history(&conn, "order").await.unwrap().len(), 2, "--migrate recorded the new version");
        build(&db, false).await.unwrap();
    }
);

ordo_testkit::on_both!(migrate_refuses_what_is_not_safe_and_expand_only, |backend| async move {
    // Deployed with a wider check: the shipped spec tightens it, which --migrate never does.
    let db = TestDb::new(backend).await;
    deploy(&db, &edited(&[("quantity: int check >= 1 and <= 1000", "quantity: int check >= 1 and <= 5000")]))
        .await;
    let Err(e) = build(&db, true).await else { panic!("--migrate must refuse a tightened check") };
    assert!(e.contains("tightened") && e.contains("cargo xtask migrate up"), "{e}");
    let conn = ordo_store::connect(&StoreConfig::new(db.url.clone())).await.unwrap();
    assert_eq!(history(&conn, "order").await.unwrap().len(), 1, "nothing applied");
});

ordo_testkit::on_both!(an_older_server_serves_tables_expanded_by_a_newer_one, |backend| async move {
    let db = TestDb::new(backend).await;
    build(&db, false).await.unwrap();
    // A newer version adds a state and events: expand-only.
    let newer = edited(&[
        (
            "    on deliver: shipped -> delivered\n",
            "    on deliver: shipped -> delivered\n    on hold: paid -> held\n    on release: held -> paid\n",
        ),
        ("    state paid,", "    state held, paid,"),
    ]);
    deploy(&db, &newer).await;
    let app = build(&db, false).await.expect("the older server still starts");
    let client = TestClient::new(Arc::new(app.into_endpoint()));
    let api = Api { client, db, redis: None };
    let placed = api.post("/inventory/sku-1/restock", "k-restock", json!({"quantity": 5})).await;
    assert!(placed.status.is_success(), "{:?}", placed.body);
    let order = api
        .post("/orders", "k-order", json!({"sku": "sku-1", "quantity": 1, "account": "a", "amount": 0}))
        .await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
});
