//! Group commit's fast path, the rows it shares: the resource rows a batch's effects
//! touch, locked and read with one statement per table and tenant, changed in memory in
//! arrival order, and written with one statement per table; and the multi-row statements
//! every table of the batch is written with.

use super::Plan;
use crate::exec::{Executor, PlannedEffect, Stop};
use crate::plan::Many;
use crate::rows::Bind;
use crate::value::{self, Val};
use crate::{Rejection, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult, Statement};
use std::collections::{BTreeMap, HashMap};

/// Bound values per statement at most: under SQLite's limit (32,766) and PostgreSQL's
/// (65,535); a longer batch of rows goes in several statements.
const VALUES_PER_STATEMENT_MAX: usize = 30_000;

/// A resource row as the batch holds it: `(table, tenant, key)`, so that the rows' order
/// is the one lock order (table, then key, within a tenant) every transaction takes its
/// rows in.
pub(super) type RowId = (String, String, String);

fn row_id(e: &PlannedEffect<'_>, tenant: &str) -> RowId {
    (e.resource.table.clone(), tenant.to_string(), e.key_text.clone())
}

pub(super) struct Row<'s> {
    resource: &'s ir::Resource,
    key: Val,
    /// The effect fields' values, as the commands so far left them.
    values: BTreeMap<String, Val>,
    version: i64,
    /// The row did not exist: it starts from zeros (`ensure`) once an effect applies.
    absent: bool,
    /// The row did not exist and cannot start from zeros (a zero breaks a check): every
    /// effect on it is refused.
    refused: bool,
    changed: bool,
}

impl Executor {
    /// Locks every resource row the batch's effects touch, in the one lock order (one
    /// `SELECT ... WHERE key IN (...) ORDER BY key FOR UPDATE` per table and tenant), and
    /// reads its effect fields. `None`: an amount or a field is not a whole number.
    pub(super) async fn lock_rows<'s>(
        &self,
        txn: &DatabaseTransaction,
        plans: &[Plan<'s>],
    ) -> Result<Option<BTreeMap<RowId, Row<'s>>>, Stop> {
        // Per table and tenant: the resource and its keys (by their text, the lock order).
        type Keys<'a> = (&'a ir::Resource, BTreeMap<String, Val>);
        let mut wanted: BTreeMap<(&str, &str), Keys<'s>> = BTreeMap::new();
        for plan in plans {
            let Some((tenant, effects)) = plan.effects() else { continue };
            for e in effects {
                if !matches!(e.amount, Val::Int(_)) {
                    return Ok(None);
                }
                let (_, keys) =
                    wanted.entry((&e.resource.table, tenant)).or_insert((e.resource, BTreeMap::new()));
                keys.insert(e.key_text.clone(), e.key.clone());
            }
        }
        let mut rows = BTreeMap::new();
        for ((table, tenant), (r, keys)) in wanted {
            // The key's text, byte by byte: the order `Executor::plan_effects` gives a lone
            // command's effects.
            let order = format!("CAST({} AS TEXT) COLLATE \"C\"", crate::evolve::sql::ident(&r.key.name));
            let values = keys.values().map(|k| k.to_sql(r.key.ty));
            let locked =
                self.lock_in(table, &crate::plan::resource_columns(r), tenant, &r.key.name, values, &order);
            let mut found = HashMap::new();
            for row in txn.query_all_raw(locked).await? {
                found.insert(crate::rows::get_val(&row, &r.key.name, r.key.ty)?.to_key_text(), row);
            }
            for (key_text, key) in keys {
                let found = found.get(&key_text);
                let mut values = BTreeMap::new();
                for f in r.fields.iter().filter(|f| crate::plan::effect_field(f)) {
                    let v = match found {
                        Some(row) => crate::rows::get_val(row, &f.name, f.ty)?,
                        None => crate::plan::zero(f),
                    };
                    if !matches!(v, Val::Int(_)) {
                        return Ok(None);
                    }
                    values.insert(f.name.clone(), v);
                }
                let version = match found {
                    Some(row) => row.try_get("", "version")?,
                    None => 0,
                };
                let absent = found.is_none();
                let refused = absent && self.plans.resources[&r.name].ensure.is_none();
                rows.insert(
                    (table.to_string(), tenant.to_string(), key_text),
                    Row { resource: r, key, values, version, absent, refused, changed: false },
                );
            }
        }
        Ok(Some(rows))
    }

    /// `SELECT columns FROM table WHERE tenant = .. AND column IN (values)`, on PostgreSQL
    /// `ORDER BY order FOR UPDATE`: the rows are locked in the order they come (on SQLite
    /// the transaction is already exclusive).
    pub(super) fn lock_in(
        &self,
        table: &str,
        columns: &[String],
        tenant: &str,
        column: &str,
        values: impl IntoIterator<Item = sea_orm::Value>,
        order: &str,
    ) -> Statement {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, LockType, Order, Query};
        let mut q = Query::select();
        q.columns(columns.iter().map(Alias::new))
            .from(Alias::new(table))
            .and_where(Expr::col(Alias::new("tenant")).eq(tenant))
            .and_where(Expr::col(Alias::new(column)).is_in(values));
        if self.plans.backend == sea_orm::DbBackend::Postgres {
            q.order_by_expr(Expr::cust(order.to_string()), Order::Asc).lock(LockType::Update);
        }
        self.plans.backend.build(&q)
    }

    /// Stores each row the batch changed, one statement per table for them all; a missing
    /// one is created from zeros first.
    pub(super) async fn write_rows(
        &self,
        txn: &DatabaseTransaction,
        rows: &BTreeMap<RowId, Row<'_>>,
        now: DateTime<Utc>,
    ) -> Result<(), Stop> {
        let mut by_resource: BTreeMap<&str, Vec<Bind<'_>>> = BTreeMap::new();
        for ((_, tenant, _), row) in rows.iter().filter(|(_, row)| row.changed) {
            let plans = &self.plans.resources[&row.resource.name];
            let mut b = Bind { tenant, key: Some(&row.key), now: Some(now), ..Bind::default() };
            if row.absent {
                let ensure = plans.ensure.as_ref().ok_or_else(|| {
                    StoreError::Internal(format!(
                        "{}: an effect applied to a row that cannot start from zeros",
                        row.resource.name
                    ))
                })?;
                if txn.execute_raw(b.statement(self.plans.backend, ensure)).await?.rows_affected() != 1 {
                    // Another transaction created the row after this one looked: start over.
                    return Err(Stop::Retry);
                }
            }
            b.version = Some(row.version);
            b.fields = Some(&row.values);
            by_resource.entry(&row.resource.name).or_default().push(b);
        }
        for (resource, binds) in by_resource {
            let written = write_many(txn, &self.plans.resources[resource].write_many, &binds).await?;
            if written != binds.len() as u64 {
                return Err(StoreError::Internal(format!("{resource}: a locked row was not written")).into());
            }
        }
        Ok(())
    }
}

/// Applies one command's effects to the rows, all or nothing. `Err(Some)`: the rejection
/// the command gets (a field's check, or a missing row that cannot start from zeros);
/// `Err(None)`: a value out of range, which the general path decides.
pub(super) fn apply_effects(
    rows: &mut BTreeMap<RowId, Row<'_>>,
    tenant: &str,
    effects: &[PlannedEffect<'_>],
) -> Result<(), Option<Rejection>> {
    // Each effect's new value, on top of this command's earlier effects on the same field.
    let mut staged: Vec<(RowId, &str, i64)> = Vec::with_capacity(effects.len());
    for e in effects {
        let id = row_id(e, tenant);
        let row = rows.get(&id).ok_or(None)?;
        let field = row.resource.fields.iter().find(|f| f.name == e.effect.field).ok_or(None)?;
        let rejection = || {
            Some(Rejection::ResourceCheck {
                resource: e.effect.resource.clone(),
                key: e.key_text.clone(),
                field: e.effect.field.clone(),
            })
        };
        if row.refused {
            return Err(rejection());
        }
        let (Val::Int(amount), Some(Val::Int(stored))) = (&e.amount, row.values.get(&field.name)) else {
            return Err(None);
        };
        let current = staged
            .iter()
            .rev()
            .find(|(i, f, _)| *i == id && *f == field.name)
            .map_or(*stored, |(_, _, v)| *v);
        let new = match e.effect.op {
            ir::DeltaOp::Add => current.checked_add(*amount),
            ir::DeltaOp::Sub => current.checked_sub(*amount),
        }
        .ok_or(None)?;
        if value::check(field, &Val::Int(new)).is_err() {
            return Err(rejection());
        }
        staged.push((id, field.name.as_str(), new));
    }
    // All of them hold: each is one version of its row, as its own statement would be.
    for (id, field, v) in staged {
        if let Some(row) = rows.get_mut(&id) {
            row.values.insert(field.to_string(), Val::Int(v));
            row.version += 1;
            row.changed = true;
        }
    }
    Ok(())
}

/// A multi-row insert of `rows` (in statements of at most `VALUES_PER_STATEMENT_MAX`
/// values), returning what the statement returns, row after row.
pub(super) async fn insert_many(
    txn: &DatabaseTransaction,
    many: &Many,
    rows: &[Bind<'_>],
) -> Result<Vec<QueryResult>, Stop> {
    let mut out = Vec::new();
    for stmt in many_statements(many, rows) {
        out.extend(txn.query_all_raw(stmt).await?);
    }
    Ok(out)
}

/// A multi-row update of `rows`, chunked as `insert_many` is; the rows it changed.
async fn write_many(txn: &DatabaseTransaction, many: &Many, rows: &[Bind<'_>]) -> Result<u64, Stop> {
    let mut written = 0;
    for stmt in many_statements(many, rows) {
        written += txn.execute_raw(stmt).await?.rows_affected();
    }
    Ok(written)
}

/// `many`'s statements for `rows`, at most `VALUES_PER_STATEMENT_MAX` values each.
fn many_statements(many: &Many, rows: &[Bind<'_>]) -> Vec<Statement> {
    let per = (VALUES_PER_STATEMENT_MAX / many.slots.len().max(1)).max(1);
    rows.chunks(per)
        .map(|chunk| many.statement(chunk.iter().flat_map(|b| b.values_of(&many.slots)).collect()))
        .collect()
}
