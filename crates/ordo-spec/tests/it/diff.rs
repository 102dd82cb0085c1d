//! `ordo_spec::diff`: what changed between two versions of a spec, and each change's class.

use crate::{read, workspace_root};
use ordo_spec::diff::{Class, PROBLEM_CODES, diff};

const BASE: &str = r#"
resource Inventory key sku: text {
    available: int check >= 0
}

machine Order {
    sku: text
    quantity: int check >= 1 and <= 100
    comment: text?
    unit_price: money?
    initial pending
    state paid, shipped
    final delivered, cancelled
    create place {
        Inventory[sku].available -= quantity
    }
    on pay: pending -> paid
    on ship: paid -> shipped
    on deliver: shipped -> delivered
    on cancel: pending -> cancelled
    after 30m in pending: cancel
}
"#;

/// The diff from `BASE` to `BASE` with `edits` applied, one line per change (its class,
/// then what it does), then one per problem.
fn check(edits: &[(&str, &str)], expected: &[&str]) {
    let mut new = BASE.to_string();
    for (from, to) in edits {
        assert!(new.contains(from), "{from}");
        new = new.replacen(from, to, 1);
    }
    let old = ordo_spec::compile(BASE).expect("the base spec checks");
    let new = ordo_spec::compile(&new).unwrap_or_else(|d| panic!("{}", ordo_spec::render("new", &new, &d)));
    let d = diff(&old, &new);
    let got: Vec<String> = d
        .changes
        .iter()
        .map(|c| c.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        .chain(d.problems.iter().map(|p| format!("{}: {}", p.code, p.message)))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn nothing_changes_nothing() {
    check(&[], &[]);
    check(&[("resource Inventory", "// Stock on hand.\nresource Inventory")], &[]);
}

#[test]
fn checks_widened_or_tightened() {
    check(
        &[("check >= 1 and <= 100", "check >= 0 and <= 100")],
        &["safe online Order.quantity: check >= 1 and <= 100 becomes check >= 0 and <= 100 (widened)"],
    );
    check(
        &[("check >= 1 and <= 100", "check > 0")],
        &["safe online Order.quantity: check >= 1 and <= 100 becomes check > 0 (widened)"],
    );
    check(
        &[("check >= 1 and <= 100", "check >= 1 and <= 50")],
        &[
            "data-dependent Order.quantity: check >= 1 and <= 100 becomes check >= 1 and <= 50 (tightened) [not expand-only]",
        ],
    );
    check(
        &[("check >= 1 and <= 100", "check >= 1 and <= 100 and != 7")],
        &[
            "data-dependent Order.quantity: check >= 1 and <= 100 becomes check >= 1 and <= 100 and != 7 (tightened) [not expand-only]",
        ],
    );
    check(
        &[("check >= 1 and <= 100", "check >= 1 and <= 100 and != 700")],
        &[
            "safe online Order.quantity: check >= 1 and <= 100 becomes check >= 1 and <= 100 and != 700 (widened)",
        ],
    );
}

#[test]
fn fields_states_events_and_timers() {
    check(
        &[
            (
                "    comment: text?\n",
                "    note was comment: text?\n    priority: int backfill 1\n    total: int backfill quantity * 2\n",
            ),
            ("    unit_price: money?\n", "    unit_price: money backfill 100\n"),
        ],
        &[
            "data-dependent Order.priority: new required field, backfilled with `1`",
            "data-dependent Order.total: new required field, backfilled with `quantity * 2` [not expand-only]",
            "safe online Order.comment: renamed to `note` [not expand-only]",
            "data-dependent Order.unit_price: optional becomes required, backfilled with `100` [not expand-only]",
        ],
    );
    check(
        &[
            ("    state paid, shipped\n", "    state settled was paid\n    removed shipped -> delivered\n"),
            (
                "    on ship: paid -> shipped\n    on deliver: shipped -> delivered\n",
                "    on deliver: settled -> delivered\n",
            ),
            ("on pay: pending -> paid", "on settle was pay: pending -> settled"),
            ("after 30m in pending: cancel", "after 1h in pending: cancel"),
        ],
        &[
            "data-dependent Order: state `paid` renamed to `settled` [not expand-only]",
            "data-dependent Order: state `shipped` removed; its instances move to `delivered` [not expand-only]",
            "safe online Order: event `ship` removed",
            "safe online Order: event `pay` renamed to `settle` [not expand-only]",
            "safe online Order: event `deliver` changes",
            "safe online Order: timer in `pending` firing `cancel` goes from 1800000ms to 3600000ms; pending ones re-scheduled",
        ],
    );
}

#[test]
fn destructive_and_impossible_changes() {
    check(
        &[("    comment: text?\n", ""), ("    unit_price: money?\n", "    unit_price: text?\n")],
        &[
            "destructive Order.comment: field dropped, with its values [not expand-only]",
            "ordo::migrate-type-change: `Order.unit_price` changes type; add a field of the new type with a `backfill` and drop the old one",
        ],
    );
    check(
        &[("    comment: text?\n", "    note was remark: text?\n")],
        &[
            "destructive Order.comment: field dropped, with its values [not expand-only]",
            "safe online Order.note: new optional field",
            "ordo::migrate-unknown-rename: field of `Order` `note` is renamed from `remark`, but the deployed spec has no field of `Order` `remark`",
        ],
    );
}

#[test]
fn a_clause_already_applied_changes_nothing() {
    let once = BASE.replacen("    comment: text?\n", "    note was comment: text?\n", 1);
    let a = ordo_spec::compile(&once).expect("the spec checks");
    let d = diff(&a, &a);
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn every_planner_code_is_documented() {
    let doc = read(&workspace_root().join("docs/migrations.md"));
    for code in PROBLEM_CODES {
        assert!(doc.contains(&format!("| `{code}` |")), "docs/migrations.md does not list {code}");
    }
}

#[test]
fn classes_order_from_safe_to_destructive() {
    assert!(Class::Safe < Class::DataDependent && Class::DataDependent < Class::Destructive);
}
