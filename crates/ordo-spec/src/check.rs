//! Syntax tree to IR: resolves every name, types every expression, checks the state graph,
//! and reports every problem found in one pass. The IR is returned only when there is none.

use crate::ast::{self, BaseType, BinOp, CmpOp, ExprKind, LiteralValue, Span, StateKind, Stmt};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Longest name accepted, in bytes: names become table and column names, and PostgreSQL
/// truncates identifiers at 63 bytes; the rest is kept for prefixes and index suffixes.
pub const NAME_BYTES_MAX: usize = 48;
/// Longest timer accepted: one year, in milliseconds.
pub const TIMER_MS_MAX: u64 = 366 * 24 * 3_600_000;
/// Diagnostics reported from one file; the rest are summarised in one line.
pub const DIAGNOSTICS_MAX: usize = 100;

/// Columns every machine table has; a field may not take their names.
const MACHINE_COLUMNS: &[&str] = &["id", "tenant", "state", "version", "created_at", "updated_at"];
/// Names an event, create or operation may not take: the generated read route of the same
/// machine or resource is called `get_<name>`, as the event's own route would be.
const ROUTE_NAMES: &[&str] = &["get"];

/// Columns every resource table has.
const RESOURCE_COLUMNS: &[&str] = &["tenant", "version", "created_at", "updated_at"];

mod evolution;
use evolution::Named;

pub fn check(spec: &ast::Spec) -> (Option<ir::Spec>, Vec<Diagnostic>) {
    let mut cx = Checker { diags: Vec::new(), resources: HashMap::new() };
    let out = cx.spec(spec);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| (d.span.start, d.code));
    if diags.len() > DIAGNOSTICS_MAX {
        let rest = diags.len() - DIAGNOSTICS_MAX;
        let at = diags[DIAGNOSTICS_MAX].span;
        diags.truncate(DIAGNOSTICS_MAX);
        diags.push(
            Diagnostic::new(Code::TooManyErrors, at, format!("{rest} more errors not shown"))
                .label("the next one is here"),
        );
    }
    if diags.is_empty() { (out, diags) } else { (None, diags) }
}

/// An expression's type as the checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ty {
    base: TyBase,
    optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TyBase {
    Known(ir::Type),
    /// An integer literal: fits int and money alike.
    Number,
    /// The `null` literal: fits any optional type.
    Null,
}

impl Ty {
    fn of(ty: ir::Type, optional: bool) -> Ty {
        Ty { base: TyBase::Known(ty), optional }
    }

    fn describe(self) -> String {
        let base = match self.base {
            TyBase::Known(t) => type_word(t).to_string(),
            TyBase::Number => "a number".to_string(),
            TyBase::Null => return "null".to_string(),
        };
        if self.optional { format!("{base}?") } else { base }
    }

    fn is_numeric(self) -> bool {
        matches!(self.base, TyBase::Number | TyBase::Known(ir::Type::Int | ir::Type::Money))
    }
}

fn type_word(t: ir::Type) -> &'static str {
    match t {
        ir::Type::Text => "text",
        ir::Type::Int => "int",
        ir::Type::Money => "money",
        ir::Type::Bool => "bool",
        ir::Type::Timestamp => "timestamp",
    }
}

fn lower_type(b: BaseType) -> ir::Type {
    match b {
        BaseType::Text => ir::Type::Text,
        BaseType::Int => ir::Type::Int,
        BaseType::Money => ir::Type::Money,
        BaseType::Bool => ir::Type::Bool,
        BaseType::Timestamp => ir::Type::Timestamp,
    }
}

/// The common base of two types, if they are compatible (`Number` adapts to int and money).
fn unify(a: TyBase, b: TyBase) -> Option<TyBase> {
    use TyBase::*;
    match (a, b) {
        (x, y) if x == y => Some(x),
        (Number, Known(t @ (ir::Type::Int | ir::Type::Money)))
        | (Known(t @ (ir::Type::Int | ir::Type::Money)), Number) => Some(Known(t)),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Create,
    Transition,
    Operation,
}

/// What names mean inside one body.
struct Scope<'a> {
    kind: BodyKind,
    params: &'a [ir::Field],
    /// The row's fields: the machine's, or the resource's (its key first).
    fields: &'a [ir::Field],
    /// The resource's key name, in an operation.
    key: Option<&'a str>,
}

struct Checker {
    diags: Vec<Diagnostic>,
    /// Resources by name, lowered before machines so effects can be checked.
    resources: HashMap<String, ir::Resource>,
}

impl Checker {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn spec(&mut self, spec: &ast::Spec) -> Option<ir::Spec> {
        let mut tables: HashMap<String, Span> = HashMap::new();
        for item in &spec.items {
            let name = match item {
                ast::Item::Resource(r) => &r.name,
                ast::Item::Machine(m) => &m.name,
            };
            self.name_length(name);
            let table = ir::table_name(&name.name);
            if table.starts_with("ordo_") {
                self.error(
                    Diagnostic::new(
                        Code::ReservedName,
                        name.span,
                        format!(
                            "`{}` would be stored in `{table}`, a name Ordo keeps for its own tables",
                            name.name
                        ),
                    )
                    .label("reserved")
                    .help("choose a name that does not start with `Ordo`"),
                );
            }
            if let Some(first) = tables.get(&table) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        name.span,
                        format!("`{}` is declared twice (both would be stored in `{table}`)", name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
            } else {
                tables.insert(table, name.span);
            }
        }

        let resource_names: Vec<Named<'_>> = spec
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Resource(r) => Some(Named { name: &r.name, was: r.was.as_ref() }),
                ast::Item::Machine(_) => None,
            })
            .collect();
        self.renames("resource", &resource_names);
        let mut resources = Vec::new();
        for item in &spec.items {
            if let ast::Item::Resource(r) = item
                && let Some(lowered) = self.resource(r)
            {
                self.resources.entry(lowered.name.clone()).or_insert_with(|| lowered.clone());
                resources.push(lowered);
            }
        }
        let mut machines = Vec::new();
        for item in &spec.items {
            if let ast::Item::Machine(m) = item
                && let Some(lowered) = self.machine(m)
            {
                machines.push(lowered);
            }
        }
        if !spec.items.iter().any(|i| matches!(i, ast::Item::Machine(_))) {
            let end = spec.items.last().map_or(0, |i| i.span().end);
            self.error(
                Diagnostic::new(Code::EmptySpec, Span::new(end, end), "the spec declares no machine")
                    .label("expected a `machine` declaration")
                    .help("add `machine Name { initial start  create open ... }`; see docs/spec-language.md"),
            );
        }
        Some(ir::Spec { resources, machines })
    }

    /// Event, create and operation names become route names next to the read route.
    fn route_name(&mut self, name: &ast::Ident, what: &str) {
        if ROUTE_NAMES.contains(&name.name.as_str()) {
            self.error(
                Diagnostic::new(
                    Code::ReservedName,
                    name.span,
                    format!("`{}` cannot name {what}: the read route has that name", name.name),
                )
                .label("reserved")
                .help("choose a name that says what it does, such as `fetch` or `load`"),
            );
        }
    }

    fn name_length(&mut self, name: &ast::Ident) {
        if name.name.len() > NAME_BYTES_MAX {
            self.error(
                Diagnostic::new(
                    Code::NameTooLong,
                    name.span,
                    format!(
                        "`{}` is {} bytes long; names may be at most {NAME_BYTES_MAX}",
                        name.name,
                        name.name.len()
                    ),
                )
                .label("too long")
                .help("names become table and column names; use a shorter one"),
            );
        }
    }

    /// Lowers fields (or parameters), reporting duplicates and reserved names. `taken`
    /// holds names already used in the same scope (e.g. the resource key).
    fn fields(
        &mut self,
        decls: &[&ast::FieldDecl],
        what: &str,
        reserved: &[&str],
        taken: &mut HashMap<String, Span>,
    ) -> Vec<ir::Field> {
        let mut out = Vec::new();
        for f in decls {
            self.name_length(&f.name);
            if reserved.contains(&f.name.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::ReservedName,
                        f.name.span,
                        format!(
                            "`{}` cannot be a {what} name: every row already has a column of that name",
                            f.name.name
                        ),
                    )
                    .label("reserved")
                    .help(format!("the reserved names are {}", reserved.join(", "))),
                );
                continue;
            }
            if let Some(first) = taken.get(&f.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        f.name.span,
                        format!("{what} `{}` is declared twice", f.name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
                continue;
            }
            taken.insert(f.name.name.clone(), f.name.span);
            let ty = lower_type(f.ty.base);
            let checks = f.checks.iter().filter_map(|c| self.field_check(f, ty, c)).collect();
            out.push(ir::Field {
                name: f.name.name.clone(),
                ty,
                optional: f.ty.optional,
                checks,
                was: f.was.as_ref().map(|w| w.name.clone()),
                backfill: None,
            });
        }
        out
    }

    fn field_check(&mut self, f: &ast::FieldDecl, ty: ir::Type, c: &ast::CheckCond) -> Option<ir::Check> {
        let value = self.literal_value(&c.value)?;
        let fits = match (&value, ty) {
            (ir::Value::Int(_), ir::Type::Int | ir::Type::Money) => true,
            (ir::Value::Text(_), ir::Type::Text) => true,
            (ir::Value::Bool(_), ir::Type::Bool) => matches!(c.op, CmpOp::Eq | CmpOp::Ne),
            _ => false,
        };
        if !fits {
            let help = match ty {
                ir::Type::Timestamp => {
                    "timestamps cannot be checked against a constant; use a `require` guard".to_string()
                }
                ir::Type::Bool => {
                    "a bool can only be checked with `==` or `!=` against `true` or `false`".to_string()
                }
                t => format!("compare with a {} constant", type_word(t)),
            };
            self.error(
                Diagnostic::new(
                    Code::BadCheck,
                    c.span,
                    format!(
                        "`check {} ...` cannot apply to `{}`, a {}",
                        c.op.symbol(),
                        f.name.name,
                        type_word(ty)
                    ),
                )
                .label("does not fit the field's type")
                .help(help),
            );
            return None;
        }
        Some(ir::Check { op: c.op, value })
    }

    fn literal_value(&mut self, lit: &ast::Literal) -> Option<ir::Value> {
        Some(match &lit.value {
            LiteralValue::Int { digits, negative } => {
                let text = if *negative { format!("-{digits}") } else { digits.clone() };
                match text.parse::<i64>() {
                    Ok(v) => ir::Value::Int(v),
                    Err(_) => {
                        self.error(
                            Diagnostic::new(
                                Code::NumberOutOfRange,
                                lit.span,
                                format!("{text} does not fit in 64 bits"),
                            )
                            .label("out of range")
                            .help(format!(
                                "integers and money lie between {} and {}",
                                i64::MIN,
                                i64::MAX
                            )),
                        );
                        return None;
                    }
                }
            }
            LiteralValue::Text(s) => ir::Value::Text(s.clone()),
            LiteralValue::Bool(b) => ir::Value::Bool(*b),
            LiteralValue::Null => ir::Value::Null,
        })
    }

    // ---- resources ---------------------------------------------------------------------

    fn resource(&mut self, r: &ast::Resource) -> Option<ir::Resource> {
        let mut taken = HashMap::new();
        self.no_evolution(&r.key, "key");
        let key_fields = self.fields(&[&r.key], "field", RESOURCE_COLUMNS, &mut taken);
        // A key with a bad name has been reported; keep it anyway, so that effects on this
        // resource are still checked instead of each reporting an unknown resource.
        let key = key_fields.into_iter().next().or_else(|| {
            Some(ir::Field::plain(&r.key.name.name, lower_type(r.key.ty.base), r.key.ty.optional))
        });
        if let Some(k) = &key
            && (k.optional || !matches!(k.ty, ir::Type::Text | ir::Type::Int))
        {
            self.error(
                Diagnostic::new(
                    Code::BadResourceKey,
                    r.key.ty.span,
                    format!(
                        "the key of `{}` must be `text` or `int`, not `{}`",
                        r.name.name,
                        Ty::of(k.ty, k.optional).describe()
                    ),
                )
                .label("not usable as a key")
                .help("keys identify rows: use `text` or `int`, never optional"),
            );
        }
        let field_decls: Vec<&ast::FieldDecl> = r
            .members
            .iter()
            .filter_map(|m| match m {
                ast::ResourceMember::Field(f) => Some(f),
                ast::ResourceMember::Operation(_) => None,
            })
            .collect();
        let mut fields = self.fields(&field_decls, "field", RESOURCE_COLUMNS, &mut taken);
        self.field_renames(&field_decls);
        let mut row: Vec<ir::Field> = key.iter().cloned().collect();
        row.extend(fields.iter().cloned());
        self.backfills(&field_decls, &mut fields);

        let mut op_names: HashMap<String, Span> = HashMap::new();
        let mut operations = Vec::new();
        for m in &r.members {
            let ast::ResourceMember::Operation(op) = m else { continue };
            self.name_length(&op.name);
            if let Some(first) = op_names.get(&op.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        op.name.span,
                        format!("operation `{}` is declared twice in `{}`", op.name.name, r.name.name),
                    )
                    .label("second declaration")
                    .related(*first, "first declared here"),
                );
                continue;
            }
            op_names.insert(op.name.name.clone(), op.name.span);
            self.route_name(&op.name, "an operation");
            let params = self.params(&op.params);
            let scope = Scope {
                kind: BodyKind::Operation,
                params: &params,
                fields: &row,
                key: key.as_ref().map(|k| k.name.as_str()),
            };
            let body = self.body(Some(&op.body), &scope);
            operations.push(ir::Operation { name: op.name.name.clone(), params, body });
        }
        Some(ir::Resource {
            name: r.name.name.clone(),
            table: ir::table_name(&r.name.name),
            key: key?,
            fields,
            operations,
            was: r.was.as_ref().map(|w| w.name.clone()),
        })
    }

    fn params(&mut self, decls: &[ast::FieldDecl]) -> Vec<ir::Field> {
        for d in decls {
            self.no_evolution(d, "parameter");
        }
        let refs: Vec<&ast::FieldDecl> = decls.iter().collect();
        self.fields(&refs, "parameter", &[], &mut HashMap::new())
    }

    // ---- machines ----------------------------------------------------------------------

    fn machine(&mut self, m: &ast::Machine) -> Option<ir::Machine> {
        let field_decls: Vec<&ast::FieldDecl> = m
            .members
            .iter()
            .filter_map(|mm| match mm {
                ast::MachineMember::Field(f) => Some(f),
                _ => None,
            })
            .collect();
        let mut fields = self.fields(&field_decls, "field", MACHINE_COLUMNS, &mut HashMap::new());
        self.field_renames(&field_decls);
        self.backfills(&field_decls, &mut fields);

        // States.
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
        let initials: Vec<&(ir::State, Span)> =
            states.iter().filter(|(s, _)| s.kind == ir::StateKind::Initial).collect();
        let initial = match initials.as_slice() {
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
        };
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
        let removed_decls: Vec<&ast::RemovedDecl> = m
            .members
            .iter()
            .filter_map(|mm| match mm {
                ast::MachineMember::Removed(r) => Some(r),
                _ => None,
            })
            .collect();
        let removed = self.removed_states(&removed_decls, &states);
        let state_kind = |name: &str| states.iter().find(|(s, _)| s.name == name).map(|(s, _)| s.kind);

        // Create.
        let creates: Vec<&ast::CreateDecl> = m
            .members
            .iter()
            .filter_map(|mm| match mm {
                ast::MachineMember::Create(c) => Some(c),
                _ => None,
            })
            .collect();
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
        let create = match creates.first() {
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
                let scope = Scope { kind: BodyKind::Create, params: &params, fields: &fields, key: None };
                let body = self.body(c.body.as_ref(), &scope);
                Some(ir::Create { name: c.name.name.clone(), params, body })
            }
        };

        // Events, grouped by name in order of first declaration.
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
        // (state, event) -> where the transition is declared, for the graph checks.
        let mut edges: Vec<(String, String, String, Span)> = Vec::new();
        for name in &order {
            let decls = &groups[name];
            let first = decls[0];
            self.name_length(&first.name);
            self.route_name(&first.name, "an event");
            if let Some(c) = creates.first()
                && c.name.name == *name
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
                        .help(
                            "every transition of one event takes the same parameters; repeat the same list",
                        ),
                    );
                }
            }
            let mut seen_sources: HashMap<String, Span> = HashMap::new();
            let mut transitions = Vec::new();
            for d in decls {
                let mut from = Vec::new();
                for s in &d.sources {
                    match state_kind(&s.name) {
                        None => self.unknown_state(s, &states),
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
                    edges.push((s.name.clone(), d.target.name.clone(), name.clone(), d.span));
                    from.push(s.name.clone());
                }
                if state_kind(&d.target.name).is_none() {
                    self.unknown_state(&d.target, &states);
                }
                let scope = Scope { kind: BodyKind::Transition, params: &params, fields: &fields, key: None };
                let body = self.body(d.body.as_ref(), &scope);
                transitions.push(ir::Transition { from, to: d.target.name.clone(), body });
            }
            events.push(ir::Event {
                name: name.clone(),
                params,
                transitions,
                was: self.event_was(name, decls),
            });
        }

        let event_names: Vec<Named<'_>> = order
            .iter()
            .map(|name| {
                let decls = &groups[name];
                Named { name: &decls[0].name, was: decls.iter().find_map(|d| d.was.as_ref()) }
            })
            .collect();
        self.renames("event", &event_names);

        // Reachability and dead ends, only when the graph is sound: with an unknown state
        // in it, every state after the typo would be reported too.
        let graph_sound = !self
            .diags
            .iter()
            .any(|d| d.code == Code::UnknownState && m.span.range().contains(&d.span.start));
        if let Some(initial) = initial.as_ref().filter(|_| graph_sound) {
            let mut reached: BTreeSet<&str> = BTreeSet::new();
            let mut queue = VecDeque::from([initial.as_str()]);
            while let Some(s) = queue.pop_front() {
                if reached.insert(s) {
                    for (from, to, _, _) in &edges {
                        if from == s {
                            queue.push_back(to);
                        }
                    }
                }
            }
            for (s, span) in &states {
                if !reached.contains(s.name.as_str()) {
                    self.error(
                        Diagnostic::new(
                            Code::UnreachableState,
                            *span,
                            format!("state `{}` cannot be reached from `{initial}`", s.name),
                        )
                        .label("unreachable")
                        .help(format!("add an event that leads to `{}`, or remove it", s.name)),
                    );
                } else if s.kind != ir::StateKind::Final && !edges.iter().any(|(from, ..)| *from == s.name) {
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

        // Timers.
        let mut timers = Vec::new();
        let mut timer_keys: HashMap<(String, String), Span> = HashMap::new();
        for mm in &m.members {
            let ast::MachineMember::Timer(t) = mm else { continue };
            let mut ok = true;
            match state_kind(&t.state.name) {
                None => {
                    self.unknown_state(&t.state, &states);
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
                        d = d.help(format!("did you mean `{close}`?"));
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

    fn unknown_state(&mut self, s: &ast::Ident, states: &[(ir::State, Span)]) {
        let mut d = Diagnostic::new(Code::UnknownState, s.span, format!("there is no state `{}`", s.name))
            .label("unknown state");
        d = match closest(&s.name, states.iter().map(|(st, _)| st.name.as_str())) {
            Some(close) => d.help(format!("did you mean `{close}`?")),
            None => d.help(format!("declare it: `state {}`", s.name)),
        };
        self.error(d);
    }

    // ---- bodies ------------------------------------------------------------------------

    fn body(&mut self, block: Option<&ast::Block>, scope: &Scope<'_>) -> ir::Body {
        let mut body = ir::Body {
            lock: ir::Lock::Optimistic,
            isolation: ir::Isolation::ReadCommitted,
            guards: Vec::new(),
            sets: Vec::new(),
            effects: Vec::new(),
            deltas: Vec::new(),
        };
        let Some(block) = block else { return body };
        let mut lock_at: Option<Span> = None;
        let mut isolation_at: Option<Span> = None;
        let mut assigned: HashMap<String, Span> = HashMap::new();
        let mut labels: HashMap<String, Span> = HashMap::new();
        for stmt in &block.stmts {
            match stmt {
                Stmt::Lock { mode, span } => {
                    if self.once(&mut lock_at, *span, "lock") {
                        body.lock = match mode {
                            ast::LockMode::Optimistic => ir::Lock::Optimistic,
                            ast::LockMode::Pessimistic => ir::Lock::Pessimistic,
                            ast::LockMode::PessimisticNowait => ir::Lock::PessimisticNowait,
                            ast::LockMode::PessimisticSkipLocked => ir::Lock::PessimisticSkipLocked,
                        };
                    }
                }
                Stmt::Isolation { level, span } => {
                    if self.once(&mut isolation_at, *span, "isolation") {
                        body.isolation = match level {
                            ast::IsolationLevel::ReadCommitted => ir::Isolation::ReadCommitted,
                            ast::IsolationLevel::RepeatableRead => ir::Isolation::RepeatableRead,
                            ast::IsolationLevel::Serializable => ir::Isolation::Serializable,
                        };
                    }
                }
                Stmt::Require { label, expr, .. } => {
                    let text = crate::fmt::expr_text(expr);
                    if let Some(label) = label {
                        if let Some(first) = labels.get(&label.name) {
                            self.error(
                                Diagnostic::new(
                                    Code::DuplicateName,
                                    label.span,
                                    format!("guard `{}` is named twice", label.name),
                                )
                                .label("second guard with this name")
                                .related(*first, "first one"),
                            );
                        }
                        labels.insert(label.name.clone(), label.span);
                    }
                    if let Some((e, ty)) = self.expr(expr, scope) {
                        if ty.base == TyBase::Known(ir::Type::Bool) {
                            let name = label.as_ref().map_or_else(|| text.clone(), |l| l.name.clone());
                            body.guards.push(ir::Guard { name, text, expr: e });
                        } else {
                            self.mismatch(expr.span, "a `require` condition", "bool", ty);
                        }
                    }
                }
                Stmt::Set { field, value, span } => {
                    if scope.key == Some(field.name.as_str()) {
                        self.key_immutable(field);
                        continue;
                    }
                    let Some(target) = scope.fields.iter().find(|f| f.name == field.name) else {
                        self.unknown_field(field, scope.fields, "this");
                        continue;
                    };
                    self.assign_once(&mut assigned, field, *span);
                    if let Some((e, ty)) = self.expr(value, scope)
                        && self.assignable(value.span, target, ty)
                    {
                        body.sets.push(ir::Assign { field: field.name.clone(), value: e });
                    }
                }
                Stmt::Effect { resource, key, field, op, amount, span } => {
                    if scope.kind == BodyKind::Operation {
                        self.error(
                            Diagnostic::new(
                                Code::MisplacedStatement,
                                *span,
                                "an operation changes its own row only",
                            )
                            .label("effect on another resource")
                            .help(format!(
                                "write `{} {} ...` to change this resource's field",
                                field.name,
                                op.symbol()
                            )),
                        );
                        continue;
                    }
                    if let Some(effect) = self.effect(resource, key, field, *op, amount, scope) {
                        body.effects.push(effect);
                    }
                }
                Stmt::Delta { field, op, amount, span } => {
                    if scope.kind != BodyKind::Operation {
                        self.error(
                            Diagnostic::new(
                                Code::MisplacedStatement,
                                *span,
                                format!("`{} {} ...` belongs in a resource operation", field.name, op.symbol()),
                            )
                            .label("not in a resource operation")
                            .help(format!(
                                "in a machine, name the row: `Resource[key].{} {} ...`; to change a field of this machine use `set`",
                                field.name,
                                op.symbol()
                            )),
                        );
                        continue;
                    }
                    if scope.key == Some(field.name.as_str()) {
                        self.key_immutable(field);
                        continue;
                    }
                    let Some(target) = scope.fields.iter().find(|f| f.name == field.name) else {
                        self.unknown_field(field, scope.fields, "this resource");
                        continue;
                    };
                    self.assign_once(&mut assigned, field, *span);
                    if let Some(amount) = self.amount(target, field, amount, scope) {
                        body.deltas.push(ir::Delta {
                            field: field.name.clone(),
                            op: lower_delta(*op),
                            amount,
                        });
                    }
                }
            }
        }
        body
    }

    fn once(&mut self, seen: &mut Option<Span>, span: Span, what: &str) -> bool {
        if let Some(first) = seen {
            self.error(
                Diagnostic::new(Code::RepeatedSetting, span, format!("`{what}` is given twice"))
                    .label("second setting")
                    .related(*first, "first setting"),
            );
            return false;
        }
        *seen = Some(span);
        true
    }

    fn assign_once(&mut self, assigned: &mut HashMap<String, Span>, field: &ast::Ident, span: Span) {
        if let Some(first) = assigned.get(&field.name) {
            self.error(
                Diagnostic::new(
                    Code::DuplicateAssignment,
                    span,
                    format!("`{}` is changed twice", field.name),
                )
                .label("second change")
                .related(*first, "first change")
                .help("combine them into one statement"),
            );
        } else {
            assigned.insert(field.name.clone(), span);
        }
    }

    fn key_immutable(&mut self, field: &ast::Ident) {
        self.error(
            Diagnostic::new(
                Code::KeyImmutable,
                field.span,
                format!("`{}` is the resource's key and cannot change", field.name),
            )
            .label("key")
            .help("a row keeps its key for life"),
        );
    }

    fn unknown_field(&mut self, field: &ast::Ident, fields: &[ir::Field], whose: &str) {
        let mut d =
            Diagnostic::new(Code::UnknownField, field.span, format!("{whose} has no field `{}`", field.name))
                .label("unknown field");
        if let Some(close) = closest(&field.name, fields.iter().map(|f| f.name.as_str())) {
            d = d.help(format!("did you mean `{close}`?"));
        }
        self.error(d);
    }

    /// Checks that a value of type `ty` may be stored in `target`.
    fn assignable(&mut self, at: Span, target: &ir::Field, ty: Ty) -> bool {
        let what = format!("field `{}`", target.name);
        let want = Ty::of(target.ty, target.optional).describe();
        if ty.base == TyBase::Null {
            if target.optional {
                return true;
            }
            self.error(
                Diagnostic::new(Code::TypeMismatch, at, format!("{what} is not optional and cannot be null"))
                    .label("null")
                    .help(format!("declare it `{}?` to allow null", type_word(target.ty))),
            );
            return false;
        }
        if unify(ty.base, TyBase::Known(target.ty)).is_none() {
            self.mismatch(at, &what, &want, ty);
            return false;
        }
        if ty.optional && !target.optional {
            self.error(
                Diagnostic::new(
                    Code::TypeMismatch,
                    at,
                    format!("this value may be null, but {what} may not"),
                )
                .label(format!("{} may be null", ty.describe()))
                .help(format!(
                    "declare the field `{}?`, or pass a value that cannot be null",
                    type_word(target.ty)
                )),
            );
            return false;
        }
        true
    }

    fn mismatch(&mut self, at: Span, what: &str, want: &str, got: Ty) {
        self.error(
            Diagnostic::new(
                Code::TypeMismatch,
                at,
                format!("{what} must be {want}, but this is {}", got.describe()),
            )
            .label(format!("this is {}", got.describe())),
        );
    }

    /// A numeric change (`+=`/`-=`) of `target` by `amount`.
    fn amount(
        &mut self,
        target: &ir::Field,
        field: &ast::Ident,
        amount: &ast::Expr,
        scope: &Scope<'_>,
    ) -> Option<ir::Expr> {
        if !matches!(target.ty, ir::Type::Int | ir::Type::Money) || target.optional {
            self.error(
                Diagnostic::new(
                    Code::TypeMismatch,
                    field.span,
                    format!(
                        "`{}` is {}; only int and money fields can be added to or taken from",
                        field.name,
                        Ty::of(target.ty, target.optional).describe()
                    ),
                )
                .label("not a number"),
            );
            return None;
        }
        let (e, ty) = self.expr(amount, scope)?;
        let ok = unify(ty.base, TyBase::Known(target.ty)).is_some() && !ty.optional;
        if !ok {
            self.mismatch(amount.span, "the amount", type_word(target.ty), ty);
            return None;
        }
        Some(e)
    }

    fn effect(
        &mut self,
        resource: &ast::Ident,
        key: &ast::Expr,
        field: &ast::Ident,
        op: ast::DeltaOp,
        amount: &ast::Expr,
        scope: &Scope<'_>,
    ) -> Option<ir::Effect> {
        let Some(r) = self.resources.get(&resource.name).cloned() else {
            let mut d = Diagnostic::new(
                Code::UnknownResource,
                resource.span,
                format!("there is no resource `{}`", resource.name),
            )
            .label("unknown resource");
            d = match closest(&resource.name, self.resources.keys().map(String::as_str)) {
                Some(close) => d.help(format!("did you mean `{close}`?")),
                None => d.help(format!("declare it: `resource {} key id: text {{ ... }}`", resource.name)),
            };
            self.error(d);
            return None;
        };
        let key_expr = self.expr(key, scope);
        let key_declared_well = matches!(r.key.ty, ir::Type::Text | ir::Type::Int) && !r.key.optional;
        if let Some((_, ty)) = key_expr.as_ref().filter(|_| key_declared_well) {
            let fits = matches!(ty.base, TyBase::Known(_) | TyBase::Number)
                && unify(ty.base, TyBase::Known(r.key.ty)).is_some()
                && !ty.optional;
            if !fits {
                let mut d = Diagnostic::new(
                    Code::BadResourceKey,
                    key.span,
                    format!(
                        "`{}` is keyed by `{}: {}`, but this is {}",
                        r.name,
                        r.key.name,
                        type_word(r.key.ty),
                        ty.describe()
                    ),
                )
                .label(format!("not a {} key", type_word(r.key.ty)));
                let candidates: Vec<&str> = scope
                    .fields
                    .iter()
                    .chain(scope.params)
                    .filter(|f| f.ty == r.key.ty && !f.optional)
                    .map(|f| f.name.as_str())
                    .collect();
                d = if candidates.is_empty() {
                    d.help(format!("add a field of type {} that holds the key", type_word(r.key.ty)))
                } else {
                    d.help(format!(
                        "a {} value is needed, such as `{}`",
                        type_word(r.key.ty),
                        candidates.join("`, `")
                    ))
                };
                self.error(d);
            }
        }
        if field.name == r.key.name {
            self.key_immutable(field);
            return None;
        }
        let Some(target) = r.field(&field.name).cloned() else {
            self.unknown_field(field, &r.fields, &format!("resource `{}`", r.name));
            return None;
        };
        let amount = self.amount(&target, field, amount, scope);
        let (key, key_ty) = key_expr?;
        if key_ty.optional || unify(key_ty.base, TyBase::Known(r.key.ty)).is_none() {
            return None;
        }
        Some(ir::Effect {
            resource: r.name.clone(),
            key,
            field: field.name.clone(),
            op: lower_delta(op),
            amount: amount?,
        })
    }

    // ---- expressions -------------------------------------------------------------------

    /// Lowers and types an expression; `None` after reporting when it does not check.
    /// Depth is bounded by `parse::EXPR_DEPTH_MAX`, so the recursion is too.
    fn expr(&mut self, e: &ast::Expr, scope: &Scope<'_>) -> Option<(ir::Expr, Ty)> {
        match &e.kind {
            ExprKind::Literal(lit) => {
                let v = self.literal_value(lit)?;
                let base = match &v {
                    ir::Value::Int(_) => TyBase::Number,
                    ir::Value::Text(_) => TyBase::Known(ir::Type::Text),
                    ir::Value::Bool(_) => TyBase::Known(ir::Type::Bool),
                    ir::Value::Null => TyBase::Null,
                };
                Some((ir::Expr::Value(v), Ty { base, optional: false }))
            }
            ExprKind::Name(name) => {
                if let Some(p) = scope.params.iter().find(|p| p.name == *name) {
                    return Some((ir::Expr::Param(name.clone()), Ty::of(p.ty, p.optional)));
                }
                if let Some(f) = scope.fields.iter().find(|f| f.name == *name) {
                    return Some((ir::Expr::Field(name.clone()), Ty::of(f.ty, f.optional)));
                }
                let mut d = Diagnostic::new(
                    Code::UnknownName,
                    e.span,
                    format!("`{name}` is neither a parameter nor a field"),
                )
                .label("unknown name");
                let names = scope.params.iter().chain(scope.fields).map(|f| f.name.as_str());
                if let Some(close) = closest(name, names) {
                    d = d.help(format!("did you mean `{close}`?"));
                } else if name.starts_with(char::is_uppercase) {
                    d = d.help("strings are written in double quotes");
                }
                self.error(d);
                None
            }
            ExprKind::SelfField(name) => match scope.fields.iter().find(|f| f.name == *name) {
                Some(f) => Some((ir::Expr::Field(name.clone()), Ty::of(f.ty, f.optional))),
                None => {
                    let ident = ast::Ident { name: name.clone(), span: e.span };
                    self.unknown_field(&ident, scope.fields, "`self`");
                    None
                }
            },
            ExprKind::Now => Some((ir::Expr::Now, Ty::of(ir::Type::Timestamp, false))),
            ExprKind::Paren(inner) => self.expr(inner, scope),
            ExprKind::Not(inner) => {
                let (x, ty) = self.expr(inner, scope)?;
                if ty.base != TyBase::Known(ir::Type::Bool) {
                    self.mismatch(inner.span, "the operand of `not`", "bool", ty);
                    return None;
                }
                Some((ir::Expr::Not(Box::new(x)), ty))
            }
            ExprKind::Neg(inner) => {
                let (x, ty) = self.expr(inner, scope)?;
                if !ty.is_numeric() {
                    self.mismatch(inner.span, "the operand of `-`", "int or money", ty);
                    return None;
                }
                Some((ir::Expr::Neg(Box::new(x)), ty))
            }
            ExprKind::Binary(op, l, r) => {
                let lhs = self.expr(l, scope);
                let rhs = self.expr(r, scope);
                let ((lx, lt), (rx, rt)) = (lhs?, rhs?);
                let ty = self.binary_type(*op, e.span, l.span, lt, r.span, rt)?;
                Some((ir::Expr::Binary { op: *op, lhs: Box::new(lx), rhs: Box::new(rx) }, ty))
            }
        }
    }

    fn binary_type(&mut self, op: BinOp, at: Span, ls: Span, lt: Ty, rs: Span, rt: Ty) -> Option<Ty> {
        let optional = lt.optional || rt.optional;
        let bool_ty = Ty { base: TyBase::Known(ir::Type::Bool), optional };
        let sym = op.symbol();
        match op {
            BinOp::And | BinOp::Or => {
                let mut ok = true;
                for (span, ty) in [(ls, lt), (rs, rt)] {
                    if ty.base != TyBase::Known(ir::Type::Bool) {
                        self.mismatch(span, &format!("each side of `{sym}`"), "bool", ty);
                        ok = false;
                    }
                }
                ok.then_some(bool_ty)
            }
            BinOp::Cmp(CmpOp::Eq | CmpOp::Ne) => {
                let fits = match (lt.base, rt.base) {
                    (TyBase::Null, TyBase::Null) => false,
                    (TyBase::Null, _) => rt.optional,
                    (_, TyBase::Null) => lt.optional,
                    (a, b) => unify(a, b).is_some(),
                };
                if fits {
                    return Some(bool_ty);
                }
                let help = if lt.base == TyBase::Null || rt.base == TyBase::Null {
                    "only optional values (declared with `?`) can be null"
                } else {
                    "both sides of a comparison must have the same type"
                };
                self.error(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        at,
                        format!("cannot compare {} with {}", lt.describe(), rt.describe()),
                    )
                    .label(format!("{} {sym} {}", lt.describe(), rt.describe()))
                    .help(help),
                );
                None
            }
            BinOp::Cmp(_) => {
                let orderable = |b: TyBase| {
                    matches!(
                        b,
                        TyBase::Number
                            | TyBase::Known(
                                ir::Type::Int | ir::Type::Money | ir::Type::Text | ir::Type::Timestamp
                            )
                    )
                };
                match unify(lt.base, rt.base) {
                    Some(b) if orderable(b) => Some(bool_ty),
                    _ => {
                        self.error(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                at,
                                format!("cannot order {} against {}", lt.describe(), rt.describe()),
                            )
                            .label(format!("{} {sym} {}", lt.describe(), rt.describe()))
                            .help("`<`, `<=`, `>`, `>=` compare two numbers, two texts or two timestamps"),
                        );
                        None
                    }
                }
            }
            BinOp::Add | BinOp::Sub => match unify(lt.base, rt.base) {
                Some(b) if Ty { base: b, optional }.is_numeric() => Some(Ty { base: b, optional }),
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            at,
                            format!("cannot compute {} {sym} {}", lt.describe(), rt.describe()),
                        )
                        .label("incompatible operands")
                        .help("`+` and `-` take two ints or two money amounts"),
                    );
                    None
                }
            },
            BinOp::Mul => {
                use TyBase::*;
                use ir::Type::{Int, Money};
                let base = match (lt.base, rt.base) {
                    (Number, Number) => Some(Number),
                    (Number | Known(Int), b @ Known(Int | Money)) => Some(b),
                    (b @ Known(Int | Money), Number | Known(Int)) => Some(b),
                    _ => None,
                };
                match base {
                    Some(b) => Some(Ty { base: b, optional }),
                    None => {
                        self.error(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                at,
                                format!("cannot compute {} * {}", lt.describe(), rt.describe()),
                            )
                            .label("incompatible operands")
                            .help("`*` multiplies an int or a money amount by an int"),
                        );
                        None
                    }
                }
            }
        }
    }
}

fn lower_delta(op: ast::DeltaOp) -> ir::DeltaOp {
    match op {
        ast::DeltaOp::Add => ir::DeltaOp::Add,
        ast::DeltaOp::Sub => ir::DeltaOp::Sub,
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

/// The candidate closest to `name` by edit distance, if close enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: BTreeMap<usize, &'a str> = BTreeMap::new();
    for c in candidates {
        let d = crate::parse::edit_distance(name, c);
        if d <= limit {
            best.entry(d).or_insert(c);
        }
    }
    best.into_iter().next().map(|(_, c)| c)
}
