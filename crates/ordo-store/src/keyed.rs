//! A keyed command's idempotency inside its transaction: its record looked for and
//! written with its outcome, a lost race answered with the winner's outcome, and a command
//! alone in its transaction run without savepoints.

use crate::exec::{Executor, Stop, classify, replay};
use crate::rows::Bind;
use crate::value::Val;
use crate::{Command, Executed, Outcome, StoreError};
use chrono::{DateTime, Utc};
use ordo_spec::ir;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use tracing::Instrument as _;

impl Executor {
    /// One command inside the transaction. With an idempotency key, a savepoint holds both
    /// its writes and its record, so that losing the race for the key undoes exactly this
    /// command and the caller gets the winner's outcome.
    pub(crate) async fn one(
        &self,
        txn: &DatabaseTransaction,
        cmd: &Command,
        now: DateTime<Utc>,
        looked_up: bool,
    ) -> Result<Executed, Stop> {
        let Some(idem) = &cmd.idempotency else {
            return Ok(Executed { outcome: self.decide(txn, cmd, now).await?, replayed: false });
        };
        if !looked_up && let Some(found) = self.stored(txn, &cmd.tenant, &idem.key, now).await? {
            return Ok(replay(found, &idem.fingerprint));
        }
        let keyed = txn.begin().await?;
        let outcome = self.decide(&keyed, cmd, now).await?;
        if self.put_record(&keyed, cmd, idem, &outcome, now).await? {
            keyed.commit().await?;
            return Ok(Executed { outcome, replayed: false });
        }
        // Another request with this key committed first: ours never happened, and the caller
        // gets that outcome. Under a snapshot isolation level the winner may not be visible
        // yet: start over.
        keyed.rollback().await?;
        match self.stored(txn, &cmd.tenant, &idem.key, now).await? {
            Some(found) => Ok(replay(found, &idem.fingerprint)),
            None => Err(Stop::Retry),
        }
    }

    /// A keyed command alone in its transaction, with no savepoint (four round trips
    /// fewer than `one`): applied, its writes and its record commit together; rejected,
    /// the transaction is rolled back and the rejection recorded in one of its own (the
    /// outcome decided on what the first saw); a record another request committed first
    /// is that request's answer.
    pub(crate) async fn solo(
        &self,
        cmd: &Command,
        idem: &crate::IdempotencyKey,
        isolation: ir::Isolation,
        looked_up: bool,
    ) -> Result<Executed, Stop> {
        let txn = self.begin(isolation).await?;
        let now = Utc::now();
        if !looked_up && let Some(found) = self.stored(&txn, &cmd.tenant, &idem.key, now).await? {
            txn.rollback().await?;
            return Ok(replay(found, &idem.fingerprint));
        }
        let applied = self.apply(&txn, cmd, now).instrument(tracing::debug_span!("db.apply")).await;
        let (txn, outcome) = match applied {
            Ok(record) => (txn, Outcome::Applied { row: record }),
            Err(Stop::Reject(rejection)) => {
                txn.rollback().await?;
                (self.begin(ir::Isolation::ReadCommitted).await?, Outcome::Rejected { rejection })
            }
            Err(other) => return Err(other),
        };
        if self.put_record(&txn, cmd, idem, &outcome, now).await? {
            txn.commit().instrument(tracing::debug_span!("db.commit")).await?;
            return Ok(Executed { outcome, replayed: false });
        }
        txn.rollback().await?;
        match self.stored(&self.db, &cmd.tenant, &idem.key, now).await? {
            Some(found) => Ok(replay(found, &idem.fingerprint)),
            None => Err(Stop::Retry),
        }
    }

    /// Writes a keyed command's record: `false` when a live record already holds the key
    /// (another request with it committed first).
    pub(crate) async fn put_record(
        &self,
        conn: &DatabaseTransaction,
        cmd: &Command,
        idem: &crate::IdempotencyKey,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, Stop> {
        let b = self.record_row(cmd, idem, outcome, now);
        let put = conn
            .execute_raw(b.statement(self.backend(), &self.plans.system.idempotency_put))
            .instrument(tracing::debug_span!("idempotency.record"))
            .await;
        match put {
            Ok(r) => Ok(r.rows_affected() != 0),
            Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// The idempotency record of a keyed command's outcome.
    pub(crate) fn record_row<'a>(
        &self,
        cmd: &'a Command,
        idem: &crate::IdempotencyKey,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Bind<'a> {
        let mut b = Bind { tenant: &cmd.tenant, now: Some(now), ..Bind::default() };
        b.values.insert("tenant", Val::Text(cmd.tenant.clone()));
        b.values.insert("key", Val::Text(idem.key.clone()));
        b.values.insert("fingerprint", Val::Text(idem.fingerprint.clone()));
        b.values.insert("outcome", Val::Text(outcome.recorded_form()));
        b.values.insert("created_at", Val::Time(now));
        let ttl =
            chrono::Duration::milliseconds(i64::try_from(self.config.idempotency_ttl_ms).unwrap_or(i64::MAX));
        b.values.insert("expires_at", Val::Time(now + ttl));
        b
    }

    #[tracing::instrument(level = "debug", name = "idempotency.lookup", skip_all, fields(found))]
    pub(crate) async fn stored<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, Outcome)>, Stop> {
        let mut b = Bind { tenant, now: Some(now), ..Bind::default() };
        b.values.insert("key", Val::Text(key.to_string()));
        let row = conn.query_one_raw(b.statement(self.backend(), &self.plans.system.idempotency_get)).await?;
        tracing::Span::current().record("found", row.is_some());
        let Some(row) = row else { return Ok(None) };
        let fingerprint: String = row.try_get("", "fingerprint")?;
        let outcome: String = row.try_get("", "outcome")?;
        let outcome = serde_json::from_str(&outcome)
            .map_err(|e| Stop::Fail(StoreError::Internal(format!("stored outcome does not parse: {e}"))))?;
        Ok(Some((fingerprint, outcome)))
    }
}
