//! The front door of migrations: the system tables and each spec's first tables (sea-orm's
//! migrator), then each spec planned, applied or reverted by `evolve`.

use crate::evolve::{self, Apply, SpecSource};
use crate::{StoreError, schema};
use ordo_spec::ir;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTraitSelf;
use std::sync::Arc;

/// What `cargo xtask migrate` can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateAction {
    Up,
    Down,
    Fresh,
    Status,
}

/// Runs the migrations of every spec the database serves (name and IR, in a stable
/// order) and reports each migration's name and whether it is applied afterwards. `Up`
/// creates the tables of new specs and records their first version, but applies no change
/// to an existing spec (that is [`migrate_specs`] with an [`Apply`] other than `Never`).
pub async fn migrate(
    db: &DatabaseConnection,
    specs: &[(String, ir::Spec)],
    action: MigrateAction,
) -> Result<Vec<(String, bool)>, StoreError> {
    let sources: Vec<SpecSource> = specs
        .iter()
        .map(|(name, ir)| SpecSource { name: name.clone(), source: String::new(), ir: ir.clone() })
        .collect();
    match action {
        MigrateAction::Up => install(db, &sources).await?,
        _ => {
            migrate_specs(db, &sources, action, Apply::Never, &evolve::EvolveOptions::new()).await?;
        }
    }
    migrations(db, &sources).await
}

/// The system tables and the tables of new specs, each new spec's first version recorded;
/// existing specs are left as they are (see [`migrate_specs`] to change them).
pub async fn install(db: &DatabaseConnection, specs: &[SpecSource]) -> Result<(), StoreError> {
    migrator(specs).up(db, None).await.map_err(|e| StoreError::Migration(e.to_string()))?;
    for spec in specs {
        evolve::deployed(db, spec).await?;
    }
    Ok(())
}

fn migrator(specs: &[SpecSource]) -> schema::Migrator {
    schema::Migrator::new(specs.iter().map(|s| (s.name.clone(), Arc::new(s.ir.clone()))).collect())
}

/// Each migration of the database's schema (system tables, each spec's first tables) and
/// whether it is applied.
pub async fn migrations(
    db: &DatabaseConnection,
    specs: &[SpecSource],
) -> Result<Vec<(String, bool)>, StoreError> {
    let statuses = migrator(specs)
        .get_migration_with_status(db)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(statuses
        .iter()
        .map(|m| (m.name().to_string(), m.status() == sea_orm_migration::MigrationStatus::Applied))
        .collect())
}

/// The migrations of the specs a database serves. `Up`: the system tables and the tables
/// of new specs (their first version recorded), then, for each spec whose deployed version
/// differs, a plan from it to the spec, applied as `apply` allows (`Down`: the last version
/// of each spec reverted the same way; `Status`: the plans, nothing applied; `Fresh`: every
/// table dropped and made anew). Returns one plan per spec (empty when up to date); a plan
/// with refusals was not applied.
pub async fn migrate_specs(
    db: &DatabaseConnection,
    specs: &[SpecSource],
    action: MigrateAction,
    apply: Apply,
    options: &evolve::EvolveOptions,
) -> Result<Vec<evolve::Plan>, StoreError> {
    let migrator = migrator(specs);
    if action == MigrateAction::Status {
        // Nothing is written: specs whose tables a `migrate up` would make are new.
        let history_kept = migrations(db, specs)
            .await?
            .iter()
            .any(|(name, applied)| *applied && name == "m0004_ordo_spec_versions");
        let mut plans = Vec::new();
        for spec in specs {
            let known = history_kept && evolve::known(db, spec).await?;
            plans.push(if known {
                evolve::evolve(db, spec, Apply::Never, options).await?
            } else {
                evolve::Plan::new_tables(spec, db.get_database_backend())
            });
        }
        return Ok(plans);
    }
    if action == MigrateAction::Fresh {
        migrator.fresh(db).await.map_err(|e| StoreError::Migration(e.to_string()))?;
    }
    install(db, specs).await?;
    let mut plans = Vec::new();
    for spec in specs {
        let plan = match action {
            MigrateAction::Down => evolve::revert(db, &spec.name, apply, options).await?,
            _ => evolve::evolve(db, spec, apply, options).await?,
        };
        plans.push(plan);
    }
    Ok(plans)
}
