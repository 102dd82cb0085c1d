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

mod fields;
mod tables;
use super::sql::{ident, text};
use crate::{StoreError, schema};
use chrono::{DateTime, Utc};
use ordo_spec::diff::{self, ChangeKind as K, Diff, Owner, Problem};
use ordo_spec::ir::{self, Field};
use sea_orm::sea_query::{Alias, PostgresQueryBuilder, SqliteQueryBuilder};
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
                let m = self.deployed.machine(machine).expect("the diff drops machines of the deployed spec");
                self.drop_table(&m.table, "instances lost").await?
            }
            K::DropResource { resource } => {
                let r =
                    self.deployed.resource(resource).expect("the diff drops resources of the deployed spec");
                self.drop_table(&r.table, "rows lost").await?
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
            K::RenameField { owner, from, to } => self.rename_field(owner, from, to)?,
            K::RequireField { owner, field } => self.require_field(owner, field).await?,
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
            K::Checks { owner, field, widened, .. } => self.checks(owner, field, *widened).await?,
            K::AddState { .. } => (Vec::new(), None, None),
            K::RenameState { machine, from, to } => self.moves(machine, from, to, true).await?,
            K::RemoveState { machine, state, into: Some(into) } => {
                self.moves(machine, state, into, false).await?
            }
            K::RemoveState { machine, state, into: None } => self.stranded(machine, state).await?,
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
            K::AddTimer { machine, timer } => self.arm_timers(machine, timer).await?,
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

    /// A state removed without saying where its instances go: refused while any is in it.
    async fn stranded(&self, machine: &str, state: &str) -> Result<Made, StoreError> {
        let Some(t) = self.table(&Owner::Machine(machine.to_string())) else {
            return Ok((Vec::new(), None, None));
        };
        let a = self.affected(&t, &format!("{} = {}", ident("state"), text(state)), "live instances").await?;
        let refusal = (a.rows > 0).then(|| Problem {
            code: diff::STRANDED_INSTANCES,
            message: format!(
                "{machine}: {} live instance(s) are in `{state}` (e.g. {}); say where they go with `removed {state} -> <state>`",
                a.rows,
                a.sample.join(", ")
            ),
        });
        Ok((Vec::new(), Some(a), refusal))
    }

    /// A timer added: armed for the live instances already in its state.
    async fn arm_timers(&self, machine: &str, timer: &ir::Timer) -> Result<Made, StoreError> {
        let Some(t) = self.table(&Owner::Machine(machine.to_string())) else {
            return Ok((Vec::new(), None, None));
        };
        let old_state = self.names.state(machine, &timer.state);
        let a = self
            .affected(&t, &format!("{} = {}", ident("state"), text(&old_state)), "live instances to arm")
            .await?;
        Ok((
            vec![Op::ArmTimers { machine: machine.to_string(), table: t.new.clone(), timer: timer.clone() }],
            Some(a),
            None,
        ))
    }

    /// A table dropped, counting the rows it held (`what` they are).
    async fn drop_table(&self, table: &str, what: &str) -> Result<Made, StoreError> {
        let rows =
            super::count(self.db, self.backend, &format!("SELECT COUNT(*) FROM {}", ident(table))).await?;
        let a = Affected { rows, what: what.into(), sample: Vec::new() };
        Ok((vec![Op::Sql(format!("DROP TABLE {}", ident(table)))], Some(a), None))
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
