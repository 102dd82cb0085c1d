//! Running a migration's ops inside its one transaction.

use super::EvolveOptions;
use super::op::{Op, check_name, rebuilt};
use super::sql::{ident, text};
use crate::StoreError;
use crate::schema;
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The advisory lock key that serializes migrations on PostgreSQL ("ordo" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_646f;

/// The migration's transaction: on PostgreSQL with `lock_timeout` and `statement_timeout`
/// for its own statements only; on SQLite immediate (the write lock taken up front).
pub(super) async fn begin(
    db: &DatabaseConnection,
    options: &EvolveOptions,
) -> Result<DatabaseTransaction, StoreError> {
    let backend = db.get_database_backend();
    let txn = match backend {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?
        }
        _ => db.begin().await?,
    };
    if backend == DbBackend::Postgres {
        // One migration at a time per database: servers started together with --migrate
        // queue here, and the later ones find the version the first recorded.
        txn.execute_unprepared(&format!(
            "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})",
            options.lock_timeout_ms, options.statement_timeout_ms
        ))
        .await?;
    }
    Ok(txn)
}

async fn exec(txn: &DatabaseTransaction, sql: &str) -> Result<(), StoreError> {
    txn.execute_unprepared(sql).await.map(|_| ()).map_err(|e| StoreError::Migration(format!("{sql}: {e}")))
}

pub(super) async fn op(
    txn: &DatabaseTransaction,
    op: &Op,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match op {
        Op::Sql(sql) => exec(txn, sql).await,
        Op::Note(_) => Ok(()),
        Op::IgnoreChecks(on) => {
            exec(txn, &format!("PRAGMA ignore_check_constraints = {}", if *on { "ON" } else { "OFF" })).await
        }
        Op::Checks { table, column, check } => checks(txn, table, column, check.as_deref()).await,
        Op::Rebuild { table, create, columns, select } => rebuild(txn, table, create, columns, select).await,
        Op::Move { machine, table, from, to, keep_timers, arm } => {
            move_state(txn, (machine, table), (from, to), (*keep_timers, arm), version, now).await
        }
        Op::ArmTimers { machine, table, timer } => arm_timers(txn, machine, table, timer).await,
        Op::Reschedule { machine, timer } => reschedule(txn, machine, timer).await,
    }
}

/// `column`'s one-column checks dropped, and `check` (if any) added and validated, so rows
/// already there are checked without holding a lock for the scan.
async fn checks(
    txn: &DatabaseTransaction,
    table: &str,
    column: &str,
    check: Option<&str>,
) -> Result<(), StoreError> {
    let find = format!(
        "SELECT c.conname::text FROM pg_constraint c JOIN pg_attribute a \
         ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.conrelid = to_regclass({}) AND c.contype = 'c' AND a.attname = {} \
         AND cardinality(c.conkey) = 1",
        text(&ident(table)),
        text(column)
    );
    let rows = txn.query_all_raw(Statement::from_string(txn.get_database_backend(), find)).await?;
    for r in rows {
        let name: String = r.try_get_by_index(0)?;
        exec(txn, &format!("ALTER TABLE {} DROP CONSTRAINT {}", ident(table), ident(&name))).await?;
    }
    if let Some(c) = check {
        let name = ident(&check_name(table, column));
        exec(txn, &format!("ALTER TABLE {} ADD CONSTRAINT {name} CHECK ({c}) NOT VALID", ident(table)))
            .await?;
        exec(txn, &format!("ALTER TABLE {} VALIDATE CONSTRAINT {name}", ident(table))).await?;
    }
    Ok(())
}

/// `table` rebuilt as `create` from its rows (SQLite's way to change a column).
async fn rebuild(
    txn: &DatabaseTransaction,
    table: &str,
    create: &str,
    columns: &[String],
    select: &[String],
) -> Result<(), StoreError> {
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    exec(txn, create).await?;
    exec(
        txn,
        &format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            ident(&rebuilt(table)),
            cols.join(", "),
            select.join(", "),
            ident(table)
        ),
    )
    .await?;
    exec(txn, &format!("DROP TABLE {}", ident(table))).await?;
    exec(txn, &format!("ALTER TABLE {} RENAME TO {}", ident(&rebuilt(table)), ident(table))).await
}

/// Every instance in `from` moved to `to`, each move journaled under the spec's `version`;
/// its timers kept (moved with it) or replaced by `arm`.
async fn move_state(
    txn: &DatabaseTransaction,
    (machine, table): (&str, &str),
    (from, to): (&str, &str),
    (keep_timers, arm): (bool, &[ir::Timer]),
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let q = format!("SELECT id, tenant, version FROM {} WHERE state = {}", ident(table), text(from));
    let rows = txn.query_all_raw(Statement::from_string(txn.get_database_backend(), q)).await?;
    for r in rows {
        let id: Uuid = r.try_get("", "id")?;
        let tenant: String = r.try_get("", "tenant")?;
        let v: i64 = r.try_get("", "version")?;
        let update = Query::update()
            .table(Alias::new(table))
            .value(Alias::new("state"), to)
            .value(Alias::new("version"), v + 1)
            .value(Alias::new("updated_at"), now)
            .and_where(Expr::col(Alias::new("tenant")).eq(tenant.clone()))
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .to_owned();
        txn.execute(&update).await?;
        journal(txn, &tenant, machine, &id.to_string(), v + 1, from, to, version, now).await?;
        if !keep_timers {
            let delete = Query::delete()
                .from_table(Alias::new(schema::TIMERS))
                .and_where(Expr::col(Alias::new("tenant")).eq(tenant.clone()))
                .and_where(Expr::col(Alias::new("machine")).eq(machine))
                .and_where(Expr::col(Alias::new("entity")).eq(id.to_string()))
                .and_where(Expr::col(Alias::new("state")).eq(from))
                .to_owned();
            txn.execute(&delete).await?;
            for t in arm {
                arm_timer(txn, &tenant, machine, &id.to_string(), t, now).await?;
            }
        }
    }
    if keep_timers {
        let update = Query::update()
            .table(Alias::new(schema::TIMERS))
            .value(Alias::new("state"), to)
            .and_where(Expr::col(Alias::new("machine")).eq(machine))
            .and_where(Expr::col(Alias::new("state")).eq(from))
            .to_owned();
        txn.execute(&update).await?;
    }
    Ok(())
}

/// `timer` armed for every instance already in its state that lacks it, due from when the
/// instance entered the state.
async fn arm_timers(
    txn: &DatabaseTransaction,
    machine: &str,
    table: &str,
    timer: &ir::Timer,
) -> Result<(), StoreError> {
    let armed = Query::select()
        .column(Alias::new("entity"))
        .from(Alias::new(schema::TIMERS))
        .and_where(Expr::col(Alias::new("machine")).eq(machine))
        .and_where(Expr::col(Alias::new("state")).eq(timer.state.clone()))
        .and_where(Expr::col(Alias::new("event")).eq(timer.event.clone()))
        .to_owned();
    let armed: BTreeSet<String> =
        txn.query_all(&armed).await?.iter().filter_map(|r| r.try_get::<String>("", "entity").ok()).collect();
    let q =
        format!("SELECT id, tenant, updated_at FROM {} WHERE state = {}", ident(table), text(&timer.state));
    for r in txn.query_all_raw(Statement::from_string(txn.get_database_backend(), q)).await? {
        let id: Uuid = r.try_get("", "id")?;
        if armed.contains(&id.to_string()) {
            continue;
        }
        let tenant: String = r.try_get("", "tenant")?;
        // Due from when the instance entered the state: its last transition.
        let entered: DateTime<Utc> = r.try_get("", "updated_at")?;
        arm_timer(txn, &tenant, machine, &id.to_string(), timer, entered).await?;
    }
    Ok(())
}

/// Armed `timer`s due again by its new delay, counted from when each was armed.
async fn reschedule(txn: &DatabaseTransaction, machine: &str, timer: &ir::Timer) -> Result<(), StoreError> {
    let q = Query::select()
        .columns([Alias::new("id"), Alias::new("tenant"), Alias::new("created_at")])
        .from(Alias::new(schema::TIMERS))
        .and_where(Expr::col(Alias::new("machine")).eq(machine))
        .and_where(Expr::col(Alias::new("state")).eq(timer.state.clone()))
        .and_where(Expr::col(Alias::new("event")).eq(timer.event.clone()))
        .to_owned();
    for r in txn.query_all(&q).await? {
        let id: Uuid = r.try_get("", "id")?;
        let tenant: String = r.try_get("", "tenant")?;
        let armed: DateTime<Utc> = r.try_get("", "created_at")?;
        let update = Query::update()
            .table(Alias::new(schema::TIMERS))
            .value(Alias::new("due_at"), armed + after(timer))
            .and_where(Expr::col(Alias::new("tenant")).eq(tenant))
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .to_owned();
        txn.execute(&update).await?;
    }
    Ok(())
}

fn after(t: &ir::Timer) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(t.after_ms).unwrap_or(i64::MAX))
}

/// A timer row, as the executor arms one on entering a state at `entered`.
async fn arm_timer(
    txn: &DatabaseTransaction,
    tenant: &str,
    machine: &str,
    entity: &str,
    t: &ir::Timer,
    entered: DateTime<Utc>,
) -> Result<(), StoreError> {
    let insert = Query::insert()
        .into_table(Alias::new(schema::TIMERS))
        .columns(
            ["id", "tenant", "machine", "entity", "state", "event", "due_at", "created_at"].map(Alias::new),
        )
        .values([
            Uuid::now_v7().into(),
            tenant.into(),
            machine.into(),
            entity.into(),
            t.state.clone().into(),
            t.event.clone().into(),
            (entered + after(t)).into(),
            entered.into(),
        ])
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .to_owned();
    txn.execute(&insert).await?;
    Ok(())
}

/// The journal row and outbox event of an instance moved by a migration (event `migrate`),
/// in the shape the executor writes for every transition.
#[allow(clippy::too_many_arguments)]
async fn journal(
    txn: &DatabaseTransaction,
    tenant: &str,
    machine: &str,
    entity: &str,
    version: i64,
    from: &str,
    to: &str,
    spec_version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let journal_id = Uuid::now_v7();
    let params = serde_json::json!({ "spec_version": spec_version });
    let insert = Query::insert()
        .into_table(Alias::new(schema::JOURNAL))
        .columns(
            [
                "id",
                "tenant",
                "machine",
                "entity",
                "version",
                "event",
                "from_state",
                "to_state",
                "params",
                "idempotency_key",
                "created_at",
            ]
            .map(Alias::new),
        )
        .values([
            journal_id.into(),
            tenant.into(),
            machine.into(),
            entity.into(),
            version.into(),
            "migrate".into(),
            from.into(),
            to.into(),
            params.to_string().into(),
            sea_orm::Value::String(None).into(),
            now.into(),
        ])
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .to_owned();
    txn.execute(&insert).await?;
    let transition = crate::rows::Transition {
        tenant,
        machine,
        entity,
        version,
        event: "migrate",
        from: Some(from),
        to: Some(to),
    };
    let payload = crate::rows::event_payload(&journal_id.to_string(), transition, &params, now, None);
    let insert = Query::insert()
        .into_table(Alias::new(schema::OUTBOX))
        .columns(
            ["id", "tenant", "machine", "entity", "version", "event", "payload", "created_at"]
                .map(Alias::new),
        )
        .values([
            Uuid::now_v7().into(),
            tenant.into(),
            machine.into(),
            entity.into(),
            version.into(),
            "migrate".into(),
            payload.to_string().into(),
            now.into(),
        ])
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .to_owned();
    txn.execute(&insert).await?;
    Ok(())
}
