//! Full-link pressure tests: `cargo xtask pressure` drives a running server over HTTP on
//! 127.0.0.1 with an open model (see `driver`, and `traffic` for its vocabulary), then audits the database (see `audit`) and
//! reports (see `report`). The verdict (thresholds and audit) is the exit code.

pub mod audit;
pub mod driver;
pub mod report;
pub mod scenario;
pub mod traffic;

use anyhow::{Context, Result};
use driver::Driver;
use ordo_record::TrafficRecord;
use ordo_store::StoreConfig;
use report::Report;
use scenario::Scenario;
use std::path::PathBuf;
use traffic::Target;

/// A recorded traffic shape to replay, and how much faster.
pub type Replay = (Vec<TrafficRecord>, f64);

/// A run.
pub struct Run {
    pub target: Target,
    pub scenario: Scenario,
    /// Instead of the scenario's stages: a recorded traffic shape, and how much faster.
    pub replay: Option<Replay>,
    /// The server's database, for the audit (none: no audit).
    pub database: Option<StoreConfig>,
    /// The tenant the load runs as (the API key's).
    pub tenant: String,
    /// Where to write `report.json` and `report.html`.
    pub out: Option<PathBuf>,
    /// The server relays its outbox (it has Redis): the audit waits for every committed
    /// event to be published, and fails the run if one is not.
    pub relayed: bool,
    /// Told, once setup is done and the load begins, the instant the run's times count
    /// from (what `Report::done` is measured against): for faults injected during the load.
    pub on_load: Option<tokio::sync::oneshot::Sender<tokio::time::Instant>>,
}

pub async fn run(mut run: Run) -> Result<Report> {
    let stages = scenario::parse_stages(&run.scenario.stages)?;
    let driver = Driver::new(run.target.clone(), run.scenario.clone())?;
    // The real tables, as they were, when the load is shadow traffic.
    let real = match (&run.database, run.target.shadow) {
        (Some(db), true) => {
            let conn = ordo_store::connect(db).await.context("the audit's database")?;
            Some((audit::snapshot(&conn).await?, conn))
        }
        _ => None,
    };
    driver.setup().await?;
    if let Some(tell) = run.on_load.take() {
        let _ = tell.send(driver.started());
    }
    let (stage_summaries, peak, peak_steps) = match &run.replay {
        Some((records, speed)) => (vec![driver.replay(records, *speed).await], None, Vec::new()),
        None => driver.run(&stages).await,
    };
    let audit = match &run.database {
        Some(db) => {
            let config = if run.target.shadow { db.shadow()? } else { db.clone() };
            let conn = ordo_store::connect(&config).await.context("the audit's database")?;
            let mut found = audit::audit(&conn, &run.tenant, &driver.seen()).await?;
            if run.relayed {
                audit::published(&mut found, &conn, &run.tenant).await?;
            }
            if let Some((before, real)) = &real {
                audit::untouched(&mut found, before, &audit::snapshot(real).await?);
            }
            Some(found)
        }
        None => None,
    };
    let tally = driver.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let report = Report {
        target: run.target.label(),
        shadow: run.target.shadow,
        scenario: run.scenario.clone(),
        stages: stage_summaries,
        peak_per_s: peak,
        peak_steps,
        timeline: tally.timeline(),
        ops: tally.ops(),
        errors: tally.errors(),
        retries: tally.retries(),
        done: tally.done(),
        audit,
    };
    if let Some(dir) = &run.out {
        report.write(dir)?;
    }
    Ok(report)
}
