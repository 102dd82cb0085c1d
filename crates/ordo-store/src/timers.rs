//! The timer sweep: due timers fired, each in a transaction of its own, locking as a
//! command does (the instance, then the timer), so sweepers on every server share the work
//! without deadlocking with the commands that delete timers as instances leave their states.

use crate::exec::{Executor, Stop};
use crate::plan;
use crate::rows::Bind;
use crate::schema;
use crate::{Action, Command, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DbBackend};
use serde_json::Map;
use uuid::Uuid;

impl Executor {
    /// Fires the timers due at `now`, at most `limit` of them, each in a transaction of its
    /// own that locks as a command does: the instance first, then the timer. A command on
    /// the instance locks its row, then deletes the instance's timers as it leaves the state;
    /// a sweeper that held the timer's row while waiting for the instance's would deadlock
    /// with it (seen under load by `cargo xtask chaos`: PostgreSQL broke the cycle a second
    /// later, and every command behind it waited). So on PostgreSQL the instance is taken
    /// with `SKIP LOCKED` (a command holds it: the timer waits for the next round), then the
    /// timer row with `SKIP LOCKED` (another server took it, or the command deleted it: it is
    /// not fired here). The event goes through the normal path with idempotency key
    /// `timer:<id>` (so a timer fires at most once, even across crashes), and the row goes.
    /// Returns how many timers fired here.
    #[tracing::instrument(level = "debug", name = "timers.fire", skip_all)]
    pub async fn fire_due_timers(&self, now: DateTime<Utc>, limit: u64) -> Result<usize, StoreError> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
        let a = Alias::new;
        let machines: Vec<String> = self.spec.machines.iter().map(|m| m.name.clone()).collect();
        let mut due = Query::select();
        due.columns([a("id"), a("tenant"), a("machine"), a("entity"), a("event")])
            .from(a(schema::TIMERS))
            .and_where(Expr::col(a("due_at")).lte(now))
            .and_where(Expr::col(a("machine")).is_in(machines))
            .order_by(a("due_at"), Order::Asc)
            .limit(Ord::max(limit, 1));
        let rows = self.db.query_all(&due).await.map_err(StoreError::from)?;
        let mut fired = 0;
        for row in &rows {
            let timer = DueTimer {
                id: row.try_get("", "id").map_err(StoreError::from)?,
                tenant: row.try_get("", "tenant").map_err(StoreError::from)?,
                machine: row.try_get("", "machine").map_err(StoreError::from)?,
                entity: row.try_get("", "entity").map_err(StoreError::from)?,
                event: row.try_get("", "event").map_err(StoreError::from)?,
            };
            let mut tries = 0;
            loop {
                match self.fire_timer(&timer, now).await {
                    Ok(took) => {
                        fired += usize::from(took);
                        break;
                    }
                    Err(stop) => self.after_failure(&mut tries, stop).await?,
                }
            }
        }
        Ok(fired)
    }

    /// One timer, in its own transaction (see `fire_due_timers`): whether it fired here.
    async fn fire_timer(&self, t: &DueTimer, now: DateTime<Utc>) -> Result<bool, Stop> {
        use sea_orm::sea_query::{Alias, LockBehavior, LockType, Query};
        let a = Alias::new;
        let m = self.machine(&t.machine)?;
        let id: Uuid = t
            .entity
            .parse()
            .map_err(|_| Stop::Fail(StoreError::Internal(format!("timer {}: entity {}", t.id, t.entity))))?;
        let isolation = m
            .event(&t.event)
            .into_iter()
            .flat_map(|e| e.transitions.iter().map(|tr| tr.body.isolation))
            .max()
            .unwrap_or(ir::Isolation::ReadCommitted);
        let txn = self.begin(isolation).await?;
        let mut timer = Query::select();
        timer.column(a("id")).from(a(schema::TIMERS)).cond_where(t.row());
        if self.backend() == DbBackend::Postgres {
            let plans = &self.plans.machines[&t.machine];
            let b = Bind { tenant: &t.tenant, id: Some(id), ..Bind::default() };
            let lock = plan::lock_variant(&plans.lock, ir::Lock::PessimisticSkipLocked, self.backend());
            let locked = txn.query_one_raw(b.statement(self.backend(), &lock)).await?.is_some();
            // Not locked but there: a command holds it, and the next round fires the timer
            // if the command leaves it due. Not there at all: fired below, as a rejection.
            if !locked && txn.query_one_raw(b.statement(self.backend(), &plans.select)).await?.is_some() {
                return Ok(false);
            }
            timer.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        if txn.query_one(&timer).await?.is_none() {
            return Ok(false);
        }
        let cmd = Command {
            tenant: t.tenant.clone(),
            trace: None,
            idempotency: Some(crate::IdempotencyKey {
                key: format!("timer:{}", t.id),
                fingerprint: "timer".to_string(),
            }),
            action: Action::Fire {
                machine: t.machine.clone(),
                id,
                event: t.event.clone(),
                params: Map::new(),
                if_match: None,
            },
        };
        // Whatever the outcome (applied, or rejected because the instance moved on), the
        // timer is spent; leaving its state already deleted it when the event applied.
        self.one(&txn, &cmd, now, false).await?;
        let delete = Query::delete().from_table(a(schema::TIMERS)).cond_where(t.row()).to_owned();
        txn.execute(&delete).await?;
        txn.commit().await?;
        Ok(true)
    }
}

/// A timer found due, before its transaction takes it.
struct DueTimer {
    id: Uuid,
    tenant: String,
    machine: String,
    entity: String,
    event: String,
}

impl DueTimer {
    /// Its row, by the table's key `(tenant, id)`.
    fn row(&self) -> sea_orm::sea_query::Condition {
        use sea_orm::sea_query::{Alias, Cond, Expr, ExprTrait};
        Cond::all()
            .add(Expr::col(Alias::new("tenant")).eq(self.tenant.clone()))
            .add(Expr::col(Alias::new("id")).eq(self.id))
    }
}
