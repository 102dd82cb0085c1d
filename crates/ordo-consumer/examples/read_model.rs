//! An example worker: keeps a read model of orders per state in its own database.
//!
//!   DATABASE_URL=postgres://... REDIS_URL=redis://127.0.0.1:6379 \
//!       cargo run -p ordo-consumer --example read_model
//!
//! It follows `ordo:events:Order` (the server's default prefix) in the consumer group
//! `read-model`; `SELECT state, count(*) FROM order_states GROUP BY state` is the read model.

use ordo_consumer::{Consumer, ConsumerConfig, Event, Handler};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement};
use std::future::Future;
use std::pin::Pin;

struct OrderStates;

impl Handler for OrderStates {
    fn handle<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        e: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // Newer versions win, so a redelivered old event never moves an order back.
            let sql = "INSERT INTO order_states (id, state, version) VALUES ($1, $2, $3) \
                       ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = excluded.version \
                       WHERE order_states.version < excluded.version";
            let version: i64 = e.get("version").parse().map_err(|_| "version is not a number".to_string())?;
            let values = [e.get("entity").into(), e.get("to").into(), version.into()];
            txn.execute_raw(Statement::from_sql_and_values(txn.get_database_backend(), sql, values))
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database_url = std::env::var("DATABASE_URL")?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let db = sea_orm::Database::connect(&database_url).await?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS order_states (id TEXT PRIMARY KEY, state TEXT NOT NULL, version BIGINT NOT NULL)",
    )
    .await?;
    // The processed-messages table, by the consumer's own migration (a deployment step).
    ordo_consumer::migrate(&db).await?;
    let config = ConsumerConfig::new(&redis_url, "ordo:events:Order", "read-model", "worker-1");
    let consumer = Consumer::connect(config, db).await?;
    loop {
        let poll = consumer.poll(&OrderStates).await?;
        if poll.applied + poll.duplicates + poll.dead_lettered > 0 {
            println!("{poll:?}");
        }
    }
}
