//! Bodies: the statements of a create, transition or operation (`lock`, `isolation`,
//! `require`, `set`, effects on resources and an operation's own deltas), each checked
//! against what the body may name and change.

use super::types::{Ty, TyBase, type_word, unify};
use super::{BodyKind, Checker, Scope, closest};
use crate::ast::{self, Span, Stmt};
use crate::diag::{Code, Diagnostic};
use crate::ir;
use std::collections::HashMap;

impl Checker {
    pub(super) fn body(&mut self, block: Option<&ast::Block>, scope: &Scope<'_>) -> ir::Body {
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
                    if let Some(delta) = self.own_delta(field, *op, amount, *span, scope, &mut assigned) {
                        body.deltas.push(delta);
                    }
                }
            }
        }
        body
    }

    /// `field += amount` in a resource operation: the operation's own row changes.
    fn own_delta(
        &mut self,
        field: &ast::Ident,
        op: ast::DeltaOp,
        amount: &ast::Expr,
        span: Span,
        scope: &Scope<'_>,
        assigned: &mut HashMap<String, Span>,
    ) -> Option<ir::Delta> {
        if scope.kind != BodyKind::Operation {
            self.error(
                    Diagnostic::new(
                        Code::MisplacedStatement,
                        span,
                        format!("`{} {} ...` belongs in a resource operation", field.name, op.symbol()),
                    )
                    .label("not in a resource operation")
                    .help(format!(
                        "in a machine, name the row: `Resource[key].{} {} ...`; to change a field of this machine use `set`",
                        field.name,
                        op.symbol()
                    )),
                );
            return None;
        }
        if scope.key == Some(field.name.as_str()) {
            self.key_immutable(field);
            return None;
        }
        let Some(target) = scope.fields.iter().find(|f| f.name == field.name) else {
            self.unknown_field(field, scope.fields, "this resource");
            return None;
        };
        self.assign_once(assigned, field, span);
        let amount = self.amount(target, field, amount, scope)?;
        Some(ir::Delta { field: field.name.clone(), op: lower_delta(op), amount })
    }

    pub(super) fn once(&mut self, seen: &mut Option<Span>, span: Span, what: &str) -> bool {
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

    pub(super) fn assign_once(
        &mut self,
        assigned: &mut HashMap<String, Span>,
        field: &ast::Ident,
        span: Span,
    ) {
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

    pub(super) fn key_immutable(&mut self, field: &ast::Ident) {
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

    pub(super) fn unknown_field(&mut self, field: &ast::Ident, fields: &[ir::Field], whose: &str) {
        let mut d =
            Diagnostic::new(Code::UnknownField, field.span, format!("{whose} has no field `{}`", field.name))
                .label("unknown field");
        if let Some(close) = closest(&field.name, fields.iter().map(|f| f.name.as_str())) {
            d = d.did_you_mean(close);
        }
        self.error(d);
    }

    /// A numeric change (`+=`/`-=`) of `target` by `amount`.
    pub(super) fn amount(
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

    pub(super) fn effect(
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
                Some(close) => d.did_you_mean(close),
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
}

pub(super) fn lower_delta(op: ast::DeltaOp) -> ir::DeltaOp {
    match op {
        ast::DeltaOp::Add => ir::DeltaOp::Add,
        ast::DeltaOp::Sub => ir::DeltaOp::Sub,
    }
}
