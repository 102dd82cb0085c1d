//! The plans of one resource: its read, the batch's write of many rows, the row made
//! from zeros, the effects (`field += amount` under the field's checks) and operations.

use super::{
    Many, Names, OperationPlan, PlanError, ResourcePlan, Row, Slot, Slots, Source, a, body_conditions,
    explain_plan, resource_columns, returning, row_filter,
};
use crate::schema;
use crate::value::Val;
use ordo_spec::ir::{self, BinOp, Type};
use sea_orm::DbBackend;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use std::collections::BTreeMap;

/// The value a field of a new resource row starts from.
pub fn zero(f: &ir::Field) -> Val {
    if f.optional {
        return Val::Null;
    }
    match f.ty {
        Type::Int | Type::Money => Val::Int(0),
        Type::Text => Val::Text(String::new()),
        Type::Bool => Val::Bool(false),
        Type::Timestamp => Val::Time(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
    }
}

pub(super) fn resource_plan(r: &ir::Resource, backend: DbBackend) -> Result<ResourcePlan, PlanError> {
    let cols = resource_columns(r);
    let mut row: Vec<ir::Field> = vec![r.key.clone()];
    row.extend(r.fields.iter().cloned());
    let key_ty = r.key.ty;

    let row_of = Row { table: &r.table, key_col: &r.key.name, key_src: Source::Key, key_ty: key_ty.into() };
    let select = row_of.select(&cols, false, backend, &r.name)?;

    let mut written = vec![("tenant".to_string(), Slot::new(Source::Tenant, Type::Text))];
    written.push((r.key.name.clone(), Slot::new(Source::Key, key_ty)));
    for f in r.fields.iter().filter(|f| effect_field(f)) {
        written.push((f.name.clone(), Slot::new(Source::Value(f.name.clone()), f.ty)));
    }
    written.push(("version".to_string(), Slot::new(Source::Version, Type::Int)));
    written.push(("updated_at".to_string(), Slot::new(Source::Now, Type::Timestamp)));
    let write_many = Many::update(&r.table, &written, 2, &[], backend);

    let zero_is_valid = r.fields.iter().all(|f| crate::value::check(f, &zero(f)).is_ok());
    let ensure = if zero_is_valid {
        let mut slots = Slots::default();
        let mut values = vec![slots.value(Source::Tenant, Type::Text), slots.value(Source::Key, key_ty)];
        for f in &r.fields {
            values.push(slots.value(Source::Const(zero(f)), f.ty));
        }
        values.push(slots.value(Source::Const(Val::Int(0)), Type::Int));
        values.push(slots.value(Source::Now, Type::Timestamp));
        values.push(slots.value(Source::Now, Type::Timestamp));
        let mut all = vec![a("tenant")];
        all.extend(cols.iter().map(|c| a(c)));
        let q = Query::insert()
            .into_table(a(&r.table))
            .columns(all)
            .values(values.into_iter().map(Expr::val))
            .map_err(|e| PlanError { what: r.name.clone(), reason: e.to_string() })?
            .on_conflict(OnConflict::columns([a("tenant"), a(&r.key.name)]).do_nothing().to_owned())
            .to_owned();
        Some(slots.finish(backend, &q, &r.name)?)
    } else {
        None
    };

    let mut effects = BTreeMap::new();
    for f in r.fields.iter().filter(|f| effect_field(f)) {
        for op in [ir::DeltaOp::Add, ir::DeltaOp::Sub] {
            let mut slots = Slots::default();
            let new_value = |slots: &mut Slots| {
                let amount = slots.bind(Source::Value("amount".to_string()), f.ty);
                match op {
                    ir::DeltaOp::Add => Expr::col(a(&f.name)).add(amount),
                    ir::DeltaOp::Sub => Expr::col(a(&f.name)).sub(amount),
                }
            };
            let mut q = Query::update();
            q.table(a(&r.table))
                .value(a(&f.name), new_value(&mut slots))
                .value(
                    a("version"),
                    Expr::col(a("version")).add(slots.bind(Source::Const(Val::Int(1)), Type::Int)),
                )
                .value(a("updated_at"), slots.bind(Source::Now, Type::Timestamp));
            let mut cond = row_filter(&mut slots, &r.key.name, Source::Key, key_ty);
            let checked = new_value(&mut slots);
            let ty = f.ty;
            if let Some(c) = schema::check_expr(checked, &f.checks, &mut |c| {
                slots.bind(Source::Const(Val::from_ir(c)), ty)
            }) {
                cond = cond.and(c);
            }
            q.cond_where(cond).returning(returning(&["version".to_string()]));
            effects
                .insert((f.name.clone(), op), slots.finish(backend, &q, &format!("{}.{}", r.name, f.name))?);
        }
    }

    let mut operations = BTreeMap::new();
    for op in &r.operations {
        operations.insert(op.name.clone(), operation_plan(r, op, &row, &cols, backend)?);
    }
    Ok(ResourcePlan { select, write_many, ensure, effects, operations })
}

/// Whether effects (`Resource[key].field += amount`) may change a field: whole numbers
/// that are never null.
pub fn effect_field(f: &ir::Field) -> bool {
    matches!(f.ty, Type::Int | Type::Money) && !f.optional
}

fn operation_plan(
    r: &ir::Resource,
    op: &ir::Operation,
    row: &[ir::Field],
    cols: &[String],
    backend: DbBackend,
) -> Result<OperationPlan, PlanError> {
    let names = Names { fields: row, params: &op.params };
    let what = format!("{}.{}", r.name, op.name);
    // Deltas are sets of `field ± amount`, so they share the checks of the new values.
    let mut sets: Vec<(String, ir::Expr)> =
        op.body.sets.iter().map(|s| (s.field.clone(), s.value.clone())).collect();
    for d in &op.body.deltas {
        let op = match d.op {
            ir::DeltaOp::Add => BinOp::Add,
            ir::DeltaOp::Sub => BinOp::Sub,
        };
        let value = ir::Expr::Binary {
            op,
            lhs: Box::new(ir::Expr::Field(d.field.clone())),
            rhs: Box::new(d.amount.clone()),
        };
        sets.push((d.field.clone(), value));
    }

    let mut slots = Slots::default();
    let mut q = Query::update();
    q.table(a(&r.table));
    for (field, value) in &sets {
        q.value(a(field), names.expr(value, names.field_ty(field), &mut slots));
    }
    q.value(a("version"), Expr::col(a("version")).add(slots.bind(Source::Const(Val::Int(1)), Type::Int)))
        .value(a("updated_at"), slots.bind(Source::Now, Type::Timestamp));
    let row = Row { table: &r.table, key_col: &r.key.name, key_src: Source::Key, key_ty: r.key.ty.into() };
    let mut cond = row.filter(&mut slots);
    for c in body_conditions(&names, &op.body.guards, &sets, &mut slots) {
        cond = cond.and(c);
    }
    q.cond_where(cond).returning(returning(cols));
    let update = slots.finish(backend, &q, &what)?;
    let explain = explain_plan(&names, &row, &["version"], &op.body.guards, &sets, backend, &what)?;
    Ok(OperationPlan { update, explain })
}
