//! Spec evolution on live data, both backends: every case first makes instances, resource
//! rows, timers and idempotency records through the executor with the deployed spec, then
//! migrates to an edited spec, then checks what must hold after any migration: every row
//! satisfies the new checks, the journal replays to every stored state and version, timers
//! are those of the new spec, and earlier keys still replay their answers.

use crate::*;
use ordo_spec::diff::Class;
use ordo_store::evolve::{self, Apply, EvolveOptions, Plan, Serving};
use ordo_store::{MigrateAction, SpecSource};
use ordo_testkit::Backend;
use sea_orm::ConnectionTrait;
use serde_json::json;

const V1: &str = r#"
resource Inventory key sku: text {
    available: int check >= 0

    op restock(quantity: int check >= 1) {
        available += quantity
    }
}

machine Order {
    sku: text
    quantity: int check >= 1
    note: text?

    initial pending
    state paid
    final shipped, cancelled

    create place {
        Inventory[sku].available -= quantity
    }
    on pay: pending -> paid
    on ship: paid -> shipped
    on cancel: pending, paid -> cancelled {
        Inventory[sku].available += quantity
    }
    after 30m in pending: cancel
}
"#;

fn source(text: &str) -> SpecSource {
    let ir = ordo_spec::compile(text).unwrap_or_else(|d| panic!("{}", ordo_spec::render("edited", text, &d)));
    SpecSource { name: "order".to_string(), source: text.to_string(), ir }
}

/// `V1` with each `(from, to)` replaced (each must be there).
fn edit(pairs: &[(&str, &str)]) -> String {
    let mut s = V1.to_string();
    for (from, to) in pairs {
        assert!(s.contains(from), "V1 has no {from:?}");
        s = s.replacen(from, to, 1);
    }
    s
}

struct Live {
    db: ordo_testkit::TestDb,
    /// Ids of the orders: [pending qty 1, paid qty 2, pending qty 5].
    orders: Vec<String>,
    /// The keyed commands sent before the migration, with their answers.
    keyed: Vec<(Command, Executed)>,
}

async fn store_on(url: &str, spec: &SpecSource) -> Result<Store, ordo_store::StoreError> {
    Store::open(StoreConfig::new(url.to_string()), "order", spec.ir.clone(), false).await
}

async fn migrate(url: &str, spec: &SpecSource, action: MigrateAction, apply: Apply) -> Plan {
    migrate_with(url, spec, action, apply, &EvolveOptions::new()).await
}

async fn migrate_with(
    url: &str,
    spec: &SpecSource,
    action: MigrateAction,
    apply: Apply,
    options: &EvolveOptions,
) -> Plan {
    let db = ordo_store::connect(&StoreConfig::new(url.to_string())).await.unwrap();
    let mut plans =
        ordo_store::migrate_specs(&db, std::slice::from_ref(spec), action, apply, options).await.unwrap();
    plans.pop().unwrap()
}

const ALL: Apply = Apply::All { allow_destructive: false };

/// A database on `V1` with three orders (two pending with their timers, one paid), stock,
/// and keyed commands recorded.
async fn live(backend: Backend) -> Live {
    let db = ordo_testkit::TestDb::new(backend).await;
    let v1 = source(V1);
    migrate(&db.url, &v1, MigrateAction::Up, ALL).await;
    let store = store_on(&db.url, &v1).await.unwrap();
    applied(&run(&store, &operate("Inventory", "sku-1", "restock", json!({"quantity": 100}))).await);
    let mut keyed = Vec::new();
    let mut orders = Vec::new();
    for (i, q) in [1, 2, 5].into_iter().enumerate() {
        let c = with_key(create("Order", json!({"sku": "sku-1", "quantity": q})), &format!("k{i}"), "fp");
        let done = run(&store, &c).await;
        orders.push(applied(&done).id.clone());
        keyed.push((c, done));
    }
    let pay = with_key(fire("Order", &orders[1], "pay", json!({})), "k-pay", "fp");
    let done = run(&store, &pay).await;
    keyed.push((pay, done));
    Live { db, orders, keyed }
}

async fn rows(store: &Store, sql: &str) -> Vec<sea_orm::QueryResult> {
    store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(store.backend(), sql.to_string()))
        .await
        .unwrap()
}

/// What must hold after any migration to `spec`.
async fn invariants(live: &Live, spec: &SpecSource) -> Store {
    let store =
        store_on(&live.db.url, spec).await.unwrap_or_else(|e| panic!("the migrated store opens: {e}"));
    for m in &spec.ir.machines {
        let states: Vec<&str> = m.states.iter().map(|s| s.name.as_str()).collect();
        let bad_state = format!("NOT ({})", evolve::sql::states_check(&states));
        assert_eq!(count(&store, &m.table, &bad_state).await, 0, "every state is declared");
        for f in &m.fields {
            if let Some(c) = evolve::sql::check(&f.name, &f.checks) {
                assert_eq!(
                    count(&store, &m.table, &format!("NOT ({c})")).await,
                    0,
                    "{} holds its check",
                    f.name
                );
            }
            if !f.optional {
                assert_eq!(
                    count(&store, &m.table, &format!("\"{}\" IS NULL", f.name)).await,
                    0,
                    "{} is set",
                    f.name
                );
            }
        }
        for r in rows(&store, &format!("SELECT id, state, version FROM {}", m.table)).await {
            let id: uuid::Uuid = r.try_get("", "id").unwrap();
            let state: String = r.try_get("", "state").unwrap();
            let version: i64 = r.try_get("", "version").unwrap();
            let journal = rows(
                &store,
                &format!(
                    "SELECT version, to_state FROM ordo_transitions WHERE entity = '{id}' ORDER BY version"
                ),
            )
            .await;
            let versions: Vec<i64> = journal.iter().map(|j| j.try_get("", "version").unwrap()).collect();
            assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{id}: one journal row per version");
            let last: String = journal.last().unwrap().try_get("", "to_state").unwrap();
            assert_eq!(last, state, "{id}: the journal replays to the stored state");
            let timers =
                rows(&store, &format!("SELECT state, event FROM ordo_timers WHERE entity = '{id}'")).await;
            let mut got: Vec<(String, String)> = timers
                .iter()
                .map(|t| (t.try_get("", "state").unwrap(), t.try_get("", "event").unwrap()))
                .collect();
            got.sort();
            let mut want: Vec<(String, String)> =
                m.timers_in(&state).map(|t| (state.clone(), t.event.clone())).collect();
            want.sort();
            assert_eq!(got, want, "{id} in {state}: the timers of the new spec");
        }
    }
    for (c, before) in &live.keyed {
        let again = run(&store, c).await;
        assert!(again.replayed, "an earlier key replays");
        assert_eq!(again.outcome, before.outcome, "with the stored answer");
    }
    store
}

fn step_classes(plan: &Plan) -> Vec<Class> {
    plan.steps.iter().map(|s| s.change.class).collect()
}

fn refusal_codes(plan: &Plan) -> Vec<&str> {
    plan.refusals.iter().map(|r| r.code).collect()
}

on_both!(a_new_state_and_event_are_safe_and_old_servers_keep_serving, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    state paid\n", "    state paid, held\n"),
        (
            "    on ship: paid -> shipped\n",
            "    on ship: paid -> shipped\n    on hold: paid -> held\n    on release: held -> paid\n",
        ),
    ]));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    assert!(step_classes(&plan).iter().all(|c| *c == Class::Safe), "{plan}");
    let store = invariants(&live, &v2).await;
    applied(&run(&store, &fire("Order", &live.orders[1], "hold", json!({}))).await);
    // A server built from version 1 still opens and serves on the migrated tables.
    let old = store_on(&live.db.url, &source(V1)).await.unwrap();
    let db = ordo_store::connect(&StoreConfig::new(live.db.url.clone())).await.unwrap();
    assert_eq!(evolve::serving(&db, &source(V1)).await.unwrap(), Serving::Older { version: 1, deployed: 2 });
    let placed = applied(&run(&old, &create("Order", json!({"sku": "sku-1", "quantity": 1}))).await).clone();
    applied(&run(&old, &fire("Order", &placed.id, "pay", json!({}))).await);
    invariants(&live, &v2).await;
});

on_both!(a_renamed_state_moves_live_instances_with_journal_and_timers, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    initial pending\n", "    initial awaiting was pending\n"),
        ("on pay: pending -> paid", "on pay: awaiting -> paid"),
        ("on cancel: pending, paid", "on cancel: awaiting, paid"),
        ("after 30m in pending: cancel", "after 30m in awaiting: cancel"),
    ]));
    let due_before = {
        let store = store_on(&live.db.url, &source(V1)).await.unwrap();
        let r = rows(&store, &format!("SELECT due_at FROM ordo_timers WHERE entity = '{}'", live.orders[0]))
            .await;
        r[0].try_get::<chrono::DateTime<chrono::Utc>>("", "due_at").unwrap()
    };
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    let moved =
        plan.steps.iter().find_map(|s| s.affected.as_ref().filter(|a| a.what.contains("move"))).unwrap();
    assert_eq!(moved.rows, 2, "{plan}");
    let store = invariants(&live, &v2).await;
    let o = store.instance("t1", "Order", live.orders[0].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((o.state.as_deref(), o.version), (Some("awaiting"), 2));
    assert_eq!(count(&store, "ordo_transitions", "event = 'migrate'").await, 2);
    assert_eq!(count(&store, "ordo_outbox", "event = 'migrate'").await, 2);
    let r =
        rows(&store, &format!("SELECT due_at FROM ordo_timers WHERE entity = '{}'", live.orders[0])).await;
    assert_eq!(
        r[0].try_get::<chrono::DateTime<chrono::Utc>>("", "due_at").unwrap(),
        due_before,
        "a rename keeps the timer's due time"
    );
    // The renamed state serves: pay from `awaiting`.
    applied(&run(&store, &fire("Order", &live.orders[0], "pay", json!({}))).await);
});

on_both!(a_removed_state_needs_a_mapping_when_it_has_instances, |backend| async move {
    let live = live(backend).await;
    let without = edit(&[
        ("    state paid\n", "    state settled\n"),
        ("on pay: pending -> paid", "on pay: pending -> settled"),
        ("on ship: paid -> shipped", "on ship: settled -> shipped"),
        ("on cancel: pending, paid", "on cancel: pending, settled"),
    ]);
    let plan = migrate(&live.db.url, &source(&without), MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, None);
    assert_eq!(refusal_codes(&plan), ["ordo::migrate-stranded-instances"], "{plan}");
    assert!(
        plan.refusals[0].message.contains("1 live instance")
            && plan.refusals[0].message.contains(&live.orders[1]),
        "{plan}"
    );
    invariants(&live, &source(V1)).await;

    let with = source(&format!(
        "{}\n",
        without.replacen("    after 30m", "    removed paid -> settled\n    after 30m", 1)
    ));
    let plan = migrate(&live.db.url, &with, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    let store = invariants(&live, &with).await;
    let o = store.instance("t1", "Order", live.orders[1].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((o.state.as_deref(), o.version), (Some("settled"), 3));
});

on_both!(a_required_field_takes_a_constant_or_a_computed_backfill, |backend| async move {
    let live = live(backend).await;
    let none = source(&edit(&[("    note: text?\n", "    note: text?\n    priority: int check >= 0\n")]));
    let plan = migrate(&live.db.url, &none, MigrateAction::Up, ALL).await;
    assert_eq!(refusal_codes(&plan), ["ordo::migrate-needs-backfill"], "{plan}");

    let v2 = source(&edit(&[(
        "    note: text?\n",
        "    note: text?\n    priority: int check >= 0 backfill 3\n    weight: int check >= 10 backfill quantity * 10\n",
    )]));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    let store = invariants(&live, &v2).await;
    let o = store.instance("t1", "Order", live.orders[2].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((o.fields["priority"].clone(), o.fields["weight"].clone()), (json!(3), json!(50)));
    let placed = applied(
        &run(&store, &create("Order", json!({"sku": "sku-1", "quantity": 1, "priority": 0, "weight": 10})))
            .await,
    )
    .clone();
    assert_eq!(placed.fields["weight"], json!(10));
});

on_both!(a_backfill_that_breaks_the_check_on_live_rows_is_refused, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[(
        "    note: text?\n",
        "    note: text?\n    weight: int check >= 3 backfill quantity\n",
    )]));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await;
    assert_eq!(refusal_codes(&plan), ["ordo::migrate-breaks-check"], "{plan}");
    assert!(plan.refusals[0].message.contains("2 row(s)"), "{plan}");
    invariants(&live, &source(V1)).await;
});

on_both!(
    a_tightened_check_is_refused_with_the_rows_that_break_it_and_applied_when_none_does,
    |backend| async move {
        let live = live(backend).await;
        let broken = source(&edit(&[("    quantity: int check >= 1\n", "    quantity: int check >= 2\n")]));
        let plan = migrate(&live.db.url, &broken, MigrateAction::Up, ALL).await;
        assert_eq!(refusal_codes(&plan), ["ordo::migrate-breaks-check"], "{plan}");
        assert!(plan.refusals[0].message.contains(&live.orders[0]), "names the row: {plan}");
        assert_eq!(step_classes(&plan), [Class::DataDependent]);
        invariants(&live, &source(V1)).await;

        let fits =
            source(&edit(&[("    quantity: int check >= 1\n", "    quantity: int check >= 1 and <= 10\n")]));
        let plan = migrate(&live.db.url, &fits, MigrateAction::Up, ALL).await;
        assert_eq!(plan.applied, Some(2), "{plan}");
        let store = invariants(&live, &fits).await;
        // The database holds the new check a second time.
        assert!(
            store.connection().execute_unprepared("UPDATE orders SET quantity = 11").await.is_err(),
            "the CHECK refuses 11"
        );
        assert!(matches!(
            rejected(&run(&store, &create("Order", json!({"sku": "sku-1", "quantity": 11}))).await),
            Rejection::InvalidInput { .. }
        ));
    }
);

on_both!(a_widened_check_a_new_event_and_a_changed_guard_are_safe, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    quantity: int check >= 1\n", "    quantity: int check >= 0\n"),
        (
            "    on ship: paid -> shipped\n",
            "    on ship: paid -> shipped {\n        require quantity <= 3\n    }\n    on expedite: paid -> shipped\n",
        ),
    ]));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    assert!(plan.steps.iter().all(|s| s.change.class == Class::Safe && s.change.expand_only), "{plan}");
    let store = invariants(&live, &v2).await;
    applied(&run(&store, &create("Order", json!({"sku": "sku-1", "quantity": 0}))).await);
    applied(&run(&store, &fire("Order", &live.orders[1], "expedite", json!({}))).await);
});

on_both!(timers_follow_the_spec_added_changed_and_removed, |backend| async move {
    let live = live(backend).await;
    // A new timer on `paid` arms the paid order, due from when it was paid.
    let added = source(&edit(&[(
        "    after 30m in pending: cancel\n",
        "    after 30m in pending: cancel\n    after 2h in paid: cancel\n",
    )]));
    let plan = migrate(&live.db.url, &added, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    let store = invariants(&live, &added).await;
    let paid = store.instance("t1", "Order", live.orders[1].parse().unwrap()).await.unwrap().unwrap();
    let r =
        rows(&store, &format!("SELECT due_at FROM ordo_timers WHERE entity = '{}'", live.orders[1])).await;
    let due: chrono::DateTime<chrono::Utc> = r[0].try_get("", "due_at").unwrap();
    assert_eq!(due, paid.updated_at + chrono::Duration::hours(2));
    drop(store);

    // A changed duration re-schedules the pending ones from when they were armed.
    let changed = source(&edit(&[(
        "    after 30m in pending: cancel\n",
        "    after 45m in pending: cancel\n    after 2h in paid: cancel\n",
    )]));
    let plan = migrate(&live.db.url, &changed, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(3), "{plan}");
    let store = invariants(&live, &changed).await;
    let r = rows(
        &store,
        &format!("SELECT due_at, created_at FROM ordo_timers WHERE entity = '{}'", live.orders[0]),
    )
    .await;
    let (due, armed): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        (r[0].try_get("", "due_at").unwrap(), r[0].try_get("", "created_at").unwrap());
    assert_eq!(due - armed, chrono::Duration::minutes(45));
    drop(store);

    // A removed timer takes its pending rows with it.
    let removed = source(&edit(&[("    after 30m in pending: cancel\n", "")]));
    let plan = migrate(&live.db.url, &removed, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(4), "{plan}");
    let store = invariants(&live, &removed).await;
    assert_eq!(count(&store, "ordo_timers", "1 = 1").await, 0);
});

on_both!(fields_are_added_renamed_and_dropped_only_when_asked, |backend| async move {
    let live = live(backend).await;
    {
        let store = store_on(&live.db.url, &source(V1)).await.unwrap();
        store.connection().execute_unprepared("UPDATE orders SET note = 'fragile'").await.unwrap();
    }
    let renamed = source(&edit(&[("    note: text?\n", "    remark was note: text?\n    gift: bool?\n")]));
    let plan = migrate(&live.db.url, &renamed, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    let store = invariants(&live, &renamed).await;
    let o = store.instance("t1", "Order", live.orders[0].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((o.fields["remark"].clone(), o.fields["gift"].clone()), (json!("fragile"), json!(null)));
    drop(store);

    let dropped = source(&edit(&[("    note: text?\n", "")]));
    let plan = migrate(&live.db.url, &dropped, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, None);
    assert!(refusal_codes(&plan).iter().all(|c| *c == "ordo::migrate-destructive"), "{plan}");
    assert!(plan.steps.iter().any(|s| s.change.class == Class::Destructive));
    let plan =
        migrate(&live.db.url, &dropped, MigrateAction::Up, Apply::All { allow_destructive: true }).await;
    assert_eq!(plan.applied, Some(3), "{plan}");
    invariants(&live, &dropped).await;
});

on_both!(a_new_resource_is_safe_and_a_renamed_one_keeps_its_rows, |backend| async move {
    let live = live(backend).await;
    let wallet = "resource Wallet key account: text {\n    balance: money check >= 0\n}\n";
    let v2 = source(&format!("{wallet}{V1}"));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly).await;
    assert_eq!(plan.applied, Some(2), "{plan}");
    invariants(&live, &v2).await;
    let renamed = edit(&[
        ("resource Inventory key", "resource Stock was Inventory key"),
        ("Inventory[sku].available -= quantity", "Stock[sku].available -= quantity"),
        ("Inventory[sku].available += quantity", "Stock[sku].available += quantity"),
    ]);
    let v3 = source(&format!("{wallet}{renamed}"));
    let plan = migrate(&live.db.url, &v3, MigrateAction::Up, ALL).await;
    assert_eq!(plan.applied, Some(3), "{plan}");
    let store = invariants(&live, &v3).await;
    let stock = store.resource("t1", "Stock", &json!("sku-1")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(92));
});

on_both!(a_migration_that_fails_half_way_leaves_the_database_as_it_was, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    initial pending\n", "    initial awaiting was pending\n"),
        ("on pay: pending -> paid", "on pay: awaiting -> paid"),
        ("on cancel: pending, paid", "on cancel: awaiting, paid"),
        ("after 30m in pending: cancel", "after 30m in awaiting: cancel"),
        ("    note: text?\n", "    note: text?\n    priority: int backfill 1\n"),
    ]));
    let snapshot = |store: Store| async move {
        let mut s = Vec::new();
        for r in rows(&store, "SELECT id, state, version FROM orders ORDER BY version, state").await {
            let id: uuid::Uuid = r.try_get("", "id").unwrap();
            let (state, version): (String, i64) =
                (r.try_get("", "state").unwrap(), r.try_get("", "version").unwrap());
            s.push(format!("{id} {state} {version}"));
        }
        for table in ["ordo_transitions", "ordo_outbox", "ordo_timers", "ordo_spec_versions"] {
            s.push(format!("{table}: {}", count(&store, table, "1 = 1").await));
        }
        let columns = match store.backend() {
            sea_orm::DbBackend::Postgres => {
                "SELECT string_agg(column_name::text, ',' ORDER BY column_name) AS c FROM information_schema.columns WHERE table_name = 'orders' AND table_schema = current_schema()"
            }
            _ => "SELECT sql AS c FROM sqlite_master WHERE name = 'orders'",
        };
        s.push(rows(&store, columns).await[0].try_get::<String>("", "c").unwrap());
        s.push(format!(
            "{:?}",
            rows(&store, "SELECT state FROM ordo_timers ORDER BY state")
                .await
                .iter()
                .map(|r| r.try_get::<String>("", "state").unwrap())
                .collect::<Vec<_>>()
        ));
        s
    };
    let before = snapshot(store_on(&live.db.url, &source(V1)).await.unwrap()).await;
    let db = ordo_store::connect(&StoreConfig::new(live.db.url.clone())).await.unwrap();
    let options = EvolveOptions { fail_after_steps: Some(1), ..EvolveOptions::new() };
    let failed = evolve::evolve(&db, &v2, ALL, &options).await;
    assert!(failed.is_err(), "the forced failure is reported");
    let after = snapshot(store_on(&live.db.url, &source(V1)).await.unwrap()).await;
    assert_eq!(before, after);
    invariants(&live, &source(V1)).await;
    // And without the fault the same plan applies.
    assert_eq!(migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await.applied, Some(2));
    invariants(&live, &v2).await;
});

on_both!(down_reverts_the_last_version_where_nothing_is_lost, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    state paid\n", "    state paid, held\n"),
        (
            "    on ship: paid -> shipped\n",
            "    on ship: paid -> shipped\n    on hold: paid -> held\n    on release: held -> paid\n",
        ),
    ]));
    assert_eq!(migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await.applied, Some(2));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Down, ALL).await;
    assert_eq!(plan.applied, Some(3), "{plan}");
    invariants(&live, &source(V1)).await;
    let db = ordo_store::connect(&StoreConfig::new(live.db.url.clone())).await.unwrap();
    assert_eq!(evolve::serving(&db, &source(V1)).await.unwrap(), Serving::Current { version: 3 });

    // A version that added a field cannot be reverted without losing its values.
    let v4 = source(&edit(&[("    note: text?\n", "    note: text?\n    gift: bool?\n")]));
    assert_eq!(migrate(&live.db.url, &v4, MigrateAction::Up, ALL).await.applied, Some(4));
    let plan = migrate(&live.db.url, &v4, MigrateAction::Down, ALL).await;
    assert_eq!((plan.applied, refusal_codes(&plan)), (None, vec!["ordo::migrate-destructive"]), "{plan}");
});

on_both!(a_server_built_from_a_changed_spec_is_told_what_differs, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[("    quantity: int check >= 1\n", "    quantity: int check >= 1 and <= 3\n")]));
    let Err(e) = store_on(&live.db.url, &v2).await else { panic!("a store on another spec must not open") };
    let text = e.to_string();
    assert!(text.contains("differs from deployed version 1") && text.contains("migrate plan"), "{text}");
    // Expand-only application refuses a tightened check, and changes nothing.
    let plan = migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly).await;
    assert_eq!(plan.applied, None);
    assert!(!plan.refusals.is_empty(), "{plan}");
    invariants(&live, &source(V1)).await;
});

on_both!(two_servers_migrating_at_once_apply_the_change_once, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[("    note: text?\n", "    note: text?\n    gift: bool?\n")]));
    let (a, b) = tokio::join!(
        migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly),
        migrate(&live.db.url, &v2, MigrateAction::Up, Apply::ExpandOnly)
    );
    let mut applied: Vec<Option<i64>> = vec![a.applied, b.applied];
    applied.sort();
    assert_eq!(applied, [None, Some(2)], "one applies, the other finds it done: {a}\n{b}");
    assert!(a.refusals.is_empty() && b.refusals.is_empty());
    invariants(&live, &v2).await;
});

on_both!(down_turns_a_rename_round, |backend| async move {
    let live = live(backend).await;
    let v2 = source(&edit(&[
        ("    initial pending\n", "    initial awaiting was pending\n"),
        ("on pay: pending -> paid", "on pay: awaiting -> paid"),
        ("on cancel: pending, paid", "on cancel: awaiting, paid"),
        ("after 30m in pending: cancel", "after 30m in awaiting: cancel"),
        ("    note: text?\n", "    remark was note: text?\n"),
    ]));
    assert_eq!(migrate(&live.db.url, &v2, MigrateAction::Up, ALL).await.applied, Some(2));
    let plan = migrate(&live.db.url, &v2, MigrateAction::Down, ALL).await;
    assert_eq!(plan.applied, Some(3), "{plan}");
    let store = invariants(&live, &source(V1)).await;
    let o = store.instance("t1", "Order", live.orders[0].parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((o.state.as_deref(), o.version), (Some("pending"), 3), "moved there and back");
    assert!(o.fields.contains_key("note"), "the field has its old name again");
});
