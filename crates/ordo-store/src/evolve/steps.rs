//! From the changes of a diff to the steps of a migration: the statements per backend, the
//! live rows each touches (counted against the deployed tables), and what the data refuses.
//!
//! Steps run in phases, so that each sees the tables as it needs them: new tables and
//! renames first, then the state column (instances move while both the old and the new
//! states are allowed), then columns and checks, then timers, then drops. PostgreSQL alters
//! tables in place (checks are added `NOT VALID`, then validated); SQLite rebuilds each
//! changed table from the new spec's DDL, copying the rows, inside the same transaction.

use super::SAMPLE_IDS_MAX;
use super::op::Op;

mod tables;
use super::sql::{self, ident, text};
use crate::{StoreError, schema};
use chrono::{DateTime, Utc};
use ordo_spec::diff::{self, ChangeKind as K, Diff, Owner, Problem};
use ordo_spec::ir::{self, Field};
use sea_orm::sea_query::{Alias, PostgresQueryBuilder, SqliteQueryBuilder, Table};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone)]
pub struct Step {
    pub change: diff::Change,
    /// The live rows (or pending timers) the change touches, counted when the plan was made.
    pub affected: Option<Affected>,
    pub ops: Vec<Op>,
    /// What the data does not allow.
    pub refusal: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affected {
    pub rows: u64,
    /// "live instances", "rows", "pending timers", ...
    pub what: String,
    pub sample: Vec<String>,
}

impl fmt::Display for Affected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "touches {} {}", self.rows, self.what)?;
        if !self.sample.is_empty() {
            write!(f, " (e.g. {})", self.sample.join(", "))?;
        }
        Ok(())
    }
}

/// Names in the deployed tables for names of the new spec.
#[derive(Default)]
struct OldNames {
    resources: BTreeMap<String, String>,
    /// (owner's new name, field's new name) -> the field's deployed name.
    fields: BTreeMap<(String, String), String>,
    /// (machine, state's new name) -> deployed name.
    states: BTreeMap<(String, String), String>,
    events: BTreeMap<(String, String), String>,
}

impl OldNames {
    fn of(d: &Diff) -> OldNames {
        let mut n = OldNames::default();
        for c in &d.changes {
            match &c.kind {
                K::RenameResource { from, to } => {
                    n.resources.insert(to.clone(), from.clone());
                }
                K::RenameField { owner, from, to } => {
                    n.fields.insert((owner.name().to_string(), to.clone()), from.clone());
                }
                K::RenameState { machine, from, to } => {
                    n.states.insert((machine.clone(), to.clone()), from.clone());
                }
                K::RenameEvent { machine, from, to } => {
                    n.events.insert((machine.clone(), to.clone()), from.clone());
                }
                _ => {}
            }
        }
        n
    }

    fn field(&self, owner: &str, field: &str) -> String {
        self.fields.get(&(owner.to_string(), field.to_string())).cloned().unwrap_or_else(|| field.to_string())
    }

    fn state(&self, machine: &str, state: &str) -> String {
        self.states
            .get(&(machine.to_string(), state.to_string()))
            .cloned()
            .unwrap_or_else(|| state.to_string())
    }

    fn event(&self, machine: &str, event: &str) -> String {
        self.events
            .get(&(machine.to_string(), event.to_string()))
            .cloned()
            .unwrap_or_else(|| event.to_string())
    }
}

/// A table of the new spec: its name now and in the deployed spec, its key column.
struct TableOf<'a> {
    new: String,
    old: String,
    /// The column that identifies a row in samples: `id`, or the resource's key.
    key: String,
    fields: &'a [Field],
    is_machine: bool,
}

fn table_of<'a>(
    new: &'a ir::Spec,
    deployed: &ir::Spec,
    names: &OldNames,
    owner: &Owner,
) -> Option<TableOf<'a>> {
    match owner {
        Owner::Machine(m) => {
            let x = new.machine(m)?;
            Some(TableOf {
                new: x.table.clone(),
                old: x.table.clone(),
                key: "id".into(),
                fields: &x.fields,
                is_machine: true,
            })
        }
        Owner::Resource(r) => {
            let x = new.resource(r)?;
            let old_name = names.resources.get(r).cloned().unwrap_or_else(|| r.clone());
            let old = deployed.resource(&old_name).map_or(x.table.clone(), |o| o.table.clone());
            Some(TableOf {
                new: x.table.clone(),
                old,
                key: x.key.name.clone(),
                fields: &x.fields,
                is_machine: false,
            })
        }
    }
}

fn owner_of(kind: &K) -> Option<Owner> {
    match kind {
        K::AddField { owner, .. }
        | K::DropField { owner, .. }
        | K::RenameField { owner, .. }
        | K::RequireField { owner, .. }
        | K::RelaxField { owner, .. }
        | K::Checks { owner, .. } => Some(owner.clone()),
        K::AddState { machine, .. } | K::RenameState { machine, .. } | K::RemoveState { machine, .. } => {
            Some(Owner::Machine(machine.clone()))
        }
        _ => None,
    }
}

/// When a change runs (see the module's doc).
fn phase(kind: &K, backend: DbBackend) -> u8 {
    let sqlite = backend != DbBackend::Postgres;
    match kind {
        K::AddMachine { .. } | K::AddResource { .. } | K::RenameResource { .. } => 0,
        K::RenameField { .. } if !sqlite => 1,
        K::RenameEvent { .. } => 1,
        K::AddState { .. } | K::RenameState { .. } | K::RemoveState { .. } => 2,
        K::RenameField { .. }
        | K::AddField { .. }
        | K::RequireField { .. }
        | K::RelaxField { .. }
        | K::Checks { .. } => 3,
        K::DropField { .. } if sqlite => 3,
        K::DropField { .. } | K::DropResource { .. } | K::DropMachine { .. } => 5,
        _ => 4,
    }
}

struct Ctx<'a, C> {
    db: &'a C,
    backend: DbBackend,
    deployed: &'a ir::Spec,
    new: &'a ir::Spec,
    names: OldNames,
    /// The migration's time as an SQL literal, for `now` in backfills.
    now: String,
}

/// The steps of a diff from `deployed` to `new`, counted against the deployed tables.
pub(super) async fn steps<C: ConnectionTrait>(
    db: &C,
    deployed: &ir::Spec,
    new: &ir::Spec,
    d: &Diff,
    now: DateTime<Utc>,
) -> Result<Vec<Step>, StoreError> {
    let backend = db.get_database_backend();
    let ctx = Ctx {
        db,
        backend,
        deployed,
        new,
        names: OldNames::of(d),
        now: text(&now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    };
    let mut changes: Vec<&diff::Change> = d.changes.iter().collect();
    changes.sort_by_key(|c| phase(&c.kind, backend));
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let (ops, affected, refusal) = ctx.step(&c.kind).await?;
        out.push(Step { change: c.clone(), affected, ops, refusal });
    }
    ctx.table_wide(&mut out)?;
    Ok(out)
}

type Made = (Vec<Op>, Option<Affected>, Option<Problem>);

impl<C: ConnectionTrait> Ctx<'_, C> {
    fn pg(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    async fn count(&self, table: &str, cond: &str) -> Result<u64, StoreError> {
        super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {} WHERE {cond}", ident(table)))
            .await
    }

    /// Up to `SAMPLE_IDS_MAX` ids (or resource keys) of rows matching `cond`.
    async fn sample(&self, t: &TableOf<'_>, cond: &str) -> Result<Vec<String>, StoreError> {
        let sql =
            format!("SELECT {} FROM {} WHERE {cond} LIMIT {SAMPLE_IDS_MAX}", ident(&t.key), ident(&t.old));
        let rows = self.db.query_all_raw(Statement::from_string(self.backend, sql)).await?;
        Ok(rows
            .iter()
            .map(|r| {
                r.try_get_by_index::<uuid::Uuid>(0)
                    .map(|u| u.to_string())
                    .or_else(|_| r.try_get_by_index::<String>(0))
                    .or_else(|_| r.try_get_by_index::<i64>(0).map(|i| i.to_string()))
                    .unwrap_or_else(|_| "?".to_string())
            })
            .collect())
    }

    async fn affected(&self, t: &TableOf<'_>, cond: &str, what: &str) -> Result<Affected, StoreError> {
        let rows = self.count(&t.old, cond).await?;
        let sample = if rows > 0 && what != "rows" { self.sample(t, cond).await? } else { Vec::new() };
        Ok(Affected { rows, what: what.to_string(), sample })
    }

    fn refuse(code: &'static str, message: String) -> Option<Problem> {
        Some(Problem { code, message })
    }

    /// A backfill over the deployed row (for counts and SQLite's copy).
    fn backfill_old(&self, owner: &str, e: &ir::Expr) -> String {
        sql::expr(e, &|f: &str| self.names.field(owner, f), &self.now)
    }

    /// A backfill over the row after renames (PostgreSQL's UPDATE).
    fn backfill_new(&self, e: &ir::Expr) -> String {
        sql::expr(e, &|f: &str| f.to_string(), &self.now)
    }

    /// The refusal of a backfill that gives null or breaks the field's checks on some rows
    /// matching `rows` (a condition over the deployed row).
    async fn backfill_refusal(
        &self,
        t: &TableOf<'_>,
        owner: &str,
        f: &Field,
        rows: &str,
    ) -> Result<Option<Problem>, StoreError> {
        let Some(b) = &f.backfill else { return Ok(None) };
        let value = self.backfill_old(owner, b);
        let null = self.count(&t.old, &format!("({rows}) AND ({value}) IS NULL")).await?;
        if null > 0 && !f.optional {
            let sample = self.sample(t, &format!("({rows}) AND ({value}) IS NULL")).await?;
            return Ok(Self::refuse(
                diff::NEEDS_BACKFILL,
                format!(
                    "{owner}.{}: the backfill is null for {null} row(s) (e.g. {})",
                    f.name,
                    sample.join(", ")
                ),
            ));
        }
        let Some(check) = check_on(&value, &f.checks) else { return Ok(None) };
        let cond = format!("({rows}) AND NOT ({check})");
        let broken = self.count(&t.old, &cond).await?;
        if broken == 0 {
            return Ok(None);
        }
        let sample = self.sample(t, &cond).await?;
        Ok(Self::refuse(
            diff::BREAKS_CHECK,
            format!(
                "{owner}.{}: the backfill breaks the field's check on {broken} row(s) (e.g. {})",
                f.name,
                sample.join(", ")
            ),
        ))
    }

    async fn step(&self, kind: &K) -> Result<Made, StoreError> {
        let pg = self.pg();
        Ok(match kind {
            K::AddMachine { machine } => {
                let table =
                    self.new.machine(machine).expect("the diff adds machines of the new spec").table.clone();
                (vec![Op::Sql(self.create_table(&table, &table)?)], None, None)
            }
            K::AddResource { resource } => {
                let table = self
                    .new
                    .resource(resource)
                    .expect("the diff adds resources of the new spec")
                    .table
                    .clone();
                (vec![Op::Sql(self.create_table(&table, &table)?)], None, None)
            }
            K::RenameResource { from, to } => {
                let (Some(o), Some(n)) = (self.deployed.resource(from), self.new.resource(to)) else {
                    return Ok((Vec::new(), None, None));
                };
                (
                    vec![Op::Sql(format!("ALTER TABLE {} RENAME TO {}", ident(&o.table), ident(&n.table)))],
                    None,
                    None,
                )
            }
            K::DropMachine { machine } => {
                let table = self.deployed.machine(machine).map(|m| m.table.clone()).unwrap_or_default();
                let rows =
                    super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {}", ident(&table)))
                        .await?;
                let a = Affected { rows, what: "instances lost".into(), sample: Vec::new() };
                (vec![Op::Sql(format!("DROP TABLE {}", ident(&table)))], Some(a), None)
            }
            K::DropResource { resource } => {
                let table = self.deployed.resource(resource).map(|r| r.table.clone()).unwrap_or_default();
                let rows =
                    super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {}", ident(&table)))
                        .await?;
                let a = Affected { rows, what: "rows lost".into(), sample: Vec::new() };
                (vec![Op::Sql(format!("DROP TABLE {}", ident(&table)))], Some(a), None)
            }
            K::AddField { owner, field } => self.add_field(owner, field).await?,
            K::DropField { owner, field } => {
                let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
                let a = self.affected(&t, &format!("{} IS NOT NULL", ident(field)), "values lost").await?;
                let op = if pg {
                    Op::Sql(format!("ALTER TABLE {} DROP COLUMN {}", ident(&t.new), ident(field)))
                } else {
                    Op::Note(format!("the rebuild of {} leaves the column out", ident(&t.new)))
                };
                (vec![op], Some(a), None)
            }
            K::RenameField { owner, from, to } => {
                let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
                let op = if pg {
                    Op::Sql(format!(
                        "ALTER TABLE {} RENAME COLUMN {} TO {}",
                        ident(&t.new),
                        ident(from),
                        ident(to)
                    ))
                } else {
                    Op::Note(format!(
                        "the rebuild of {} copies {} into {}",
                        ident(&t.new),
                        ident(from),
                        ident(to)
                    ))
                };
                (vec![op], None, None)
            }
            K::RequireField { owner, field } => {
                let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
                let old_col = self.names.field(owner.name(), &field.name);
                let nulls = format!("{} IS NULL", ident(&old_col));
                let a = self.affected(&t, &nulls, "rows holding null").await?;
                let mut refusal = None;
                if a.rows > 0 && field.backfill.is_none() {
                    refusal = Self::refuse(
                        diff::NEEDS_BACKFILL,
                        format!(
                            "{}.{}: {} row(s) hold null (e.g. {}); give the field a `backfill`",
                            owner.name(),
                            field.name,
                            a.rows,
                            a.sample.join(", ")
                        ),
                    );
                } else if a.rows > 0 {
                    refusal = self.backfill_refusal(&t, owner.name(), field, &nulls).await?;
                }
                let mut ops = Vec::new();
                if pg {
                    if let Some(b) = &field.backfill {
                        ops.push(Op::Sql(format!(
                            "UPDATE {t} SET {c} = {} WHERE {c} IS NULL",
                            self.backfill_new(b),
                            t = ident(&t.new),
                            c = ident(&field.name)
                        )));
                    }
                    ops.push(Op::Sql(format!(
                        "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                        ident(&t.new),
                        ident(&field.name)
                    )));
                }
                (ops, Some(a), refusal)
            }
            K::RelaxField { owner, field } => {
                let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
                let ops = if pg {
                    vec![Op::Sql(format!(
                        "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                        ident(&t.new),
                        ident(field)
                    ))]
                } else {
                    Vec::new()
                };
                (ops, None, None)
            }
            K::Checks { owner, field, widened, .. } => {
                let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
                let mut affected = None;
                let mut refusal = None;
                if !widened
                    && let Some(check) =
                        sql::check(&self.names.field(owner.name(), &field.name), &field.checks)
                {
                    let a =
                        self.affected(&t, &format!("NOT ({check})"), "rows breaking the new check").await?;
                    if a.rows > 0 {
                        refusal = Self::refuse(
                            diff::BREAKS_CHECK,
                            format!(
                                "{}.{}: {} live row(s) break the new check (e.g. {}); change those rows first, or keep the check",
                                owner.name(),
                                field.name,
                                a.rows,
                                a.sample.join(", ")
                            ),
                        );
                    }
                    affected = Some(a);
                }
                let ops = if pg {
                    vec![Op::Checks {
                        table: t.new.clone(),
                        column: field.name.clone(),
                        check: sql::check(&field.name, &field.checks),
                    }]
                } else {
                    Vec::new()
                };
                (ops, affected, refusal)
            }
            K::AddState { .. } => (Vec::new(), None, None),
            K::RenameState { machine, from, to } => self.moves(machine, from, to, true).await?,
            K::RemoveState { machine, state, into: Some(into) } => {
                self.moves(machine, state, into, false).await?
            }
            K::RemoveState { machine, state, into: None } => {
                let Some(t) = self.table(&Owner::Machine(machine.clone())) else {
                    return Ok((Vec::new(), None, None));
                };
                let a = self
                    .affected(&t, &format!("{} = {}", ident("state"), text(state)), "live instances")
                    .await?;
                let refusal = (a.rows > 0).then(|| Problem {
                    code: diff::STRANDED_INSTANCES,
                    message: format!(
                        "{machine}: {} live instance(s) are in `{state}` (e.g. {}); say where they go with `removed {state} -> <state>`",
                        a.rows,
                        a.sample.join(", ")
                    ),
                });
                (Vec::new(), Some(a), refusal)
            }
            K::RenameEvent { machine, from, to } => {
                let sql = format!(
                    "UPDATE {} SET event = {} WHERE machine = {} AND event = {}",
                    ident(schema::TIMERS),
                    text(to),
                    text(machine),
                    text(from)
                );
                let pending = self.pending(machine, None, Some(from)).await?;
                (vec![Op::Sql(sql)], Some(pending), None)
            }
            K::AddTimer { machine, timer } => {
                let Some(t) = self.table(&Owner::Machine(machine.clone())) else {
                    return Ok((Vec::new(), None, None));
                };
                let old_state = self.names.state(machine, &timer.state);
                let a = self
                    .affected(
                        &t,
                        &format!("{} = {}", ident("state"), text(&old_state)),
                        "live instances to arm",
                    )
                    .await?;
                (
                    vec![Op::ArmTimers {
                        machine: machine.clone(),
                        table: t.new.clone(),
                        timer: timer.clone(),
                    }],
                    Some(a),
                    None,
                )
            }
            K::RemoveTimer { machine, timer } => {
                let state = self.names.state(machine, &timer.state);
                let event = self.names.event(machine, &timer.event);
                let pending = self.pending(machine, Some(&state), Some(&event)).await?;
                // By the time this runs, renames have been applied to the timers.
                let sql = format!(
                    "DELETE FROM {} WHERE machine = {} AND state = {} AND event = {}",
                    ident(schema::TIMERS),
                    text(machine),
                    text(&timer.state),
                    text(&timer.event)
                );
                (vec![Op::Sql(sql)], Some(pending), None)
            }
            K::Timer { machine, timer, .. } => {
                let state = self.names.state(machine, &timer.state);
                let event = self.names.event(machine, &timer.event);
                let pending = self.pending(machine, Some(&state), Some(&event)).await?;
                (vec![Op::Reschedule { machine: machine.clone(), timer: timer.clone() }], Some(pending), None)
            }
            K::StateKind { .. }
            | K::Initial { .. }
            | K::Create { .. }
            | K::AddEvent { .. }
            | K::RemoveEvent { .. }
            | K::Event { .. }
            | K::AddOperation { .. }
            | K::RemoveOperation { .. }
            | K::Operation { .. } => (Vec::new(), None, None),
        })
    }

    fn table(&self, owner: &Owner) -> Option<TableOf<'_>> {
        table_of(self.new, self.deployed, &self.names, owner)
    }

    async fn pending(
        &self,
        machine: &str,
        state: Option<&str>,
        event: Option<&str>,
    ) -> Result<Affected, StoreError> {
        let mut cond = format!("machine = {}", text(machine));
        if let Some(s) = state {
            cond.push_str(&format!(" AND state = {}", text(s)));
        }
        if let Some(e) = event {
            cond.push_str(&format!(" AND event = {}", text(e)));
        }
        let rows = self.count(schema::TIMERS, &cond).await?;
        Ok(Affected { rows, what: "pending timers".into(), sample: Vec::new() })
    }

    async fn moves(
        &self,
        machine: &str,
        from: &str,
        to: &str,
        keep_timers: bool,
    ) -> Result<Made, StoreError> {
        let Some(t) = self.table(&Owner::Machine(machine.to_string())) else {
            return Ok((Vec::new(), None, None));
        };
        let a = self
            .affected(&t, &format!("{} = {}", ident("state"), text(from)), "live instances to move")
            .await?;
        let arm = self.new.machine(machine).map(|m| m.timers_in(to).cloned().collect()).unwrap_or_default();
        let op = Op::Move {
            machine: machine.to_string(),
            table: t.new.clone(),
            from: from.to_string(),
            to: to.to_string(),
            keep_timers,
            arm,
        };
        Ok((vec![op], Some(a), None))
    }

    async fn add_field(&self, owner: &Owner, field: &Field) -> Result<Made, StoreError> {
        let Some(t) = self.table(owner) else { return Ok((Vec::new(), None, None)) };
        let rows =
            super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {}", ident(&t.old))).await?;
        let affected = Some(Affected { rows, what: "rows".into(), sample: Vec::new() });
        let mut refusal = None;
        if rows > 0 && !field.optional && field.backfill.is_none() {
            refusal = Self::refuse(
                diff::NEEDS_BACKFILL,
                format!(
                    "{}.{}: a new required field on a table with {rows} row(s) needs a `backfill` (a value or an expression over the row)",
                    owner.name(),
                    field.name
                ),
            );
        } else if rows > 0 {
            refusal = self.backfill_refusal(&t, owner.name(), field, "1 = 1").await?;
        }
        if !self.pg() {
            return Ok((Vec::new(), affected, refusal));
        }
        let constant = match &field.backfill {
            Some(ir::Expr::Value(v)) => Some(v),
            _ => None,
        };
        // A computed backfill fills a nullable column first; NOT NULL comes after the UPDATE.
        let nullable = field.optional || (field.backfill.is_some() && constant.is_none());
        let mut column = schema::field_column(&Field {
            optional: nullable,
            checks: Vec::new(),
            backfill: None,
            ..field.clone()
        });
        // A constant is also the column's default: an old server's insert leaves the column
        // out and still satisfies NOT NULL.
        if let Some(v) = constant {
            column.default(schema::inline(v));
        }
        let mut ops = Vec::new();
        let alter = Table::alter().table(Alias::new(&t.new)).add_column(column).to_owned();
        ops.push(Op::Sql(alter.to_string(PostgresQueryBuilder)));
        if let (Some(b), None) = (&field.backfill, constant) {
            ops.push(Op::Sql(format!(
                "UPDATE {} SET {} = {}",
                ident(&t.new),
                ident(&field.name),
                self.backfill_new(b)
            )));
            if !field.optional {
                ops.push(Op::Sql(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                    ident(&t.new),
                    ident(&field.name)
                )));
            }
        }
        if let Some(check) = sql::check(&field.name, &field.checks) {
            ops.push(Op::Checks { table: t.new.clone(), column: field.name.clone(), check: Some(check) });
        }
        Ok((ops, affected, refusal))
    }

    /// `CREATE TABLE` of the new spec's `table`, named `as_name`.
    fn create_table(&self, table: &str, as_name: &str) -> Result<String, StoreError> {
        let mut stmt = schema::tables_named(self.new)
            .into_iter()
            .find(|(name, _)| name == table)
            .map(|(_, s)| s)
            .ok_or_else(|| StoreError::Internal(format!("no table `{table}` in the new spec")))?;
        stmt.table(Alias::new(as_name));
        Ok(match self.backend {
            DbBackend::Postgres => stmt.to_string(PostgresQueryBuilder),
            _ => stmt.to_string(SqliteQueryBuilder),
        })
    }
}

/// The checks of a field applied to an SQL value instead of its column.
fn check_on(value: &str, checks: &[ir::Check]) -> Option<String> {
    sql::check("\u{0}", checks).map(|c| c.replace(&ident("\u{0}"), &format!("({value})")))
}
