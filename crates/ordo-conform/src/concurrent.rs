//! Concurrent conformance: after a sequential setup (funded rows, a few instances, all
//! compared as in `run`), several clients send their commands at once, on the same
//! instances and the same resource keys, some with the same idempotency keys (a retry
//! racing its original), some sweeping timers that are due. Each command's invocation and
//! answer are timed on one clock; the history must be linearizable against the interpreter
//! (`ordo_model::linear`) and end in the rows the store holds.

use crate::run::{Case, Pools, Sent, describe, send, sweep_time};
use crate::steps::{self, Step, keys};
use crate::{Coverage, Options, Report, compare, rounds};
use chrono::Utc;
use ordo_model::linear::{self, Observed, Op};
use ordo_model::{self as model, World};
use ordo_spec::ir;
use ordo_store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

/// One client's commands, resolved before the clients start.
enum Send {
    Command(Box<Sent>),
    /// A timer sweep at the far-future `now`.
    Sweep,
}

/// Concurrent conformance on `store`: generated rounds of clients until the budget is spent.
pub fn concurrent(rt: &tokio::runtime::Runtime, store: &Store, opts: &Options) -> Result<Report, String> {
    let spec = store.spec().clone();
    let pools = Pools::of(&spec);
    let strategy = || {
        let client = steps::steps(&spec, 1..5);
        (steps::steps(&spec, 4..12), proptest::collection::vec(client, 2..5))
    };
    rounds(opts, &spec, &Coverage::default(), strategy, |(setup, clients), covered| {
        one_case(rt, store, &spec, &pools, setup, clients, covered)
    })
}

fn one_case(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    spec: &ir::Spec,
    pools: &Pools,
    setup: &[Step],
    clients: &[Vec<Step>],
    covered: &mut Coverage,
) -> Result<(), String> {
    let mut case = Case::new(store, spec, pools);
    let result = rt.block_on(async {
        for step in setup {
            case.step(step, covered).await.map_err(|e| format!("in the setup:\n{}\n{e}", case.report()))?;
        }
        Ok::<(), String>(())
    });
    if let Err(e) = result {
        rt.block_on(case.finish());
        return Err(e);
    }
    let result = race(rt, &mut case, clients, covered);
    rt.block_on(case.finish());
    result
}

/// Commands the clients send at most, so that with the timers a sweep may fire the history
/// stays within what the checker takes (`linear::OPS_MAX`).
const RACED_MAX: usize = 40;

/// The clients' commands, resolved against the world the setup left: at most `RACED_MAX`,
/// and sweeps only when every timer they could fire still fits in one history.
fn plan(case: &mut Case<'_>, clients: &[Vec<Step>]) -> Vec<Vec<Send>> {
    let mut plans = Vec::new();
    let mut planned = 0;
    for (c, steps) in clients.iter().enumerate() {
        let mut plan = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if planned + plan.len() >= RACED_MAX {
                break;
            }
            match step {
                Step::Tick { .. } => plan.push(Send::Sweep),
                Step::Fund => plan.extend(case.funding().into_iter().map(|s| Send::Command(Box::new(s)))),
                Step::Walk { .. } => {}
                other => {
                    if let Some(sent) = case.resolve(other, 1000 * (c + 1) + i) {
                        if sent.model.key.is_some()
                            && !case.keyed.iter().any(|k| k.model.key == sent.model.key)
                        {
                            case.keyed.push(sent.clone());
                        }
                        plan.push(Send::Command(Box::new(sent)));
                    }
                }
            }
        }
        planned += plan.len();
        plans.push(plan);
    }
    // A sweep may fire one timer per instance and timer of its machine.
    let creates = plans
        .iter()
        .flatten()
        .filter(|s| matches!(s, Send::Command(c) if matches!(c.model.action, model::Action::Create { .. })))
        .count();
    let timers = case.spec.machines.iter().map(|m| m.timers.len()).max().unwrap_or(0);
    if planned + (case.world.instances.len() + creates) * timers > linear::OPS_MAX {
        for plan in &mut plans {
            plan.retain(|s| !matches!(s, Send::Sweep));
        }
    }
    plans
}

/// Runs the clients at once (a thread each, on the runtime), then checks the history.
fn race(
    rt: &tokio::runtime::Runtime,
    case: &mut Case<'_>,
    clients: &[Vec<Step>],
    covered: &mut Coverage,
) -> Result<(), String> {
    let plans = plan(case, clients);
    let store = case.store;
    let spec = case.spec;
    // The journal is compared in the sequential runs; here it would only slow the search.
    let start = World { journal: Vec::new(), ..case.world.clone() };
    let clock = Instant::now();
    let ticks = |t: Instant| u64::try_from(t.duration_since(clock).as_nanos()).unwrap_or(u64::MAX);
    let sweep_now = sweep_time(spec);
    let handle = rt.handle();
    let mut ops: Vec<Op> = Vec::new();
    let mut sweeps: Vec<(usize, u64)> = Vec::new();
    std::thread::scope(|scope| {
        let running: Vec<_> = plans
            .iter()
            .map(|plan| {
                scope.spawn(move || {
                    handle.block_on(async {
                        let mut done = Vec::new();
                        for s in plan {
                            let invoked = ticks(Instant::now());
                            match s {
                                Send::Command(sent) => {
                                    let now = Utc::now();
                                    let got = send(store, &sent.store).await;
                                    done.push((invoked, ticks(Instant::now()), Some((now, sent, got))));
                                }
                                Send::Sweep => {
                                    // Which timers it fired is decided below, from the rows.
                                    let _ = store.fire_due_timers(sweep_now, 64).await;
                                    done.push((invoked, ticks(Instant::now()), None));
                                }
                            }
                        }
                        done
                    })
                })
            })
            .collect();
        for (client, r) in running.into_iter().enumerate() {
            for (invoked, returned, answer) in r.join().unwrap_or_default() {
                let Some((now, sent, got)) = answer else {
                    sweeps.push((client, invoked));
                    continue;
                };
                let observed = match &got {
                    Ok(e) => Observed::Done(compare::observed(spec, e)),
                    // Refused before anything was written: a lock not available (nowait).
                    Err(StoreError::Busy { .. }) => Observed::NoEffect,
                    Err(_) => Observed::Unknown,
                };
                let new_id = match &observed {
                    Observed::Done(model::Executed {
                        outcome: model::Outcome::Applied(row),
                        replayed: false,
                    }) => row.id.clone(),
                    _ => String::new(),
                };
                ops.push(Op {
                    client,
                    invoked,
                    returned,
                    command: sent.model.clone(),
                    now,
                    new_id,
                    observed,
                });
            }
        }
    });
    // Every timer any instance may have had armed may have fired in a sweep, once or not.
    if let Some(&(client, invoked)) = sweeps.iter().min_by_key(|s| s.1) {
        let ids = instances(&start, &ops);
        for (machine, id) in &ids {
            let Some(m) = spec.machine(machine) else { continue };
            for t in &m.timers {
                ops.push(Op {
                    client,
                    invoked,
                    returned: u64::MAX,
                    command: model::Command {
                        key: None,
                        action: model::Action::Timer {
                            machine: machine.clone(),
                            id: id.clone(),
                            state: t.state.clone(),
                            event: t.event.clone(),
                        },
                    },
                    now: sweep_now,
                    new_id: String::new(),
                    observed: Observed::Unknown,
                });
            }
        }
    }
    ops.sort_by_key(|o| o.invoked);
    for op in ops.iter().filter(|o| o.returned != u64::MAX) {
        if let Observed::Done(e) = &op.observed {
            covered.outcome(e);
        }
        covered.raced += 1;
        let overlaps = |o: &&Op| o.client != op.client && o.invoked < op.returned && op.invoked < o.returned;
        covered.overlapped += u64::from(ops.iter().any(|o| overlaps(&o)));
    }
    let rows = rt.block_on(Rows::read(store, spec, &case.tenant, &start, &ops))?;
    let ends = |w: &World| rows.matches(w);
    let searching = Instant::now();
    let found = linear::linearize(spec, &start, &ops, &compare::same, &ends);
    let took = searching.elapsed();
    if took > std::time::Duration::from_secs(1) {
        let visited = match &found {
            Ok(l) => l.visited,
            Err(n) => n.visited,
        };
        eprintln!(
            "a history of {} commands took {:.1}s to check ({visited} configurations)",
            ops.len(),
            took.as_secs_f64()
        );
    }
    match found {
        Ok(found) => {
            // The order found, again on the world with its journal: coverage, and the
            // spec's invariants after the last command.
            let mut w = case.world.clone();
            for i in found.order {
                let before = w.journal.len();
                w.step(spec, &ops[i].command, ops[i].now, &ops[i].new_id);
                covered.entries(&w.journal[before..]);
            }
            case.world = w;
            case.invariants("after the clients")
        }
        Err(why) => Err(history(&case.report(), &ops, &why)),
    }
}

/// Every instance the clients could have touched: the setup's and those their creates made.
fn instances(start: &World, ops: &[Op]) -> BTreeSet<(String, String)> {
    let mut ids: BTreeSet<(String, String)> = start.instances.keys().cloned().collect();
    for op in ops {
        if let model::Action::Create { machine, .. } = &op.command.action
            && !op.new_id.is_empty()
        {
            ids.insert((machine.clone(), op.new_id.clone()));
        }
    }
    ids
}

/// The tenant's rows after the clients, for the final check.
struct Rows {
    instances: BTreeMap<(String, String), Option<model::Row>>,
    resources: BTreeMap<(String, String), Option<model::Row>>,
    counts: BTreeMap<String, i64>,
}

impl Rows {
    async fn read(
        store: &Store,
        spec: &ir::Spec,
        tenant: &str,
        start: &World,
        ops: &[Op],
    ) -> Result<Rows, String> {
        let mut rows = BTreeMap::new();
        for (machine, id) in instances(start, ops) {
            let row = compare::instance(store, spec, tenant, &machine, &id).await?;
            rows.insert((machine, id), row);
        }
        let mut resources = BTreeMap::new();
        for r in &spec.resources {
            for key in keys(&r.key) {
                let row = compare::resource(store, spec, tenant, &r.name, &key).await?;
                let text = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                resources.insert((r.name.clone(), text), row);
            }
        }
        let counts = compare::counts(store, spec, tenant).await?;
        Ok(Rows { instances: rows, resources, counts })
    }

    fn matches(&self, w: &World) -> bool {
        self.counts.iter().all(|(name, n)| usize::try_from(*n).ok() == Some(compare::held(w, name)))
            && self.instances.iter().all(|(k, row)| match (row, w.instances.get(k)) {
                (Some(a), Some(b)) => compare::same_row(a, b),
                (None, None) => true,
                _ => false,
            })
            && self.resources.iter().all(|(k, row)| match (row, w.rows.get(k)) {
                (Some(a), Some(b)) => compare::same_row(a, b),
                (None, None) => true,
                _ => false,
            })
    }
}

/// A failure: the setup, the clients' history in real time, the longest order that fits,
/// and what the interpreter would have answered for the commands that could not come next.
fn history(setup: &str, ops: &[Op], why: &linear::NotLinearizable) -> String {
    let mut s = format!("not linearizable.\nsetup:\n{setup}\nclients (invoked..answered, µs):\n");
    for (i, op) in ops.iter().enumerate() {
        let returned =
            if op.returned == u64::MAX { "…".to_string() } else { (op.returned / 1000).to_string() };
        let seen = match &op.observed {
            Observed::Done(e) => compare::short(e),
            Observed::NoEffect => "failed without effect".to_string(),
            Observed::Unknown => "no answer (may or may not have happened)".to_string(),
        };
        let _ = writeln!(
            s,
            "  #{i} client {} [{}..{returned}] {}\n       -> {seen}",
            op.client,
            op.invoked / 1000,
            describe(&op.command)
        );
    }
    let order: Vec<String> = why.longest.iter().map(|i| format!("#{i}")).collect();
    let _ = writeln!(
        s,
        "longest order that fits: {}",
        if order.is_empty() { "none".to_string() } else { order.join(" ") }
    );
    if why.gave_up {
        let _ = writeln!(s, "the search gave up after {} configurations", why.visited);
    }
    if why.final_rows_differ {
        let _ = writeln!(s, "every answer fits that order, but the rows it leaves differ from the store's");
    }
    for (i, e) in &why.misfits {
        let _ = writeln!(s, "  next, #{i} would get: {}", compare::short(e));
    }
    s
}
