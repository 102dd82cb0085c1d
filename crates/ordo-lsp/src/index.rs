//! Every name in a parsed spec, resolved: what it declares or refers to, and where.
//!
//! Built from the syntax tree with the language's own scoping (a bare name in a body is a
//! parameter of that declaration if one is in scope, else a field of its machine or
//! resource). Names the checker reports as unknown are left out: they refer to nothing.

use ordo_spec::ast::{self, ExprKind, Span};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Machine,
    Resource,
    State,
    /// An event, or a machine's `create` (both are commands of a machine).
    Event,
    Field,
    Param,
    Operation,
    Invariant,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Machine => "machine",
            Kind::Resource => "resource",
            Kind::State => "state",
            Kind::Event => "event",
            Kind::Field => "field",
            Kind::Param => "parameter",
            Kind::Operation => "operation",
            Kind::Invariant => "invariant",
        }
    }
}

/// One declared thing: its declarations (an event is declared once per transition) and
/// every place that names it.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub kind: Kind,
    pub name: String,
    /// The machine or resource it belongs to; for a parameter, `Owner.command`.
    pub owner: Option<String>,
    /// Name spans of the declarations.
    pub decls: Vec<Span>,
    /// Spans of whole declarations, parallel to `decls` (what hover shows).
    pub decl_items: Vec<Span>,
    pub refs: Vec<Span>,
}

/// Where a name stands in the text and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub span: Span,
    pub symbol: usize,
    pub decl: bool,
}

#[derive(Debug, Default)]
pub struct Index {
    pub symbols: Vec<Symbol>,
    /// Sorted by start.
    pub occurrences: Vec<Occurrence>,
    by_key: HashMap<(Kind, String, String), usize>,
}

impl Index {
    pub fn build(spec: &ast::Spec) -> Index {
        let mut ix = Index::default();
        for item in &spec.items {
            ix.declare_item(item);
        }
        for item in &spec.items {
            ix.resolve_item(item);
        }
        ix.occurrences.sort_by_key(|o| (o.span.start, o.span.end));
        ix
    }

    /// The name under byte `offset` (a cursor just after a name still counts).
    pub fn at(&self, offset: usize) -> Option<Occurrence> {
        let i = self.occurrences.partition_point(|o| o.span.start <= offset);
        self.occurrences[..i].iter().rev().take(2).find(|o| offset <= o.span.end).copied()
    }

    pub fn find(&self, kind: Kind, owner: &str, name: &str) -> Option<usize> {
        self.by_key.get(&(kind, owner.to_string(), name.to_string())).copied()
    }

    /// The symbols of `kind` under `owner`, in declaration order.
    pub fn of(&self, kind: Kind, owner: Option<&str>) -> impl Iterator<Item = &Symbol> {
        self.symbols.iter().filter(move |s| s.kind == kind && s.owner.as_deref() == owner)
    }

    fn declare(&mut self, kind: Kind, owner: Option<&str>, name: &ast::Ident, item: Span) -> usize {
        let key = (kind, owner.unwrap_or_default().to_string(), name.name.clone());
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                self.symbols.push(Symbol {
                    kind,
                    name: name.name.clone(),
                    owner: owner.map(str::to_string),
                    decls: Vec::new(),
                    decl_items: Vec::new(),
                    refs: Vec::new(),
                });
                self.by_key.insert(key, self.symbols.len() - 1);
                self.symbols.len() - 1
            }
        };
        self.symbols[id].decls.push(name.span);
        self.symbols[id].decl_items.push(item);
        self.occurrences.push(Occurrence { span: name.span, symbol: id, decl: true });
        id
    }

    fn refer(&mut self, kind: Kind, owner: &str, name: &str, span: Span) {
        if let Some(id) = self.find(kind, owner, name) {
            self.symbols[id].refs.push(span);
            self.occurrences.push(Occurrence { span, symbol: id, decl: false });
        }
    }

    fn declare_item(&mut self, item: &ast::Item) {
        match item {
            ast::Item::Resource(r) => {
                let owner = r.name.name.as_str();
                self.declare(Kind::Resource, None, &r.name, r.span);
                self.declare(Kind::Field, Some(owner), &r.key.name, r.key.span);
                for m in &r.members {
                    match m {
                        ast::ResourceMember::Field(f) => {
                            self.declare(Kind::Field, Some(owner), &f.name, f.span);
                        }
                        ast::ResourceMember::Operation(o) => {
                            self.declare(Kind::Operation, Some(owner), &o.name, o.span);
                            self.declare_params(owner, &o.name.name, &o.params);
                        }
                    }
                }
            }
            ast::Item::Machine(m) => {
                let owner = m.name.name.as_str();
                self.declare(Kind::Machine, None, &m.name, m.span);
                for member in &m.members {
                    match member {
                        ast::MachineMember::Field(f) => {
                            self.declare(Kind::Field, Some(owner), &f.name, f.span);
                        }
                        ast::MachineMember::States(s) => {
                            for n in &s.names {
                                self.declare(Kind::State, Some(owner), n, s.span);
                            }
                        }
                        ast::MachineMember::Create(c) => {
                            self.declare(Kind::Event, Some(owner), &c.name, c.span);
                            self.declare_params(owner, &c.name.name, &c.params);
                        }
                        ast::MachineMember::Event(e) => {
                            self.declare(Kind::Event, Some(owner), &e.name, e.span);
                            self.declare_params(owner, &e.name.name, &e.params);
                        }
                        ast::MachineMember::Timer(_) | ast::MachineMember::Removed(_) => {}
                    }
                }
            }
            ast::Item::Invariant(i) => {
                self.declare(Kind::Invariant, None, &i.name, i.span);
            }
        }
    }

    /// Parameters are scoped to their command; an event declared for several transitions
    /// repeats its list, and each repetition declares the same parameters.
    fn declare_params(&mut self, owner: &str, command: &str, params: &[ast::FieldDecl]) {
        let scope = format!("{owner}.{command}");
        for p in params {
            self.declare(Kind::Param, Some(&scope), &p.name, p.span);
        }
    }

    fn resolve_item(&mut self, item: &ast::Item) {
        match item {
            ast::Item::Resource(r) => {
                let owner = r.name.name.as_str();
                self.backfills(owner, std::iter::once(&r.key));
                for m in &r.members {
                    match m {
                        ast::ResourceMember::Field(f) => self.backfills(owner, std::iter::once(f)),
                        ast::ResourceMember::Operation(o) => {
                            let scope = format!("{owner}.{}", o.name.name);
                            self.block(owner, &scope, &o.params, Some(&o.body), true);
                        }
                    }
                }
            }
            ast::Item::Machine(m) => {
                let owner = m.name.name.as_str();
                for member in &m.members {
                    match member {
                        ast::MachineMember::Field(f) => self.backfills(owner, std::iter::once(f)),
                        ast::MachineMember::States(_) => {}
                        ast::MachineMember::Create(c) => {
                            let scope = format!("{owner}.{}", c.name.name);
                            self.block(owner, &scope, &c.params, c.body.as_ref(), false);
                        }
                        ast::MachineMember::Event(e) => {
                            for s in e.sources.iter().chain([&e.target]) {
                                self.refer(Kind::State, owner, &s.name, s.span);
                            }
                            let scope = format!("{owner}.{}", e.name.name);
                            self.block(owner, &scope, &e.params, e.body.as_ref(), false);
                        }
                        ast::MachineMember::Timer(t) => {
                            self.refer(Kind::State, owner, &t.state.name, t.state.span);
                            self.refer(Kind::Event, owner, &t.event.name, t.event.span);
                        }
                        ast::MachineMember::Removed(r) => {
                            self.refer(Kind::State, owner, &r.into.name, r.into.span);
                        }
                    }
                }
            }
            ast::Item::Invariant(i) => {
                for t in i.lhs.iter().chain(&i.rhs) {
                    self.invariant_term(t);
                }
            }
        }
    }

    fn invariant_term(&mut self, t: &ast::InvTerm) {
        let owner_ref = |ix: &mut Index, owner: &ast::Ident| {
            let kind = if ix.find(Kind::Machine, "", &owner.name).is_some() {
                Kind::Machine
            } else {
                Kind::Resource
            };
            ix.refer(kind, "", &owner.name, owner.span);
        };
        match &t.kind {
            ast::InvKind::Sum { owner, field, states } => {
                owner_ref(self, owner);
                self.refer(Kind::Field, &owner.name, &field.name, field.span);
                for s in states.iter().flatten() {
                    self.refer(Kind::State, &owner.name, &s.name, s.span);
                }
            }
            ast::InvKind::Count { machine, states } => {
                self.refer(Kind::Machine, "", &machine.name, machine.span);
                for s in states.iter().flatten() {
                    self.refer(Kind::State, &machine.name, &s.name, s.span);
                }
            }
            ast::InvKind::Total { owner, action, param } => {
                owner_ref(self, owner);
                self.refer(Kind::Event, &owner.name, &action.name, action.span);
                self.refer(Kind::Operation, &owner.name, &action.name, action.span);
                let scope = format!("{}.{}", owner.name, action.name);
                self.refer(Kind::Param, &scope, &param.name, param.span);
            }
            ast::InvKind::Int(_) => {}
        }
    }

    /// A `backfill` reads the row's own fields.
    fn backfills<'a>(&mut self, owner: &str, fields: impl Iterator<Item = &'a ast::FieldDecl>) {
        for f in fields {
            if let Some(e) = &f.backfill {
                self.expr(owner, "", &[], e);
            }
        }
    }

    /// A command's body: `resource_op` when it is a resource's operation (a bare `field -=`
    /// changes the resource's own field).
    fn block(
        &mut self,
        owner: &str,
        scope: &str,
        params: &[ast::FieldDecl],
        body: Option<&ast::Block>,
        resource_op: bool,
    ) {
        for p in params {
            if let Some(e) = &p.backfill {
                self.expr(owner, scope, params, e);
            }
        }
        let Some(body) = body else { return };
        for stmt in &body.stmts {
            match stmt {
                ast::Stmt::Lock { .. } | ast::Stmt::Isolation { .. } => {}
                ast::Stmt::Require { expr, .. } => self.expr(owner, scope, params, expr),
                ast::Stmt::Set { field, value, .. } => {
                    self.refer(Kind::Field, owner, &field.name, field.span);
                    self.expr(owner, scope, params, value);
                }
                ast::Stmt::Effect { resource, key, field, amount, .. } => {
                    self.refer(Kind::Resource, "", &resource.name, resource.span);
                    self.expr(owner, scope, params, key);
                    self.refer(Kind::Field, &resource.name, &field.name, field.span);
                    self.expr(owner, scope, params, amount);
                }
                ast::Stmt::Delta { field, amount, .. } => {
                    if resource_op {
                        self.refer(Kind::Field, owner, &field.name, field.span);
                    }
                    self.expr(owner, scope, params, amount);
                }
            }
        }
    }

    fn expr(&mut self, owner: &str, scope: &str, params: &[ast::FieldDecl], e: &ast::Expr) {
        match &e.kind {
            ExprKind::Name(name) => {
                if params.iter().any(|p| p.name.name == *name) {
                    self.refer(Kind::Param, scope, name, e.span);
                } else {
                    self.refer(Kind::Field, owner, name, e.span);
                }
            }
            ExprKind::SelfField(name) => {
                let span = Span::new(e.span.end - name.len(), e.span.end);
                self.refer(Kind::Field, owner, name, span);
            }
            ExprKind::Paren(inner) | ExprKind::Not(inner) | ExprKind::Neg(inner) => {
                self.expr(owner, scope, params, inner)
            }
            ExprKind::Binary(_, a, b) => {
                self.expr(owner, scope, params, a);
                self.expr(owner, scope, params, b);
            }
            ExprKind::Literal(_) | ExprKind::Now => {}
        }
    }
}
