//! Every illegal transition of the shipped specs, generated from the spec itself: each
//! reachable state is entered, then every event without a transition from it is fired and
//! must be rejected as a wrong state, naming the events allowed there, changing nothing.

use crate::*;
use ordo_spec::ir;
use ordo_store::Rejection;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, VecDeque};

/// A value that satisfies the field's type and checks. Texts are the field's own name, so
/// that distinct fields differ (a transfer's payer and payee).
fn sample(f: &ir::Field) -> Json {
    let candidates: Vec<Json> = match f.ty {
        ir::Type::Int | ir::Type::Money => [1, 2, 5, 10, 100, 1000, 0].iter().map(|n| json!(n)).collect(),
        ir::Type::Text => vec![json!(f.name)],
        ir::Type::Bool => vec![json!(true), json!(false)],
        ir::Type::Timestamp => vec![json!("2100-01-01T00:00:00Z")],
    };
    candidates
        .into_iter()
        .find(|v| ordo_store::value::from_json(f, Some(v)).is_ok())
        .unwrap_or_else(|| panic!("no sample satisfies {}", f.name))
}

fn sample_all(fields: &[ir::Field]) -> Json {
    Json::Object(fields.iter().map(|f| (f.name.clone(), sample(f))).collect())
}

/// The shortest sequence of events from the initial state to each reachable state.
fn paths(m: &ir::Machine) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::from([(m.initial.clone(), Vec::new())]);
    let mut queue = VecDeque::from([m.initial.clone()]);
    while let Some(s) = queue.pop_front() {
        for e in m.events_from(&s) {
            let to = e.transition_from(&s).unwrap().to.clone();
            if !found.contains_key(&to) {
                let mut path = found[&s].clone();
                path.push(e.name.clone());
                found.insert(to.clone(), path);
                queue.push_back(to);
            }
        }
    }
    found
}

async fn every_illegal_transition_is_rejected(backend: ordo_testkit::Backend, spec_name: &str) {
    let (store, _db) = open(backend, spec_name).await;
    let spec = store.spec().clone();
    // Fund every resource row the samples address, through operations that only add.
    let text_keys: Vec<String> = spec
        .machines
        .iter()
        .flat_map(|m| m.fields.iter().filter(|f| f.ty == ir::Type::Text))
        .map(|f| f.name.clone())
        .collect();
    for r in &spec.resources {
        for op in r
            .operations
            .iter()
            .filter(|o| !o.body.deltas.is_empty() && o.body.deltas.iter().all(|d| d.op == ir::DeltaOp::Add))
        {
            let params = Json::Object(op.params.iter().map(|p| (p.name.clone(), json!(1_000_000))).collect());
            for key in &text_keys {
                let c = ordo_store::Command {
                    tenant: "t1".to_string(),
                    idempotency: None,
                    trace: None,
                    action: ordo_store::Action::Operate {
                        resource: r.name.clone(),
                        key: json!(key),
                        operation: op.name.clone(),
                        params: obj(params.clone()),
                    },
                };
                applied(&run(&store, &c).await);
            }
        }
    }
    let mut checked = 0;
    for m in &spec.machines {
        let paths = paths(m);
        assert_eq!(paths.len(), m.states.len(), "every state of {} is reachable", m.name);
        for (state, path) in &paths {
            let o = applied(&run(&store, &create(&m.name, sample_all(&m.fields))).await).clone();
            let mut version = o.version;
            for event in path {
                let params = sample_all(&m.event(event).unwrap().params);
                let done = applied(&run(&store, &fire(&m.name, &o.id, event, params)).await).clone();
                version = done.version;
            }
            let allowed: Vec<String> = m.events_from(state).map(|e| e.name.clone()).collect();
            for e in m.events.iter().filter(|e| e.transition_from(state).is_none()) {
                let r = run(&store, &fire(&m.name, &o.id, &e.name, sample_all(&e.params))).await;
                assert_eq!(
                    rejected(&r),
                    &Rejection::WrongState { state: state.clone(), allowed: allowed.clone() },
                    "{}.{} from {state}",
                    m.name,
                    e.name
                );
                checked += 1;
            }
            let now = store.instance("t1", &m.name, o.id.parse().unwrap()).await.unwrap().unwrap();
            assert_eq!(
                (now.state.as_deref(), now.version),
                (Some(state.as_str()), version),
                "nothing changed"
            );
        }
    }
    let expected: usize = spec
        .machines
        .iter()
        .map(|m| {
            m.states
                .iter()
                .map(|s| m.events.iter().filter(|e| e.transition_from(&s.name).is_none()).count())
                .sum::<usize>()
        })
        .sum();
    assert!(expected > 0);
    assert_eq!(checked, expected, "every illegal (state, event) pair was tried");
}

on_both!(illegal_transitions_of_order, |backend| async move {
    every_illegal_transition_is_rejected(backend, "order").await
});
on_both!(illegal_transitions_of_transfer, |backend| async move {
    every_illegal_transition_is_rejected(backend, "transfer").await
});
