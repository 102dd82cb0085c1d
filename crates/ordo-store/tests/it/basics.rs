//! One command at a time: each outcome, its journal, outbox and timer rows.

use crate::*;
use ordo_store::Rejection;
use serde_json::json;

async fn stocked(backend: ordo_testkit::Backend) -> (ordo_store::Store, ordo_testkit::TestDb) {
    let (store, db) = open(backend, "order").await;
    applied(&run(&store, &operate("Inventory", "sku-1", "restock", json!({"quantity": 10}))).await);
    applied(&run(&store, &operate("Wallet", "acct-1", "deposit", json!({"amount": 5000}))).await);
    (store, db)
}

fn order(quantity: i64, amount: i64) -> serde_json::Value {
    json!({"sku": "sku-1", "quantity": quantity, "account": "acct-1", "amount": amount})
}

on_both!(an_order_lives_its_lifecycle, |backend| async move {
    let (store, _db) = stocked(backend).await;
    let placed = run(&store, &create("Order", order(3, 1200))).await;
    let o = applied(&placed).clone();
    assert_eq!((o.state.as_deref(), o.version), (Some("pending"), 1));
    let stock = store.resource("t1", "Inventory", &json!("sku-1")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(7));

    let paid = applied(&run(&store, &fire("Order", &o.id, "pay", json!({}))).await).clone();
    assert_eq!((paid.state.as_deref(), paid.version), (Some("paid"), 2));
    let wallet = store.resource("t1", "Wallet", &json!("acct-1")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(3800));

    let shipped =
        applied(&run(&store, &fire("Order", &o.id, "ship", json!({"carrier": "ups"}))).await).clone();
    assert_eq!(shipped.fields["carrier"], json!("ups"));
    assert_eq!(shipped.fields["tracking"], json!(null));
    applied(&run(&store, &fire("Order", &o.id, "deliver", json!({}))).await);
    let refunded =
        applied(&run(&store, &fire("Order", &o.id, "refund", json!({"reason": "broken"}))).await).clone();
    assert_eq!((refunded.state.as_deref(), refunded.version), (Some("refunded"), 5));
    let wallet = store.resource("t1", "Wallet", &json!("acct-1")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(5000));

    let filter = format!("entity = '{}'", o.id);
    assert_eq!(count(&store, "ordo_transitions", &filter).await, 5);
    assert_eq!(count(&store, "ordo_outbox", &filter).await, 5);
    // The unpaid timer was armed on create and cancelled by pay; the return window was
    // armed on delivery and cancelled by the refund.
    assert_eq!(count(&store, "ordo_timers", &filter).await, 0);
    let got = store.instance("t1", "Order", o.id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(got, refunded);
});

on_both!(cancel_returns_what_was_taken, |backend| async move {
    let (store, _db) = stocked(backend).await;
    let pending = applied(&run(&store, &create("Order", order(2, 100))).await).clone();
    let paid = applied(&run(&store, &create("Order", order(3, 700))).await).clone();
    applied(&run(&store, &fire("Order", &paid.id, "pay", json!({}))).await);
    let filter = format!("entity = '{}'", pending.id);
    assert_eq!(count(&store, "ordo_timers", &filter).await, 1, "the unpaid timer is armed");
    for id in [&pending.id, &paid.id] {
        let c = applied(&run(&store, &fire("Order", id, "cancel", json!({}))).await).clone();
        assert_eq!(c.state.as_deref(), Some("cancelled"));
    }
    assert_eq!(count(&store, "ordo_timers", &filter).await, 0, "leaving pending cancels its timer");
    let stock = store.resource("t1", "Inventory", &json!("sku-1")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(10));
    let wallet = store.resource("t1", "Wallet", &json!("acct-1")).await.unwrap().unwrap();
    assert_eq!(wallet.fields["balance"], json!(5000));
});

on_both!(rejections_say_why_and_change_nothing, |backend| async move {
    let (store, _db) = stocked(backend).await;
    // Input that breaks a field's check, or has the wrong type, or is unknown.
    for (input, field) in [
        (order(0, 100), "quantity"),
        (order(1, -1), "amount"),
        (json!({"sku": "sku-1", "quantity": "two", "account": "a", "amount": 1}), "quantity"),
        (json!({"sku": "sku-1", "quantity": 1, "amount": 1}), "account"),
        (json!({"sku": "sku-1", "quantity": 1, "account": "a", "amount": 1, "colour": "red"}), "colour"),
        (json!({"sku": "sku-1", "quantity": 1, "account": "a", "amount": 1.5}), "amount"),
    ] {
        match rejected(&run(&store, &create("Order", input)).await) {
            Rejection::InvalidInput { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
    // More than the stock: the resource check, naming the resource.
    match rejected(&run(&store, &create("Order", order(11, 100))).await) {
        Rejection::ResourceCheck { resource, key, field } => {
            assert_eq!((resource.as_str(), key.as_str(), field.as_str()), ("Inventory", "sku-1", "available"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&store, "orders", "1 = 1").await, 0, "nothing was created");

    let o = applied(&run(&store, &create("Order", order(1, 100))).await).clone();
    // Wrong state, with the events allowed now.
    match rejected(&run(&store, &fire("Order", &o.id, "ship", json!({"carrier": "ups"}))).await) {
        Rejection::WrongState { state, allowed } => {
            assert_eq!(state, "pending");
            assert_eq!(allowed, &["pay", "cancel"]);
        }
        other => panic!("{other:?}"),
    }
    applied(&run(&store, &fire("Order", &o.id, "pay", json!({}))).await);
    // A named guard.
    match rejected(&run(&store, &fire("Order", &o.id, "ship", json!({"carrier": ""}))).await) {
        Rejection::GuardFailed { guard, condition } => {
            assert_eq!((guard.as_str(), condition.as_str()), ("has_carrier", "carrier != \"\""))
        }
        other => panic!("{other:?}"),
    }
    // Not found, including another tenant's instance.
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        rejected(&run(&store, &fire("Order", &missing, "pay", json!({}))).await),
        &Rejection::NotFound
    );
    let mut other_tenant = fire("Order", &o.id, "cancel", json!({}));
    other_tenant.tenant = "t2".to_string();
    assert_eq!(rejected(&run(&store, &other_tenant).await), &Rejection::NotFound);
    assert!(store.instance("t2", "Order", o.id.parse().unwrap()).await.unwrap().is_none());
    // Stale If-Match.
    let mut stale = fire("Order", &o.id, "ship", json!({"carrier": "ups"}));
    if let ordo_store::Action::Fire { if_match, .. } = &mut stale.action {
        *if_match = Some(1);
    }
    assert_eq!(rejected(&run(&store, &stale).await), &Rejection::StaleVersion { current: 2 });
    // Withdrawing more than the balance.
    match rejected(&run(&store, &operate("Wallet", "acct-1", "withdraw", json!({"amount": 999_999}))).await) {
        Rejection::ResourceCheck { resource, field, .. } => {
            assert_eq!((resource.as_str(), field.as_str()), ("Wallet", "balance"))
        }
        other => panic!("{other:?}"),
    }
    // Taking from a wallet that does not exist is a resource check too, and creates nothing.
    match rejected(&run(&store, &operate("Wallet", "nobody", "withdraw", json!({"amount": 1}))).await) {
        Rejection::ResourceCheck { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(store.resource("t1", "Wallet", &json!("nobody")).await.unwrap().is_none());
    let after = store.instance("t1", "Order", o.id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((after.state.as_deref(), after.version), (Some("paid"), 2), "rejections changed nothing");
});

on_both!(same_idempotency_key_applies_once, |backend| async move {
    let (store, _db) = stocked(backend).await;
    let c = with_key(create("Order", order(1, 100)), "key-1", "fp-1");
    let first = run(&store, &c).await;
    let second = run(&store, &c).await;
    assert!(!first.replayed && second.replayed);
    assert_eq!(first.outcome, second.outcome);
    assert_eq!(count(&store, "orders", "1 = 1").await, 1);
    assert_eq!(count(&store, "ordo_transitions", "1 = 1").await, 3, "two resource operations and one create");
    let stock = store.resource("t1", "Inventory", &json!("sku-1")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(9), "the stock was taken once");
    // The same key for another request is refused, not replayed.
    let other = with_key(create("Order", order(2, 100)), "key-1", "fp-2");
    assert_eq!(rejected(&run(&store, &other).await), &Rejection::KeyReused);
    // Rejections are remembered too.
    let id = applied(&first).id.clone();
    let ship = with_key(fire("Order", &id, "ship", json!({"carrier": "x"})), "key-2", "fp-3");
    let r1 = run(&store, &ship).await;
    assert!(matches!(rejected(&r1), Rejection::WrongState { .. }));
    let r2 = run(&store, &ship).await;
    assert!(r2.replayed);
    assert_eq!(r1.outcome, r2.outcome);
    // Keys belong to a tenant: another tenant's identical key applies on its own.
    let mut t2 = with_key(operate("Wallet", "acct-1", "deposit", json!({"amount": 1})), "key-1", "fp-1");
    t2.tenant = "t2".to_string();
    assert!(!run(&store, &t2).await.replayed);
});

on_both!(a_batch_gives_each_command_its_outcome, |backend| async move {
    let (store, _db) = stocked(backend).await;
    let first = with_key(create("Order", order(2, 100)), "b-1", "fp");
    let batch = vec![
        first.clone(),
        create("Order", order(0, 100)),
        create("Order", order(50, 100)),
        first,
        operate("Wallet", "acct-1", "withdraw", json!({"amount": 1})),
    ];
    let done = store.execute_batch(&batch).await.unwrap();
    assert_eq!(done.len(), 5);
    let o = applied(&done[0]).clone();
    assert!(matches!(rejected(&done[1]), Rejection::InvalidInput { .. }));
    assert!(matches!(rejected(&done[2]), Rejection::ResourceCheck { .. }));
    assert!(done[3].replayed, "the same key later in the batch replays");
    assert_eq!(applied(&done[3]), &o);
    assert_eq!(applied(&done[4]).fields["balance"], json!(4999));
    // Only what applied was written, and only once.
    assert_eq!(count(&store, "orders", "1 = 1").await, 1);
    let stock = store.resource("t1", "Inventory", &json!("sku-1")).await.unwrap().unwrap();
    assert_eq!(stock.fields["available"], json!(8));
});

// Two transitions whose statements are alike but for a value's type (an int, then a
// text, tested for null) each run as written: the statement cache never hands one the
// other's prepared types. And a null test in a create guard tests the named value.
on_both!(statements_alike_but_for_a_type_and_null_tests_in_guards, |backend| async move {
    let source = r#"
machine Probe {
  initial a
  state b
  final c
  create open(tag: text?) { require tag != null }
  on x(n: int?): a -> b { require n != null }
  on y(s: text?): b -> c { require s != null }
}
"#;
    let (store, _db) = open_source(backend, "probe", source).await;
    assert!(matches!(
        rejected(&run(&store, &create("Probe", json!({}))).await),
        Rejection::GuardFailed { .. }
    ));
    let p = applied(&run(&store, &create("Probe", json!({"tag": "t"}))).await).clone();
    assert!(matches!(
        rejected(&run(&store, &fire("Probe", &p.id, "x", json!({}))).await),
        Rejection::GuardFailed { .. }
    ));
    applied(&run(&store, &fire("Probe", &p.id, "x", json!({"n": 7}))).await);
    assert!(matches!(
        rejected(&run(&store, &fire("Probe", &p.id, "y", json!({}))).await),
        Rejection::GuardFailed { .. }
    ));
    let done = applied(&run(&store, &fire("Probe", &p.id, "y", json!({"s": "ok"}))).await).clone();
    assert_eq!(done.state.as_deref(), Some("c"));
});
