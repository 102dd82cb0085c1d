//! `cargo xtask migrate plan|up|down|status|fresh`: the store's spec evolution against a
//! database, printed for a person.

use crate::MigrateCmd;
use crate::spec::spec_sources;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn migrate(
    action: MigrateCmd,
    url: &str,
    allow_destructive: bool,
    paths: &[PathBuf],
) -> Result<ExitCode> {
    use ordo_store::{Apply, MigrateAction, evolve};
    let specs = spec_sources(paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let db = ordo_store::connect(&ordo_store::StoreConfig::new(url)).await?;
        let options = evolve::EvolveOptions::new();
        let (what, apply) = match action {
            MigrateCmd::Plan | MigrateCmd::Status => (MigrateAction::Status, Apply::Never),
            MigrateCmd::Up => (MigrateAction::Up, Apply::All { allow_destructive }),
            MigrateCmd::Down => (MigrateAction::Down, Apply::All { allow_destructive }),
            MigrateCmd::Fresh => (MigrateAction::Fresh, Apply::Never),
        };
        let plans = ordo_store::migrate_specs(&db, &specs, what, apply, &options).await?;
        if let MigrateCmd::Status = action {
            for spec in &specs {
                println!("spec `{}`:", spec.name);
                for v in evolve::history(&db, &spec.name).await? {
                    println!("  version {} applied {}", v.version, v.applied_at.to_rfc3339());
                }
            }
            for p in &plans {
                if p.is_empty() {
                    println!("`{}`: the spec on disk is the deployed one", p.spec);
                } else {
                    println!("`{}`: the spec on disk differs: {}", p.spec, p.summary());
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut refused = false;
        for p in &plans {
            if matches!(action, MigrateCmd::Fresh) {
                println!("`{}`: tables made anew", p.spec);
                continue;
            }
            print!("{p}");
            refused |= !p.refusals.is_empty();
        }
        anyhow::Ok(if refused { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    })
}
