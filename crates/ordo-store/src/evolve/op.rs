//! The actions of a migration's steps, as they are run (`run.rs`) and as a plan shows them
//! for review, with the locks each takes on PostgreSQL.

use super::sql::{ident, text};
use ordo_spec::ir;
use sea_orm::DbBackend;

/// One action of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A statement run as it is.
    Sql(String),
    /// PostgreSQL: drop every CHECK constraint on `column`, then add `check` (if any) as
    /// `NOT VALID` and validate it.
    Checks { table: String, column: String, check: Option<String> },
    /// Instances in state `from` move to `to`: version + 1, a journal row and an outbox event
    /// (event `migrate`) each. A rename keeps their pending timers; a removed state's are
    /// dropped and the timers of `to` armed (`arm`).
    Move { machine: String, table: String, from: String, to: String, keep_timers: bool, arm: Vec<ir::Timer> },
    /// Arms a new timer for instances already in its state, due from when they entered it.
    ArmTimers { machine: String, table: String, timer: ir::Timer },
    /// Pending timers take the new duration, counted from when they were armed.
    Reschedule { machine: String, timer: ir::Timer },
    /// SQLite: CHECK constraints are not enforced until the next `IgnoreChecks(false)` (the
    /// rebuild that follows re-checks every row against the new table).
    IgnoreChecks(bool),
    /// SQLite: the table is made anew from the new spec and its rows copied over.
    Rebuild { table: String, create: String, columns: Vec<String>, select: Vec<String> },
    /// Said in the plan, run nowhere.
    Note(String),
}

impl Op {
    pub fn render(&self) -> String {
        match self {
            Op::Sql(s) => format!("{s};"),
            Op::Checks { table, column, check } => {
                let mut s = format!(
                    "ALTER TABLE {} DROP CONSTRAINT <each CHECK on {}>;",
                    ident(table),
                    ident(column)
                );
                if let Some(c) = check {
                    let name = ident(&check_name(table, column));
                    s.push_str(&format!(
                        "\nALTER TABLE {t} ADD CONSTRAINT {name} CHECK ({c}) NOT VALID;\nALTER TABLE {t} VALIDATE CONSTRAINT {name};",
                        t = ident(table)
                    ));
                }
                s
            }
            Op::Move { table, from, to, keep_timers, .. } => {
                let timers = if *keep_timers {
                    format!(
                        "UPDATE ordo_timers SET state = {} WHERE machine = ... AND state = {};",
                        text(to),
                        text(from)
                    )
                } else {
                    format!(
                        "-- its timers in {} are deleted and those of {} armed from now",
                        text(from),
                        text(to)
                    )
                };
                format!(
                    "-- for each instance in {f}:\nUPDATE {t} SET state = {to}, version = version + 1, updated_at = now WHERE tenant = $tenant AND id = $id;\n\
                     INSERT INTO ordo_transitions (... event 'migrate', from {f}, to {to} ...);\nINSERT INTO ordo_outbox (... event 'migrate' ...);\n{timers}",
                    f = text(from),
                    t = ident(table),
                    to = text(to)
                )
            }
            Op::ArmTimers { table, timer, .. } => format!(
                "-- for each instance of {} in {} without one: INSERT INTO ordo_timers (... event {}, due_at = updated_at + {}ms ...);",
                ident(table),
                text(&timer.state),
                text(&timer.event),
                timer.after_ms
            ),
            Op::Reschedule { machine, timer } => format!(
                "-- for each pending timer: UPDATE ordo_timers SET due_at = created_at + {}ms WHERE machine = {} AND state = {} AND event = {};",
                timer.after_ms,
                text(machine),
                text(&timer.state),
                text(&timer.event)
            ),
            Op::IgnoreChecks(on) => {
                format!("PRAGMA ignore_check_constraints = {};", if *on { "ON" } else { "OFF" })
            }
            Op::Rebuild { table, create, columns, select } => {
                let new = ident(&rebuilt(table));
                let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                format!(
                    "{create};\nINSERT INTO {new} ({}) SELECT {} FROM {t};\nDROP TABLE {t};\nALTER TABLE {new} RENAME TO {t};",
                    cols.join(", "),
                    select.join(", "),
                    t = ident(table)
                )
            }
            Op::Note(n) => format!("-- {n}"),
        }
    }

    /// The locks an op takes on PostgreSQL (SQLite's transaction holds its one write lock).
    pub fn locks(&self, backend: DbBackend) -> &'static str {
        if backend != DbBackend::Postgres {
            return "the database's write lock, for the whole migration";
        }
        match self {
            Op::Sql(s) if s.starts_with("CREATE TABLE") => "none on existing tables",
            Op::Sql(s) if s.contains("SET NOT NULL") => {
                "ACCESS EXCLUSIVE on the table while every row is scanned"
            }
            Op::Sql(s) if s.starts_with("ALTER TABLE") || s.starts_with("DROP TABLE") => {
                "ACCESS EXCLUSIVE on the table, briefly (no rewrite, no scan)"
            }
            Op::Sql(_) | Op::Move { .. } | Op::ArmTimers { .. } | Op::Reschedule { .. } => {
                "ROW EXCLUSIVE on the table, and the rows it changes"
            }
            Op::Checks { .. } => {
                "ACCESS EXCLUSIVE briefly to add the constraint NOT VALID, then SHARE UPDATE EXCLUSIVE while VALIDATE scans (reads and writes go on)"
            }
            Op::IgnoreChecks(_) | Op::Rebuild { .. } | Op::Note(_) => "none",
        }
    }
}

pub(super) fn check_name(table: &str, column: &str) -> String {
    format!("{table}_{column}_check")
}

pub(super) fn rebuilt(table: &str) -> String {
    format!("{table}__ordo_new")
}
