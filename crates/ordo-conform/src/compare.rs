//! The store's answers and rows in the interpreter's terms, and their comparison. Times the
//! store took from its own clock (`now`, a timer's due time) may differ from the
//! interpreter's by the length of a command; generated times are years apart, so a
//! tolerance of seconds never hides a wrong value.

use chrono::{DateTime, Utc};
use ordo_model::{self as model, Val, World};
use ordo_spec::ir;
use ordo_store::Store;
use ordo_store::sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use ordo_store::sea_orm::{ConnectionTrait, QueryResult};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// How far apart two times read from two clocks may be and still be one time.
pub const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::seconds(5);

/// A store outcome as the interpreter states outcomes.
pub fn observed(spec: &ir::Spec, e: &ordo_store::Executed) -> model::Executed {
    use ordo_store::Rejection as R;
    let outcome = match &e.outcome {
        ordo_store::Outcome::Applied { row } => model::Outcome::Applied(row_of(spec, row)),
        ordo_store::Outcome::Rejected { rejection } => model::Outcome::Rejected(match rejection.clone() {
            R::NotFound => model::Rejection::NotFound,
            R::InvalidInput { field, .. } => model::Rejection::InvalidInput { field },
            R::WrongState { state, allowed } => model::Rejection::WrongState { state, allowed },
            R::GuardFailed { guard, condition } => model::Rejection::GuardFailed { guard, condition },
            R::StaleVersion { current } => model::Rejection::StaleVersion { current },
            R::CheckFailed { field, .. } => model::Rejection::CheckFailed { field },
            R::ResourceCheck { resource, key, field } => {
                model::Rejection::ResourceCheck { resource, key, field }
            }
            R::KeyReused => model::Rejection::KeyReused,
        }),
    };
    model::Executed { outcome, replayed: e.replayed }
}

fn row_of(spec: &ir::Spec, row: &ordo_store::StoredRow) -> model::Row {
    let types: BTreeMap<&str, ir::Type> = match row.kind {
        ordo_store::RowKind::Machine => spec
            .machine(&row.name)
            .map(|m| m.fields.iter().map(|f| (f.name.as_str(), f.ty)).collect())
            .unwrap_or_default(),
        ordo_store::RowKind::Resource => spec
            .resource(&row.name)
            .map(|r| std::iter::once(&r.key).chain(&r.fields).map(|f| (f.name.as_str(), f.ty)).collect())
            .unwrap_or_default(),
    };
    let fields =
        row.fields.iter().map(|(k, v)| (k.clone(), val_of(types.get(k.as_str()).copied(), v))).collect();
    model::Row {
        name: row.name.clone(),
        id: row.id.clone(),
        state: row.state.clone(),
        version: row.version,
        fields,
    }
}

fn val_of(ty: Option<ir::Type>, v: &Json) -> Val {
    match (ty, v) {
        (_, Json::Null) => Val::Null,
        (Some(ir::Type::Timestamp), Json::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Val::Time(t.with_timezone(&Utc)))
            .unwrap_or_else(|_| Val::Text(s.clone())),
        (_, Json::String(s)) => Val::Text(s.clone()),
        (_, Json::Bool(b)) => Val::Bool(*b),
        (_, Json::Number(n)) => n.as_i64().map_or_else(|| Val::Text(n.to_string()), Val::Int),
        (_, other) => Val::Text(other.to_string()),
    }
}

fn same_val(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Time(x), Val::Time(y)) => (*x - *y).abs() <= CLOCK_TOLERANCE,
        _ => a == b,
    }
}

pub fn same_row(a: &model::Row, b: &model::Row) -> bool {
    a.name == b.name
        && a.id == b.id
        && a.state == b.state
        && a.version == b.version
        && a.fields.len() == b.fields.len()
        && a.fields.iter().all(|(k, v)| b.fields.get(k).is_some_and(|w| same_val(v, w)))
}

/// The same outcome, replayed or not alike (times within the clock tolerance).
pub fn same(a: &model::Executed, b: &model::Executed) -> bool {
    a.replayed == b.replayed
        && match (&a.outcome, &b.outcome) {
            (model::Outcome::Applied(x), model::Outcome::Applied(y)) => same_row(x, y),
            (x, y) => x == y,
        }
}

/// An outcome on one line.
pub fn short(e: &model::Executed) -> String {
    let replay = if e.replayed { " (replayed)" } else { "" };
    match &e.outcome {
        model::Outcome::Applied(r) => {
            let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={}", v.to_json())).collect();
            let state = r.state.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
            format!("applied{replay}: {}{state} v{} {{{}}}", r.name, r.version, fields.join(", "))
        }
        model::Outcome::Rejected(r) => format!("rejected{replay}: {r:?}"),
    }
}

fn table_count(r: &QueryResult) -> Result<i64, String> {
    r.try_get_by_index::<i64>(0).map_err(|e| e.to_string())
}

/// How many rows the tenant has in each machine's and resource's table, by name.
pub(crate) async fn counts(
    store: &Store,
    spec: &ir::Spec,
    tenant: &str,
) -> Result<BTreeMap<String, i64>, String> {
    let tables = spec
        .machines
        .iter()
        .map(|m| (&m.name, &m.table))
        .chain(spec.resources.iter().map(|r| (&r.name, &r.table)));
    let mut out = BTreeMap::new();
    for (name, table) in tables {
        out.insert(name.clone(), count(store, table, tenant).await?);
    }
    Ok(out)
}

/// How many instances or rows of the machine or resource `name` the world holds.
pub(crate) fn held(world: &World, name: &str) -> usize {
    world.instances.keys().chain(world.rows.keys()).filter(|(n, _)| n == name).count()
}

async fn count(store: &Store, table: &str, tenant: &str) -> Result<i64, String> {
    let q = Query::select()
        .expr(Expr::col(Alias::new("tenant")).count())
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new("tenant")).eq(tenant))
        .to_owned();
    let row = store.connection().query_one(&q).await.map_err(|e| e.to_string())?;
    row.as_ref().map_or(Ok(0), table_count)
}

/// Compares the tenant's rows with the world: every instance and resource row, the number
/// of each (nothing extra), and the armed timers. The store's due times (its clock) are
/// taken into the world once they are found within the tolerance, so that later sweeps
/// agree on which timer is due first.
pub async fn world(store: &Store, spec: &ir::Spec, tenant: &str, world: &mut World) -> Result<(), String> {
    for ((machine, id), want) in &world.instances {
        match instance(store, spec, tenant, machine, id).await? {
            Some(got) if same_row(want, &got) => {}
            got => return Err(row_differs(want, got.as_ref())),
        }
    }
    for ((name, _), want) in &world.rows {
        let r = spec.resource(name).ok_or_else(|| format!("no resource {name}"))?;
        let key = want.fields.get(&r.key.name).map(Val::to_json).unwrap_or(Json::Null);
        match resource(store, spec, tenant, name, &key).await? {
            Some(got) if same_row(want, &got) => {}
            got => return Err(row_differs(want, got.as_ref())),
        }
    }
    for (name, got) in counts(store, spec, tenant).await? {
        let want = held(world, &name);
        if usize::try_from(got).ok() != Some(want) {
            return Err(format!("{name}: the spec has {want} row(s), the store {got}"));
        }
    }
    timers(store, tenant, world).await
}

/// An instance as the store holds it, in the interpreter's terms.
pub(crate) async fn instance(
    store: &Store,
    spec: &ir::Spec,
    tenant: &str,
    machine: &str,
    id: &str,
) -> Result<Option<model::Row>, String> {
    let uuid = id.parse().map_err(|_| format!("{machine} {id}: not an id"))?;
    let got = store.instance(tenant, machine, uuid).await.map_err(|e| e.to_string())?;
    Ok(got.map(|r| row_of(spec, &r)))
}

/// A resource row as the store holds it, in the interpreter's terms.
pub(crate) async fn resource(
    store: &Store,
    spec: &ir::Spec,
    tenant: &str,
    name: &str,
    key: &Json,
) -> Result<Option<model::Row>, String> {
    let got = store.resource(tenant, name, key).await.map_err(|e| e.to_string())?;
    Ok(got.map(|r| row_of(spec, &r)))
}

fn row_differs(want: &model::Row, got: Option<&model::Row>) -> String {
    let show = |r: &model::Row| {
        short(&model::Executed { outcome: model::Outcome::Applied(r.clone()), replayed: false })
    };
    match got {
        None => format!("the spec has {}, the store has no such row", show(want)),
        Some(got) => format!("the spec has {}\n       the store has {}", show(want), show(got)),
    }
}

type TimerKey = (String, String, String, String);

async fn timers(store: &Store, tenant: &str, world: &mut World) -> Result<(), String> {
    let a = Alias::new;
    let q = Query::select()
        .columns([a("machine"), a("entity"), a("state"), a("event"), a("due_at")])
        .from(a(ordo_store::schema::TIMERS))
        .and_where(Expr::col(a("tenant")).eq(tenant))
        .to_owned();
    let rows = store.connection().query_all(&q).await.map_err(|e| e.to_string())?;
    let mut got: Vec<(TimerKey, DateTime<Utc>)> = Vec::new();
    for r in &rows {
        let get = |c: &str| r.try_get::<String>("", c).map_err(|e| e.to_string());
        let due: DateTime<Utc> = r.try_get("", "due_at").map_err(|e| e.to_string())?;
        got.push(((get("machine")?, get("entity")?, get("state")?, get("event")?), due));
    }
    got.sort();
    let key = |t: &model::Timer| (t.machine.clone(), t.entity.clone(), t.state.clone(), t.event.clone());
    world.timers.sort_by_key(|t| (key(t), t.due));
    let listed = |ts: Vec<String>| if ts.is_empty() { "none".to_string() } else { ts.join(", ") };
    let fits = got.len() == world.timers.len()
        && got
            .iter()
            .zip(&world.timers)
            .all(|((k, due), t)| *k == key(t) && (*due - t.due).abs() <= CLOCK_TOLERANCE);
    if !fits {
        let want =
            world.timers.iter().map(|t| format!("{} {} {} -> {}", t.machine, t.entity, t.state, t.event));
        let have = got.iter().map(|((m, e, s, ev), _)| format!("{m} {e} {s} -> {ev}"));
        return Err(format!(
            "timers: the spec has {}\n       the store has {}",
            listed(want.collect()),
            listed(have.collect())
        ));
    }
    for ((_, due), t) in got.iter().zip(world.timers.iter_mut()) {
        t.due = *due;
    }
    Ok(())
}

/// Every journal entry of the tenant as the interpreter wrote them.
pub async fn journal(store: &Store, tenant: &str, world: &World) -> Result<(), String> {
    let a = Alias::new;
    let q = Query::select()
        .columns([
            a("machine"),
            a("entity"),
            a("version"),
            a("event"),
            a("from_state"),
            a("to_state"),
            a("params"),
        ])
        .from(a(ordo_store::schema::JOURNAL))
        .and_where(Expr::col(a("tenant")).eq(tenant))
        .to_owned();
    let rows = store.connection().query_all(&q).await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    for r in &rows {
        let e = |c: &str| r.try_get::<String>("", c).map_err(|e| e.to_string());
        let params: String = e("params")?;
        got.push(model::Entry {
            name: e("machine")?,
            entity: e("entity")?,
            version: r.try_get("", "version").map_err(|e| e.to_string())?,
            event: e("event")?,
            from: r.try_get("", "from_state").map_err(|e| e.to_string())?,
            to: r.try_get("", "to_state").map_err(|e| e.to_string())?,
            params: serde_json::from_str(&params).map_err(|e| e.to_string())?,
        });
    }
    let order = |x: &model::Entry| (x.name.clone(), x.entity.clone(), x.version);
    got.sort_by_key(order);
    let mut want = world.journal.clone();
    want.sort_by_key(order);
    if got == want {
        return Ok(());
    }
    let first = want.iter().zip(&got).position(|(w, g)| w != g).unwrap_or(want.len().min(got.len()));
    Err(format!(
        "journal: {} entries in the spec, {} in the store; first difference at entry {first}:\n       the spec has {:?}\n       the store has {:?}",
        want.len(),
        got.len(),
        want.get(first),
        got.get(first)
    ))
}

/// Removes the tenant's armed timers (so a later case's sweep does not meet them).
pub async fn forget_timers(store: &Store, tenant: &str) -> Result<(), String> {
    let q = Query::delete()
        .from_table(Alias::new(ordo_store::schema::TIMERS))
        .and_where(Expr::col(Alias::new("tenant")).eq(tenant))
        .to_owned();
    store.connection().execute(&q).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The store's evaluation of the spec's invariants (SQL over the tenant's rows and journal)
/// gives the interpreter's two sides for every invariant.
pub async fn invariants(store: &Store, tenant: &str, world: &World) -> Result<(), String> {
    let spec = store.spec();
    let checks = ordo_store::invariants::evaluate(store.connection(), spec, Some(tenant))
        .await
        .map_err(|e| e.to_string())?;
    for (inv, check) in spec.invariants.iter().zip(&checks) {
        let want = world.sides(inv);
        let got = check.tenants.iter().find(|s| s.tenant == tenant).map(|s| (s.lhs, s.rhs));
        if got != Some(want) {
            return Err(format!(
                "invariant `{}`: the interpreter's sides are {want:?}, the database's {got:?}",
                inv.name
            ));
        }
    }
    Ok(())
}
