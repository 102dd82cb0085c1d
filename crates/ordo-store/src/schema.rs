//! Tables from the IR, and the migrations that create them (sea-orm-migration).
//!
//! Two migrations: Ordo's system tables (journal, outbox, idempotency records, timers,
//! schema fingerprints), then one per spec with a table per machine and per resource.
//! States and `check`s become CHECK constraints; keys and idempotency pairs unique indexes.

use ordo_spec::ir::{self, CmpOp, Type};
use sea_orm::sea_query::{
    Alias, ColumnDef, Expr, ExprTrait, Index, IndexCreateStatement, Table, TableCreateStatement,
};
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTraitSelf, SchemaManager, async_trait};
use std::sync::Arc;

pub const JOURNAL: &str = "ordo_transitions";
pub const OUTBOX: &str = "ordo_outbox";
pub const IDEMPOTENCY: &str = "ordo_idempotency";
pub const TIMERS: &str = "ordo_timers";
pub const SCHEMAS: &str = "ordo_schemas";

/// The migrations of the specs one database serves, in order: Ordo's system tables, then
/// each spec's tables. All specs of a database go through one migrator, since they share
/// its migration history. Run with `MigratorTraitSelf::up`/`down`/`fresh`.
pub struct Migrator {
    specs: Vec<(String, Arc<ir::Spec>)>,
}

impl Migrator {
    pub fn new(specs: Vec<(String, Arc<ir::Spec>)>) -> Migrator {
        Migrator { specs }
    }
}

impl MigratorTraitSelf for Migrator {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        let mut all: Vec<Box<dyn MigrationTrait>> = vec![Box::new(SystemTables)];
        for (name, spec) in &self.specs {
            all.push(Box::new(SpecTables {
                name: format!("m0002_spec_{name}"),
                spec_name: name.clone(),
                spec: spec.clone(),
            }));
        }
        all
    }
}

struct SystemTables;

impl MigrationName for SystemTables {
    fn name(&self) -> &str {
        "m0001_ordo_system_tables"
    }
}

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

fn text(name: &str) -> ColumnDef {
    col(name).text().not_null().to_owned()
}

fn time(name: &str) -> ColumnDef {
    col(name).timestamp_with_time_zone().not_null().to_owned()
}

fn index(name: &str, table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(Alias::new(table));
    for c in cols {
        i.col(Alias::new(*c));
    }
    i.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for SystemTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The journal: one row per version of every instance, in the command's transaction.
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(JOURNAL))
                    .col(col("id").uuid().not_null().primary_key())
                    .col(text("tenant"))
                    .col(text("machine"))
                    .col(text("entity"))
                    .col(col("version").big_integer().not_null())
                    .col(text("event"))
                    .col(col("from_state").text().null())
                    .col(col("to_state").text().null())
                    .col(text("params"))
                    .col(col("idempotency_key").text().null())
                    .col(time("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index(
                    "ordo_transitions_entity_version",
                    JOURNAL,
                    &["tenant", "machine", "entity", "version"],
                )
                .unique()
                .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(OUTBOX))
                    .col(col("id").uuid().not_null().primary_key())
                    .col(text("tenant"))
                    .col(text("machine"))
                    .col(text("entity"))
                    .col(col("version").big_integer().not_null())
                    .col(text("event"))
                    .col(text("payload"))
                    .col(time("created_at"))
                    .col(col("sent_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("ordo_outbox_unsent", OUTBOX, &["sent_at", "created_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(IDEMPOTENCY))
                    .col(text("tenant"))
                    .col(text("key"))
                    .col(text("fingerprint"))
                    .col(text("outcome"))
                    .col(time("created_at"))
                    .col(time("expires_at"))
                    .primary_key(Index::create().col(Alias::new("tenant")).col(Alias::new("key")))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("ordo_idempotency_expiry", IDEMPOTENCY, &["expires_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(TIMERS))
                    .col(col("id").uuid().not_null().primary_key())
                    .col(text("tenant"))
                    .col(text("machine"))
                    .col(text("entity"))
                    .col(text("state"))
                    .col(text("event"))
                    .col(time("due_at"))
                    .col(time("created_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("ordo_timers_due", TIMERS, &["due_at"])).await?;
        manager.create_index(index("ordo_timers_entity", TIMERS, &["tenant", "machine", "entity"])).await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(SCHEMAS))
                    .col(col("spec").text().not_null().primary_key())
                    .col(text("fingerprint"))
                    .col(time("applied_at"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [SCHEMAS, TIMERS, IDEMPOTENCY, OUTBOX, JOURNAL] {
            manager.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

struct SpecTables {
    name: String,
    spec_name: String,
    spec: Arc<ir::Spec>,
}

impl MigrationName for SpecTables {
    fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SpecTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for stmt in tables(&self.spec) {
            manager.create_table(stmt).await?;
        }
        let backend = manager.get_database_backend();
        let insert = sea_orm::sea_query::Query::insert()
            .into_table(Alias::new(SCHEMAS))
            .columns([Alias::new("spec"), Alias::new("fingerprint"), Alias::new("applied_at")])
            .values_panic([
                self.spec_name.clone().into(),
                fingerprint(&self.spec).into(),
                chrono::Utc::now().into(),
            ])
            .to_owned();
        manager.get_connection().execute(&insert).await.map(|_| ()).map_err(|e| {
            DbErr::Migration(format!(
                "recording the schema of `{}` ({}): {e}",
                self.spec_name,
                backend_name(backend)
            ))
        })
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let names =
            self.spec.machines.iter().map(|m| &m.table).chain(self.spec.resources.iter().map(|r| &r.table));
        for t in names {
            manager.drop_table(Table::drop().table(Alias::new(t)).if_exists().to_owned()).await?;
        }
        let delete = sea_orm::sea_query::Query::delete()
            .from_table(Alias::new(SCHEMAS))
            .and_where(Expr::col(Alias::new("spec")).eq(self.spec_name.clone()))
            .to_owned();
        manager.get_connection().execute(&delete).await.map(|_| ())
    }
}

fn backend_name(b: sea_orm::DbBackend) -> &'static str {
    match b {
        sea_orm::DbBackend::Postgres => "PostgreSQL",
        sea_orm::DbBackend::Sqlite => "SQLite",
        _ => "an unsupported database",
    }
}

/// The CREATE TABLE statements of a spec: one per machine, one per resource.
pub fn tables(spec: &ir::Spec) -> Vec<TableCreateStatement> {
    let mut out = Vec::new();
    for m in &spec.machines {
        let states: Vec<String> = m.states.iter().map(|s| s.name.clone()).collect();
        let mut t = Table::create();
        t.table(Alias::new(&m.table))
            .col(col("id").uuid().not_null().primary_key())
            .col(text("tenant"))
            .col(text("state").check(Expr::col(Alias::new("state")).is_in(states)).to_owned())
            .col(col("version").big_integer().not_null());
        for f in &m.fields {
            t.col(field_column(f));
        }
        t.col(time("created_at")).col(time("updated_at"));
        out.push(t.to_owned());
    }
    for r in &spec.resources {
        let mut t = Table::create();
        t.table(Alias::new(&r.table)).col(text("tenant")).col(field_column(&r.key));
        for f in &r.fields {
            t.col(field_column(f));
        }
        t.col(col("version").big_integer().not_null())
            .col(time("created_at"))
            .col(time("updated_at"))
            .primary_key(Index::create().col(Alias::new("tenant")).col(Alias::new(&r.key.name)));
        out.push(t.to_owned());
    }
    out
}

fn field_column(f: &ir::Field) -> ColumnDef {
    let mut c = col(&f.name);
    match f.ty {
        Type::Text => c.text(),
        Type::Int | Type::Money => c.big_integer(),
        Type::Bool => c.boolean(),
        Type::Timestamp => c.timestamp_with_time_zone(),
    };
    if f.optional {
        c.null();
    } else {
        c.not_null();
    }
    if let Some(cond) = check_expr(Expr::col(Alias::new(&f.name)), &f.checks, &mut inline) {
        c.check(cond);
    }
    c
}

/// The field's checks applied to `value`, joined by `and`; `None` without checks.
/// `literal` makes each constant: inline in DDL, a bound value in a statement.
pub fn check_expr(
    value: Expr,
    checks: &[ir::Check],
    literal: &mut dyn FnMut(&ir::Value) -> Expr,
) -> Option<Expr> {
    checks.iter().map(|c| cmp(value.clone(), c.op, literal(&c.value))).reduce(|a, b| a.and(b))
}

/// A constant as an inline SQL literal, for DDL.
pub fn inline(v: &ir::Value) -> Expr {
    Expr::val(match v {
        ir::Value::Int(i) => sea_orm::Value::from(*i),
        ir::Value::Text(s) => sea_orm::Value::from(s.clone()),
        ir::Value::Bool(b) => sea_orm::Value::from(*b),
        ir::Value::Null => sea_orm::Value::String(None),
    })
}

pub fn cmp(a: Expr, op: CmpOp, b: Expr) -> Expr {
    match op {
        CmpOp::Eq => a.eq(b),
        CmpOp::Ne => a.ne(b),
        CmpOp::Lt => a.lt(b),
        CmpOp::Le => a.lte(b),
        CmpOp::Gt => a.gt(b),
        CmpOp::Ge => a.gte(b),
    }
}

/// A stable fingerprint of everything in the spec that shapes its tables, so that a spec
/// changed after its tables were created is noticed at start-up instead of failing later.
pub fn fingerprint(spec: &ir::Spec) -> String {
    #[derive(serde::Serialize)]
    struct Shape<'a> {
        machines: Vec<(&'a str, &'a [ir::Field], Vec<&'a str>)>,
        resources: Vec<(&'a str, &'a ir::Field, &'a [ir::Field])>,
    }
    let shape = Shape {
        machines: spec
            .machines
            .iter()
            .map(|m| {
                (m.table.as_str(), m.fields.as_slice(), m.states.iter().map(|s| s.name.as_str()).collect())
            })
            .collect(),
        resources: spec.resources.iter().map(|r| (r.table.as_str(), &r.key, r.fields.as_slice())).collect(),
    };
    let bytes = serde_json::to_vec(&shape).unwrap_or_default();
    // FNV-1a: stable across builds and platforms, which `DefaultHasher` is not.
    let hash = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// The fingerprint recorded when the spec's tables were created, if they were.
pub async fn recorded_fingerprint<C: ConnectionTrait>(
    db: &C,
    spec_name: &str,
) -> Result<Option<String>, DbErr> {
    let select = sea_orm::sea_query::Query::select()
        .column(Alias::new("fingerprint"))
        .from(Alias::new(SCHEMAS))
        .and_where(Expr::col(Alias::new("spec")).eq(spec_name))
        .to_owned();
    match db.query_one(&select).await {
        Ok(Some(row)) => Ok(Some(row.try_get::<String>("", "fingerprint")?)),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    }
}
