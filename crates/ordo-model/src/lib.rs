//! The reference interpreter of a checked spec: what every command means, with no database.
//!
//! A [`World`] is everything one tenant has (instances, resource rows, armed timers,
//! idempotency records, the journal); [`World::step`] runs one command against it and returns
//! the outcome the spec defines: applied, with the row as it now stands, or the typed
//! rejection, with nothing changed but the record that remembers it. The conformance suite
//! (`ordo-conform`) runs the same commands through the real executor and compares.
//!
//! This is deliberately a second implementation: plain maps and one clone of the world per
//! command, no SQL, nothing shared with the store but the IR. Where the spec leaves a choice
//! open (which of several failing guards is named), the order is the spec's own: inputs in
//! declaration order, then the instance, its version, its state, guards, set checks, and
//! effects in lock order (resource table, then key).

pub mod linear;
mod value;

pub use value::{Env, Overflow, Val, eval, meets_checks, read, zero};

use chrono::{DateTime, Duration, Utc};
use ordo_spec::ir;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// A state-changing command of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The idempotency key and the request's fingerprint.
    pub key: Option<(String, String)>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        machine: String,
        input: Map<String, Json>,
    },
    Fire {
        machine: String,
        id: String,
        event: String,
        params: Map<String, Json>,
        if_match: Option<i64>,
    },
    Operate {
        resource: String,
        key: Json,
        operation: String,
        params: Map<String, Json>,
    },
    /// A timer sweep firing the timer armed when `id` entered `state`, if it is still armed
    /// and due: its event, with no parameters. Not armed (the instance left the state, or
    /// it fired already): nothing happens, and the outcome is `NotFound`.
    Timer {
        machine: String,
        id: String,
        state: String,
        event: String,
    },
}

/// Why the spec refuses a command. Reasons' wording is the store's business; what is
/// compared is which rule refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rejection {
    NotFound,
    InvalidInput { field: String },
    WrongState { state: String, allowed: Vec<String> },
    GuardFailed { guard: String, condition: String },
    StaleVersion { current: i64 },
    CheckFailed { field: String },
    ResourceCheck { resource: String, key: String, field: String },
    KeyReused,
}

impl Rejection {
    /// The rule that refused, by name.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::NotFound => "NotFound",
            Rejection::InvalidInput { .. } => "InvalidInput",
            Rejection::WrongState { .. } => "WrongState",
            Rejection::GuardFailed { .. } => "GuardFailed",
            Rejection::StaleVersion { .. } => "StaleVersion",
            Rejection::CheckFailed { .. } => "CheckFailed",
            Rejection::ResourceCheck { .. } => "ResourceCheck",
            Rejection::KeyReused => "KeyReused",
        }
    }
}

/// An instance or a resource row as a command left it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// The machine's or resource's name.
    pub name: String,
    /// The instance's id, or the resource row's key as text.
    pub id: String,
    /// An instance's state; `None` for a resource row.
    pub state: Option<String>,
    pub version: i64,
    /// A resource row's fields include its key.
    pub fields: BTreeMap<String, Val>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied(Row),
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    pub outcome: Outcome,
    pub replayed: bool,
}

/// `after X in state: event`, armed when an instance entered `state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timer {
    pub machine: String,
    pub entity: String,
    pub state: String,
    pub event: String,
    pub due: DateTime<Utc>,
}

/// One applied command, as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The machine's or resource's name.
    pub name: String,
    pub entity: String,
    pub version: i64,
    pub event: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub params: Json,
}

/// Everything one tenant has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    /// By (machine, id).
    pub instances: BTreeMap<(String, String), Row>,
    /// By (resource, key text).
    pub rows: BTreeMap<(String, String), Row>,
    pub timers: Vec<Timer>,
    /// By key: the fingerprint and the outcome.
    pub records: BTreeMap<String, (String, Outcome)>,
    pub journal: Vec<Entry>,
}

type Step<T> = Result<T, Rejection>;

impl World {
    /// A digest of what decides later outcomes (instances, rows, records, and timers in any
    /// order; not the journal, which nothing reads back): equal for worlds that answer
    /// every later command alike.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut timers: Vec<&Timer> = self.timers.iter().collect();
        timers.sort_by(|a, b| {
            (&a.machine, &a.entity, &a.state, &a.event, a.due)
                .cmp(&(&b.machine, &b.entity, &b.state, &b.event, b.due))
        });
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.instances, &self.rows, &self.records, timers).hash(&mut h);
        h.finish()
    }

    /// Runs one command at `now`. A create that applies gets the id `new_id` (the caller
    /// names it, since ids are the store's to choose).
    pub fn step(&mut self, spec: &ir::Spec, cmd: &Command, now: DateTime<Utc>, new_id: &str) -> Executed {
        if let Action::Timer { machine, id, state, event } = &cmd.action {
            let armed = |t: &Timer| {
                t.machine == *machine
                    && t.entity == *id
                    && t.state == *state
                    && t.event == *event
                    && t.due <= now
            };
            let Some(at) = self.timers.iter().position(armed) else {
                return Executed { outcome: Outcome::Rejected(Rejection::NotFound), replayed: false };
            };
            self.timers.remove(at);
            let fire = Action::Fire {
                machine: machine.clone(),
                id: id.clone(),
                event: event.clone(),
                params: Map::new(),
                if_match: None,
            };
            return self.step(spec, &Command { key: None, action: fire }, now, new_id);
        }
        if let Some((key, fingerprint)) = &cmd.key
            && let Some((recorded, outcome)) = self.records.get(key)
        {
            return if recorded == fingerprint {
                Executed { outcome: outcome.clone(), replayed: true }
            } else {
                Executed { outcome: Outcome::Rejected(Rejection::KeyReused), replayed: false }
            };
        }
        let mut next = self.clone();
        let outcome = match next.apply(spec, &cmd.action, now, new_id) {
            Ok(row) => {
                *self = next;
                Outcome::Applied(row)
            }
            Err(r) => Outcome::Rejected(r),
        };
        if let Some((key, fingerprint)) = &cmd.key {
            self.records.insert(key.clone(), (fingerprint.clone(), outcome.clone()));
        }
        Executed { outcome, replayed: false }
    }

    /// The spec's invariants that do not hold in this world: (invariant, lhs, rhs).
    pub fn broken<'s>(&self, spec: &'s ir::Spec) -> Vec<(&'s ir::Invariant, i128, i128)> {
        spec.invariants
            .iter()
            .filter_map(|inv| {
                let (lhs, rhs) = self.sides(inv);
                (!inv.holds(lhs, rhs)).then_some((inv, lhs, rhs))
            })
            .collect()
    }

    /// An invariant's two sides in this world.
    pub fn sides(&self, inv: &ir::Invariant) -> (i128, i128) {
        let value =
            |t: &ir::Term| if t.negative { -self.aggregate(&t.value) } else { self.aggregate(&t.value) };
        (inv.lhs.iter().map(value).sum(), inv.rhs.iter().map(value).sum())
    }

    /// One aggregate of an invariant over this world (nulls count as zero).
    pub fn aggregate(&self, a: &ir::Aggregate) -> i128 {
        let int = |v: Option<&Val>| match v {
            Some(Val::Int(i)) => i128::from(*i),
            _ => 0,
        };
        let within = |states: &[String], row: &Row| {
            states.is_empty() || row.state.as_ref().is_some_and(|s| states.contains(s))
        };
        match a {
            ir::Aggregate::Const(i) => i128::from(*i),
            ir::Aggregate::Sum { owner, field, states } => self
                .instances
                .iter()
                .chain(&self.rows)
                .filter(|((name, _), row)| name == owner && within(states, row))
                .map(|(_, row)| int(row.fields.get(field)))
                .sum(),
            ir::Aggregate::Count { machine, states } => self
                .instances
                .iter()
                .filter(|((name, _), row)| name == machine && within(states, row))
                .count() as i128,
            ir::Aggregate::Total { owner, action, param } => self
                .journal
                .iter()
                .filter(|e| e.name == *owner && e.event == *action)
                .map(|e| e.params.get(param).and_then(Json::as_i64).map_or(0, i128::from))
                .sum(),
        }
    }

    /// Fires the timers due at `now`: the `limit` earliest, in due order; one whose instance
    /// left its state meanwhile is gone and fires nothing. Returns the outcomes of those fired.
    pub fn fire_due(&mut self, spec: &ir::Spec, now: DateTime<Utc>, limit: usize) -> Vec<(Timer, Executed)> {
        let mut due: Vec<Timer> = self.timers.iter().filter(|t| t.due <= now).cloned().collect();
        due.sort_by_key(|t| t.due);
        due.truncate(limit.max(1));
        let mut fired = Vec::new();
        // One gone by its turn (its instance left the state meanwhile) fires nothing.
        for t in due {
            if !self.timers.contains(&t) {
                continue;
            }
            let timer = Action::Timer {
                machine: t.machine.clone(),
                id: t.entity.clone(),
                state: t.state.clone(),
                event: t.event.clone(),
            };
            let done = self.step(spec, &Command { key: None, action: timer }, now, "");
            fired.push((t, done));
        }
        fired
    }

    fn apply(&mut self, spec: &ir::Spec, action: &Action, now: DateTime<Utc>, new_id: &str) -> Step<Row> {
        match action {
            // Handled by `step`: a timer is spent whatever its event's outcome.
            Action::Timer { .. } => Err(Rejection::NotFound),
            Action::Create { machine, input } => {
                let m = spec.machine(machine).ok_or(Rejection::NotFound)?;
                self.create(spec, m, input, now, new_id)
            }
            Action::Fire { machine, id, event, params, if_match } => {
                let m = spec.machine(machine).ok_or(Rejection::NotFound)?;
                let e = m.event(event).ok_or(Rejection::NotFound)?;
                self.fire(spec, m, e, id, params, *if_match, now)
            }
            Action::Operate { resource, key, operation, params } => {
                let r = spec.resource(resource).ok_or(Rejection::NotFound)?;
                let op = r.operations.iter().find(|o| o.name == *operation).ok_or(Rejection::NotFound)?;
                self.operate(r, op, key, params, now)
            }
        }
    }

    fn create(
        &mut self,
        spec: &ir::Spec,
        m: &ir::Machine,
        input: &Map<String, Json>,
        now: DateTime<Utc>,
        id: &str,
    ) -> Step<Row> {
        let known: Vec<&ir::Field> = m.fields.iter().chain(&m.create.params).collect();
        unknown(input, &known)?;
        let mut fields = read_all(&m.fields, input)?;
        let params = read_all(&m.create.params, input)?;
        let body = &m.create.body;
        guards(&body.guards, &Env { fields: &fields, params: &params, now })?;
        let assigned = sets(m, &body.sets, &Env { fields: &fields, params: &params, now })?;
        fields.extend(assigned);
        let row = Row {
            name: m.name.clone(),
            id: id.to_string(),
            state: Some(m.initial.clone()),
            version: 1,
            fields,
        };
        self.effects(spec, &body.effects, &Env { fields: &row.fields, params: &params, now })?;
        self.instances.insert((m.name.clone(), id.to_string()), row.clone());
        self.journal.push(Entry {
            name: m.name.clone(),
            entity: id.to_string(),
            version: 1,
            event: m.create.name.clone(),
            from: None,
            to: Some(m.initial.clone()),
            params: Json::Object(input.clone()),
        });
        self.arm(m, id, &m.initial, now);
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    fn fire(
        &mut self,
        spec: &ir::Spec,
        m: &ir::Machine,
        e: &ir::Event,
        id: &str,
        input: &Map<String, Json>,
        if_match: Option<i64>,
        now: DateTime<Utc>,
    ) -> Step<Row> {
        unknown(input, &e.params.iter().collect::<Vec<_>>())?;
        let params = read_all(&e.params, input)?;
        let at = (m.name.clone(), id.to_string());
        let old = self.instances.get(&at).ok_or(Rejection::NotFound)?.clone();
        if let Some(v) = if_match
            && v != old.version
        {
            return Err(Rejection::StaleVersion { current: old.version });
        }
        let state = old.state.clone().unwrap_or_default();
        let Some(t) = e.transition_from(&state) else {
            let allowed = m.events_from(&state).map(|e| e.name.clone()).collect();
            return Err(Rejection::WrongState { state, allowed });
        };
        let env = Env { fields: &old.fields, params: &params, now };
        guards(&t.body.guards, &env)?;
        let assigned = sets(m, &t.body.sets, &env)?;
        let mut row = old;
        row.fields.extend(assigned);
        row.version += 1;
        row.state = Some(t.to.clone());
        self.effects(spec, &t.body.effects, &Env { fields: &row.fields, params: &params, now })?;
        self.instances.insert(at, row.clone());
        self.journal.push(Entry {
            name: m.name.clone(),
            entity: id.to_string(),
            version: row.version,
            event: e.name.clone(),
            from: Some(state.clone()),
            to: Some(t.to.clone()),
            params: Json::Object(params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        });
        self.timers.retain(|x| !(x.machine == m.name && x.entity == id && x.state == state));
        self.arm(m, id, &t.to, now);
        Ok(row)
    }

    fn operate(
        &mut self,
        r: &ir::Resource,
        op: &ir::Operation,
        key: &Json,
        input: &Map<String, Json>,
        now: DateTime<Utc>,
    ) -> Step<Row> {
        let key = read(&r.key, Some(key)).map_err(|field| Rejection::InvalidInput { field })?;
        unknown(input, &op.params.iter().collect::<Vec<_>>())?;
        let params = read_all(&op.params, input)?;
        let key_text = key.key_text();
        let at = (r.name.clone(), key_text.clone());
        let old = match self.rows.get(&at) {
            Some(row) => row.clone(),
            None => new_row(r, &key).ok_or(Rejection::NotFound)?,
        };
        let env = Env { fields: &old.fields, params: &params, now };
        guards(&op.body.guards, &env)?;
        // Sets, then deltas as `field ± amount`: all computed from the row as it was.
        let mut changed = Vec::new();
        for s in &op.body.sets {
            changed.push((s.field.clone(), eval(&s.value, &env).map_err(|_| invalid(&s.field))?));
        }
        for d in &op.body.deltas {
            let old_value = old.fields.get(&d.field).cloned().unwrap_or(Val::Null);
            let amount = eval(&d.amount, &env).map_err(|_| invalid(&d.field))?;
            changed
                .push((d.field.clone(), delta(d.op, &old_value, &amount).ok_or_else(|| invalid(&d.field))?));
        }
        let mut row = old;
        for (field, v) in changed {
            let f = r.field(&field).ok_or_else(|| invalid(&field))?;
            if !meets_checks(f, &v) {
                return Err(Rejection::ResourceCheck { resource: r.name.clone(), key: key_text, field });
            }
            row.fields.insert(field, v);
        }
        row.version += 1;
        let mut params_json = Map::new();
        params_json.insert(r.key.name.clone(), key.to_json());
        for (k, v) in &params {
            params_json.insert(k.clone(), v.to_json());
        }
        self.journal.push(Entry {
            name: r.name.clone(),
            entity: key_text,
            version: row.version,
            event: op.name.clone(),
            from: None,
            to: None,
            params: Json::Object(params_json),
        });
        self.rows.insert(at, row.clone());
        Ok(row)
    }

    /// A body's effects: keys and amounts first, then each row changed in lock order (table,
    /// then key; a row's effects in the body's order). A missing row starts from zeros when
    /// zeros meet its checks; a change that breaks a check refuses the whole command.
    fn effects(&mut self, spec: &ir::Spec, effects: &[ir::Effect], env: &Env<'_>) -> Step<()> {
        let mut planned = Vec::new();
        for e in effects {
            let key = eval(&e.key, env).map_err(|_| invalid(&e.field))?;
            let amount = eval(&e.amount, env).map_err(|_| invalid(&e.field))?;
            let r = spec.resource(&e.resource).ok_or(Rejection::NotFound)?;
            planned.push((r, key, e, amount));
        }
        planned.sort_by(|a, b| (&a.0.table, a.1.key_text()).cmp(&(&b.0.table, b.1.key_text())));
        for (r, key, e, amount) in planned {
            let key_text = key.key_text();
            let refused = || Rejection::ResourceCheck {
                resource: r.name.clone(),
                key: key_text.clone(),
                field: e.field.clone(),
            };
            let at = (r.name.clone(), key_text.clone());
            let mut row = match self.rows.get(&at) {
                Some(row) => row.clone(),
                None => new_row(r, &key).ok_or_else(refused)?,
            };
            let old = row.fields.get(&e.field).cloned().unwrap_or(Val::Null);
            let new = delta(e.op, &old, &amount).ok_or_else(|| invalid(&e.field))?;
            let f = r.field(&e.field).ok_or_else(refused)?;
            if new == Val::Null || !meets_checks(f, &new) {
                return Err(refused());
            }
            row.fields.insert(e.field.clone(), new);
            row.version += 1;
            self.rows.insert(at, row);
        }
        Ok(())
    }

    fn arm(&mut self, m: &ir::Machine, entity: &str, state: &str, now: DateTime<Utc>) {
        for t in m.timers_in(state) {
            self.timers.push(Timer {
                machine: m.name.clone(),
                entity: entity.to_string(),
                state: state.to_string(),
                event: t.event.clone(),
                due: now + Duration::milliseconds(i64::try_from(t.after_ms).unwrap_or(i64::MAX)),
            });
        }
    }
}

/// A resource row that does not exist yet, from zeros (version 0), when zeros meet the
/// checks of every field.
fn new_row(r: &ir::Resource, key: &Val) -> Option<Row> {
    let mut fields = BTreeMap::from([(r.key.name.clone(), key.clone())]);
    for f in &r.fields {
        let z = zero(f);
        if !meets_checks(f, &z) {
            return None;
        }
        fields.insert(f.name.clone(), z);
    }
    Some(Row { name: r.name.clone(), id: key.key_text(), state: None, version: 0, fields })
}

fn delta(op: ir::DeltaOp, old: &Val, amount: &Val) -> Option<Val> {
    match (old, amount) {
        (Val::Int(a), Val::Int(b)) => match op {
            ir::DeltaOp::Add => a.checked_add(*b),
            ir::DeltaOp::Sub => a.checked_sub(*b),
        }
        .map(Val::Int),
        _ => Some(Val::Null),
    }
}

fn invalid(field: &str) -> Rejection {
    Rejection::InvalidInput { field: field.to_string() }
}

fn unknown(input: &Map<String, Json>, known: &[&ir::Field]) -> Step<()> {
    match input.keys().find(|k| !known.iter().any(|f| f.name == **k)) {
        Some(k) => Err(invalid(k)),
        None => Ok(()),
    }
}

fn read_all(fields: &[ir::Field], input: &Map<String, Json>) -> Step<BTreeMap<String, Val>> {
    fields
        .iter()
        .map(|f| read(f, input.get(&f.name)).map(|v| (f.name.clone(), v)))
        .collect::<Result<_, String>>()
        .map_err(|field| Rejection::InvalidInput { field })
}

/// The first guard that does not hold (null does not hold).
fn guards(guards: &[ir::Guard], env: &Env<'_>) -> Step<()> {
    for g in guards {
        let v = eval(&g.expr, env).map_err(|_| invalid(&g.name))?;
        if v != Val::Bool(true) {
            return Err(Rejection::GuardFailed { guard: g.name.clone(), condition: g.text.clone() });
        }
    }
    Ok(())
}

/// A body's `set`s, all computed from the row as it was, each meeting its field's checks.
fn sets(m: &ir::Machine, sets: &[ir::Assign], env: &Env<'_>) -> Step<Vec<(String, Val)>> {
    let mut out = Vec::new();
    for s in sets {
        out.push((s.field.clone(), eval(&s.value, env).map_err(|_| invalid(&s.field))?));
    }
    for (field, v) in &out {
        if let Some(f) = m.field(field)
            && !meets_checks(f, v)
        {
            return Err(Rejection::CheckFailed { field: field.clone() });
        }
    }
    Ok(out)
}
