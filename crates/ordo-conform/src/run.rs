//! One generated history, run through the real executor and the interpreter side by side:
//! each step resolved against the interpreter's world, sent the way the server sends it,
//! its outcome compared, then every row, count and timer of the tenant compared.

use crate::steps::{
    Constants, EventPick, IfMatch, Pool, Step, TEXT_KEYS, key_value, keys, path_to, transitions,
};
use crate::{Coverage, compare};
use chrono::Utc;
use ordo_model::{self as model, World};
use ordo_spec::ir;
use ordo_store::{IdempotencyKey, Store, StoreError};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The pools of every input of a spec, by (owner, name).
pub struct Pools {
    pools: BTreeMap<(String, String), Pool>,
}

impl Pools {
    pub fn of(spec: &ir::Spec) -> Pools {
        let c = Constants::of(spec);
        let mut pools = BTreeMap::new();
        let mut add = |owner: &str, f: &ir::Field| {
            pools.insert((owner.to_string(), f.name.clone()), c.pool(f, &TEXT_KEYS));
        };
        for m in &spec.machines {
            m.fields.iter().chain(&m.create.params).for_each(|f| add(&m.name, f));
            for e in &m.events {
                e.params.iter().for_each(|f| add(&format!("{}.{}", m.name, e.name), f));
            }
        }
        for r in &spec.resources {
            for op in &r.operations {
                op.params.iter().for_each(|f| add(&format!("{}.{}", r.name, op.name), f));
            }
        }
        Pools { pools }
    }

    fn input<'f>(
        &self,
        owner: &str,
        fields: impl Iterator<Item = &'f ir::Field>,
        values: &[u16],
        generous: bool,
    ) -> Map<String, Json> {
        let mut input = Map::new();
        for (i, f) in fields.enumerate() {
            let pick = values.get(i % values.len().max(1)).copied().unwrap_or(1);
            let pool = &self.pools[&(owner.to_string(), f.name.clone())];
            if let Some(v) = if generous { pool.pick_generous(pick) } else { pool.pick(pick) } {
                input.insert(f.name.clone(), v);
            }
        }
        input
    }
}

/// The fingerprint a reused key is sent with (any other request's).
const REUSED: &str = "another request";

/// Value picks [`Case::likely`] tries before it settles for one the spec refuses.
const LIKELY_TRIES: u16 = 32;

/// A command in both forms.
#[derive(Clone)]
pub struct Sent {
    pub store: ordo_store::Command,
    pub model: model::Command,
}

/// One case: a tenant of its own on a store, and the interpreter's world for it.
pub struct Case<'a> {
    pub store: &'a Store,
    pub spec: &'a ir::Spec,
    pub pools: &'a Pools,
    pub tenant: String,
    pub world: World,
    /// Instances in creation order, by machine.
    pub(crate) created: BTreeMap<String, Vec<String>>,
    pub(crate) keyed: Vec<Sent>,
    /// The history so far, one line per step, for the failure report.
    pub history: Vec<String>,
}

impl<'a> Case<'a> {
    pub fn new(store: &'a Store, spec: &'a ir::Spec, pools: &'a Pools) -> Case<'a> {
        Case {
            store,
            spec,
            pools,
            tenant: format!("conform-{}", uuid::Uuid::now_v7().simple()),
            world: World::default(),
            created: BTreeMap::new(),
            keyed: Vec::new(),
            history: Vec::new(),
        }
    }

    /// Resolves a step against the world: `None` when it means nothing here (a retry
    /// before any keyed command, an operation of a resource without operations).
    pub fn resolve(&self, step: &Step, n: usize) -> Option<Sent> {
        let spec = self.spec;
        let (action, keyed) = match step {
            Step::Create { machine, values, keyed } => {
                let m = &spec.machines[machine % spec.machines.len()];
                let input = self.pools.input(&m.name, m.fields.iter().chain(&m.create.params), values, false);
                (model::Action::Create { machine: m.name.clone(), input }, *keyed)
            }
            Step::Fire { machine, slot, event, values, if_match, keyed } => {
                let m = &spec.machines[machine % spec.machines.len()];
                let all = self.created.get(&m.name).map(Vec::as_slice).unwrap_or_default();
                // An event meant to be allowed goes to an instance that has one, if any does.
                let live: Vec<String> = all
                    .iter()
                    .filter(|id| {
                        let state = self
                            .world
                            .instances
                            .get(&(m.name.clone(), (*id).clone()))
                            .and_then(|r| r.state.clone());
                        state.is_some_and(|s| m.events_from(&s).next().is_some())
                    })
                    .cloned()
                    .collect();
                let ids =
                    if matches!(event, EventPick::Allowed(_)) && !live.is_empty() { &live[..] } else { all };
                let (id, current) = match ids.get(slot % ids.len().max(1)) {
                    Some(id) => (id.clone(), self.world.instances.get(&(m.name.clone(), id.clone()))),
                    None => (uuid::Uuid::now_v7().to_string(), None),
                };
                let state = current.and_then(|r| r.state.clone()).unwrap_or_default();
                let allowed: Vec<&ir::Event> = m.events_from(&state).collect();
                let e = match event {
                    EventPick::Allowed(n) if !allowed.is_empty() => allowed[n % allowed.len()],
                    EventPick::Allowed(n) | EventPick::Any(n) => &m.events[n % m.events.len()],
                };
                let params =
                    self.pools.input(&format!("{}.{}", m.name, e.name), e.params.iter(), values, false);
                let version = current.map_or(1, |r| r.version);
                let if_match = match if_match {
                    IfMatch::None => None,
                    IfMatch::Current => Some(version),
                    IfMatch::Stale => Some(if version > 1 { version - 1 } else { version + 1 }),
                };
                (
                    model::Action::Fire {
                        machine: m.name.clone(),
                        id,
                        event: e.name.clone(),
                        params,
                        if_match,
                    },
                    *keyed,
                )
            }
            Step::Operate { resource, key, op, values, keyed } => {
                let r = &spec.resources[resource % spec.resources.len()];
                let o = r.operations.get(op % r.operations.len().max(1))?;
                let params =
                    self.pools.input(&format!("{}.{}", r.name, o.name), o.params.iter(), values, true);
                let action = model::Action::Operate {
                    resource: r.name.clone(),
                    key: key_value(&r.key, *key),
                    operation: o.name.clone(),
                    params,
                };
                (action, *keyed)
            }
            Step::Retry { back } => return self.keyed.get(back % self.keyed.len().max(1)).cloned(),
            Step::Reuse { back } => {
                let mut again = self.keyed.get(back % self.keyed.len().max(1))?.clone();
                let other = REUSED.to_string();
                again.model.key.as_mut()?.1 = other.clone();
                again.store.idempotency.as_mut()?.fingerprint = other;
                return Some(again);
            }
            Step::Tick { .. } | Step::Fund | Step::Walk { .. } | Step::Probe { .. } => return None,
        };
        let key = keyed.then(|| (format!("key-{n}"), format!("{action:?}")));
        Some(Sent {
            store: store_command(&self.tenant, &action, key.as_ref())?,
            model: model::Command { key, action },
        })
    }

    /// Runs one step on both sides and compares: the outcome, then the tenant's rows.
    pub async fn step(&mut self, step: &Step, coverage: &mut Coverage) -> Result<(), String> {
        let n = self.history.len();
        match step {
            Step::Tick { limit } => return self.tick(*limit, coverage).await,
            Step::Fund => {
                for sent in self.funding() {
                    self.send(sent, coverage).await?;
                }
                return Ok(());
            }
            Step::Walk { machine, transition, values } => {
                return self.walk(*machine, *transition, values, coverage).await;
            }
            Step::Probe { machine, state, event, values } => {
                return self.probe(*machine, *state, *event, values, coverage).await;
            }
            _ => {}
        }
        let Some(sent) = self.resolve(step, n) else { return Ok(()) };
        self.send(sent, coverage).await.map(|_| ())
    }

    /// [`Step::Walk`]: a create, then the path's events on the new instance, each sent and
    /// compared like any step; the walk ends early where the spec refuses one.
    async fn walk(
        &mut self,
        machine: usize,
        transition: usize,
        values: &[u16],
        coverage: &mut Coverage,
    ) -> Result<(), String> {
        let spec = self.spec;
        let m = &spec.machines[machine % spec.machines.len()];
        let all = transitions(m);
        let Some(&(last, from)) = all.get(transition % all.len().max(1)) else { return Ok(()) };
        self.walk_then(m, from, last, values, coverage).await
    }

    /// [`Step::Probe`]: an instance walked into a state, then sent one event (allowed there
    /// or not).
    async fn probe(
        &mut self,
        machine: usize,
        state: usize,
        event: usize,
        values: &[u16],
        coverage: &mut Coverage,
    ) -> Result<(), String> {
        let spec = self.spec;
        let m = &spec.machines[machine % spec.machines.len()];
        let (Some(s), Some(e)) =
            (m.states.get(state % m.states.len().max(1)), m.events.get(event % m.events.len().max(1)))
        else {
            return Ok(());
        };
        self.walk_then(m, &s.name, e, values, coverage).await
    }

    /// A create, the shortest path of events to `state`, then `last`: each sent and compared
    /// like any step, the walk ending early where the spec refuses one.
    async fn walk_then(
        &mut self,
        m: &'a ir::Machine,
        state: &str,
        last: &'a ir::Event,
        values: &[u16],
        coverage: &mut Coverage,
    ) -> Result<(), String> {
        let Some(mut path) = path_to(m, state) else { return Ok(()) };
        path.push(last);
        let n = self.history.len();
        let create = |values: &[u16]| {
            let input = self.pools.input(&m.name, m.fields.iter().chain(&m.create.params), values, false);
            model::Action::Create { machine: m.name.clone(), input }
        };
        let Some(sent) = self.unkeyed(self.likely(values, create)) else { return Ok(()) };
        let Some(id) = self.send(sent, coverage).await? else { return Ok(()) };
        for (i, e) in path.into_iter().enumerate() {
            let values: Vec<u16> =
                values.iter().map(|v| v.wrapping_add(u16::try_from(i + n).unwrap_or(0))).collect();
            let fire = |values: &[u16]| {
                let params =
                    self.pools.input(&format!("{}.{}", m.name, e.name), e.params.iter(), values, false);
                model::Action::Fire {
                    machine: m.name.clone(),
                    id: id.clone(),
                    event: e.name.clone(),
                    params,
                    if_match: None,
                }
            };
            let Some(sent) = self.unkeyed(self.likely(&values, fire)) else { break };
            if self.send(sent, coverage).await?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Of a few value picks, the first whose command the interpreter would apply (else the
    /// first): a walk then gets past guards that only some generated values meet.
    fn likely(&self, values: &[u16], make: impl Fn(&[u16]) -> model::Action) -> model::Action {
        // The first tries step every pick along its pool (a pick's index is its value / 10),
        // the rest scatter them.
        let shift = |k: u16| if k < LIKELY_TRIES / 2 { k * 10 } else { k.wrapping_mul(7919) };
        let applies = |a: &model::Action| {
            let mut w = self.world.clone();
            let cmd = model::Command { key: None, action: a.clone() };
            matches!(w.step(self.spec, &cmd, Utc::now(), "probe").outcome, model::Outcome::Applied(_))
        };
        (0..LIKELY_TRIES)
            .map(|k| make(&values.iter().map(|v| v.wrapping_add(shift(k))).collect::<Vec<_>>()))
            .find(applies)
            .unwrap_or_else(|| make(values))
    }

    /// A command without a key, in both forms (`None` for a timer firing).
    fn unkeyed(&self, action: model::Action) -> Option<Sent> {
        let store = store_command(&self.tenant, &action, None)?;
        Some(Sent { store, model: model::Command { key: None, action } })
    }

    /// The commands of [`Step::Fund`].
    pub(crate) fn funding(&self) -> Vec<Sent> {
        let mut out = Vec::new();
        for r in &self.spec.resources {
            let adding = r.operations.iter().filter(|o| {
                o.body.guards.is_empty()
                    && !o.body.deltas.is_empty()
                    && o.body.deltas.iter().all(|d| d.op == ir::DeltaOp::Add)
            });
            for o in adding {
                for key in keys(&r.key) {
                    let params =
                        self.pools.input(&format!("{}.{}", r.name, o.name), o.params.iter(), &[1], true);
                    let action = model::Action::Operate {
                        resource: r.name.clone(),
                        key,
                        operation: o.name.clone(),
                        params,
                    };
                    out.extend(self.unkeyed(action));
                }
            }
        }
        out
    }

    /// Sends one command to both sides and compares; the applied row's id, if it applied.
    async fn send(&mut self, sent: Sent, coverage: &mut Coverage) -> Result<Option<String>, String> {
        let n = self.history.len();
        let now = Utc::now();
        let got = send(self.store, &sent.store).await;
        let line = describe(&sent.model);
        let got = match got {
            Ok(e) => e,
            Err(e) => {
                self.history.push(format!("{n:>3}. {line}\n       store: error: {e}"));
                return Err(format!("the store failed at step {n}: {e}"));
            }
        };
        let observed = compare::observed(self.spec, &got);
        let new_id = match &observed.outcome {
            model::Outcome::Applied(row) => row.id.clone(),
            model::Outcome::Rejected(_) => String::new(),
        };
        let before = self.world.journal.len();
        if let model::Action::Fire { machine, id, event, .. } = &sent.model.action
            && let Some(state) =
                self.world.instances.get(&(machine.clone(), id.clone())).and_then(|r| r.state.clone())
        {
            coverage.tried.insert((machine.clone(), event.clone(), state));
        }
        let expected = self.world.step(self.spec, &sent.model, now, &new_id);
        self.history.push(format!("{n:>3}. {line}\n       -> {}", compare::short(&observed)));
        coverage.outcome(&expected);
        coverage.entries(&self.world.journal[before..]);
        if let (model::Action::Create { machine, .. }, model::Outcome::Applied(_), false) =
            (&sent.model.action, &expected.outcome, expected.replayed)
        {
            self.created.entry(machine.clone()).or_default().push(new_id);
        }
        if sent.model.key.is_some() && !self.keyed.iter().any(|k| k.model.key == sent.model.key) {
            self.keyed.push(sent);
        }
        if !compare::same(&expected, &observed) {
            return Err(format!(
                "step {n}: the spec says {}\n       the store answered {}",
                compare::short(&expected),
                compare::short(&observed)
            ));
        }
        self.agree(&format!("after step {n}")).await?;
        self.invariants(&format!("after step {n}"))?;
        Ok(match (&expected.outcome, expected.replayed) {
            (model::Outcome::Applied(row), false) => Some(row.id.clone()),
            _ => None,
        })
    }

    async fn tick(&mut self, limit: u8, coverage: &mut Coverage) -> Result<(), String> {
        let n = self.history.len();
        let now = sweep_time(self.spec);
        let fired = self.store.fire_due_timers(now, u64::from(limit)).await;
        let before = self.world.journal.len();
        let expected = self.world.fire_due(self.spec, now, usize::from(limit));
        coverage.entries(&self.world.journal[before..]);
        let mut line = format!("{n:>3}. sweep timers (at most {limit})");
        for (t, done) in &expected {
            let _ = write!(
                line,
                "\n       fires {} {} {}: {}",
                t.machine,
                t.entity,
                t.event,
                compare::short(done)
            );
            coverage.outcome(done);
        }
        self.history.push(line);
        match fired {
            Ok(count) if count == expected.len() => {
                self.agree(&format!("after step {n}")).await?;
                self.invariants(&format!("after step {n}"))
            }
            Ok(count) => {
                Err(format!("step {n}: the spec fires {} timer(s), the store fired {count}", expected.len()))
            }
            Err(e) => Err(format!("the store failed at step {n}: {e}")),
        }
    }

    /// Every row, count and timer of the tenant as the interpreter has them.
    pub async fn agree(&mut self, when: &str) -> Result<(), String> {
        compare::world(self.store, self.spec, &self.tenant, &mut self.world)
            .await
            .map_err(|e| format!("{when}: {e}"))
    }

    /// The spec's own invariants hold in the interpreter's world (whose rows the store's
    /// were just found equal to): a spec whose commands can break them is reported.
    pub fn invariants(&self, when: &str) -> Result<(), String> {
        match self.world.broken(self.spec).first() {
            None => Ok(()),
            Some((inv, lhs, rhs)) => Err(format!(
                "{when}: the spec's invariant `{}` does not hold: {}\n       left side {lhs}, right side {rhs}",
                inv.name, inv.text
            )),
        }
    }

    /// Removes what the case left that a later one could meet (its due timers).
    pub async fn finish(&self) {
        let _ = compare::forget_timers(self.store, &self.tenant).await;
    }

    /// The history, one step a line.
    pub fn report(&self) -> String {
        self.history.join("\n")
    }
}

/// When a sweep runs so that every timer armed until now is due: a day past the longest.
pub fn sweep_time(spec: &ir::Spec) -> chrono::DateTime<Utc> {
    let furthest = spec.machines.iter().flat_map(|m| &m.timers).map(|t| t.after_ms).max().unwrap_or(0);
    Utc::now()
        + chrono::Duration::milliseconds(i64::try_from(furthest).unwrap_or(i64::MAX / 2))
        + chrono::Duration::days(1)
}

/// A command as the server sends it: the recorded outcome first, else through group commit.
pub async fn send(store: &Store, cmd: &ordo_store::Command) -> Result<ordo_store::Executed, StoreError> {
    if cmd.idempotency.is_some() {
        if let Some(done) = store.recorded(cmd).await? {
            return Ok(done);
        }
        return store.execute_unrecorded(cmd).await;
    }
    store.execute(cmd).await
}

/// The store's form of a command (`None` for a timer firing, which only a sweep does).
pub fn store_command(
    tenant: &str,
    action: &model::Action,
    key: Option<&(String, String)>,
) -> Option<ordo_store::Command> {
    let action = match action.clone() {
        model::Action::Timer { .. } => return None,
        model::Action::Create { machine, input } => ordo_store::Action::Create { machine, input },
        model::Action::Fire { machine, id, event, params, if_match } => {
            ordo_store::Action::Fire { machine, id: id.parse().unwrap_or_default(), event, params, if_match }
        }
        model::Action::Operate { resource, key, operation, params } => {
            ordo_store::Action::Operate { resource, key, operation, params }
        }
    };
    Some(ordo_store::Command {
        tenant: tenant.to_string(),
        idempotency: key.map(|(k, f)| IdempotencyKey { key: k.clone(), fingerprint: f.clone() }),
        action,
        trace: None,
    })
}

/// A command on one line: `Order.pay #3 {..} key-4`.
pub fn describe(c: &model::Command) -> String {
    let short_id = |id: &str| id.get(id.len().saturating_sub(6)..).unwrap_or(id).to_string();
    let mut s = match &c.action {
        model::Action::Create { machine, input } => {
            format!("create {machine} {}", Json::Object(input.clone()))
        }
        model::Action::Fire { machine, id, event, params, if_match } => {
            let mut s = format!("{machine} …{} {event} {}", short_id(id), Json::Object(params.clone()));
            if let Some(v) = if_match {
                let _ = write!(s, " if-match {v}");
            }
            s
        }
        model::Action::Operate { resource, key, operation, params } => {
            format!("{resource}[{key}] {operation} {}", Json::Object(params.clone()))
        }
        model::Action::Timer { machine, id, state, event } => {
            format!("timer {machine} …{} in {state}: {event}", short_id(id))
        }
    };
    if let Some((k, f)) = &c.key {
        let reused = if f == REUSED { " (another request)" } else { "" };
        let _ = write!(s, " key {k}{reused}");
    }
    s
}
