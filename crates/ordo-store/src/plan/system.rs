//! The statements of the system tables: journal, outbox, idempotency records and timers.

use super::*;

pub(super) fn system_plan(backend: DbBackend) -> Result<SystemPlan, PlanError> {
    // Every column of a system table but those named in `except`, each from the value of
    // the same name; `conflict` for an upsert.
    let insert = |table: &str,
                  except: &[&str],
                  conflict: Option<OnConflict>,
                  returning: Option<&str>|
     -> Result<Sql, PlanError> {
        let mut slots = Slots::default();
        let system = schema::SystemTable::get(table)
            .ok_or_else(|| PlanError { what: table.to_string(), reason: "not a system table".to_string() })?;
        let cols: Vec<(&str, SqlType)> = system
            .columns
            .iter()
            .filter(|(c, _)| !except.contains(c))
            .map(|(c, ty)| {
                let ty = match ty {
                    Col::Uuid => SqlType::Uuid,
                    Col::Text | Col::OptionalText => SqlType::Of(Type::Text),
                    Col::Int => SqlType::Of(Type::Int),
                    Col::Time | Col::OptionalTime => SqlType::Of(Type::Timestamp),
                };
                (*c, ty)
            })
            .collect();
        let values: Vec<Expr> =
            cols.iter().map(|(c, ty)| Expr::val(slots.value(Source::Value((*c).to_string()), *ty))).collect();
        let mut q = Query::insert();
        q.into_table(a(table))
            .columns(cols.iter().map(|(c, _)| a(c)))
            .values(values)
            .map_err(|e| PlanError { what: table.to_string(), reason: e.to_string() })?;
        if let Some(c) = conflict {
            q.on_conflict(c);
        }
        if let Some(col) = returning {
            q.returning_col(a(col));
        }
        slots.finish(backend, &q, table)
    };
    let journal = insert(JOURNAL, &[], None, None)?;
    let outbox = insert(OUTBOX, &["sent_at"], None, None)?;
    // A record past its retention is replaced; a live one is left alone and the insert
    // changes no row, which tells the executor another request holds the key.
    let replace_expired = OnConflict::columns([a("tenant"), a("key")])
        .update_columns([a("fingerprint"), a("outcome"), a("created_at"), a("expires_at")])
        .action_and_where(
            Expr::col((a(IDEMPOTENCY), a("expires_at"))).lte(Expr::col((a("excluded"), a("created_at")))),
        )
        .to_owned();
    let idempotency_put = insert(IDEMPOTENCY, &[], Some(replace_expired.clone()), None)?;
    let idempotency_put_many =
        Many::of(&insert(IDEMPOTENCY, &[], Some(replace_expired), Some("key"))?, backend, IDEMPOTENCY)?;
    let timer_arm = insert(TIMERS, &[], None, None)?;
    let (text, time) = (SqlType::Of(Type::Text), SqlType::Of(Type::Timestamp));

    let mut slots = Slots::default();
    let mut q = Query::select();
    q.columns([a("fingerprint"), a("outcome")])
        .from(a(IDEMPOTENCY))
        .and_where(Expr::col(a("tenant")).eq(slots.bind(Source::Tenant, text)))
        .and_where(Expr::col(a("key")).eq(slots.bind(Source::Value("key".to_string()), text)))
        .and_where(Expr::col(a("expires_at")).gt(slots.bind(Source::Now, time)));
    let idempotency_get = slots.finish(backend, &q, IDEMPOTENCY)?;

    let mut slots = Slots::default();
    let q = Query::delete()
        .from_table(a(TIMERS))
        .and_where(Expr::col(a("tenant")).eq(slots.bind(Source::Tenant, text)))
        .and_where(Expr::col(a("machine")).eq(slots.bind(Source::Value("machine".to_string()), text)))
        .and_where(Expr::col(a("entity")).eq(slots.bind(Source::Value("entity".to_string()), text)))
        .and_where(Expr::col(a("state")).eq(slots.bind(Source::Value("state".to_string()), text)))
        .to_owned();
    let timer_cancel = slots.finish(backend, &q, TIMERS)?;
    Ok(SystemPlan {
        journal_many: Many::of(&journal, backend, JOURNAL)?,
        outbox_many: Many::of(&outbox, backend, OUTBOX)?,
        timer_arm_many: Many::of(&timer_arm, backend, TIMERS)?,
        idempotency_put_many,
        journal,
        outbox,
        idempotency_get,
        idempotency_put,
        timer_arm,
        timer_cancel,
    })
}
