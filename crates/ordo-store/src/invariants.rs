//! The spec's invariants over the database: each aggregate one `GROUP BY tenant` query
//! (a sum or count over a table, or a parameter summed over the journal), the sides
//! combined per tenant. The pressure audit and the server's periodic check use it; the
//! conformance suite checks the same invariants on the interpreter's world.

use crate::{Store, StoreError, schema};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::collections::BTreeMap;

/// One invariant over the tenants that have rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantCheck {
    pub name: String,
    pub text: String,
    /// Each tenant's two sides.
    pub tenants: Vec<Sides>,
}

impl InvariantCheck {
    /// The tenants for which it does not hold.
    pub fn broken(&self) -> impl Iterator<Item = &Sides> {
        self.tenants.iter().filter(|s| !s.holds)
    }
}

/// An invariant's two sides for one tenant, and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sides {
    pub tenant: String,
    pub lhs: i128,
    pub rhs: i128,
    pub holds: bool,
}

impl Store {
    /// Every invariant of the spec, over every tenant, all read from one snapshot (a
    /// read-only repeatable-read transaction), so commands committing meanwhile never show
    /// half their effects.
    pub async fn invariants(&self) -> Result<Vec<InvariantCheck>, StoreError> {
        use sea_orm::{AccessMode, IsolationLevel, TransactionTrait};
        let txn = self
            .exec
            .db
            .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
            .await?;
        let checks = evaluate(&txn, &self.exec.spec, None).await;
        txn.commit().await?;
        checks
    }
}

/// Every invariant of `spec` over the tenants of `conn` (only `tenant`, when named). Run it
/// in one transaction (as [`Store::invariants`] does) unless nothing writes meanwhile.
pub async fn evaluate<C: ConnectionTrait>(
    conn: &C,
    spec: &ir::Spec,
    tenant: Option<&str>,
) -> Result<Vec<InvariantCheck>, StoreError> {
    let backend = conn.get_database_backend();
    let mut out = Vec::new();
    for inv in &spec.invariants {
        let mut sides: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for (terms, left) in [(&inv.lhs, true), (&inv.rhs, false)] {
            for t in terms {
                let sign = if t.negative { -1 } else { 1 };
                let per_tenant = match &t.value {
                    ir::Aggregate::Const(_) => BTreeMap::new(),
                    value => aggregate(conn, backend, spec, value, tenant).await?,
                };
                for (who, v) in per_tenant {
                    let side = sides.entry(who).or_default();
                    if left {
                        side.0 += sign * v;
                    } else {
                        side.1 += sign * v;
                    }
                }
            }
        }
        if let Some(t) = tenant {
            sides.entry(t.to_string()).or_default();
        }
        let constant = |terms: &[ir::Term]| -> i128 {
            terms
                .iter()
                .map(|t| match t.value {
                    ir::Aggregate::Const(c) => {
                        if t.negative {
                            -i128::from(c)
                        } else {
                            i128::from(c)
                        }
                    }
                    _ => 0,
                })
                .sum()
        };
        let (cl, cr) = (constant(&inv.lhs), constant(&inv.rhs));
        let tenants = sides
            .iter()
            .map(|(who, (l, r))| {
                let (lhs, rhs) = (l + cl, r + cr);
                Sides { tenant: who.clone(), lhs, rhs, holds: inv.holds(lhs, rhs) }
            })
            .collect();
        out.push(InvariantCheck { name: inv.name.clone(), text: inv.text.clone(), tenants });
    }
    Ok(out)
}

/// One aggregate, per tenant.
async fn aggregate<C: ConnectionTrait>(
    conn: &C,
    backend: DbBackend,
    spec: &ir::Spec,
    value: &ir::Aggregate,
    tenant: Option<&str>,
) -> Result<BTreeMap<String, i128>, StoreError> {
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let mut bind = |v: String| {
        values.push(v.into());
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_string(),
        }
    };
    let table_of = |name: &str| {
        spec.machine(name)
            .map(|m| m.table.clone())
            .or_else(|| spec.resource(name).map(|r| r.table.clone()))
            .ok_or_else(|| StoreError::Internal(format!("invariant names `{name}`, which the spec lacks")))
    };
    let (select, from, mut conds) = match value {
        ir::Aggregate::Sum { owner, field, states } => {
            let mut conds = Vec::new();
            if !states.is_empty() {
                let list: Vec<String> = states.iter().map(|s| bind(s.clone())).collect();
                conds.push(format!("state IN ({})", list.join(", ")));
            }
            (format!("SUM(\"{field}\")"), format!("\"{}\"", table_of(owner)?), conds)
        }
        ir::Aggregate::Count { machine, states } => {
            let mut conds = Vec::new();
            if !states.is_empty() {
                let list: Vec<String> = states.iter().map(|s| bind(s.clone())).collect();
                conds.push(format!("state IN ({})", list.join(", ")));
            }
            ("COUNT(*)".to_string(), format!("\"{}\"", table_of(machine)?), conds)
        }
        ir::Aggregate::Total { owner, action, param } => {
            let extract = match backend {
                DbBackend::Postgres => format!("CAST(CAST(params AS jsonb) ->> '{param}' AS BIGINT)"),
                _ => format!("CAST(json_extract(params, '$.{param}') AS INTEGER)"),
            };
            let conds = vec![
                format!("machine = {}", bind(owner.clone())),
                format!("event = {}", bind(action.clone())),
            ];
            (format!("SUM({extract})"), format!("\"{}\"", schema::JOURNAL), conds)
        }
        ir::Aggregate::Const(_) => return Ok(BTreeMap::new()),
    };
    if let Some(t) = tenant {
        conds.push(format!("tenant = {}", bind(t.to_string())));
    }
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    let sql = format!(
        "SELECT tenant, CAST(COALESCE({select}, 0) AS TEXT) AS total FROM {from}{filter} GROUP BY tenant"
    );
    let rows = conn.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let who: String = r.try_get("", "tenant")?;
        let total: String = r.try_get("", "total")?;
        let v = total.parse::<i128>().map_err(|_| {
            StoreError::Internal(format!("an invariant's sum is not a whole number: {total}"))
        })?;
        out.insert(who, v);
    }
    Ok(out)
}
