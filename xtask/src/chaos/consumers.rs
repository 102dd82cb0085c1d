//! The chaos run's consumer workers (`ordo-consumer`, two per stream in one group): they
//! apply every event into a table of their own, which the audit reads to check that each
//! committed event was applied exactly once.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// The consumer group whose workers the audit checks.
pub(super) const CONSUMER_GROUP: &str = "chaos-audit";

/// A consumer's handler that records each application ([`ordo_pressure::audit::APPLIED`]).
struct Recorded;

impl ordo_consumer::Handler for Recorded {
    fn handle<'a>(
        &'a self,
        txn: &'a sea_orm::DatabaseTransaction,
        e: &'a ordo_consumer::Event,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        use sea_orm::ConnectionTrait;
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO {} (grp, tenant, event_id, stream) VALUES ($1, $2, $3, $4)",
                ordo_pressure::audit::APPLIED
            );
            let values =
                [CONSUMER_GROUP.into(), e.get("tenant").into(), e.id().into(), e.get("machine").into()];
            let insert = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values);
            txn.execute_raw(insert).await.map(|_| ()).map_err(|err| err.to_string())
        })
    }
}

/// The consumer workers: each polls until stopped, waiting out whatever fault it meets.
pub(super) struct Consumers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Consumers {
    /// Two workers per stream in [`CONSUMER_GROUP`], applying into `db_url`'s database.
    pub(super) async fn start(redis_url: &str, db_url: &str, streams: &[String]) -> Result<Consumers> {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(db_url).await?;
        db.execute_unprepared(ordo_pressure::audit::APPLIED_DDL).await?;
        ordo_consumer::migrate(&db).await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for stream in streams {
            for worker in ["a", "b"] {
                let mut config =
                    ordo_consumer::ConsumerConfig::new(redis_url, stream, CONSUMER_GROUP, worker);
                config.block_ms = 500;
                // An entry whose delivery a fault cut is taken back soon.
                config.claim_idle_ms = 5_000;
                // The handler never refuses an event: a fault is no poison, however often
                // it makes a delivery fail.
                config.deliveries_max = u64::MAX;
                let consumer = ordo_consumer::Consumer::connect(config, db.clone())
                    .await
                    .with_context(|| format!("consumer {worker} of {stream}"))?;
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        if consumer.poll(&Recorded).await.is_err() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }));
            }
        }
        Ok(Consumers { stop, tasks })
    }

    pub(super) async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
