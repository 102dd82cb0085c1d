//! Types: what the checker knows of an expression's type and how two types unify; the
//! lowering and typing of literals, names and operators, and whether a value may be stored
//! in a field.

use super::{Checker, Scope, closest};
use crate::ast::{self, BaseType, BinOp, CmpOp, ExprKind, LiteralValue, Span};
use crate::diag::{Code, Diagnostic};
use crate::ir;

/// An expression's type as the checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ty {
    pub base: TyBase,
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TyBase {
    Known(ir::Type),
    /// An integer literal: fits int and money alike.
    Number,
    /// The `null` literal: fits any optional type.
    Null,
}

impl Ty {
    pub(super) fn of(ty: ir::Type, optional: bool) -> Ty {
        Ty { base: TyBase::Known(ty), optional }
    }

    pub(super) fn describe(self) -> String {
        let base = match self.base {
            TyBase::Known(t) => type_word(t).to_string(),
            TyBase::Number => "a number".to_string(),
            TyBase::Null => return "null".to_string(),
        };
        if self.optional { format!("{base}?") } else { base }
    }

    pub(super) fn is_numeric(self) -> bool {
        matches!(self.base, TyBase::Number | TyBase::Known(ir::Type::Int | ir::Type::Money))
    }
}

pub(super) fn type_word(t: ir::Type) -> &'static str {
    match t {
        ir::Type::Text => "text",
        ir::Type::Int => "int",
        ir::Type::Money => "money",
        ir::Type::Bool => "bool",
        ir::Type::Timestamp => "timestamp",
    }
}

pub(super) fn lower_type(b: BaseType) -> ir::Type {
    match b {
        BaseType::Text => ir::Type::Text,
        BaseType::Int => ir::Type::Int,
        BaseType::Money => ir::Type::Money,
        BaseType::Bool => ir::Type::Bool,
        BaseType::Timestamp => ir::Type::Timestamp,
    }
}

/// The common base of two types, if they are compatible (`Number` adapts to int and money).
pub(super) fn unify(a: TyBase, b: TyBase) -> Option<TyBase> {
    use TyBase::*;
    match (a, b) {
        (x, y) if x == y => Some(x),
        (Number, Known(t @ (ir::Type::Int | ir::Type::Money)))
        | (Known(t @ (ir::Type::Int | ir::Type::Money)), Number) => Some(Known(t)),
        _ => None,
    }
}

impl Checker {
    pub(super) fn literal_value(&mut self, lit: &ast::Literal) -> Option<ir::Value> {
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

    /// Checks that a value of type `ty` may be stored in `target`.
    pub(super) fn assignable(&mut self, at: Span, target: &ir::Field, ty: Ty) -> bool {
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

    pub(super) fn mismatch(&mut self, at: Span, what: &str, want: &str, got: Ty) {
        self.error(
            Diagnostic::new(
                Code::TypeMismatch,
                at,
                format!("{what} must be {want}, but this is {}", got.describe()),
            )
            .label(format!("this is {}", got.describe())),
        );
    }

    /// Lowers and types an expression; `None` after reporting when it does not check.
    /// Depth is bounded by `parse::EXPR_DEPTH_MAX`, so the recursion is too.
    pub(super) fn expr(&mut self, e: &ast::Expr, scope: &Scope<'_>) -> Option<(ir::Expr, Ty)> {
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
                    d = d.did_you_mean(close);
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

    pub(super) fn binary_type(
        &mut self,
        op: BinOp,
        at: Span,
        ls: Span,
        lt: Ty,
        rs: Span,
        rt: Ty,
    ) -> Option<Ty> {
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
