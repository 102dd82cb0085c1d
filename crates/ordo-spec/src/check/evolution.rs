//! The evolution clauses: `was` (renames), `backfill` (values for rows that existed before a
//! field) and `removed` (where instances of a state that is gone go). The checker validates
//! what one file can tell; what needs the deployed spec (a `was` naming something it never
//! had) is the migration planner's (`ordo_spec::diff`).

use super::{BodyKind, Checker, Scope};
use crate::ast::{self, ExprKind, Span};
use crate::diag::{Code, Diagnostic};
use crate::ir::{self, CmpOp};
use std::collections::HashMap;

/// One renameable thing of a kind: its name, its `was`, and where it is declared.
pub(super) struct Named<'a> {
    pub name: &'a ast::Ident,
    pub was: Option<&'a ast::Ident>,
}

impl Checker {
    /// `was` clauses among things of one kind (`what`: "field", "state", ...): a rename from
    /// the thing's own name, from a name still declared, or two renames from one name.
    pub(super) fn renames(&mut self, what: &str, items: &[Named<'_>]) {
        let mut claimed: HashMap<&str, Span> = HashMap::new();
        for item in items {
            let Some(was) = item.was else { continue };
            if was.name == item.name.name {
                self.error(
                    Diagnostic::new(
                        Code::RenameConflict,
                        was.span,
                        format!("{what} `{}` is renamed from its own name", was.name),
                    )
                    .label("same name")
                    .help("remove the `was` clause"),
                );
                continue;
            }
            if let Some(other) = items.iter().find(|i| i.name.name == was.name) {
                self.error(
                    Diagnostic::new(
                        Code::RenameConflict,
                        was.span,
                        format!(
                            "{what} `{}` is renamed from `{}`, which the spec still declares",
                            item.name.name, was.name
                        ),
                    )
                    .label("still declared")
                    .related(other.name.span, "declared here")
                    .help(format!(
                        "a rename takes the old name away: rename or remove the other `{}`",
                        was.name
                    )),
                );
                continue;
            }
            if let Some(first) = claimed.get(was.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::RenameConflict,
                        was.span,
                        format!("two {what}s are renamed from `{}`", was.name),
                    )
                    .label("second rename")
                    .related(*first, "first rename")
                    .help("one old name becomes one new name"),
                );
                continue;
            }
            claimed.insert(&was.name, was.span);
        }
    }

    pub(super) fn field_renames(&mut self, decls: &[&ast::FieldDecl]) {
        let named: Vec<Named<'_>> =
            decls.iter().map(|f| Named { name: &f.name, was: f.was.as_ref() }).collect();
        self.renames("field", &named);
    }

    /// An event's `was`, given on any of its declarations; two different ones conflict.
    pub(super) fn event_was(&mut self, name: &str, decls: &[&ast::EventDecl]) -> Option<String> {
        let mut was = decls.iter().filter_map(|d| d.was.as_ref());
        let first = was.next()?;
        if let Some(other) = was.find(|w| w.name != first.name) {
            self.error(
                Diagnostic::new(
                    Code::RenameConflict,
                    other.span,
                    format!("event `{name}` is renamed from both `{}` and `{}`", first.name, other.name),
                )
                .label("second old name")
                .related(first.span, "first old name")
                .help("an event was called one thing; say it on one declaration"),
            );
        }
        Some(first.name.clone())
    }

    /// `was` and `backfill` mean something only on a machine's or resource's own fields.
    pub(super) fn no_evolution(&mut self, f: &ast::FieldDecl, what: &str) {
        let misplaced =
            f.was.as_ref().map(|w| (w.span, "was")).or(f.backfill.as_ref().map(|b| (b.span, "backfill")));
        if let Some((span, clause)) = misplaced {
            self.error(
                Diagnostic::new(Code::MisplacedEvolution, span, format!("a {what} cannot have `{clause}`"))
                    .label("not here")
                    .help("`was` and `backfill` go on the fields of a machine or a resource, which live in tables"),
            );
        }
    }

    /// Lowers the `backfill` of each field of a row: an expression of the field's type over
    /// the row's other fields; a constant must satisfy the field's checks.
    pub(super) fn backfills(&mut self, decls: &[&ast::FieldDecl], row: &mut [ir::Field]) {
        for decl in decls {
            let Some(expr) = &decl.backfill else { continue };
            let Some(at) = row.iter().position(|f| f.name == decl.name.name) else { continue };
            if let Some(span) = reads(expr, &decl.name.name) {
                self.error(
                    Diagnostic::new(
                        Code::BackfillSelf,
                        span,
                        format!("the backfill of `{}` reads `{}` itself", decl.name.name, decl.name.name),
                    )
                    .label("the field being filled")
                    .help("rows that existed before the field have no value of it to read"),
                );
                continue;
            }
            let others: Vec<ir::Field> =
                row.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, f)| f.clone()).collect();
            let scope = Scope { kind: BodyKind::Create, params: &[], fields: &others, key: None };
            let Some((lowered, ty)) = self.expr(expr, &scope) else { continue };
            if !self.assignable(expr.span, &row[at], ty) {
                continue;
            }
            if let ir::Expr::Value(v) = &lowered
                && let Some(c) = row[at].checks.iter().find(|c| !holds(c, v))
            {
                self.error(
                    Diagnostic::new(
                        Code::BackfillBreaksCheck,
                        expr.span,
                        format!(
                            "`{}` would be backfilled with a value its check refuses ({} {})",
                            decl.name.name,
                            c.op.symbol(),
                            c.value
                        ),
                    )
                    .label("breaks the check")
                    .help("backfill a value the check accepts, or an expression over the row"),
                );
                continue;
            }
            row[at].backfill = Some(lowered);
        }
    }

    /// `removed old -> new`: `old` is no longer declared (nor renamed, nor removed twice),
    /// and `new` is a state of the machine.
    pub(super) fn removed_states(
        &mut self,
        decls: &[&ast::RemovedDecl],
        states: &[(ir::State, Span)],
    ) -> Vec<ir::Removed> {
        let mut out: Vec<ir::Removed> = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for r in decls {
            let declared = states.iter().find(|(s, _)| s.name == r.state.name).map(|(_, span)| *span);
            let renamed =
                states.iter().find(|(s, _)| s.was.as_deref() == Some(&r.state.name)).map(|(_, span)| *span);
            if let Some(span) = declared.or(renamed) {
                let how = if declared.is_some() { "still declared" } else { "renamed" };
                self.error(
                    Diagnostic::new(
                        Code::RemovedStateDeclared,
                        r.state.span,
                        format!("state `{}` is removed, but the spec has it {how}", r.state.name),
                    )
                    .label("removed here")
                    .related(span, how)
                    .help("a state is either kept (or renamed with `was`) or removed, not both"),
                );
                continue;
            }
            if let Some(first) = seen.get(r.state.name.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::RemovedStateDeclared,
                        r.state.span,
                        format!("state `{}` is removed twice", r.state.name),
                    )
                    .label("second `removed`")
                    .related(*first, "first `removed`")
                    .help("its instances go to one state"),
                );
                continue;
            }
            seen.insert(&r.state.name, r.state.span);
            if !states.iter().any(|(s, _)| s.name == r.into.name) {
                self.unknown_state(&r.into, states);
                continue;
            }
            out.push(ir::Removed { state: r.state.name.clone(), into: r.into.name.clone() });
        }
        out
    }
}

/// Where `expr` reads the field `name` (by bare name or `self.name`), if it does.
fn reads(expr: &ast::Expr, name: &str) -> Option<Span> {
    match &expr.kind {
        ExprKind::Name(n) | ExprKind::SelfField(n) if n == name => Some(expr.span),
        ExprKind::Paren(e) | ExprKind::Not(e) | ExprKind::Neg(e) => reads(e, name),
        ExprKind::Binary(_, l, r) => reads(l, name).or_else(|| reads(r, name)),
        _ => None,
    }
}

/// A check on a constant; null passes, as checks apply to present values.
fn holds(c: &ir::Check, v: &ir::Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (v, &c.value) {
        (ir::Value::Null, _) => return true,
        (ir::Value::Int(a), ir::Value::Int(b)) => a.cmp(b),
        (ir::Value::Text(a), ir::Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
        (ir::Value::Bool(a), ir::Value::Bool(b)) => a.cmp(b),
        // Types were checked; a mismatch here cannot be judged, so it is not refused.
        _ => return true,
    };
    match c.op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}
