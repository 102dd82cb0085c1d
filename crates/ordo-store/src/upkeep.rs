//! What an operator watches and the sweeper does: the executor's and pool's counters
//! (`StoreStats`), the work waiting in the system tables (`Backlog`), and the purges of
//! expired idempotency records and published outbox rows, a bounded batch at a time.

use crate::{Store, StoreError, batch, exec, schema};
use sea_orm::{DbBackend, DbErr};

/// A snapshot of [`Store::stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreStats {
    /// Transactions retried after a transient conflict (serialization, deadlock, busy).
    pub retries: u64,
    /// Transactions begun, and the total time spent getting a connection and beginning.
    pub begins: u64,
    pub begin_wait_s: f64,
    /// Connections open, idle among them, and the pool's bound.
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    /// Group commit: transactions of batched commands, the commands in them, batches run
    /// again one by one after failing whole, commands not run (given up, or waited too
    /// long), total time commands waited for their key, and the commands waiting now.
    pub batches: u64,
    /// Batches that ran on the fast path: one statement per table, no savepoints.
    pub fast_batches: u64,
    pub batched_commands: u64,
    pub batch_splits: u64,
    pub batch_shed: u64,
    pub batch_wait_s: f64,
    pub batch_queued: u64,
}

/// A snapshot of [`Store::backlog`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub oldest_unsent_s: f64,
    pub due_timers: u64,
}

impl Store {
    /// What the executor and its pool have done and hold, for metrics.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.exec.stats;
        let idle = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let (pool_size, pool_idle) = match self.backend() {
            DbBackend::Postgres => {
                let pool = self.exec.db.get_postgres_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            DbBackend::Sqlite => {
                let pool = self.exec.db.get_sqlite_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            _ => (0, 0),
        };
        StoreStats {
            retries: s.retries.load(Relaxed),
            begins: s.begins.load(Relaxed),
            begin_wait_s: s.begin_wait_us.load(Relaxed) as f64 / 1e6,
            pool_size,
            pool_idle,
            pool_max: self.exec.config.pool_size,
            batches: self.batch_stat(|b| b.batches.load(Relaxed)),
            fast_batches: s.bulk_batches.load(Relaxed),
            batched_commands: self.batch_stat(|b| b.commands.load(Relaxed)),
            batch_splits: self.batch_stat(|b| b.split.load(Relaxed)),
            batch_shed: self.batch_stat(|b| b.shed.load(Relaxed)),
            batch_wait_s: self.batch_stat(|b| b.wait_us.load(Relaxed)) as f64 / 1e6,
            batch_queued: self.batch_stat(|b| b.queued.load(Relaxed) as u64),
        }
    }

    fn batch_stat(&self, f: impl Fn(&batch::BatchStats) -> u64) -> u64 {
        self.batcher.as_ref().map_or(0, |b| f(&b.stats))
    }

    /// The work waiting in the system tables at `now`: the age of the oldest unsent outbox
    /// event (0 when none waits) and how many timers are due.
    pub async fn backlog(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Backlog, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
        let a = Alias::new;
        let oldest = Query::select()
            .expr_as(Func::min(Expr::col(a("created_at"))), a("oldest"))
            .from(a(schema::OUTBOX))
            .and_where(Expr::col(a("sent_at")).is_null())
            .to_owned();
        let due = Query::select()
            .expr_as(Func::count(Expr::col(a("id"))), a("due"))
            .from(a(schema::TIMERS))
            .and_where(Expr::col(a("due_at")).lte(now))
            .to_owned();
        use sea_orm::ConnectionTrait;
        let db = &self.exec.db;
        let row = |q: sea_orm::sea_query::SelectStatement| async move {
            let statement = db.get_database_backend().build(&q);
            db.query_one_raw(statement)
                .await
                .map_err(|e| exec::stop_to_error(exec::classify(e)))?
                .ok_or_else(|| StoreError::Internal("an aggregate gave no row".to_string()))
        };
        let internal = |e: DbErr| StoreError::Internal(e.to_string());
        let oldest: Option<chrono::DateTime<chrono::Utc>> =
            row(oldest).await?.try_get("", "oldest").map_err(internal)?;
        let due: i64 = row(due).await?.try_get("", "due").map_err(internal)?;
        Ok(Backlog {
            oldest_unsent_s: oldest.map_or(0.0, |t| Ord::max((now - t).num_milliseconds(), 0) as f64 / 1e3),
            due_timers: u64::try_from(due).unwrap_or(0),
        })
    }

    /// Deletes idempotency records past their retention, at most `limit` per call (the
    /// sweeper calls it until it returns fewer); returns how many went.
    pub async fn purge_expired(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait};
        let expired = Expr::col(Alias::new("expires_at")).lte(now);
        self.purge(schema::IDEMPOTENCY, &["tenant", "key"], expired, limit).await
    }

    /// Deletes outbox rows the relay published at or before `before`, at most `limit` per
    /// call (the sweeper calls it until it returns fewer); unpublished rows are never
    /// deleted. Returns how many went. A row is published after it is made, so its
    /// `created_at` is at or before `before` too: that condition is what the index
    /// (`m0007`) finds old rows by, and changes what goes only when servers' clocks
    /// disagree (a row made on a clock ahead of the relay's then stays that much longer).
    pub async fn purge_sent_outbox(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait};
        let col = |c: &str| Expr::col(Alias::new(c));
        let published = col("sent_at").is_not_null().and(col("sent_at").lte(before));
        self.purge(schema::OUTBOX, &["tenant", "id"], col("created_at").lte(before).and(published), limit)
            .await
    }

    /// Deletes at most `limit` rows of `table` matching `condition` (rows picked by their
    /// primary key `key`), so one sweep never holds a long transaction.
    async fn purge(
        &self,
        table: &str,
        key: &[&str],
        condition: sea_orm::sea_query::Expr,
        limit: u64,
    ) -> Result<u64, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let cols = || key.iter().map(|c| Expr::col(Alias::new(*c)));
        let picked = Query::select()
            .exprs(cols())
            .from(Alias::new(table))
            .and_where(condition)
            .limit(Ord::max(limit, 1))
            .to_owned();
        let delete = Query::delete()
            .from_table(Alias::new(table))
            .and_where(Expr::tuple(cols()).in_subquery(picked))
            .to_owned();
        Ok(self.exec.db.execute(&delete).await?.rows_affected())
    }
}
