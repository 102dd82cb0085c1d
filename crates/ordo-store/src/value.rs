//! Runtime values: typed conversion from request JSON, evaluation of IR expressions over
//! known values (create bodies, effect keys and amounts), and binding to SQL.

use chrono::{DateTime, Utc};
use ordo_spec::ir::{self, BinOp, CmpOp, Expr, Type};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A value of one of the language's types, or null.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
}

impl Val {
    /// The SQL value to bind, typed by `ty` so that a NULL carries the column's type.
    pub fn to_sql(&self, ty: Type) -> sea_orm::Value {
        use sea_orm::Value as V;
        match (self, ty) {
            (Val::Int(i), _) => V::BigInt(Some(*i)),
            (Val::Text(s), _) => V::String(Some(s.clone())),
            (Val::Bool(b), _) => V::Bool(Some(*b)),
            (Val::Time(t), _) => V::ChronoDateTimeUtc(Some(*t)),
            (Val::Null, Type::Int | Type::Money) => V::BigInt(None),
            (Val::Null, Type::Text) => V::String(None),
            (Val::Null, Type::Bool) => V::Bool(None),
            (Val::Null, Type::Timestamp) => V::ChronoDateTimeUtc(None),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Val::Null => Json::Null,
            Val::Int(i) => Json::from(*i),
            Val::Text(s) => Json::from(s.clone()),
            Val::Bool(b) => Json::from(*b),
            Val::Time(t) => Json::from(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        }
    }

    /// The value as text, as it appears in keys and journal entries.
    pub fn to_key_text(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Int(i) => i.to_string(),
            Val::Text(s) => s.clone(),
            Val::Bool(b) => b.to_string(),
            Val::Time(t) => t.to_rfc3339(),
        }
    }

    pub fn from_ir(v: &ir::Value) -> Val {
        match v {
            ir::Value::Text(s) => Val::Text(s.clone()),
            ir::Value::Int(i) => Val::Int(*i),
            ir::Value::Bool(b) => Val::Bool(*b),
            ir::Value::Null => Val::Null,
        }
    }
}

/// Why a request value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    pub field: String,
    pub reason: String,
}

/// Reads one declared field or parameter from a JSON object: type, presence, checks.
pub fn from_json(field: &ir::Field, input: Option<&Json>) -> Result<Val, InvalidValue> {
    let bad = |reason: String| InvalidValue { field: field.name.clone(), reason };
    let v = match input {
        None | Some(Json::Null) if field.optional => return Ok(Val::Null),
        None | Some(Json::Null) => return Err(bad("is required".to_string())),
        Some(v) => v,
    };
    let val = match (field.ty, v) {
        (Type::Int | Type::Money, Json::Number(n)) => match n.as_i64() {
            Some(i) if (-ir::INT_INPUT_ABS_MAX..=ir::INT_INPUT_ABS_MAX).contains(&i) => Val::Int(i),
            _ => {
                let max = ir::INT_INPUT_ABS_MAX;
                return Err(bad(format!("must be a whole number between -{max} and {max}")));
            }
        },
        (Type::Text, Json::String(s)) => Val::Text(s.clone()),
        (Type::Bool, Json::Bool(b)) => Val::Bool(*b),
        (Type::Timestamp, Json::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Val::Time(t.with_timezone(&Utc)),
            Err(_) => return Err(bad("must be an RFC 3339 timestamp".to_string())),
        },
        (ty, _) => return Err(bad(format!("must be {}", type_phrase(ty)))),
    };
    check(field, &val).map_err(bad)?;
    Ok(val)
}

fn type_phrase(ty: Type) -> &'static str {
    match ty {
        Type::Int => "an integer",
        Type::Money => "an integer amount of minor units",
        Type::Text => "a string",
        Type::Bool => "true or false",
        Type::Timestamp => "an RFC 3339 timestamp string",
    }
}

/// The field's `check`s on a value; null passes (checks apply to present values).
pub fn check(field: &ir::Field, v: &Val) -> Result<(), String> {
    if *v == Val::Null {
        return Ok(());
    }
    for c in &field.checks {
        let limit = Val::from_ir(&c.value);
        if !compare(c.op, v, &limit).unwrap_or(false) {
            return Err(format!("must be {} {}", c.op.symbol(), limit.to_json()));
        }
    }
    Ok(())
}

fn compare(op: CmpOp, a: &Val, b: &Val) -> Option<bool> {
    if *a == Val::Null || *b == Val::Null {
        return None;
    }
    let ord = a.cmp(b);
    Some(match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::Ne => ord.is_ne(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::Le => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::Ge => ord.is_ge(),
    })
}

/// What names mean while evaluating: the row's fields and the request's parameters.
pub struct Env<'a> {
    pub fields: &'a BTreeMap<String, Val>,
    pub params: &'a BTreeMap<String, Val>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    Overflow,
}

/// Evaluates a checked IR expression with SQL's null semantics: a comparison with null is
/// null, and null is false where a condition is needed. Depth is bounded by the checker.
pub fn eval(e: &Expr, env: &Env<'_>) -> Result<Val, EvalError> {
    Ok(match e {
        Expr::Value(v) => Val::from_ir(v),
        Expr::Field(f) => env.fields.get(f).cloned().unwrap_or(Val::Null),
        Expr::Param(p) => env.params.get(p).cloned().unwrap_or(Val::Null),
        Expr::Now => Val::Time(env.now),
        Expr::Not(x) => match eval(x, env)? {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        Expr::Neg(x) => match eval(x, env)? {
            Val::Int(i) => Val::Int(i.checked_neg().ok_or(EvalError::Overflow)?),
            _ => Val::Null,
        },
        Expr::Binary { op, lhs, rhs } => {
            let (a, b) = (eval(lhs, env)?, eval(rhs, env)?);
            match op {
                BinOp::And => match (a, b) {
                    (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
                    (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
                    _ => Val::Null,
                },
                BinOp::Or => match (a, b) {
                    (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
                    (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
                    _ => Val::Null,
                },
                BinOp::Cmp(c) => {
                    // `x == null` is `x IS NULL` (the checker allows it only for optionals).
                    let null_rhs = matches!(**rhs, Expr::Value(ir::Value::Null));
                    let null_lhs = matches!(**lhs, Expr::Value(ir::Value::Null));
                    if null_lhs || null_rhs {
                        // The side that is not the literal is the one tested.
                        let is_null = if null_rhs { a == Val::Null } else { b == Val::Null };
                        Val::Bool(if *c == CmpOp::Eq { is_null } else { !is_null })
                    } else {
                        compare(*c, &a, &b).map_or(Val::Null, Val::Bool)
                    }
                }
                BinOp::Add | BinOp::Sub | BinOp::Mul => match (a, b) {
                    (Val::Int(x), Val::Int(y)) => Val::Int(
                        match op {
                            BinOp::Add => x.checked_add(y),
                            BinOp::Sub => x.checked_sub(y),
                            _ => x.checked_mul(y),
                        }
                        .ok_or(EvalError::Overflow)?,
                    ),
                    _ => Val::Null,
                },
            }
        }
    })
}

/// A condition's truth: null counts as false, as in a SQL `WHERE`.
pub fn holds(v: &Val) -> bool {
    *v == Val::Bool(true)
}
