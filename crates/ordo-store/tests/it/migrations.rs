//! A shipped migration is never edited: the schema after each migration, on each backend,
//! is pinned by a snapshot (`snapshots/`), so a change to one fails here. A change of schema
//! is a new migration, which adds its own section to the snapshots.

use ordo_store::schema::Migrator;
use ordo_store::sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use ordo_testkit::{Backend, TestDb};
use sea_orm_migration::MigratorTraitSelf as _;
use std::sync::Arc;

/// The schema as the database describes it: every table's columns, constraints and
/// indexes (PostgreSQL's catalog), or every object's `CREATE` text (SQLite's).
async fn schema_text(db: &DatabaseConnection) -> String {
    let backend = db.get_database_backend();
    let queries: &[&str] = match backend {
        DbBackend::Postgres => &[
            "SELECT table_name || '.' || column_name || ' ' || data_type || \
             CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END || \
             COALESCE(' default ' || column_default, '') \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'seaql_migrations' \
             ORDER BY table_name, ordinal_position",
            "SELECT conrelid::regclass::text || ' ' || conname || ': ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE connamespace = current_schema()::regnamespace \
             AND conrelid::regclass::text <> 'seaql_migrations' ORDER BY 1",
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename <> 'seaql_migrations' ORDER BY tablename, indexname",
        ],
        _ => &["SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' \
             AND tbl_name <> 'seaql_migrations' ORDER BY type, name"],
    };
    let mut out = String::new();
    for q in queries {
        for row in db.query_all_raw(Statement::from_string(backend, *q)).await.unwrap() {
            let line: String = row.try_get_by_index(0).unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

async fn schema_after_each_migration(backend: Backend) -> String {
    let source = crate::spec_source("order");
    let spec = Arc::new(ordo_spec::compile(&source).unwrap());
    let migrator = Migrator::new(vec![("order".to_string(), spec)]);
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(test_db.url.as_str()).await.unwrap();
    let mut out = String::new();
    for migration in migrator.migrations() {
        migrator.up(&db, Some(1)).await.unwrap();
        out.push_str(&format!("== after {}\n", migration.name()));
        out.push_str(&schema_text(&db).await);
    }
    out
}

#[tokio::test]
async fn shipped_migrations_are_never_edited_postgres() {
    insta::assert_snapshot!("migrations_postgres", schema_after_each_migration(Backend::Postgres).await);
}

#[tokio::test]
async fn shipped_migrations_are_never_edited_sqlite() {
    insta::assert_snapshot!("migrations_sqlite", schema_after_each_migration(Backend::Sqlite).await);
}
