//! Values, input reading and expression evaluation, written from the language's meaning
//! (docs/language.md) and not from the store's code, so that the two can disagree.

use chrono::{DateTime, Utc};
use ordo_spec::ir::{self, BinOp, CmpOp, Expr, Type};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A value of one of the language's types, or null.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
}

impl Val {
    pub fn to_json(&self) -> Json {
        match self {
            Val::Null => Json::Null,
            Val::Int(i) => Json::from(*i),
            Val::Text(s) => Json::from(s.as_str()),
            Val::Bool(b) => Json::from(*b),
            Val::Time(t) => Json::from(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        }
    }

    /// How a resource key is named in rejections, journals and row ids.
    pub fn key_text(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Int(i) => i.to_string(),
            Val::Text(s) => s.clone(),
            Val::Bool(b) => b.to_string(),
            Val::Time(t) => t.to_rfc3339(),
        }
    }

    fn of(v: &ir::Value) -> Val {
        match v {
            ir::Value::Text(s) => Val::Text(s.clone()),
            ir::Value::Int(i) => Val::Int(*i),
            ir::Value::Bool(b) => Val::Bool(*b),
            ir::Value::Null => Val::Null,
        }
    }
}

/// A request value for a declared field or parameter: absent and null are the same; an
/// optional one may be either; a present one has the declared type and meets every check.
/// The error is the field's name (the reason's wording is the store's, not the meaning's).
pub fn read(f: &ir::Field, v: Option<&Json>) -> Result<Val, String> {
    let bad = || Err(f.name.clone());
    let v = match v {
        None | Some(Json::Null) => return if f.optional { Ok(Val::Null) } else { bad() },
        Some(v) => v,
    };
    let val = match (f.ty, v) {
        (Type::Int | Type::Money, Json::Number(n)) => match n.as_i64() {
            Some(i) if i.abs() <= ir::INT_INPUT_ABS_MAX => Val::Int(i),
            _ => return bad(),
        },
        (Type::Text, Json::String(s)) => Val::Text(s.clone()),
        (Type::Bool, Json::Bool(b)) => Val::Bool(*b),
        (Type::Timestamp, Json::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Val::Time(t.with_timezone(&Utc)),
            Err(_) => return bad(),
        },
        _ => return bad(),
    };
    if meets_checks(f, &val) { Ok(val) } else { bad() }
}

/// A field's checks hold for a value (null meets them, as a SQL CHECK does).
pub fn meets_checks(f: &ir::Field, v: &Val) -> bool {
    *v == Val::Null || f.checks.iter().all(|c| compare(c.op, v, &Val::of(&c.value)) == Some(true))
}

fn compare(op: CmpOp, a: &Val, b: &Val) -> Option<bool> {
    if *a == Val::Null || *b == Val::Null {
        return None;
    }
    let o = a.cmp(b);
    Some(match op {
        CmpOp::Eq => o.is_eq(),
        CmpOp::Ne => o.is_ne(),
        CmpOp::Lt => o.is_lt(),
        CmpOp::Le => o.is_le(),
        CmpOp::Gt => o.is_gt(),
        CmpOp::Ge => o.is_ge(),
    })
}

/// What names mean: the row's fields, the request's parameters, and the command's time.
pub struct Env<'a> {
    pub fields: &'a BTreeMap<String, Val>,
    pub params: &'a BTreeMap<String, Val>,
    pub now: DateTime<Utc>,
}

/// 64-bit overflow while evaluating.
#[derive(Debug)]
pub struct Overflow;

/// SQL's three-valued logic: arithmetic and comparison with null give null; `and`/`or`
/// are decided by a known side; `x == null` asks whether `x` is null.
pub fn eval(e: &Expr, env: &Env<'_>) -> Result<Val, Overflow> {
    Ok(match e {
        Expr::Value(v) => Val::of(v),
        Expr::Field(name) => env.fields.get(name).cloned().unwrap_or(Val::Null),
        Expr::Param(name) => env.params.get(name).cloned().unwrap_or(Val::Null),
        Expr::Now => Val::Time(env.now),
        Expr::Not(x) => match eval(x, env)? {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Expr::Neg(x) => match eval(x, env)? {
            Val::Int(i) => Val::Int(i.checked_neg().ok_or(Overflow)?),
            _ => Val::Null,
        },
        Expr::Binary { op, lhs, rhs } => {
            let is_null_literal = |e: &Expr| matches!(e, Expr::Value(ir::Value::Null));
            let (a, b) = (eval(lhs, env)?, eval(rhs, env)?);
            match op {
                BinOp::And => match (&a, &b) {
                    (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
                    (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                    _ => Val::Null,
                },
                BinOp::Or => match (&a, &b) {
                    (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
                    (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                    _ => Val::Null,
                },
                BinOp::Cmp(c) if is_null_literal(rhs) || is_null_literal(lhs) => {
                    let tested = if is_null_literal(rhs) { &a } else { &b };
                    let null = *tested == Val::Null;
                    Val::Bool(if *c == CmpOp::Eq { null } else { !null })
                }
                BinOp::Cmp(c) => compare(*c, &a, &b).map_or(Val::Null, Val::Bool),
                BinOp::Add | BinOp::Sub | BinOp::Mul => match (a, b) {
                    (Val::Int(x), Val::Int(y)) => Val::Int(
                        match op {
                            BinOp::Add => x.checked_add(y),
                            BinOp::Sub => x.checked_sub(y),
                            _ => x.checked_mul(y),
                        }
                        .ok_or(Overflow)?,
                    ),
                    _ => Val::Null,
                },
            }
        }
    })
}

/// The value a field of a resource row that did not exist starts from.
pub fn zero(f: &ir::Field) -> Val {
    match (f.optional, f.ty) {
        (true, _) => Val::Null,
        (false, Type::Int | Type::Money) => Val::Int(0),
        (false, Type::Text) => Val::Text(String::new()),
        (false, Type::Bool) => Val::Bool(false),
        (false, Type::Timestamp) => Val::Time(DateTime::<Utc>::UNIX_EPOCH),
    }
}
