//! What the executor's statements bind and what their rows read back: the values of a
//! statement's slots (`Bind`), the rows a command writes beside its own (journal, outbox,
//! timers), the outbox payload, and the decoding of machine and resource rows into records.

use crate::exec::Stop;
use crate::plan::{self, Source, Sql, SqlType};
use crate::value::Val;
use crate::{Command, StoredRow};
use chrono::{DateTime, Utc};
use ordo_spec::ir::{self, Type};
use sea_orm::{DbBackend, DbErr, QueryResult, Statement};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Values a statement's slots are bound from.
#[derive(Default)]
pub(crate) struct Bind<'a> {
    pub tenant: &'a str,
    pub id: Option<Uuid>,
    pub key: Option<&'a Val>,
    pub now: Option<DateTime<Utc>>,
    pub version: Option<i64>,
    pub params: Option<&'a BTreeMap<String, Val>>,
    pub values: BTreeMap<&'static str, Val>,
    pub fields: Option<&'a BTreeMap<String, Val>>,
}

impl Bind<'_> {
    pub(crate) fn statement(&self, backend: DbBackend, sql: &Sql) -> Statement {
        Statement::from_sql_and_values(backend, &sql.sql, self.values_of(&sql.slots))
    }

    /// The values of `slots`, in their order.
    pub(crate) fn values_of(&self, slots: &[plan::Slot]) -> Vec<sea_orm::Value> {
        slots
            .iter()
            .map(|slot| {
                // A slot is bound only from what its statement's caller gives: one left
                // out is a bug in the plan or its caller, never a NULL to store.
                let given = |v: Option<Val>| {
                    v.unwrap_or_else(|| panic!("slot {:?} of a statement was given no value", slot.source))
                };
                let v = match &slot.source {
                    Source::Tenant => Val::Text(self.tenant.to_string()),
                    Source::Id => {
                        return sea_orm::Value::Uuid(Some(
                            self.id.expect("a statement on an instance is given its id"),
                        ));
                    }
                    Source::Key => given(self.key.cloned()),
                    Source::Now => given(self.now.map(Val::Time)),
                    Source::Version => given(self.version.map(Val::Int)),
                    Source::Param(p) => given(self.params.and_then(|ps| ps.get(p)).cloned()),
                    Source::Value(name) => given(
                        self.values
                            .get(name.as_str())
                            .or_else(|| self.fields.and_then(|f| f.get(name)))
                            .cloned(),
                    ),
                    Source::Const(c) => c.clone(),
                };
                match slot.ty {
                    SqlType::Uuid => match v {
                        Val::Text(s) => sea_orm::Value::Uuid(Uuid::parse_str(&s).ok()),
                        _ => sea_orm::Value::Uuid(None),
                    },
                    SqlType::Of(t) => v.to_sql(t),
                }
            })
            .collect()
    }
}

/// The journal row and the outbox row of one transition.
pub(crate) fn journal_rows<'a>(
    cmd: &'a Command,
    t: Transition<'_>,
    params: &Json,
    now: DateTime<Utc>,
) -> [Bind<'a>; 2] {
    let Transition { machine, entity, version, event, from, to, .. } = t;
    let mut b = Bind { tenant: &cmd.tenant, now: Some(now), ..Bind::default() };
    let journal_id = Uuid::now_v7().to_string();
    let text = |s: &str| Val::Text(s.to_string());
    b.values.insert("id", text(&journal_id));
    b.values.insert("tenant", text(&cmd.tenant));
    b.values.insert("machine", text(machine));
    b.values.insert("entity", text(entity));
    b.values.insert("version", Val::Int(version));
    b.values.insert("event", text(event));
    b.values.insert("from_state", from.map_or(Val::Null, text));
    b.values.insert("to_state", to.map_or(Val::Null, text));
    b.values.insert("params", Val::Text(params.to_string()));
    b.values.insert("idempotency_key", cmd.idempotency.as_ref().map_or(Val::Null, |i| text(&i.key)));
    b.values.insert("created_at", Val::Time(now));
    let payload = event_payload(&journal_id, t, params, now, cmd.trace.as_deref());
    let mut outbox =
        Bind { tenant: &cmd.tenant, now: Some(now), values: b.values.clone(), ..Bind::default() };
    outbox.values.insert("id", text(&Uuid::now_v7().to_string()));
    outbox.values.insert("payload", Val::Text(payload.to_string()));
    [b, outbox]
}

/// The timer rows an instance gets on entering `state`.
pub(crate) fn timer_rows<'a>(
    tenant: &'a str,
    m: &ir::Machine,
    entity: &str,
    state: &str,
    now: DateTime<Utc>,
) -> Vec<Bind<'a>> {
    m.timers_in(state)
        .map(|t| {
            let due = now + chrono::Duration::milliseconds(i64::try_from(t.after_ms).unwrap_or(i64::MAX));
            let mut b = Bind { tenant, now: Some(now), ..Bind::default() };
            b.values.insert("id", Val::Text(Uuid::now_v7().to_string()));
            b.values.insert("tenant", Val::Text(tenant.to_string()));
            b.values.insert("machine", Val::Text(m.name.clone()));
            b.values.insert("entity", Val::Text(entity.to_string()));
            b.values.insert("state", Val::Text(state.to_string()));
            b.values.insert("event", Val::Text(t.event.clone()));
            b.values.insert("due_at", Val::Time(due));
            b.values.insert("created_at", Val::Time(now));
            b
        })
        .collect()
}

/// One version of an instance or resource row, as its journal row and event record it.
pub(crate) struct Transition<'a> {
    pub tenant: &'a str,
    pub machine: &'a str,
    pub entity: &'a str,
    pub version: i64,
    pub event: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
}

/// The outbox payload of a transition: the one shape consumers read, whether a command or
/// a migration wrote it.
pub(crate) fn event_payload(
    journal_id: &str,
    t: Transition<'_>,
    params: &Json,
    at: DateTime<Utc>,
    trace: Option<&str>,
) -> Json {
    let mut payload = serde_json::json!({
        "id": journal_id,
        "tenant": t.tenant,
        "machine": t.machine,
        "entity": t.entity,
        "version": t.version,
        "event": t.event,
        "from": t.from,
        "to": t.to,
        "params": params,
        "at": Val::Time(at).to_json(),
    });
    if let Some(trace) = trace {
        payload["traceparent"] = Json::String(trace.to_string());
    }
    payload
}

pub(crate) fn get_val(row: &QueryResult, col: &str, ty: Type) -> Result<Val, DbErr> {
    Ok(match ty {
        Type::Int | Type::Money => row.try_get::<Option<i64>>("", col)?.map_or(Val::Null, Val::Int),
        Type::Text => row.try_get::<Option<String>>("", col)?.map_or(Val::Null, Val::Text),
        Type::Bool => row.try_get::<Option<bool>>("", col)?.map_or(Val::Null, Val::Bool),
        Type::Timestamp => row.try_get::<Option<DateTime<Utc>>>("", col)?.map_or(Val::Null, Val::Time),
    })
}

pub(crate) fn record_values(m: &ir::Machine, row: &QueryResult) -> Result<BTreeMap<String, Val>, Stop> {
    let mut out = BTreeMap::new();
    for f in &m.fields {
        out.insert(f.name.clone(), get_val(row, &f.name, f.ty)?);
    }
    Ok(out)
}

pub(crate) fn machine_row(m: &ir::Machine, row: &QueryResult) -> Result<StoredRow, Stop> {
    let id: Uuid = row.try_get("", "id")?;
    let fields = record_values(m, row)?.into_iter().map(|(k, v)| (k, v.to_json())).collect();
    Ok(StoredRow {
        kind: crate::RowKind::Machine,
        name: m.name.clone(),
        id: id.to_string(),
        state: Some(row.try_get("", "state")?),
        version: row.try_get("", "version")?,
        fields,
        created_at: row.try_get("", "created_at")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}

pub(crate) fn resource_row(r: &ir::Resource, row: &QueryResult) -> Result<StoredRow, Stop> {
    let key = get_val(row, &r.key.name, r.key.ty)?;
    let mut fields = Map::new();
    fields.insert(r.key.name.clone(), key.to_json());
    for f in &r.fields {
        fields.insert(f.name.clone(), get_val(row, &f.name, f.ty)?.to_json());
    }
    Ok(StoredRow {
        kind: crate::RowKind::Resource,
        name: r.name.clone(),
        id: key.to_key_text(),
        state: None,
        version: row.try_get("", "version")?,
        fields,
        created_at: row.try_get("", "created_at")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}
