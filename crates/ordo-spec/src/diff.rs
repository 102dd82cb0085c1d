//! What changed between a deployed spec and an edited one, and how safe each change is for
//! live data. Pure IR to IR: the store turns the changes into SQL and counts the rows they
//! touch (`ordo_store::evolve`); `cargo xtask spec diff OLD NEW` prints them for review.
//!
//! Things are matched by name, or by the `was` clause of the edited spec; a `removed`
//! clause says where instances of a state that is gone go.

use crate::ir::{self, CmpOp, Field, Spec, Type};
use std::collections::BTreeMap;

mod text;
pub use text::expr_text;

/// How a change meets live data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Needs no look at the rows and takes no long lock.
    Safe,
    /// Safe or refused depending on the rows: counted when the plan is made.
    DataDependent,
    /// Throws data away; refused unless asked for explicitly.
    Destructive,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Safe => "safe online",
            Class::DataDependent => "data-dependent",
            Class::Destructive => "destructive",
        }
    }
}

/// Whose table a field belongs to: a machine's or a resource's (by its new name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Machine(String),
    Resource(String),
}

impl Owner {
    pub fn name(&self) -> &str {
        match self {
            Owner::Machine(n) | Owner::Resource(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    AddMachine {
        machine: String,
    },
    DropMachine {
        machine: String,
    },
    AddResource {
        resource: String,
    },
    DropResource {
        resource: String,
    },
    RenameResource {
        from: String,
        to: String,
    },
    /// A new column: optional, backfilled, or required on a table that must be empty.
    AddField {
        owner: Owner,
        field: Field,
    },
    DropField {
        owner: Owner,
        field: String,
    },
    RenameField {
        owner: Owner,
        from: String,
        to: String,
    },
    /// Optional to required: rows holding null take the field's `backfill`.
    RequireField {
        owner: Owner,
        field: Field,
    },
    /// Required to optional.
    RelaxField {
        owner: Owner,
        field: String,
    },
    Checks {
        owner: Owner,
        field: Field,
        before: Vec<ir::Check>,
        widened: bool,
    },
    AddState {
        machine: String,
        state: String,
    },
    RenameState {
        machine: String,
        from: String,
        to: String,
    },
    /// A state that is gone; its instances move to `into` (none: refused if it has any).
    RemoveState {
        machine: String,
        state: String,
        into: Option<String>,
    },
    StateKind {
        machine: String,
        state: String,
        from: ir::StateKind,
        to: ir::StateKind,
    },
    Initial {
        machine: String,
        from: String,
        to: String,
    },
    Create {
        machine: String,
    },
    AddEvent {
        machine: String,
        event: String,
    },
    RemoveEvent {
        machine: String,
        event: String,
    },
    RenameEvent {
        machine: String,
        from: String,
        to: String,
    },
    /// Parameters, transitions, guards or effects of an event changed.
    Event {
        machine: String,
        event: String,
    },
    AddOperation {
        resource: String,
        operation: String,
    },
    RemoveOperation {
        resource: String,
        operation: String,
    },
    Operation {
        resource: String,
        operation: String,
    },
    /// A timer to arm for instances already in its state, due from when they entered it.
    AddTimer {
        machine: String,
        timer: ir::Timer,
    },
    RemoveTimer {
        machine: String,
        timer: ir::Timer,
    },
    /// A timer whose duration changed: pending ones are re-scheduled from when they were armed.
    Timer {
        machine: String,
        timer: ir::Timer,
        before_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub class: Class,
    /// A server built from the deployed spec keeps working on tables migrated by this change
    /// (what a rolling deploy needs; the server's `--migrate` applies only these).
    pub expand_only: bool,
}

/// A change the planner cannot make, whatever the data: each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
}

/// Every problem code the planner (here and in the store) can give, for the docs' test.
pub const PROBLEM_CODES: &[&str] =
    &[UNKNOWN_RENAME, TYPE_CHANGE, STRANDED_INSTANCES, NEEDS_BACKFILL, BREAKS_CHECK, DESTRUCTIVE];
pub const UNKNOWN_RENAME: &str = "ordo::migrate-unknown-rename";
pub const TYPE_CHANGE: &str = "ordo::migrate-type-change";
/// The planner's refusals that depend on the live rows (given by the store).
pub const STRANDED_INSTANCES: &str = "ordo::migrate-stranded-instances";
pub const NEEDS_BACKFILL: &str = "ordo::migrate-needs-backfill";
pub const BREAKS_CHECK: &str = "ordo::migrate-breaks-check";
pub const DESTRUCTIVE: &str = "ordo::migrate-destructive";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub problems: Vec<Problem>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.problems.is_empty()
    }

    /// What stops the plan without looking at data: problems, destructive changes, and
    /// removed states without a mapping (they may have instances).
    pub fn blocking(&self) -> impl Iterator<Item = String> + '_ {
        let changes = self.changes.iter().filter_map(|c| match &c.kind {
            _ if c.class == Class::Destructive => Some(format!("destructive: {}", c.what())),
            ChangeKind::RemoveState { into: None, .. } => Some(format!("unmapped: {}", c.what())),
            _ => None,
        });
        self.problems.iter().map(|p| format!("error[{}]: {}", p.code, p.message)).chain(changes)
    }
}

/// The changes from `old` (deployed) to `new` (edited), in a stable order.
pub fn diff(old: &Spec, new: &Spec) -> Diff {
    let mut d = Differ::default();
    d.resources(old, new);
    d.machines(old, new);
    Diff { changes: d.changes, problems: d.problems }
}

#[derive(Default)]
struct Differ {
    changes: Vec<Change>,
    problems: Vec<Problem>,
}

/// Pairs of (old, new) matched by name or `was`; the unmatched on either side.
struct Matched<'a, T> {
    pairs: Vec<(&'a T, &'a T)>,
    added: Vec<&'a T>,
    removed: Vec<&'a T>,
}

impl Differ {
    fn push(&mut self, kind: ChangeKind, class: Class, expand_only: bool) {
        self.changes.push(Change { kind, class, expand_only });
    }

    /// Matches `new` items to `old` ones by name, else by `was`; a `was` naming nothing
    /// deployed (while the new name is not deployed either) is a problem.
    fn matching<'a, T>(
        &mut self,
        what: &str,
        old: &'a [T],
        new: &'a [T],
        name: impl Fn(&T) -> &str,
        was: impl Fn(&T) -> Option<&str>,
    ) -> Matched<'a, T> {
        let mut pairs = Vec::new();
        let mut added = Vec::new();
        let mut used = vec![false; old.len()];
        for n in new {
            let by_name = old.iter().position(|o| name(o) == name(n));
            let by_was = || was(n).and_then(|w| old.iter().position(|o| name(o) == w));
            match by_name.or_else(by_was) {
                Some(i) if !used[i] => {
                    used[i] = true;
                    pairs.push((&old[i], n));
                }
                _ => {
                    if let Some(w) = was(n) {
                        self.problems.push(Problem {
                            code: UNKNOWN_RENAME,
                            message: format!(
                                "{what} `{}` is renamed from `{w}`, but the deployed spec has no {what} `{w}`",
                                name(n)
                            ),
                        });
                    }
                    added.push(n);
                }
            }
        }
        let removed = old.iter().zip(&used).filter(|(_, u)| !**u).map(|(o, _)| o).collect();
        Matched { pairs, added, removed }
    }

    fn resources(&mut self, old: &Spec, new: &Spec) {
        let m = self.matching("resource", &old.resources, &new.resources, |r| &r.name, |r| r.was.as_deref());
        for r in m.removed {
            self.push(ChangeKind::DropResource { resource: r.name.clone() }, Class::Destructive, false);
        }
        for r in m.added {
            self.push(ChangeKind::AddResource { resource: r.name.clone() }, Class::Safe, true);
        }
        for (o, n) in m.pairs {
            if o.name != n.name {
                let kind = ChangeKind::RenameResource { from: o.name.clone(), to: n.name.clone() };
                self.push(kind, Class::Safe, false);
            }
            if o.key.name != n.key.name || o.key.ty != n.key.ty {
                self.problems.push(Problem {
                    code: TYPE_CHANGE,
                    message: format!(
                        "the key of `{}` changes; add a new resource instead and move its rows",
                        n.name
                    ),
                });
            }
            self.fields(&Owner::Resource(n.name.clone()), &o.fields, &n.fields);
            let ops = self.matching("operation", &o.operations, &n.operations, |p| &p.name, |_| None);
            for p in ops.removed {
                let kind =
                    ChangeKind::RemoveOperation { resource: n.name.clone(), operation: p.name.clone() };
                self.push(kind, Class::Safe, true);
            }
            for p in ops.added {
                let kind = ChangeKind::AddOperation { resource: n.name.clone(), operation: p.name.clone() };
                self.push(kind, Class::Safe, true);
            }
            for (a, b) in ops.pairs {
                if a != b {
                    let kind = ChangeKind::Operation { resource: n.name.clone(), operation: b.name.clone() };
                    self.push(kind, Class::Safe, true);
                }
            }
        }
    }

    fn fields(&mut self, owner: &Owner, old: &[Field], new: &[Field]) {
        let what = format!("field of `{}`", owner.name());
        let m = self.matching(&what, old, new, |f| &f.name, |f| f.was.as_deref());
        for f in m.removed {
            self.push(
                ChangeKind::DropField { owner: owner.clone(), field: f.name.clone() },
                Class::Destructive,
                false,
            );
        }
        for f in m.added {
            let (class, expand_only) = match (&f.optional, &f.backfill) {
                (true, _) => (Class::Safe, true),
                // A constant becomes the column's default too, so an old server's insert
                // (which leaves the column out) still satisfies NOT NULL.
                (false, Some(ir::Expr::Value(_))) => (Class::DataDependent, true),
                (false, _) => (Class::DataDependent, false),
            };
            self.push(ChangeKind::AddField { owner: owner.clone(), field: f.clone() }, class, expand_only);
        }
        for (o, n) in m.pairs {
            if o.name != n.name {
                let kind = ChangeKind::RenameField {
                    owner: owner.clone(),
                    from: o.name.clone(),
                    to: n.name.clone(),
                };
                self.push(kind, Class::Safe, false);
            }
            if o.ty != n.ty && !(numeric(o.ty) && numeric(n.ty)) {
                self.problems.push(Problem {
                    code: TYPE_CHANGE,
                    message: format!(
                        "`{}.{}` changes type; add a field of the new type with a `backfill` and drop the old one",
                        owner.name(),
                        n.name
                    ),
                });
                continue;
            }
            match (o.optional, n.optional) {
                (true, false) => self.push(
                    ChangeKind::RequireField { owner: owner.clone(), field: n.clone() },
                    Class::DataDependent,
                    false,
                ),
                (false, true) => self.push(
                    ChangeKind::RelaxField { owner: owner.clone(), field: n.name.clone() },
                    Class::Safe,
                    true,
                ),
                _ => {}
            }
            if o.checks != n.checks {
                let widened = n.checks.iter().all(|c| implied(&o.checks, c, n.ty));
                let (class, expand_only) =
                    if widened { (Class::Safe, true) } else { (Class::DataDependent, false) };
                let kind = ChangeKind::Checks {
                    owner: owner.clone(),
                    field: n.clone(),
                    before: o.checks.clone(),
                    widened,
                };
                self.push(kind, class, expand_only);
            }
        }
    }

    fn machines(&mut self, old: &Spec, new: &Spec) {
        let m = self.matching("machine", &old.machines, &new.machines, |m| &m.name, |_| None);
        for x in m.removed {
            self.push(ChangeKind::DropMachine { machine: x.name.clone() }, Class::Destructive, false);
        }
        for x in m.added {
            self.push(ChangeKind::AddMachine { machine: x.name.clone() }, Class::Safe, true);
        }
        for (o, n) in m.pairs {
            self.machine(o, n);
        }
    }

    fn machine(&mut self, o: &ir::Machine, n: &ir::Machine) {
        self.fields(&Owner::Machine(n.name.clone()), &o.fields, &n.fields);
        let state_map = self.states(o, n);
        let event_map = self.events(o, n, &state_map);
        self.timers(o, n, &state_map, &event_map);
    }

    /// States added, renamed, re-kinded and removed, the initial state and `create`. Returns
    /// old state name -> new state name.
    fn states<'a>(&mut self, o: &'a ir::Machine, n: &'a ir::Machine) -> BTreeMap<&'a str, &'a str> {
        let machine = n.name.clone();
        let states = self.matching("state", &o.states, &n.states, |s| &s.name, |s| s.was.as_deref());
        // Old state name -> new state name, for timers.
        let mut state_map: BTreeMap<&str, &str> = BTreeMap::new();
        for s in states.added {
            self.push(
                ChangeKind::AddState { machine: machine.clone(), state: s.name.clone() },
                Class::Safe,
                true,
            );
        }
        for (a, b) in &states.pairs {
            state_map.insert(&a.name, &b.name);
            if a.name != b.name {
                let kind = ChangeKind::RenameState {
                    machine: machine.clone(),
                    from: a.name.clone(),
                    to: b.name.clone(),
                };
                self.push(kind, Class::DataDependent, false);
            }
            if a.kind != b.kind {
                let kind = ChangeKind::StateKind {
                    machine: machine.clone(),
                    state: b.name.clone(),
                    from: a.kind,
                    to: b.kind,
                };
                self.push(kind, Class::Safe, true);
            }
        }
        for s in states.removed {
            let into = n.removed.iter().find(|r| r.state == s.name).map(|r| r.into.clone());
            let kind = ChangeKind::RemoveState { machine: machine.clone(), state: s.name.clone(), into };
            self.push(kind, Class::DataDependent, false);
        }
        if state_map.get(o.initial.as_str()) != Some(&n.initial.as_str()) {
            let kind = ChangeKind::Initial {
                machine: machine.clone(),
                from: o.initial.clone(),
                to: n.initial.clone(),
            };
            self.push(kind, Class::Safe, true);
        }
        if o.create != n.create {
            self.push(ChangeKind::Create { machine: machine.clone() }, Class::Safe, true);
        }
        state_map
    }

    /// Events added, removed, renamed and changed (their parameters, or their transitions
    /// once states are renamed). Returns old event name -> new event name.
    fn events<'a>(
        &mut self,
        o: &'a ir::Machine,
        n: &'a ir::Machine,
        state_map: &BTreeMap<&str, &str>,
    ) -> BTreeMap<&'a str, &'a str> {
        let machine = n.name.clone();
        let events = self.matching("event", &o.events, &n.events, |e| &e.name, |e| e.was.as_deref());
        let mut event_map: BTreeMap<&str, &str> = BTreeMap::new();
        for e in events.removed {
            self.push(
                ChangeKind::RemoveEvent { machine: machine.clone(), event: e.name.clone() },
                Class::Safe,
                true,
            );
        }
        for e in events.added {
            self.push(
                ChangeKind::AddEvent { machine: machine.clone(), event: e.name.clone() },
                Class::Safe,
                true,
            );
        }
        for (a, b) in &events.pairs {
            event_map.insert(&a.name, &b.name);
            if a.name != b.name {
                let kind = ChangeKind::RenameEvent {
                    machine: machine.clone(),
                    from: a.name.clone(),
                    to: b.name.clone(),
                };
                self.push(kind, Class::Safe, false);
            }
            let renamed = |t: &ir::Transition| ir::Transition {
                from: t
                    .from
                    .iter()
                    .map(|s| state_map.get(s.as_str()).map_or(s.clone(), |x| x.to_string()))
                    .collect(),
                to: state_map.get(t.to.as_str()).map_or(t.to.clone(), |x| x.to_string()),
                body: t.body.clone(),
            };
            let before: Vec<ir::Transition> = a.transitions.iter().map(renamed).collect();
            if a.params != b.params || before != b.transitions {
                self.push(
                    ChangeKind::Event { machine: machine.clone(), event: b.name.clone() },
                    Class::Safe,
                    true,
                );
            }
        }
        event_map
    }

    /// Timers, keyed by (state, event) in the new spec's names: removed, re-timed, added.
    fn timers(
        &mut self,
        o: &ir::Machine,
        n: &ir::Machine,
        state_map: &BTreeMap<&str, &str>,
        event_map: &BTreeMap<&str, &str>,
    ) {
        let machine = n.name.clone();
        let rename = |t: &ir::Timer| ir::Timer {
            state: state_map.get(t.state.as_str()).map_or(t.state.clone(), |s| s.to_string()),
            event: event_map.get(t.event.as_str()).map_or(t.event.clone(), |e| e.to_string()),
            after_ms: t.after_ms,
        };
        let before: Vec<ir::Timer> = o.timers.iter().map(rename).collect();
        for t in &before {
            match n.timers.iter().find(|x| x.state == t.state && x.event == t.event) {
                None => {
                    let kind = ChangeKind::RemoveTimer { machine: machine.clone(), timer: t.clone() };
                    self.push(kind, Class::Safe, false);
                }
                Some(x) if x.after_ms != t.after_ms => {
                    let kind = ChangeKind::Timer {
                        machine: machine.clone(),
                        timer: x.clone(),
                        before_ms: t.after_ms,
                    };
                    self.push(kind, Class::Safe, true);
                }
                Some(_) => {}
            }
        }
        for t in &n.timers {
            if !before.iter().any(|x| x.state == t.state && x.event == t.event) {
                self.push(
                    ChangeKind::AddTimer { machine: machine.clone(), timer: t.clone() },
                    Class::Safe,
                    true,
                );
            }
        }
    }
}

/// int and money share a column type (integer minor units).
fn numeric(t: Type) -> bool {
    matches!(t, Type::Int | Type::Money)
}

/// Whether every value that passes all of `old` also passes `c`: then the new check is no
/// tighter, and no live row can break it. Exact for integers; other types only when the
/// same check was there before.
fn implied(old: &[ir::Check], c: &ir::Check, ty: Type) -> bool {
    if old.contains(c) {
        return true;
    }
    if !numeric(ty) {
        return false;
    }
    let (mut lo, mut hi, mut excluded) = (i64::MIN, i64::MAX, Vec::new());
    for o in old {
        let ir::Value::Int(v) = o.value else { continue };
        match o.op {
            CmpOp::Ge => lo = lo.max(v),
            CmpOp::Gt => lo = lo.max(v.saturating_add(1)),
            CmpOp::Le => hi = hi.min(v),
            CmpOp::Lt => hi = hi.min(v.saturating_sub(1)),
            CmpOp::Eq => {
                lo = lo.max(v);
                hi = hi.min(v);
            }
            CmpOp::Ne => excluded.push(v),
        }
    }
    let ir::Value::Int(v) = c.value else { return false };
    match c.op {
        CmpOp::Ge => lo >= v,
        CmpOp::Gt => lo > v,
        CmpOp::Le => hi <= v,
        CmpOp::Lt => hi < v,
        CmpOp::Eq => lo == v && hi == v,
        CmpOp::Ne => v < lo || v > hi || excluded.contains(&v),
    }
}
