//! What to try: for every field and parameter a pool of values on both sides of every check
//! and guard constant of the spec, and proptest strategies of abstract steps that the runner
//! resolves against the interpreter's world (so that "fire an event allowed in the current
//! state" stays meaningful while proptest shrinks the sequence).

use ordo_model::read;
use ordo_spec::ir::{self, Expr, Type};
use proptest::prelude::*;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One step of a generated history, before it meets a world.
#[derive(Debug, Clone)]
pub enum Step {
    Create {
        machine: usize,
        values: Vec<u16>,
        keyed: bool,
    },
    Fire {
        machine: usize,
        slot: usize,
        event: EventPick,
        values: Vec<u16>,
        if_match: IfMatch,
        keyed: bool,
    },
    Operate {
        resource: usize,
        key: u16,
        op: usize,
        values: Vec<u16>,
        keyed: bool,
    },
    /// Sends an earlier keyed command again: same key, same request (a retry after a lost answer).
    Retry {
        back: usize,
    },
    /// Sends an earlier key with another request.
    Reuse {
        back: usize,
    },
    /// Fires the timers due far in the future, at most `limit`.
    Tick {
        limit: u8,
    },
    /// Runs every operation that only adds (and has no guard) on every key of the pools,
    /// with the largest accepted amounts: rows funded well enough for lifecycles to go deep.
    Fund,
    /// Creates an instance and walks the shortest path of events to the source state of the
    /// machine's `transition`-th (event, source) pair, then fires it: every transition is
    /// tried on purpose, not only when chance goes deep enough.
    Walk {
        machine: usize,
        transition: usize,
        values: Vec<u16>,
    },
    /// Creates an instance, walks it into the machine's `state`-th state, and sends it the
    /// `event`-th event, allowed there or not (the tour sends every event in every state).
    Probe {
        machine: usize,
        state: usize,
        event: usize,
        values: Vec<u16>,
    },
}

/// Fixed histories that reach what chance may miss, one per state of each machine (each on a
/// tenant of its own, so the rows one state's instances hold never starve another's): rows
/// funded, then every event sent in that state to an instance walked there, with the first
/// values the interpreter would apply. Every sequential run starts with them.
pub fn tour(spec: &ir::Spec) -> Vec<Vec<Step>> {
    let mut histories = Vec::new();
    for (mi, m) in spec.machines.iter().enumerate() {
        for state in 0..m.states.len() {
            let mut steps = vec![Step::Fund];
            for event in 0..m.events.len() {
                steps.push(Step::Probe { machine: mi, state, event, values: vec![1; inputs(spec)] });
            }
            histories.push(steps);
        }
    }
    histories
}

/// The most inputs any command of the spec takes (at least one).
fn inputs(spec: &ir::Spec) -> usize {
    spec.machines
        .iter()
        .flat_map(|m| {
            std::iter::once(m.fields.len() + m.create.params.len())
                .chain(m.events.iter().map(|e| e.params.len()))
        })
        .chain(spec.resources.iter().flat_map(|r| r.operations.iter().map(|o| o.params.len())))
        .max()
        .unwrap_or(0)
        .max(1)
}

#[derive(Debug, Clone, Copy)]
pub enum EventPick {
    /// The n-th event allowed in the instance's current state.
    Allowed(usize),
    /// The n-th event of the machine, allowed or not.
    Any(usize),
}

#[derive(Debug, Clone, Copy)]
pub enum IfMatch {
    None,
    Current,
    Stale,
}

/// The values tried for one field or parameter: all of them, and those the field accepts.
#[derive(Debug, Clone)]
pub struct Pool {
    pub all: Vec<Option<Json>>,
    pub valid: Vec<Option<Json>>,
}

impl Pool {
    /// Nine picks in ten come from the accepted values; the rest from all (absent, null,
    /// wrong type, out of range, breaking a check).
    pub fn pick(&self, v: u16) -> Option<Json> {
        let v = usize::from(v);
        let from = if v % 10 == 0 || self.valid.is_empty() { &self.all } else { &self.valid };
        from[(v / 10) % from.len()].clone()
    }

    /// [`Pool::pick`], but one pick in three is the largest accepted number: operations
    /// that fund rows fund them well enough for the machines' effects to go deep.
    pub fn pick_generous(&self, v: u16) -> Option<Json> {
        let largest = self.valid.iter().filter_map(|j| j.as_ref()?.as_i64()).max();
        match largest {
            Some(n) if v % 3 == 1 => Some(json!(n)),
            _ => self.pick(v),
        }
    }
}

/// The constants a spec compares with, by type: the edges generated values sit on.
#[derive(Debug, Default)]
pub struct Constants {
    ints: BTreeSet<i64>,
    texts: BTreeSet<String>,
}

impl Constants {
    pub fn of(spec: &ir::Spec) -> Constants {
        let mut c = Constants::default();
        let mut field = |f: &ir::Field| {
            for k in &f.checks {
                c.value(&k.value);
            }
        };
        for r in &spec.resources {
            field(&r.key);
            r.fields.iter().for_each(&mut field);
            for op in &r.operations {
                op.params.iter().for_each(&mut field);
            }
        }
        for m in &spec.machines {
            m.fields.iter().for_each(&mut field);
            m.create.params.iter().for_each(&mut field);
            for e in &m.events {
                e.params.iter().for_each(&mut field);
            }
        }
        let bodies = spec.resources.iter().flat_map(|r| r.operations.iter().map(|o| &o.body)).chain(
            spec.machines.iter().flat_map(|m| {
                std::iter::once(&m.create.body)
                    .chain(m.events.iter().flat_map(|e| e.transitions.iter().map(|t| &t.body)))
            }),
        );
        for b in bodies {
            for g in &b.guards {
                c.expr(&g.expr);
            }
            for s in &b.sets {
                c.expr(&s.value);
            }
        }
        c
    }

    fn value(&mut self, v: &ir::Value) {
        match v {
            ir::Value::Int(i) => {
                self.ints.insert(*i);
            }
            ir::Value::Text(s) => {
                self.texts.insert(s.clone());
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Value(v) => self.value(v),
            Expr::Not(x) | Expr::Neg(x) => self.expr(x),
            Expr::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            _ => {}
        }
    }

    /// The pool of a field: the type's plain values, each constant and its neighbours, and
    /// what the field must refuse.
    pub fn pool(&self, f: &ir::Field, text_keys: &[&str]) -> Pool {
        let mut all: Vec<Option<Json>> = Vec::new();
        match f.ty {
            Type::Int | Type::Money => {
                let mut ints: BTreeSet<i64> = [0, 1, 2, 3, 10, 100, 1000].into();
                for i in &self.ints {
                    for d in [-1, 0, 1] {
                        ints.insert(i.saturating_add(d));
                    }
                }
                all.extend(ints.into_iter().map(|i| Some(json!(i))));
                all.push(Some(json!(ir::INT_INPUT_ABS_MAX + 1)));
                all.push(Some(json!(1.5)));
                all.push(Some(json!("1")));
            }
            Type::Text => {
                let mut texts: BTreeSet<String> = text_keys.iter().map(|s| s.to_string()).collect();
                texts.insert(String::new());
                texts.extend(self.texts.iter().cloned());
                all.extend(texts.into_iter().map(|s| Some(json!(s))));
                all.push(Some(json!(1)));
            }
            Type::Bool => {
                all.extend([Some(json!(true)), Some(json!(false)), Some(json!("true"))]);
            }
            Type::Timestamp => {
                // Far from any `now` a run sees, so `until > now` is decided either way.
                all.extend([
                    Some(json!("2001-02-03T04:05:06Z")),
                    Some(json!("2199-01-01T00:00:00.250Z")),
                    Some(json!("tomorrow")),
                ]);
            }
        }
        all.push(None);
        all.push(Some(Json::Null));
        let valid = all.iter().filter(|v| read(f, v.as_ref()).is_ok()).cloned().collect();
        Pool { all, valid }
    }
}

/// The texts resource keys (and the fields that name them) take: few, so rows are shared.
pub const TEXT_KEYS: [&str; 2] = ["k1", "k2"];

/// A value of the key's type for key pick `v` (few, so commands meet on the same rows).
pub fn key_value(key: &ir::Field, v: u16) -> Json {
    match key.ty {
        Type::Text => json!(TEXT_KEYS[usize::from(v) % TEXT_KEYS.len()]),
        Type::Int | Type::Money => json!(i64::from(v % 3)),
        Type::Bool => json!(v.is_multiple_of(2)),
        Type::Timestamp => json!("2001-02-03T04:05:06Z"),
    }
}

/// Steps for a spec: creates, events (mostly ones allowed where the instance stands),
/// operations, retries, reused keys and timer sweeps.
pub fn steps(spec: &ir::Spec, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Step>> + use<> {
    let machines = spec.machines.len();
    let resources = spec.resources.len();
    let inputs = inputs(spec);
    let values = proptest::collection::vec(any::<u16>(), inputs);
    let has_timers = spec.machines.iter().any(|m| !m.timers.is_empty());
    let mut options: Vec<(u32, BoxedStrategy<Step>)> = Vec::new();
    if machines > 0 {
        options.push((
            3,
            (0..machines, values.clone(), any::<bool>())
                .prop_map(|(machine, values, keyed)| Step::Create { machine, values, keyed })
                .boxed(),
        ));
        let pick = prop_oneof![
            5 => (0..8usize).prop_map(EventPick::Allowed),
            1 => (0..16usize).prop_map(EventPick::Any),
        ];
        let if_match = prop_oneof![
            6 => Just(IfMatch::None),
            2 => Just(IfMatch::Current),
            1 => Just(IfMatch::Stale),
        ];
        options.push((
            1,
            (0..machines, 0..64usize, values.clone())
                .prop_map(|(machine, transition, values)| Step::Walk { machine, transition, values })
                .boxed(),
        ));
        options.push((
            6,
            (0..machines, 0..8usize, pick, values.clone(), if_match, any::<bool>())
                .prop_map(|(machine, slot, event, values, if_match, keyed)| Step::Fire {
                    machine,
                    slot,
                    event,
                    values,
                    if_match,
                    keyed,
                })
                .boxed(),
        ));
    }
    if resources > 0 {
        options.push((
            3,
            (0..resources, any::<u16>(), 0..4usize, values, any::<bool>())
                .prop_map(|(resource, key, op, values, keyed)| Step::Operate {
                    resource,
                    key,
                    op,
                    values,
                    keyed,
                })
                .boxed(),
        ));
    }
    options.push((1, (0..64usize).prop_map(|back| Step::Retry { back }).boxed()));
    options.push((1, (0..64usize).prop_map(|back| Step::Reuse { back }).boxed()));
    if has_timers {
        options.push((1, (1..4u8).prop_map(|limit| Step::Tick { limit }).boxed()));
    }
    let history = proptest::collection::vec(proptest::strategy::Union::new_weighted(options), len);
    // Most histories start funded; shrinking tries without.
    (proptest::bool::weighted(0.75), history).prop_map(|(fund, mut steps)| {
        if fund {
            steps.insert(0, Step::Fund);
        }
        steps
    })
}

/// Every (event, source state) of a machine, in declaration order.
pub fn transitions(m: &ir::Machine) -> Vec<(&ir::Event, &str)> {
    m.events
        .iter()
        .flat_map(|e| e.transitions.iter().flat_map(move |t| t.from.iter().map(move |f| (e, f.as_str()))))
        .collect()
}

/// The shortest sequence of events from the initial state to `state` (`None`: unreachable).
pub fn path_to<'m>(m: &'m ir::Machine, state: &str) -> Option<Vec<&'m ir::Event>> {
    let mut paths: BTreeMap<&str, Vec<&ir::Event>> = BTreeMap::from([(m.initial.as_str(), Vec::new())]);
    let mut queue = VecDeque::from([m.initial.as_str()]);
    while let Some(s) = queue.pop_front() {
        for e in m.events_from(s) {
            let Some(t) = e.transition_from(s) else { continue };
            if !paths.contains_key(t.to.as_str()) {
                let mut p = paths[s].clone();
                p.push(e);
                paths.insert(t.to.as_str(), p);
                queue.push_back(t.to.as_str());
            }
        }
    }
    paths.remove(state)
}

/// The keys of a resource the generated steps use.
pub fn keys(key: &ir::Field) -> Vec<Json> {
    let n = match key.ty {
        Type::Text => TEXT_KEYS.len(),
        Type::Int | Type::Money => 3,
        Type::Bool => 2,
        Type::Timestamp => 1,
    };
    (0..n).map(|i| key_value(key, u16::try_from(i).unwrap_or(0))).collect()
}
