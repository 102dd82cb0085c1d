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
pub const VERSIONS: &str = "ordo_spec_versions";

/// The type of a system table's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Uuid,
    Text,
    OptionalText,
    Int,
    Time,
    OptionalTime,
}

/// One of Ordo's own tables, declared once: the migration creates it from this, and the
/// plans insert into it from this.
pub struct SystemTable {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
    pub primary_key: &'static [&'static str],
    /// (index name, columns, unique)
    pub indexes: &'static [(&'static str, &'static [&'static str], bool)],
}

impl SystemTable {
    pub fn get(name: &str) -> Option<&'static SystemTable> {
        SYSTEM_TABLES.iter().find(|t| t.name == name)
    }
}

pub const SYSTEM_TABLES: &[SystemTable] = &[
    // The journal: one row per version of every instance, in the command's transaction.
    SystemTable {
        name: JOURNAL,
        columns: &[
            ("id", Col::Uuid),
            ("tenant", Col::Text),
            ("machine", Col::Text),
            ("entity", Col::Text),
            ("version", Col::Int),
            ("event", Col::Text),
            ("from_state", Col::OptionalText),
            ("to_state", Col::OptionalText),
            ("params", Col::Text),
            ("idempotency_key", Col::OptionalText),
            ("created_at", Col::Time),
        ],
        primary_key: &["tenant", "id"],
        indexes: &[("ordo_transitions_entity_version", &["tenant", "machine", "entity", "version"], true)],
    },
    // Events to publish, written with the change; `sent_at` is set by the relay.
    SystemTable {
        name: OUTBOX,
        columns: &[
            ("id", Col::Uuid),
            ("tenant", Col::Text),
            ("machine", Col::Text),
            ("entity", Col::Text),
            ("version", Col::Int),
            ("event", Col::Text),
            ("payload", Col::Text),
            ("created_at", Col::Time),
            ("sent_at", Col::OptionalTime),
        ],
        primary_key: &["tenant", "id"],
        indexes: &[("ordo_outbox_unsent", &["sent_at", "created_at"], false)],
    },
    // The second insurance of idempotency: one outcome per (tenant, key).
    SystemTable {
        name: IDEMPOTENCY,
        columns: &[
            ("tenant", Col::Text),
            ("key", Col::Text),
            ("fingerprint", Col::Text),
            ("outcome", Col::Text),
            ("created_at", Col::Time),
            ("expires_at", Col::Time),
        ],
        primary_key: &["tenant", "key"],
        indexes: &[("ordo_idempotency_expiry", &["expires_at"], false)],
    },
    // Durable timers, armed on entering a state and removed on leaving it.
    SystemTable {
        name: TIMERS,
        columns: &[
            ("id", Col::Uuid),
            ("tenant", Col::Text),
            ("machine", Col::Text),
            ("entity", Col::Text),
            ("state", Col::Text),
            ("event", Col::Text),
            ("due_at", Col::Time),
            ("created_at", Col::Time),
        ],
        primary_key: &["tenant", "id"],
        indexes: &[
            ("ordo_timers_due", &["due_at"], false),
            ("ordo_timers_entity", &["tenant", "machine", "entity"], false),
        ],
    },
    // What shaped each spec's tables, to notice a spec changed behind them.
    SystemTable {
        name: SCHEMAS,
        columns: &[("spec", Col::Text), ("fingerprint", Col::Text), ("applied_at", Col::Time)],
        primary_key: &["spec"],
        indexes: &[],
    },
    // Every deployed version of each spec: its text and IR (JSON), for migration plans.
    SystemTable {
        name: VERSIONS,
        columns: &[
            ("spec", Col::Text),
            ("version", Col::Int),
            ("source", Col::Text),
            ("ir", Col::Text),
            ("applied_at", Col::Time),
        ],
        primary_key: &["spec", "version"],
        indexes: &[],
    },
];

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
        all.push(Box::new(OutboxCursor));
        all.push(Box::new(SpecVersions));
        all.push(Box::new(OutboxUnsent));
        all.push(Box::new(TenantKeys));
        all.push(Box::new(OutboxLean));
        all.push(Box::new(TimersByInstance));
        all
    }
}

/// A commit-safe order over the outbox, for `events_after`. On PostgreSQL each row records
/// its transaction id and a sequence number; readers take only rows of transactions older
/// than every running one, in (txid, seq) order, so a row never appears behind the cursor
/// after it passed. On SQLite, one writer at a time makes rowid order the commit order.
struct OutboxCursor;

impl MigrationName for OutboxCursor {
    fn name(&self) -> &str {
        "m0003_ordo_outbox_cursor"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxCursor {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            let conn = manager.get_connection();
            conn.execute_unprepared(
                "ALTER TABLE ordo_outbox ADD COLUMN seq BIGSERIAL, \
                 ADD COLUMN txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)",
            )
            .await?;
            conn.execute_unprepared("CREATE INDEX ordo_outbox_cursor ON ordo_outbox (tenant, txid, seq)")
                .await?;
        }
        // The relay's check for an earlier unsent version of the same instance.
        manager
            .create_index(
                Index::create()
                    .name("ordo_outbox_instance")
                    .table(Alias::new(OUTBOX))
                    .col(Alias::new("tenant"))
                    .col(Alias::new("machine"))
                    .col(Alias::new("entity"))
                    .col(Alias::new("version"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Sqlite {
            manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_instance").await?;
        }
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            let conn = manager.get_connection();
            conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_cursor").await?;
            conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_instance").await?;
            conn.execute_unprepared("ALTER TABLE ordo_outbox DROP COLUMN seq, DROP COLUMN txid").await?;
        }
        Ok(())
    }
}

/// Indexes over the unsent outbox rows only, for the relay's claim: the rows to publish in
/// order, and the check for an earlier unsent version of the same instance. Over the whole
/// table (every row ever published) that check walked the dead entries of rows just sent:
/// with 10 million published rows the claim read 30 times the index pages of every other
/// statement together. Partial, they hold only what waits, however large the outbox grows.
struct OutboxUnsent;

impl MigrationName for OutboxUnsent {
    fn name(&self) -> &str {
        "m0005_ordo_outbox_unsent"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxUnsent {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "CREATE INDEX ordo_outbox_unsent_instance ON ordo_outbox (tenant, machine, entity, version) \
             WHERE sent_at IS NULL",
        )
        .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            conn.execute_unprepared(
                "CREATE INDEX ordo_outbox_unsent_order ON ordo_outbox (txid, seq) WHERE sent_at IS NULL",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_unsent_order").await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_unsent_instance").await?;
        Ok(())
    }
}

/// Primary keys that lead with the tenant, for databases made before they did. A
/// distributed PostgreSQL (Citus) shards a table by a column only when every primary key
/// and unique index holds it (docs/scaling.md): the journal, outbox and timer tables and
/// every machine table were keyed by `id` alone. On PostgreSQL each table with a `tenant`
/// column whose primary key is `(id)` is re-keyed `(tenant, id)`: one rewrite of its key
/// index under an exclusive lock (a maintenance window for a large table; docs/migrations.md
/// says how to build the index beforehand). Tables made since are created with the new key
/// (`SYSTEM_TABLES`, [`tables`]), so this finds nothing on a new database. SQLite has
/// nothing to shard and cannot change a primary key in place: its older tables keep `(id)`,
/// which every statement's `tenant = ? AND id = ?` reads the same way.
struct TenantKeys;

impl MigrationName for TenantKeys {
    fn name(&self) -> &str {
        "m0006_ordo_tenant_keys"
    }
}

/// The tables of the current schema with a `tenant` column whose primary key is `(id)`,
/// each with its key constraint's name (PostgreSQL).
const KEYED_BY_ID_ALONE: &str = "SELECT c.relname AS table_name, k.conname AS key_name \
     FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
     WHERE k.contype = 'p' AND c.relnamespace = current_schema()::regnamespace \
     AND (SELECT array_agg(a.attname::text ORDER BY u.n) FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, n) \
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum) = ARRAY['id'] \
     AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant' AND NOT t.attisdropped) \
     ORDER BY c.relname";

#[async_trait::async_trait]
impl MigrationTrait for TenantKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let conn = manager.get_connection();
        let stmt = sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, KEYED_BY_ID_ALONE);
        for row in conn.query_all_raw(stmt).await? {
            let table: String = row.try_get("", "table_name")?;
            let key: String = row.try_get("", "key_name")?;
            conn.execute_unprepared(&format!(
                "ALTER TABLE {} DROP CONSTRAINT {}, ADD PRIMARY KEY (tenant, id)",
                crate::evolve::sql::ident(&table),
                crate::evolve::sql::ident(&key)
            ))
            .await?;
        }
        Ok(())
    }

    /// The keys stay: `(tenant, id)` is as unique as `(id)`, and the tables made since
    /// `m0006` never had another.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// The outbox's indexes that every relay round paid for and no query needed. Marking a
/// row sent changes `sent_at`, which the unsent-only indexes name, so PostgreSQL writes a
/// new row version with an entry in every full index of the table. Two of them were left
/// from before `m0005`: `(sent_at, created_at)`, whose new entries all went to one page
/// (every unsent row has a null `sent_at`), and `(tenant, machine, entity, version)`, which
/// the unsent-only index of the same columns replaced. Their one reader, the retention
/// sweep, now finds old rows by `created_at` (which marking never changes), through a BRIN
/// index on PostgreSQL (a summary per block range of a table written in time order: a few
/// pages, nothing per row) and a plain one on SQLite (whose updates touch only the indexes
/// of the columns they change).
struct OutboxLean;

impl MigrationName for OutboxLean {
    fn name(&self) -> &str {
        "m0007_ordo_outbox_lean"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxLean {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_unsent").await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_instance").await?;
        let using = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => " USING brin",
            _ => "",
        };
        conn.execute_unprepared(&format!(
            "CREATE INDEX ordo_outbox_created ON ordo_outbox{using} (created_at)"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_outbox_created").await?;
        conn.execute_unprepared("CREATE INDEX ordo_outbox_unsent ON ordo_outbox (sent_at, created_at)")
            .await?;
        conn.execute_unprepared(
            "CREATE INDEX ordo_outbox_instance ON ordo_outbox (tenant, machine, entity, version)",
        )
        .await?;
        Ok(())
    }
}

/// The timers' instance index led by the instance: `(entity, tenant, machine)` in place of
/// `(tenant, machine, entity)`. Group commit cancels the timers of the instances a batch
/// moved with `tenant = .. AND machine = .. AND state = .. AND entity IN (...)`. Before
/// the table's first analyze (its first minutes, while it grows fastest) the planner took
/// `tenant` and `machine` to match a row or two, used only them in the index and checked
/// every timer of the machine against the list (1.2 ms and 2,664 rows for three entities
/// a minute into a new database, and more with every row). Led by `entity`, the index can
/// only be entered by the list, one probe per entity, whatever the statistics say; the
/// one-instance cancel and arm (all three columns equal) read it as before.
struct TimersByInstance;

impl MigrationName for TimersByInstance {
    fn name(&self) -> &str {
        "m0008_ordo_timers_by_instance"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TimersByInstance {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("CREATE INDEX ordo_timers_instance ON ordo_timers (entity, tenant, machine)")
            .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_timers_entity").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("CREATE INDEX ordo_timers_entity ON ordo_timers (tenant, machine, entity)")
            .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS ordo_timers_instance").await?;
        Ok(())
    }
}

/// The history of deployed specs, for databases made before it existed (a new database
/// gets the table with the others, in `m0001`).
struct SpecVersions;

impl MigrationName for SpecVersions {
    fn name(&self) -> &str {
        "m0004_ordo_spec_versions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SpecVersions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match SystemTable::get(VERSIONS) {
            Some(t) => manager.create_table(system_table(t).if_not_exists().to_owned()).await,
            None => Err(DbErr::Migration(format!("{VERSIONS} is not declared"))),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Alias::new(VERSIONS)).if_exists().to_owned()).await
    }
}

struct SystemTables;

impl MigrationName for SystemTables {
    fn name(&self) -> &str {
        "m0001_ordo_system_tables"
    }
}

fn system_table(t: &SystemTable) -> TableCreateStatement {
    let mut create = Table::create();
    create.table(Alias::new(t.name));
    for (name, ty) in t.columns {
        let mut c = col(name);
        match ty {
            Col::Uuid => c.uuid().not_null(),
            Col::Text => c.text().not_null(),
            Col::OptionalText => c.text().null(),
            Col::Int => c.big_integer().not_null(),
            Col::Time => c.timestamp_with_time_zone().not_null(),
            Col::OptionalTime => c.timestamp_with_time_zone().null(),
        };
        create.col(c);
    }
    let mut pk = Index::create();
    for c in t.primary_key {
        pk.col(Alias::new(*c));
    }
    create.primary_key(&mut pk);
    create.to_owned()
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
        for t in SYSTEM_TABLES {
            manager.create_table(system_table(t)).await?;
            for (name, cols, unique) in t.indexes {
                let mut i = index(name, t.name, cols);
                if *unique {
                    i.unique();
                }
                manager.create_index(i).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in SYSTEM_TABLES.iter().rev() {
            manager.drop_table(Table::drop().table(Alias::new(t.name)).if_exists().to_owned()).await?;
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

/// [`tables`] with each table's name.
pub fn tables_named(spec: &ir::Spec) -> Vec<(String, TableCreateStatement)> {
    let names =
        spec.machines.iter().map(|m| m.table.clone()).chain(spec.resources.iter().map(|r| r.table.clone()));
    names.zip(tables(spec)).collect()
}

/// The CREATE TABLE statements of a spec: one per machine, one per resource.
pub fn tables(spec: &ir::Spec) -> Vec<TableCreateStatement> {
    let mut out = Vec::new();
    for m in &spec.machines {
        let states: Vec<String> = m.states.iter().map(|s| s.name.clone()).collect();
        let mut t = Table::create();
        t.table(Alias::new(&m.table))
            .col(col("id").uuid().not_null())
            .col(text("tenant"))
            .col(text("state").check(Expr::col(Alias::new("state")).is_in(states)).to_owned())
            .col(col("version").big_integer().not_null());
        for f in &m.fields {
            t.col(field_column(f));
        }
        t.col(time("created_at"))
            .col(time("updated_at"))
            .primary_key(Index::create().col(Alias::new("tenant")).col(Alias::new("id")));
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

pub(crate) fn field_column(f: &ir::Field) -> ColumnDef {
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
    let bytes = serde_json::to_vec(&shape).expect("a schema shape serializes: its maps have string keys");
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
