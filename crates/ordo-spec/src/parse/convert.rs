//! pest's pairs to the syntax tree: one conversion per node, spans trimmed to where the
//! code ends, missing parts (after a recovered error) replaced by placeholders.

use super::expr::build_expr;
use super::{EXPR_DEPTH_MAX, Rule};
use crate::ast::*;
use crate::diag::{Code, Diagnostic};
use pest::iterators::Pair;

/// The pair's span without the whitespace and comments pest lets a rule swallow at its
/// end (before an optional part that is not there), so spans end where the code does.
pub(super) fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    let (start, mut end) = (s.start(), s.end());
    let input = pair.get_input();
    loop {
        end = start + input[start..end].trim_end().len();
        // Strings never span lines, and spans never start inside one, so the span's last
        // line alone tells whether it ends in a comment. (Looking no further back than
        // `start` keeps this linear on very long lines.)
        let line_start = input[start..end].rfind('\n').map_or(start, |i| start + i + 1);
        match comment_start(&input[line_start..end]) {
            Some(at) => end = line_start + at,
            None => break,
        }
    }
    Span::new(start, end)
}

/// Where a `//` comment starts in one line of code, if it has one outside a string.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The children that carry meaning: comments, keywords and punctuation are skipped.
pub(super) fn children<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| {
        !matches!(
            p.as_rule(),
            Rule::COMMENT
                | Rule::kw_resource
                | Rule::kw_machine
                | Rule::kw_key
                | Rule::kw_check
                | Rule::kw_op
                | Rule::kw_initial
                | Rule::kw_state
                | Rule::kw_final
                | Rule::kw_create
                | Rule::kw_on
                | Rule::kw_require
                | Rule::kw_set
                | Rule::kw_after
                | Rule::kw_in
                | Rule::kw_and
                | Rule::kw_or
                | Rule::kw_self
                | Rule::kw_lock
                | Rule::kw_isolation
                | Rule::kw_was
                | Rule::kw_backfill
                | Rule::kw_removed
                | Rule::kw_invariant
                | Rule::kw_sum
                | Rule::kw_count
                | Rule::kw_total
                | Rule::open_brace
                | Rule::close_brace
                | Rule::open_paren
                | Rule::close_paren
                | Rule::open_bracket
                | Rule::close_bracket
                | Rule::colon
                | Rule::comma
                | Rule::arrow
                | Rule::assign
                | Rule::dot
        )
    })
}

/// The old name of a `was old` clause.
fn was_name(pair: Pair<'_, Rule>) -> Option<Ident> {
    children(pair).next().map(ident)
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: span_of(&pair) }
}

#[derive(Default)]
pub(super) struct Converter {
    pub errors: Vec<Diagnostic>,
    /// Whether to collect the comments (for the formatter).
    pub comments: bool,
}

impl Converter {
    pub(super) fn spec(&mut self, pair: Pair<'_, Rule>) -> Spec {
        let comments = if !self.comments {
            Vec::new()
        } else {
            pair.clone()
                .into_inner()
                .flatten()
                .filter(|p| p.as_rule() == Rule::COMMENT)
                .map(|p| Comment { text: p.as_str().trim_end().to_string(), span: span_of(&p) })
                .collect()
        };
        let mut items = Vec::new();
        for p in children(pair) {
            match p.as_rule() {
                Rule::resource => items.push(Item::Resource(self.resource(p))),
                Rule::machine => items.push(Item::Machine(self.machine(p))),
                Rule::invariant => items.push(Item::Invariant(invariant(p))),
                _ => {}
            }
        }
        Spec { items, comments }
    }

    fn resource(&mut self, pair: Pair<'_, Rule>) -> Resource {
        let span = span_of(&pair);
        let mut it = children(pair);
        let name = it.next().map(ident).unwrap_or_else(|| missing(span));
        let mut it = it.peekable();
        let was = it.next_if(|p| p.as_rule() == Rule::was).and_then(was_name);
        let key = it.next().map(|p| self.field(p)).unwrap_or_else(|| missing_field(span));
        let members = it
            .map(|p| match p.as_rule() {
                Rule::operation => ResourceMember::Operation(self.operation(p)),
                _ => ResourceMember::Field(self.field(p)),
            })
            .collect();
        Resource { name, was, key, members, span }
    }

    fn operation(&mut self, pair: Pair<'_, Rule>) -> Operation {
        let span = span_of(&pair);
        let mut name = missing(span);
        let mut params = Vec::new();
        let mut body = Block { stmts: Vec::new(), span };
        for p in children(pair) {
            match p.as_rule() {
                Rule::op_name => name = ident(p),
                Rule::params => params = self.params(p),
                Rule::block => body = self.block(p),
                _ => {}
            }
        }
        Operation { name, params, body, span }
    }

    fn machine(&mut self, pair: Pair<'_, Rule>) -> Machine {
        let span = span_of(&pair);
        let mut it = children(pair);
        let name = it.next().map(ident).unwrap_or_else(|| missing(span));
        let members = it.filter_map(|p| self.machine_member(p)).collect();
        Machine { name, members, span }
    }

    fn machine_member(&mut self, pair: Pair<'_, Rule>) -> Option<MachineMember> {
        let span = span_of(&pair);
        Some(match pair.as_rule() {
            Rule::field => MachineMember::Field(self.field(pair)),
            Rule::initial_decl | Rule::state_decl | Rule::final_decl => {
                let kind = match pair.as_rule() {
                    Rule::initial_decl => StateKind::Initial,
                    Rule::final_decl => StateKind::Final,
                    _ => StateKind::Normal,
                };
                let (mut names, mut was) = (Vec::new(), Vec::new());
                for def in children(pair).flat_map(children) {
                    let mut parts = children(def);
                    let Some(name) = parts.next() else { continue };
                    names.push(ident(name));
                    was.push(parts.next().and_then(was_name));
                }
                MachineMember::States(StateDecl { kind, names, was, span })
            }
            Rule::create_decl => {
                let mut name = missing(span);
                let mut params = Vec::new();
                let mut body = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::event_name => name = ident(p),
                        Rule::params => params = self.params(p),
                        Rule::block => body = Some(self.block(p)),
                        _ => {}
                    }
                }
                MachineMember::Create(CreateDecl { name, params, body, span })
            }
            Rule::event_decl => {
                let mut name = missing(span);
                let mut was = None;
                let mut params = Vec::new();
                let mut sources = Vec::new();
                let mut target = missing(span);
                let mut body = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::event_name => name = ident(p),
                        Rule::was => was = was_name(p),
                        Rule::params => params = self.params(p),
                        Rule::state_list => sources = children(p).map(ident).collect(),
                        Rule::state_name => target = ident(p),
                        Rule::block => body = Some(self.block(p)),
                        _ => {}
                    }
                }
                MachineMember::Event(EventDecl { name, was, params, sources, target, body, span })
            }
            Rule::timer_decl => {
                let mut it = children(pair);
                let after = it.next().map(duration)?;
                let state = it.next().map(ident)?;
                let event = it.next().map(ident)?;
                MachineMember::Timer(TimerDecl { after, state, event, span })
            }
            Rule::removed_decl => {
                let mut it = children(pair);
                let state = it.next().map(ident)?;
                let into = it.next().map(ident)?;
                MachineMember::Removed(RemovedDecl { state, into, span })
            }
            _ => return None,
        })
    }

    fn params(&mut self, pair: Pair<'_, Rule>) -> Vec<FieldDecl> {
        children(pair).map(|p| self.field(p)).collect()
    }

    /// A field, a parameter or a resource key: `name: type check ...`.
    fn field(&mut self, pair: Pair<'_, Rule>) -> FieldDecl {
        let span = span_of(&pair);
        let mut name = missing(span);
        let mut ty = TypeRef { base: BaseType::Int, optional: false, span };
        let mut checks = Vec::new();
        let mut was = None;
        let mut backfill = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::field_name | Rule::param_name => name = ident(p),
                Rule::was => was = was_name(p),
                Rule::backfill => backfill = children(p).next().and_then(|e| self.expr(e)).map(Box::new),
                Rule::type_ref => ty = type_ref(p),
                Rule::check => {
                    checks = children(p).map(check_cond).collect();
                }
                _ => {}
            }
        }
        FieldDecl { name, was, ty, checks, backfill, span }
    }

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = span_of(&pair);
        let stmts = children(pair).filter_map(|p| self.stmt(p)).collect();
        Block { stmts, span }
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Option<Stmt> {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut it = children(pair);
        Some(match rule {
            Rule::lock_stmt => {
                let first = it.next()?.as_rule();
                let wait = it.next().map(|p| p.as_rule());
                let mode = match (first, wait) {
                    (Rule::optimistic, _) => LockMode::Optimistic,
                    (_, Some(Rule::nowait)) => LockMode::PessimisticNowait,
                    (_, Some(Rule::skip_locked)) => LockMode::PessimisticSkipLocked,
                    _ => LockMode::Pessimistic,
                };
                Stmt::Lock { mode, span }
            }
            Rule::isolation_stmt => {
                let text = it.next()?.as_str().to_string();
                let level = if text.starts_with("read") {
                    IsolationLevel::ReadCommitted
                } else if text.starts_with("repeatable") {
                    IsolationLevel::RepeatableRead
                } else {
                    IsolationLevel::Serializable
                };
                Stmt::Isolation { level, span }
            }
            Rule::require_stmt => {
                let mut label = None;
                let mut expr = None;
                for p in it {
                    match p.as_rule() {
                        Rule::guard_label => label = Some(ident(p)),
                        _ => expr = self.expr(p),
                    }
                }
                Stmt::Require { label, expr: expr?, span }
            }
            Rule::set_stmt => {
                let field = ident(it.next()?);
                let value = self.expr(it.next()?)?;
                Stmt::Set { field, value, span }
            }
            Rule::effect_stmt => {
                let resource = ident(it.next()?);
                let key = self.expr(it.next()?);
                let field = ident(it.next()?);
                let op = delta_op(it.next()?);
                let amount = self.expr(it.next()?);
                Stmt::Effect { resource, key: key?, field, op, amount: amount?, span }
            }
            Rule::delta_stmt => {
                let field = ident(it.next()?);
                let op = delta_op(it.next()?);
                let amount = self.expr(it.next()?)?;
                Stmt::Delta { field, op, amount, span }
            }
            _ => return None,
        })
    }

    /// Converts an `expr` pair; `None` (with a diagnostic) when the tree is too deep.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Option<Expr> {
        match build_expr(pair) {
            Ok((e, _)) => Some(e),
            Err(at) => {
                self.errors.push(
                    Diagnostic::new(
                        Code::TooDeep,
                        at,
                        format!("this expression nests deeper than {EXPR_DEPTH_MAX} levels"),
                    )
                    .label("too deep")
                    .help("split the condition over several `require` lines"),
                );
                None
            }
        }
    }
}

pub(super) fn missing(span: Span) -> Ident {
    Ident { name: String::new(), span }
}

fn missing_field(span: Span) -> FieldDecl {
    FieldDecl {
        name: missing(span),
        was: None,
        backfill: None,
        ty: TypeRef { base: BaseType::Text, optional: false, span },
        checks: Vec::new(),
        span,
    }
}

pub(super) fn type_ref(pair: Pair<'_, Rule>) -> TypeRef {
    let span = span_of(&pair);
    let text = pair.as_str();
    let optional = text.ends_with('?');
    let base = match text.trim_end_matches('?') {
        "text" => BaseType::Text,
        "money" => BaseType::Money,
        "bool" => BaseType::Bool,
        "timestamp" => BaseType::Timestamp,
        _ => BaseType::Int,
    };
    TypeRef { base, optional, span }
}

pub(super) fn check_cond(pair: Pair<'_, Rule>) -> CheckCond {
    let span = span_of(&pair);
    let mut op = CmpOp::Eq;
    let mut negative = false;
    let mut value = Literal { value: LiteralValue::Null, span };
    for p in children(pair) {
        match p.as_rule() {
            Rule::cmp_op => op = cmp_op(p.as_str()),
            Rule::neg => negative = true,
            _ => value = literal(p, negative),
        }
    }
    CheckCond { op, value, span }
}

pub(super) fn delta_op(pair: Pair<'_, Rule>) -> DeltaOp {
    if pair.as_str() == "+=" { DeltaOp::Add } else { DeltaOp::Sub }
}

fn invariant(pair: Pair<'_, Rule>) -> Invariant {
    let span = span_of(&pair);
    let mut it = children(pair);
    let name = it.next().map(ident).unwrap_or_else(|| missing(span));
    let mut sides = Vec::new();
    let mut op = CmpOp::Eq;
    for p in it {
        match p.as_rule() {
            Rule::cmp_op => op = cmp_op(p.as_str()),
            _ => sides.push(inv_side(p)),
        }
    }
    let rhs = sides.pop().unwrap_or_default();
    let lhs = sides.pop().unwrap_or_default();
    Invariant { name, lhs, op, rhs, span }
}

fn inv_side(pair: Pair<'_, Rule>) -> Vec<InvTerm> {
    let mut terms = Vec::new();
    let mut negative = false;
    for p in children(pair) {
        let span = span_of(&p);
        let kind = match p.as_rule() {
            Rule::add_op => {
                negative = p.as_str() == "-";
                continue;
            }
            Rule::inv_sum => {
                let mut it = children(p);
                let owner = it.next().map(ident).unwrap_or_else(|| missing(span));
                let field = it.next().map(ident).unwrap_or_else(|| missing(span));
                InvKind::Sum { owner, field, states: it.next().map(inv_states) }
            }
            Rule::inv_count => {
                let mut it = children(p);
                let machine = it.next().map(ident).unwrap_or_else(|| missing(span));
                InvKind::Count { machine, states: it.next().map(inv_states) }
            }
            Rule::inv_total => {
                let mut it = children(p);
                let owner = it.next().map(ident).unwrap_or_else(|| missing(span));
                let action = it.next().map(ident).unwrap_or_else(|| missing(span));
                let param = it.next().map(ident).unwrap_or_else(|| missing(span));
                InvKind::Total { owner, action, param }
            }
            _ => InvKind::Int(literal(p, false)),
        };
        terms.push(InvTerm { negative, kind, span });
        negative = false;
    }
    terms
}

/// The states of `in a, b`.
fn inv_states(pair: Pair<'_, Rule>) -> Vec<Ident> {
    children(pair).flat_map(children).map(ident).collect()
}

pub(super) fn cmp_op(s: &str) -> CmpOp {
    match s {
        "==" => CmpOp::Eq,
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        _ => CmpOp::Ge,
    }
}

pub(super) fn literal(pair: Pair<'_, Rule>, negative: bool) -> Literal {
    let span = span_of(&pair);
    let value = match pair.as_rule() {
        Rule::int_lit => LiteralValue::Int { digits: pair.as_str().to_string(), negative },
        Rule::string_lit => {
            LiteralValue::Text(unescape(pair.as_str().trim_start_matches('"').trim_end_matches('"')))
        }
        Rule::bool_lit => LiteralValue::Bool(pair.as_str() == "true"),
        _ => LiteralValue::Null,
    };
    Literal { value, span }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn duration(pair: Pair<'_, Rule>) -> Duration {
    let span = span_of(&pair);
    let text = pair.as_str().to_string();
    let mut millis: Option<u64> = Some(0);
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        let n = number.parse::<u64>().ok();
        millis = millis.zip(n).and_then(|(acc, n)| n.checked_mul(unit).and_then(|v| acc.checked_add(v)));
        number.clear();
    }
    Duration { text, millis, span }
}
