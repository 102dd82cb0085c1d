//! What a command decides without writing: its input read and checked against the
//! spec, its guards, a create's fields, and, after a conditional statement changed
//! nothing, which guard or check stopped it.

use crate::Rejection;
use crate::exec::Stop;
use crate::plan;
use crate::value::{self, Env, EvalError, Val};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::QueryResult;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

pub(crate) fn overflow(field: &str) -> impl Fn(EvalError) -> Stop + '_ {
    move |_| {
        Stop::Reject(Rejection::InvalidInput {
            field: field.to_string(),
            reason: "overflows 64 bits".to_string(),
        })
    }
}

pub(crate) fn wrong_state(m: &ir::Machine, state: String) -> Rejection {
    let allowed = m.events_from(&state).map(|e| e.name.clone()).collect();
    Rejection::WrongState { state, allowed }
}

pub(crate) fn reject_unknown(input: &Map<String, Json>, known: &[&ir::Field], of: &str) -> Result<(), Stop> {
    match input.keys().find(|k| !known.iter().any(|f| f.name == **k)) {
        Some(k) => {
            Err(Rejection::InvalidInput { field: k.clone(), reason: format!("is not a field of `{of}`") }
                .into())
        }
        None => Ok(()),
    }
}

/// What a create decides before it touches the database: its input read and checked, its
/// guards, and the fields it sets. Returns the new instance's fields and the parameters.
#[allow(clippy::type_complexity)]
pub(crate) fn prepare_create(
    m: &ir::Machine,
    input: &Map<String, Json>,
    now: DateTime<Utc>,
) -> Result<(BTreeMap<String, Val>, BTreeMap<String, Val>), Stop> {
    let create = &m.create;
    let known: Vec<&ir::Field> = m.fields.iter().chain(&create.params).collect();
    reject_unknown(input, &known, &m.name)?;
    let mut fields = read_values(&m.fields, input)?;
    let params = read_values(&create.params, input)?;
    let env = Env { fields: &fields, params: &params, now };
    guards(&create.body.guards, &env)?;
    let mut assigned = Vec::new();
    for s in &create.body.sets {
        let v = value::eval(&s.value, &env).map_err(overflow(&s.field))?;
        assigned.push((s.field.clone(), v));
    }
    for (field, v) in assigned {
        if let Some(f) = m.field(&field) {
            value::check(f, &v).map_err(|reason| Rejection::CheckFailed { field: field.clone(), reason })?;
        }
        fields.insert(field, v);
    }
    Ok((fields, params))
}

/// An event's parameters from a request's input: unknown names refused, each value read
/// and checked.
pub(crate) fn read_params(e: &ir::Event, input: &Map<String, Json>) -> Result<BTreeMap<String, Val>, Stop> {
    reject_unknown(input, &e.params.iter().collect::<Vec<_>>(), &e.name)?;
    read_values(&e.params, input)
}

/// Parameters as the journal and the outbox carry them.
pub(crate) fn params_json(params: &BTreeMap<String, Val>) -> Json {
    Json::Object(params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// The rejection of a value a transition sets that breaks its field's check.
pub(crate) fn set_check_failed(field: &str) -> Rejection {
    Rejection::CheckFailed { field: field.to_string(), reason: "the new value breaks its check".to_string() }
}

pub(crate) fn read_values(
    fields: &[ir::Field],
    input: &Map<String, Json>,
) -> Result<BTreeMap<String, Val>, Stop> {
    let mut out = BTreeMap::new();
    for f in fields {
        let v = value::from_json(f, input.get(&f.name))
            .map_err(|e| Rejection::InvalidInput { field: e.field, reason: e.reason })?;
        out.insert(f.name.clone(), v);
    }
    Ok(out)
}

pub(crate) fn guards(guards: &[ir::Guard], env: &Env<'_>) -> Result<(), Stop> {
    for g in guards {
        let v = value::eval(&g.expr, env).map_err(overflow(&g.name))?;
        if !value::holds(&v) {
            return Err(Rejection::GuardFailed { guard: g.name.clone(), condition: g.text.clone() }.into());
        }
    }
    Ok(())
}

/// The first false guard or check in an explain row (a NULL counts as false).
pub(crate) fn why(row: &QueryResult, explain: &plan::Explain) -> Option<Rejection> {
    let truth = |col: String| row.try_get::<Option<bool>>("", &col).ok().flatten().unwrap_or(false);
    for (i, (name, text)) in explain.guards.iter().enumerate() {
        if !truth(format!("ordo_guard_{i}")) {
            return Some(Rejection::GuardFailed { guard: name.clone(), condition: text.clone() });
        }
    }
    for (i, field) in explain.checks.iter().enumerate() {
        if !truth(format!("ordo_check_{i}")) {
            return Some(set_check_failed(field));
        }
    }
    None
}
