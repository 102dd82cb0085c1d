//! The canonical printer behind `cargo xtask spec fmt`: four-space indents, one member per
//! line, single spaces around operators, at most one blank line where the author left
//! one, and every comment kept (a comment inside a line moves to the line above it).
//! Formatting its own output changes nothing, and the IR of the output equals the input's.

use crate::ast::*;
use crate::diag::Diagnostic;

/// Formats a spec; syntax errors are returned instead (semantic ones do not matter here).
pub fn format(source: &str) -> Result<String, Vec<Diagnostic>> {
    let spec = crate::parse::parse(source)?;
    Ok(print(source, &spec))
}

/// An expression in canonical syntax: `carrier != ""`. Guards are named by this text.
pub fn expr_text(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, e);
    out
}

fn print(source: &str, spec: &Spec) -> String {
    let mut p = Printer {
        src: source,
        comments: &spec.comments,
        next: 0,
        out: String::new(),
        indent: 0,
        last_end: None,
    };
    for item in &spec.items {
        // Items are always one blank line apart; the comments right above an item stay with it.
        if !p.out.is_empty() && !p.out.ends_with("\n\n") {
            p.out.push('\n');
        }
        p.leading(item.span().start);
        match item {
            Item::Resource(r) => p.resource(r),
            Item::Machine(m) => p.machine(m),
            Item::Invariant(i) => p.line(&invariant_text(i), i.span.start, i.span.end),
        }
        p.last_end = Some(item.span().end);
    }
    p.leading(usize::MAX);
    if p.out.is_empty() {
        return p.out;
    }
    while p.out.ends_with("\n\n") {
        p.out.pop();
    }
    p.out
}

struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    /// Index of the first comment not yet printed.
    next: usize,
    out: String,
    indent: usize,
    /// Source end of the last thing printed in the current block; `None` at a block's start.
    last_end: Option<usize>,
}

impl Printer<'_> {
    /// A blank line before something starting at `start`, if the author left one there.
    fn blank_line_before(&mut self, start: usize) {
        if let Some(end) = self.last_end {
            let gap = self.src.get(end..start.min(self.src.len())).unwrap_or("");
            if gap.matches('\n').count() >= 2 && !self.out.ends_with("\n\n") {
                self.out.push('\n');
            }
        }
    }

    /// Prints the comments that start before `pos`, each on its own line.
    fn leading(&mut self, pos: usize) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.span.start < pos) {
            self.next += 1;
            self.blank_line_before(c.span.start);
            let text = c.text.clone();
            self.push_indent();
            self.out.push_str(&text);
            self.out.push('\n');
            self.last_end = Some(c.span.end);
        }
    }

    fn push_indent(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str("    ");
        }
    }

    /// Prints one line for a member starting at `start`; a comment after `end` on the same
    /// source line stays at the end of it.
    fn line(&mut self, text: &str, start: usize, end: usize) {
        self.leading(start);
        self.blank_line_before(start);
        self.push_indent();
        self.out.push_str(text);
        if let Some(c) = self.comments.get(self.next)
            && c.span.start >= end
            && !self.src.get(end..c.span.start).unwrap_or("\n").contains('\n')
        {
            self.out.push(' ');
            self.out.push_str(&c.text);
            self.next += 1;
            self.last_end = Some(c.span.end);
        } else {
            self.last_end = Some(end);
        }
        self.out.push('\n');
    }

    /// Opens a block: `header {`, then the members, then `}`.
    fn block(
        &mut self,
        header: &str,
        start: usize,
        open_end: usize,
        close: Span,
        body: impl FnOnce(&mut Self),
    ) {
        self.line(&format!("{header} {{"), start, open_end);
        self.indent += 1;
        self.last_end = None;
        body(self);
        self.leading(close.start);
        self.indent -= 1;
        self.line("}", close.start, close.end);
    }

    fn resource(&mut self, r: &Resource) {
        let header = format!("resource {}{} key {}", r.name.name, was_text(&r.was), field_text(&r.key));
        let open = brace_after(self.src, r.key.span.end);
        let close = Span::new(r.span.end.saturating_sub(1), r.span.end);
        self.block(&header, r.span.start, open, close, |p| {
            for m in &r.members {
                match m {
                    ResourceMember::Field(f) => p.line(&field_text(f), f.span.start, f.span.end),
                    ResourceMember::Operation(op) => {
                        let header = format!("op {}{}", op.name.name, params_text(&op.params));
                        p.body(&header, op.span.start, &op.body);
                    }
                }
            }
        });
    }

    fn machine(&mut self, m: &Machine) {
        let header = format!("machine {}", m.name.name);
        let open = brace_after(self.src, m.name.span.end);
        let close = Span::new(m.span.end.saturating_sub(1), m.span.end);
        self.block(&header, m.span.start, open, close, |p| {
            for member in &m.members {
                match member {
                    MachineMember::Field(f) => p.line(&field_text(f), f.span.start, f.span.end),
                    MachineMember::States(s) => {
                        let names: Vec<String> = s
                            .names
                            .iter()
                            .zip(&s.was)
                            .map(|(n, w)| format!("{}{}", n.name, was_text(w)))
                            .collect();
                        p.line(
                            &format!("{} {}", s.kind.keyword(), names.join(", ")),
                            s.span.start,
                            s.span.end,
                        );
                    }
                    MachineMember::Create(c) => {
                        let header = format!("create {}{}", c.name.name, params_text(&c.params));
                        p.optional_body(&header, c.span, c.body.as_ref());
                    }
                    MachineMember::Event(e) => {
                        let sources: Vec<&str> = e.sources.iter().map(|n| n.name.as_str()).collect();
                        let header = format!(
                            "on {}{}{}: {} -> {}",
                            e.name.name,
                            was_text(&e.was),
                            params_text(&e.params),
                            sources.join(", "),
                            e.target.name
                        );
                        p.optional_body(&header, e.span, e.body.as_ref());
                    }
                    MachineMember::Timer(t) => p.line(
                        &format!("after {} in {}: {}", t.after.text, t.state.name, t.event.name),
                        t.span.start,
                        t.span.end,
                    ),
                    MachineMember::Removed(r) => p.line(
                        &format!("removed {} -> {}", r.state.name, r.into.name),
                        r.span.start,
                        r.span.end,
                    ),
                }
            }
        });
    }

    /// A create or event: an empty block is dropped, since it means the same as none.
    fn optional_body(&mut self, header: &str, span: Span, body: Option<&Block>) {
        match body {
            Some(b) if !b.stmts.is_empty() => self.body(header, span.start, b),
            _ => self.line(header, span.start, span.end.min(body.map_or(span.end, |b| b.span.start))),
        }
    }

    fn body(&mut self, header: &str, start: usize, b: &Block) {
        if b.stmts.is_empty() && self.comments.get(self.next).is_none_or(|c| c.span.start >= b.span.end) {
            self.line(&format!("{header} {{}}"), start, b.span.end);
            return;
        }
        let close = Span::new(b.span.end.saturating_sub(1), b.span.end);
        self.block(header, start, b.span.start + 1, close, |p| {
            for s in &b.stmts {
                p.line(&stmt_text(s), s.span().start, s.span().end);
            }
        });
    }
}

/// The byte after the first `{` at or after `from` (where a header's line ends).
fn brace_after(src: &str, from: usize) -> usize {
    src.get(from..).and_then(|rest| rest.find('{')).map_or(from, |i| from + i + 1)
}

/// ` was old`, or nothing.
fn was_text(was: &Option<Ident>) -> String {
    was.as_ref().map_or(String::new(), |w| format!(" was {}", w.name))
}

fn field_text(f: &FieldDecl) -> String {
    let mut s = format!("{}{}: {}", f.name.name, was_text(&f.was), f.ty.base.keyword());
    if f.ty.optional {
        s.push('?');
    }
    for (i, c) in f.checks.iter().enumerate() {
        s.push_str(if i == 0 { " check " } else { " and " });
        s.push_str(c.op.symbol());
        s.push(' ');
        write_literal(&mut s, &c.value);
    }
    if let Some(b) = &f.backfill {
        s.push_str(" backfill ");
        s.push_str(&expr_text(b));
    }
    s
}

fn params_text(params: &[FieldDecl]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let list: Vec<String> = params.iter().map(field_text).collect();
    format!("({})", list.join(", "))
}

fn stmt_text(s: &Stmt) -> String {
    match s {
        Stmt::Lock { mode, .. } => match mode {
            LockMode::Optimistic => "lock optimistic".to_string(),
            LockMode::Pessimistic => "lock pessimistic".to_string(),
            LockMode::PessimisticNowait => "lock pessimistic nowait".to_string(),
            LockMode::PessimisticSkipLocked => "lock pessimistic skip locked".to_string(),
        },
        Stmt::Isolation { level, .. } => match level {
            IsolationLevel::ReadCommitted => "isolation read committed".to_string(),
            IsolationLevel::RepeatableRead => "isolation repeatable read".to_string(),
            IsolationLevel::Serializable => "isolation serializable".to_string(),
        },
        Stmt::Require { label, expr, .. } => match label {
            Some(l) => format!("require {}: {}", l.name, expr_text(expr)),
            None => format!("require {}", expr_text(expr)),
        },
        Stmt::Set { field, value, .. } => format!("set {} = {}", field.name, expr_text(value)),
        Stmt::Effect { resource, key, field, op, amount, .. } => format!(
            "{}[{}].{} {} {}",
            resource.name,
            expr_text(key),
            field.name,
            op.symbol(),
            expr_text(amount)
        ),
        Stmt::Delta { field, op, amount, .. } => {
            format!("{} {} {}", field.name, op.symbol(), expr_text(amount))
        }
    }
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Literal(l) => write_literal(out, l),
        ExprKind::Name(n) => out.push_str(n),
        ExprKind::SelfField(n) => {
            out.push_str("self.");
            out.push_str(n);
        }
        ExprKind::Now => out.push_str("now"),
        ExprKind::Paren(inner) => {
            out.push('(');
            write_expr(out, inner);
            out.push(')');
        }
        ExprKind::Not(inner) => {
            out.push_str("not ");
            write_expr(out, inner);
        }
        ExprKind::Neg(inner) => {
            out.push('-');
            write_expr(out, inner);
        }
        ExprKind::Binary(op, l, r) => {
            write_expr(out, l);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_expr(out, r);
        }
    }
}

fn write_literal(out: &mut String, l: &Literal) {
    match &l.value {
        LiteralValue::Int { digits, negative } => {
            if *negative {
                out.push('-');
            }
            out.push_str(digits);
        }
        LiteralValue::Text(t) => {
            out.push('"');
            for c in t.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        LiteralValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        LiteralValue::Null => out.push_str("null"),
    }
}

/// `invariant name: sum(A.x) + count(B in s) == total(A.op.p)` on one line.
fn invariant_text(i: &Invariant) -> String {
    let side = |terms: &[InvTerm]| {
        let mut s = String::new();
        for (n, t) in terms.iter().enumerate() {
            if n > 0 {
                s.push_str(if t.negative { " - " } else { " + " });
            }
            let within = |states: &Option<Vec<Ident>>| match states {
                Some(states) => {
                    format!(" in {}", states.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "))
                }
                None => String::new(),
            };
            s.push_str(&match &t.kind {
                InvKind::Sum { owner, field, states } => {
                    format!("sum({}.{}{})", owner.name, field.name, within(states))
                }
                InvKind::Count { machine, states } => format!("count({}{})", machine.name, within(states)),
                InvKind::Total { owner, action, param } => {
                    format!("total({}.{}.{})", owner.name, action.name, param.name)
                }
                InvKind::Int(lit) => match &lit.value {
                    LiteralValue::Int { digits, .. } => digits.clone(),
                    _ => String::new(),
                },
            });
        }
        s
    };
    format!("invariant {}: {} {} {}", i.name.name, side(&i.lhs), i.op.symbol(), side(&i.rhs))
}
