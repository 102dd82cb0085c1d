//! Machines: states and the initial one, the create, events and their transitions, the
//! state graph (reachability, dead ends) and timers.

use super::evolution::Named;
use super::{BodyKind, Checker, MACHINE_COLUMNS, Scope, TIMER_MS_MAX, closest};
use crate::ast::{self, Span, StateKind};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::{BTreeSet, HashMap, VecDeque};

impl Checker {
    pub(super) fn machine(&mut self, m: &ast::Machine) -> Option<ir::Machine> {
        let field_decls = members(m, |mm| match mm {
            ast::MachineMember::Field(f) => Some(f),
            _ => None,
        });
        let mut fields = self.fields(&field_decls, "field", MACHINE_COLUMNS, &mut HashMap::new());
        self.field_renames(&field_decls);
        self.backfills(&field_decls, &mut fields);
        let states = self.states(m);
        let initial = self.initial(m, &states);
        let removed_decls = members(m, |mm| match mm {
            ast::MachineMember::Removed(r) => Some(r),
            _ => None,
        });
        let removed = self.removed_states(&removed_decls, &states);
        let creates = members(m, |mm| match mm {
            ast::MachineMember::Create(c) => Some(c),
            _ => None,
        });
        let create = self.create(m, &creates, &field_decls, &fields);
        let (events, edges) = self.events(m, &states, creates.first().copied(), &fields);
        // Reachability and dead ends, with each unknown state (already reported) read as
        // the declared one its name is closest to, as the fix will likely make it. One with
        // no close name leaves the graph unsure: an edge into it might reach any state (no
        // state is reported unreachable), one out of it might leave any (no dead end).
        let known = |n: &str| kind_of(&states, n).is_some();
        let guess = |n: &str| {
            if known(n) {
                Some(n.to_string())
            } else {
                super::closest(n, states.iter().map(|(s, _)| s.name.as_str())).map(str::to_string)
            }
        };
        let mut sure = Sure { reachable: true, dead_ends: true };
        let mut graph_edges = Vec::new();
        for (from, to) in &edges {
            match (guess(from), guess(to)) {
                (Some(f), Some(t)) => graph_edges.push((f, t)),
                (Some(f), None) => {
                    // It still leaves `f` (no dead end there), for somewhere unknown.
                    sure.reachable = false;
                    graph_edges.push((f, String::new()));
                }
                (None, _) => sure.dead_ends = false,
            }
        }
        if let Some(initial) = initial.as_ref() {
            self.graph(initial, &states, &graph_edges, sure);
        }
        let timers = self.timers(m, &states, &events);
        Some(ir::Machine {
            name: m.name.name.clone(),
            table: ir::table_name(&m.name.name),
            fields,
            states: states.into_iter().map(|(s, _)| s).collect(),
            initial: initial?,
            create: create?,
            events,
            timers,
            removed,
        })
    }

    /// The declared states with where each is declared; duplicates and renames reported.
    fn states(&mut self, m: &ast::Machine) -> Vec<(ir::State, Span)> {
        let mut states: Vec<(ir::State, Span)> = Vec::new();
        for mm in &m.members {
            let ast::MachineMember::States(decl) = mm else { continue };
            for (n, was) in decl.names.iter().zip(&decl.was) {
                self.name_length(n);
                if let Some((_, first)) = states.iter().find(|(s, _)| s.name == n.name) {
                    let first = *first;
                    self.error(
                        Diagnostic::new(
                            Code::DuplicateName,
                            n.span,
                            format!("state `{}` is declared twice", n.name),
                        )
                        .label("second declaration")
                        .related(first, "first declared here"),
                    );
                    continue;
                }
                let kind = match decl.kind {
                    StateKind::Initial => ir::StateKind::Initial,
                    StateKind::Normal => ir::StateKind::Normal,
                    StateKind::Final => ir::StateKind::Final,
                };
                states.push((
                    ir::State { name: n.name.clone(), kind, was: was.as_ref().map(|w| w.name.clone()) },
                    n.span,
                ));
            }
        }
        let state_names: Vec<Named<'_>> = m
            .members
            .iter()
            .filter_map(|mm| match mm {
                ast::MachineMember::States(d) => Some(d),
                _ => None,
            })
            .flat_map(|d| d.names.iter().zip(&d.was).map(|(name, was)| Named { name, was: was.as_ref() }))
            .collect();
        self.renames("state", &state_names);
        states
    }

    /// The one initial state, reporting none or several.
    fn initial(&mut self, m: &ast::Machine, states: &[(ir::State, Span)]) -> Option<String> {
        let initials: Vec<&(ir::State, Span)> =
            states.iter().filter(|(s, _)| s.kind == ir::StateKind::Initial).collect();
        match initials.as_slice() {
            [] => {
                self.error(
                    Diagnostic::new(
                        Code::MissingInitial,
                        m.name.span,
                        format!("machine `{}` has no initial state", m.name.name),
                    )
                    .label("no `initial` state")
                    .help("declare where every instance starts: `initial pending`"),
                );
                None
            }
            [(first, _), rest @ ..] => {
                let first_span = initials[0].1;
                for (s, span) in rest {
                    self.error(
                        Diagnostic::new(
                            Code::RepeatedInitial,
                            *span,
                            format!(
                                "machine `{}` has more than one initial state: `{}` and `{}`",
                                m.name.name, first.name, s.name
                            ),
                        )
                        .label("second initial state")
                        .related(first_span, "first initial state")
                        .help("every instance starts in one state; make the others `state`"),
                    );
                }
                Some(first.name.clone())
            }
        }
    }

    fn create(
        &mut self,
        m: &ast::Machine,
        creates: &[&ast::CreateDecl],
        field_decls: &[&ast::FieldDecl],
        fields: &[ir::Field],
    ) -> Option<ir::Create> {
        for extra in creates.iter().skip(1) {
            self.error(
                Diagnostic::new(
                    Code::RepeatedCreate,
                    extra.name.span,
                    format!("machine `{}` has more than one `create`", m.name.name),
                )
                .label("second `create`")
                .related(creates[0].name.span, "first `create`")
                .help("an instance comes into being one way; merge them"),
            );
        }
        match creates.first() {
            None => {
                self.error(
                    Diagnostic::new(
                        Code::MissingCreate,
                        m.name.span,
                        format!("machine `{}` has no `create`", m.name.name),
                    )
                    .label("no way to create an instance")
                    .help("add `create open` (with a block for its effects, if any)"),
                );
                None
            }
            Some(c) => {
                self.name_length(&c.name);
                self.route_name(&c.name, "a create");
                let mut taken: HashMap<String, Span> =
                    field_decls.iter().map(|f| (f.name.name.clone(), f.name.span)).collect();
                let refs: Vec<&ast::FieldDecl> = c.params.iter().collect();
                let params = self.fields(&refs, "parameter", &[], &mut taken);
                let scope = Scope { kind: BodyKind::Create, params: &params, fields, key: None };
                let body = self.body(c.body.as_ref(), &scope);
                Some(ir::Create { name: c.name.name.clone(), params, body })
            }
        }
    }

    /// Events, grouped by name in order of first declaration, with the graph's edges
    /// (source, target) for the reachability checks.
    fn events(
        &mut self,
        m: &ast::Machine,
        states: &[(ir::State, Span)],
        create: Option<&ast::CreateDecl>,
        fields: &[ir::Field],
    ) -> (Vec<ir::Event>, Vec<(String, String)>) {
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<&ast::EventDecl>> = HashMap::new();
        for mm in &m.members {
            if let ast::MachineMember::Event(e) = mm {
                if !groups.contains_key(&e.name.name) {
                    order.push(e.name.name.clone());
                }
                groups.entry(e.name.name.clone()).or_default().push(e);
            }
        }
        let mut events = Vec::new();
        let mut edges = Vec::new();
        for name in &order {
            let event = self.event(name, &groups[name], states, create, fields, &mut edges);
            events.push(event);
        }

        let event_names: Vec<Named<'_>> = order
            .iter()
            .map(|name| {
                let decls = &groups[name];
                Named { name: &decls[0].name, was: decls.iter().find_map(|d| d.was.as_ref()) }
            })
            .collect();
        self.renames("event", &event_names);
        (events, edges)
    }

    /// One event from all its declarations (one per `on` line): parameters, transitions and
    /// their bodies, each source state's edge added to `edges`.
    fn event(
        &mut self,
        name: &str,
        decls: &[&ast::EventDecl],
        states: &[(ir::State, Span)],
        create: Option<&ast::CreateDecl>,
        fields: &[ir::Field],
        edges: &mut Vec<(String, String)>,
    ) -> ir::Event {
        let first = decls[0];
        self.name_length(&first.name);
        self.route_name(&first.name, "an event");
        if let Some(c) = create
            && c.name.name == name
        {
            self.error(
                Diagnostic::new(
                    Code::DuplicateName,
                    first.name.span,
                    format!("`{name}` is both the `create` and an event"),
                )
                .label("event")
                .related(c.name.span, "the create"),
            );
        }
        let params = self.params(&first.params);
        for d in &decls[1..] {
            if !same_params(&first.params, &d.params) {
                self.error(
                    Diagnostic::new(
                        Code::ParamsMismatch,
                        d.name.span,
                        format!("event `{name}` is declared with different parameters"),
                    )
                    .label("these parameters")
                    .related(first.name.span, "differ from these")
                    .help("every transition of one event takes the same parameters; repeat the same list"),
                );
            }
        }
        let mut seen_sources: HashMap<String, Span> = HashMap::new();
        let mut transitions = Vec::new();
        for d in decls {
            let mut from = Vec::new();
            for s in &d.sources {
                match kind_of(states, &s.name) {
                    None => self.unknown_state(s, states),
                    Some(ir::StateKind::Final) => self.error(
                        Diagnostic::new(
                            Code::TransitionFromFinal,
                            s.span,
                            format!("event `{name}` leaves `{}`, a final state", s.name),
                        )
                        .label("final state")
                        .help(format!(
                            "final states are never left; make `{}` a `state`, or remove it here",
                            s.name
                        )),
                    ),
                    Some(_) => {}
                }
                if let Some(prev) = seen_sources.get(&s.name) {
                    self.error(
                        Diagnostic::new(
                            Code::Nondeterministic,
                            s.span,
                            format!("event `{name}` has two transitions from `{}`", s.name),
                        )
                        .label("second transition from this state")
                        .related(*prev, "first transition from this state")
                        .help("one event may leave a state one way only; merge them or use two events"),
                    );
                    continue;
                }
                seen_sources.insert(s.name.clone(), s.span);
                edges.push((s.name.clone(), d.target.name.clone()));
                from.push(s.name.clone());
            }
            if kind_of(states, &d.target.name).is_none() {
                self.unknown_state(&d.target, states);
            }
            let scope = Scope { kind: BodyKind::Transition, params: &params, fields, key: None };
            let body = self.body(d.body.as_ref(), &scope);
            transitions.push(ir::Transition { from, to: d.target.name.clone(), body });
        }
        ir::Event { name: name.to_string(), params, transitions, was: self.event_was(name, decls) }
    }

    /// Reports states the initial one never leads to, and non-final states no event leaves
    /// (each only when `sure` says the graph can tell).
    fn graph(&mut self, initial: &str, states: &[(ir::State, Span)], edges: &[(String, String)], sure: Sure) {
        let mut reached: BTreeSet<&str> = BTreeSet::new();
        let mut queue = VecDeque::from([initial]);
        while let Some(s) = queue.pop_front() {
            if reached.insert(s) {
                for (from, to) in edges {
                    if from == s {
                        queue.push_back(to);
                    }
                }
            }
        }
        for (s, span) in states {
            if !reached.contains(s.name.as_str()) {
                if !sure.reachable {
                    continue;
                }
                self.error(
                    Diagnostic::new(
                        Code::UnreachableState,
                        *span,
                        format!("state `{}` cannot be reached from `{initial}`", s.name),
                    )
                    .label("unreachable")
                    .help(format!("add an event that leads to `{}`, or remove it", s.name)),
                );
            } else if sure.dead_ends
                && s.kind != ir::StateKind::Final
                && !edges.iter().any(|(from, ..)| *from == s.name)
            {
                self.error(
                    Diagnostic::new(
                        Code::DeadEndState,
                        *span,
                        format!("state `{}` is not final, but no event leaves it", s.name),
                    )
                    .label("dead end")
                    .help(format!("mark it `final {}`, or add an event out of it", s.name)),
                );
            }
        }
    }

    fn timers(
        &mut self,
        m: &ast::Machine,
        states: &[(ir::State, Span)],
        events: &[ir::Event],
    ) -> Vec<ir::Timer> {
        let mut timers = Vec::new();
        let mut timer_keys: HashMap<(String, String), Span> = HashMap::new();
        for mm in &m.members {
            let ast::MachineMember::Timer(t) = mm else { continue };
            let mut ok = true;
            match kind_of(states, &t.state.name) {
                None => {
                    self.unknown_state(&t.state, states);
                    ok = false;
                }
                Some(ir::StateKind::Final) => {
                    self.error(
                        Diagnostic::new(
                            Code::TimerOnFinal,
                            t.state.span,
                            format!("a timer on `{}`, a final state", t.state.name),
                        )
                        .label("final state")
                        .help("an instance never leaves a final state, so the timer could never fire"),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
            match events.iter().find(|e| e.name == t.event.name) {
                None => {
                    let mut d = Diagnostic::new(
                        Code::UnknownEvent,
                        t.event.span,
                        format!("machine `{}` has no event `{}`", m.name.name, t.event.name),
                    )
                    .label("unknown event");
                    if let Some(close) = closest(&t.event.name, events.iter().map(|e| e.name.as_str())) {
                        d = d.did_you_mean(close);
                    }
                    self.error(d);
                    ok = false;
                }
                Some(e) => {
                    if ok && e.transition_from(&t.state.name).is_none() {
                        self.error(
                            Diagnostic::new(
                                Code::TimerEventNotAllowed,
                                t.event.span,
                                format!("event `{}` has no transition from `{}`", e.name, t.state.name),
                            )
                            .label("cannot fire here")
                            .help(format!(
                                "add `on {}: {} -> ...`, or fire another event",
                                e.name, t.state.name
                            )),
                        );
                        ok = false;
                    }
                    if e.params.iter().any(|p| !p.optional) {
                        self.error(
                            Diagnostic::new(
                                Code::TimerEventHasParams,
                                t.event.span,
                                format!("event `{}` needs parameters, which a timer cannot give", e.name),
                            )
                            .label("needs parameters")
                            .help("fire an event without required parameters (optional ones are null)"),
                        );
                        ok = false;
                    }
                }
            }
            let after_ms = match t.after.millis {
                Some(ms) if ms > 0 && ms <= TIMER_MS_MAX => ms,
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::BadDuration,
                            t.after.span,
                            format!("`{}` is not a usable delay", t.after.text),
                        )
                        .label("zero or too long")
                        .help("a timer fires after at least 1ms and at most 366d"),
                    );
                    ok = false;
                    0
                }
            };
            let key = (t.state.name.clone(), t.event.name.clone());
            if let Some(first) = timer_keys.get(&key) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateTimer,
                        t.span,
                        format!("two timers fire `{}` from `{}`", t.event.name, t.state.name),
                    )
                    .label("second timer")
                    .related(*first, "first timer")
                    .help("only the earlier one could ever fire; remove one"),
                );
                ok = false;
            } else {
                timer_keys.insert(key, t.span);
            }
            if ok {
                timers.push(ir::Timer { state: t.state.name.clone(), after_ms, event: t.event.name.clone() });
            }
        }
        timers
    }

    pub(super) fn unknown_state(&mut self, s: &ast::Ident, states: &[(ir::State, Span)]) {
        let mut d = Diagnostic::new(Code::UnknownState, s.span, format!("there is no state `{}`", s.name))
            .label("unknown state");
        d = match closest(&s.name, states.iter().map(|(st, _)| st.name.as_str())) {
            Some(close) => d.did_you_mean(close),
            None => d.help(format!("declare it: `state {}`", s.name)),
        };
        self.error(d);
    }
}

/// Whether two parameter lists declare the same names, types and checks.
fn same_params(a: &[ast::FieldDecl], b: &[ast::FieldDecl]) -> bool {
    let key = |f: &ast::FieldDecl| {
        (
            f.name.name.clone(),
            f.ty.base,
            f.ty.optional,
            f.checks.iter().map(|c| (c.op, c.value.value.clone())).collect::<Vec<_>>(),
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// A machine's members of one kind, in declaration order.
fn members<'a, T>(m: &'a ast::Machine, pick: impl Fn(&'a ast::MachineMember) -> Option<&'a T>) -> Vec<&'a T> {
    m.members.iter().filter_map(pick).collect()
}

fn kind_of(states: &[(ir::State, Span)], name: &str) -> Option<ir::StateKind> {
    states.iter().find(|(s, _)| s.name == name).map(|(s, _)| s.kind)
}

/// What the state graph can tell despite unknown states (see `machine`).
#[derive(Clone, Copy)]
struct Sure {
    reachable: bool,
    dead_ends: bool,
}
