//! The outbox read two ways: the events feed (`Store::events_after`, a commit-safe cursor
//! over a tenant's events) and the relay's claims (`Store::claim_outbox`, batches held
//! with `FOR UPDATE SKIP LOCKED` until marked sent).

use crate::{Store, StoreError, exec, ir, schema};
use sea_orm::{DbBackend, DbErr};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

impl Store {
    /// A tenant's events (outbox rows), oldest first, after `after` (a cursor from an earlier
    /// page; none for the beginning), at most `limit` (capped by `EVENTS_PAGE_MAX`). The
    /// order is commit-safe: no event ever appears behind a cursor already handed out.
    pub async fn events_after(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let (txid, seq) = match after {
            None => (-1i64, -1i64),
            Some(c) => {
                let (t, s) = c
                    .split_once('-')
                    .ok_or_else(|| StoreError::Invalid(format!("`{c}` is not an events cursor")))?;
                // Two runs of 1 to 18 digits, as cursors are handed out (and as the
                // schema's pattern says).
                let parse = |x: &str| match x.len() {
                    1..=18 if x.bytes().all(|b| b.is_ascii_digit()) => {
                        Ok(x.parse::<i64>().expect("1 to 18 ASCII digits fit in an i64"))
                    }
                    _ => Err(StoreError::Invalid(format!("`{c}` is not an events cursor"))),
                };
                (parse(t)?, parse(s)?)
            }
        };
        let limit = i64::try_from(limit.clamp(1, EVENTS_PAGE_MAX)).unwrap_or(1);
        let backend = self.backend();
        let stmt = match backend {
            DbBackend::Postgres => Statement::from_sql_and_values(
                backend,
                "SELECT txid, seq, payload, created_at FROM ordo_outbox \
                 WHERE tenant = $1 AND (txid, seq) > ($2, $3) \
                 AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY txid, seq LIMIT $4",
                [tenant.into(), txid.into(), seq.into(), limit.into()],
            ),
            _ => Statement::from_sql_and_values(
                backend,
                "SELECT 0 AS txid, rowid AS seq, payload, created_at FROM ordo_outbox \
                 WHERE tenant = ? AND rowid > ? ORDER BY rowid LIMIT ?",
                [tenant.into(), seq.into(), limit.into()],
            ),
        };
        let rows = self.exec.db.query_all_raw(stmt).await?;
        rows.iter().map(outbox_event).collect::<Result<_, DbErr>>().map_err(StoreError::from)
    }

    /// Marks unsent again every outbox row published at or after `since`, so the relay
    /// publishes them anew, each instance's in order: for a relay that found Redis lost
    /// what it published (restarted empty, flushed, or replaced), whose entries no consumer
    /// may have read yet. A row a relay holds right now (claimed, not yet marked) is waited
    /// for and included once marked (the condition also takes unsent rows, and PostgreSQL
    /// rechecks a row it waited for against it; SQLite's writer is exclusive), so no entry
    /// published into the lost Redis escapes. Returns how many rows wait to be published.
    pub async fn republish_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let sent_at = || Expr::col(Alias::new("sent_at"));
        let update = Query::update()
            .table(Alias::new(schema::OUTBOX))
            .value(Alias::new("sent_at"), Option::<chrono::DateTime<chrono::Utc>>::None)
            .and_where(sent_at().is_null().or(sent_at().gte(since)))
            .to_owned();
        Ok(self.exec.db.execute(&update).await?.rows_affected())
    }

    /// Takes up to `limit` unsent outbox rows for publishing, in a transaction that holds
    /// them (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several relays share the work; SQLite's
    /// immediate transaction is exclusive). A row is taken only when no earlier version of
    /// its instance is still unsent, so each instance's events leave in order however many
    /// relays run. Publish them, then call [`OutboxBatch::mark_sent`]; dropping the batch
    /// instead leaves them unsent for the next round (at least once).
    pub async fn claim_outbox(&self, limit: u64) -> Result<OutboxBatch, StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let backend = self.backend();
        let limit = i64::try_from(limit.clamp(1, EVENTS_PAGE_MAX)).unwrap_or(1);
        let txn = self.exec.begin(ir::Isolation::ReadCommitted).await.map_err(exec::stop_to_error)?;
        if backend == DbBackend::Postgres {
            // The claim walks the unsent rows in order with an index scan, never a bitmap
            // scan. The unsent-only indexes keep an entry for every row marked sent until
            // vacuum removes it; an index scan marks such an entry dead the first time it
            // meets it and stops at its LIMIT, while a bitmap scan visits every one of them
            // in every round and marks none. With statistics taken while the outbox was
            // small the planner chose the bitmap scan: 38,000 entries visited for 36
            // waiting rows, 5.6 ms a round against 0.5 ms, growing until the next vacuum.
            // And the claim is planned for the round's own LIMIT, not from a generic plan
            // cached while the outbox was small. One round trip: `set_config(.., true)` is
            // `SET LOCAL`.
            let settings = "SELECT set_config('enable_bitmapscan', 'off', true), \
                 set_config('plan_cache_mode', 'force_custom_plan', true)";
            txn.query_one_raw(Statement::from_string(backend, settings)).await?;
        }
        // No earlier unsent version of the instance: this row is its first unsent one. A
        // correlated minimum, so each row costs one probe of the unsent-instance index
        // (`m0005`) whatever the planner believes of how many rows wait (as NOT EXISTS it
        // chose a scan of every unsent row per row: quadratic, 156 ms against 7 ms for
        // 1,100 waiting rows beside 2 million published ones).
        let first_unsent = "o.version = (SELECT min(p.version) FROM ordo_outbox p WHERE p.sent_at IS NULL \
             AND p.tenant = o.tenant AND p.machine = o.machine AND p.entity = o.entity)";
        let sql = match backend {
            DbBackend::Postgres => format!(
                "SELECT o.id, o.tenant, o.machine, o.payload, o.created_at, o.txid, o.seq, o.ctid::text AS at FROM ordo_outbox o \
                 WHERE o.sent_at IS NULL AND {first_unsent} ORDER BY o.txid, o.seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            _ => format!(
                "SELECT o.id, o.tenant, o.machine, o.payload, o.created_at, 0 AS txid, o.rowid AS seq, NULL AS at FROM ordo_outbox o \
                 WHERE o.sent_at IS NULL AND {first_unsent} ORDER BY o.rowid LIMIT ?"
            ),
        };
        let rows = txn.query_all_raw(Statement::from_sql_and_values(backend, sql, [limit.into()])).await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut places = Vec::with_capacity(rows.len());
        for r in &rows {
            places.extend(r.try_get::<Option<String>>("", "at")?);
            events.push(ClaimedEvent {
                id: r.try_get("", "id")?,
                tenant: r.try_get("", "tenant")?,
                machine: r.try_get("", "machine")?,
                event: outbox_event(r)?,
            });
        }
        Ok(OutboxBatch { txn, events, places })
    }
}

/// The most events one read returns.
pub const EVENTS_PAGE_MAX: u64 = 1_000;

/// An event from the outbox, with the cursor that continues after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub cursor: String,
    pub payload: Json,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An outbox row taken for publishing.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: Uuid,
    pub tenant: String,
    pub machine: String,
    pub event: OutboxEvent,
}

/// Outbox rows held by one relay until it marks them sent (or drops the batch).
pub struct OutboxBatch {
    txn: sea_orm::DatabaseTransaction,
    pub events: Vec<ClaimedEvent>,
    /// PostgreSQL: where each claimed row is (its `ctid`), which stays put while this
    /// transaction holds the row's lock.
    places: Vec<String>,
}

impl OutboxBatch {
    /// Marks the batch sent and releases it.
    pub async fn mark_sent(self, now: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Query};
        use sea_orm::{ConnectionTrait, Statement};
        let OutboxBatch { txn, events, places } = self;
        let n = events.len();
        if n > 0 && !places.is_empty() {
            // PostgreSQL: by where the rows are (a TID scan, one visit per row). By the key,
            // `tenant = t AND id IN (...)`, the planner went by statistics taken while the
            // outbox was small and scanned every row of the tenant, checking each against
            // the list: 26 ms to mark 300 rows beside 38,000, 3 ms by place.
            let sql = "UPDATE ordo_outbox SET sent_at = $1 WHERE ctid = ANY($2::text[]::tid[])";
            let values = [now.into(), places.into()];
            txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
        } else if n > 0 {
            // SQLite: by the table's key, `tenant = t AND id IN (...)` per tenant, one index
            // scan each (a list of `(tenant, id)` tuples is planned as an OR of every pair,
            // and each row is checked against all of them: quadratic in the batch).
            let mut ids: std::collections::BTreeMap<&str, Vec<Uuid>> = std::collections::BTreeMap::new();
            for e in &events {
                ids.entry(&e.tenant).or_default().push(e.id);
            }
            let mut which = Condition::any();
            for (tenant, ids) in ids {
                which = which.add(
                    Expr::col(Alias::new("tenant")).eq(tenant).and(Expr::col(Alias::new("id")).is_in(ids)),
                );
            }
            let update = Query::update()
                .table(Alias::new(schema::OUTBOX))
                .value(Alias::new("sent_at"), now)
                .cond_where(which)
                .to_owned();
            txn.execute(&update).await?;
        }
        txn.commit().await?;
        Ok(n)
    }
}

/// An outbox row read with its `txid`, `seq`, `payload` and `created_at` columns.
fn outbox_event(r: &sea_orm::QueryResult) -> Result<OutboxEvent, DbErr> {
    let txid: i64 = r.try_get("", "txid")?;
    let seq: i64 = r.try_get("", "seq")?;
    let payload: String = r.try_get("", "payload")?;
    Ok(OutboxEvent {
        cursor: format!("{txid}-{seq}"),
        payload: serde_json::from_str(&payload)
            .map_err(|e| DbErr::Type(format!("an outbox payload is not JSON: {e}")))?,
        created_at: r.try_get("", "created_at")?,
    })
}
