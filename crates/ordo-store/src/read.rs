//! Reads outside any command: an instance, a resource row, an instance's journal.

use crate::exec::stop_to_error;
use crate::rows::{Bind, machine_row, resource_row};
use crate::{Store, StoreError, StoredRow, schema, value};
use sea_orm::{ConnectionTrait, DbErr};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

impl Store {
    /// An instance as it stands, or `None` when the tenant has no such instance.
    pub async fn instance(
        &self,
        tenant: &str,
        machine: &str,
        id: Uuid,
    ) -> Result<Option<StoredRow>, StoreError> {
        let exec = &self.exec;
        let m = exec.machine(machine)?;
        let b = Bind { tenant, id: Some(id), ..Bind::default() };
        let row =
            exec.db.query_one_raw(b.statement(exec.backend(), &exec.plans.machines[machine].select)).await?;
        row.map(|r| machine_row(m, &r).map_err(stop_to_error)).transpose()
    }

    /// A resource row by its key, or `None` when the tenant has no such row.
    pub async fn resource(
        &self,
        tenant: &str,
        resource: &str,
        key: &Json,
    ) -> Result<Option<StoredRow>, StoreError> {
        let exec = &self.exec;
        let r = exec.resource(resource)?;
        let key = value::from_json(&r.key, Some(key))
            .map_err(|e| StoreError::Invalid(format!("{}: {}", e.field, e.reason)))?;
        let b = Bind { tenant, key: Some(&key), ..Bind::default() };
        let row = exec
            .db
            .query_one_raw(b.statement(exec.backend(), &exec.plans.resources[resource].select))
            .await?;
        row.map(|r2| resource_row(r, &r2).map_err(stop_to_error)).transpose()
    }

    /// An instance's journal in version order, after `after_version`, at most
    /// `JOURNAL_PAGE_MAX` entries (fewer when `limit` says so).
    pub async fn journal(
        &self,
        tenant: &str,
        machine: &str,
        id: Uuid,
        after_version: i64,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
        let a = Alias::new;
        let q = Query::select()
            .columns([a("version"), a("event"), a("from_state"), a("to_state"), a("params"), a("created_at")])
            .from(a(schema::JOURNAL))
            .and_where(Expr::col(a("tenant")).eq(tenant))
            .and_where(Expr::col(a("machine")).eq(machine))
            .and_where(Expr::col(a("entity")).eq(id.to_string()))
            .and_where(Expr::col(a("version")).gt(after_version))
            .order_by(a("version"), Order::Asc)
            .limit(limit.clamp(1, JOURNAL_PAGE_MAX))
            .to_owned();
        let rows = self.exec.db.query_all(&q).await?;
        rows.iter()
            .map(|r| {
                let params: String = r.try_get("", "params")?;
                Ok(JournalEntry {
                    version: r.try_get("", "version")?,
                    event: r.try_get("", "event")?,
                    from: r.try_get("", "from_state")?,
                    to: r.try_get("", "to_state")?,
                    params: serde_json::from_str(&params)
                        .map_err(|e| DbErr::Type(format!("a journal entry's params are not JSON: {e}")))?,
                    at: r.try_get("", "created_at")?,
                })
            })
            .collect::<Result<_, DbErr>>()
            .map_err(StoreError::from)
    }
}

/// The most journal entries one read returns.
pub const JOURNAL_PAGE_MAX: u64 = 500;

/// One transition of an instance, as the journal recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub version: i64,
    pub event: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub params: Json,
    pub at: chrono::DateTime<chrono::Utc>,
}
