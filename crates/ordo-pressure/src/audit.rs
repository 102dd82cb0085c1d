//! The audit after a run, over the database itself (never the API): each idempotency key
//! produced at most one effect and every effect has its record; every order's and
//! transfer's state is the replay of its journal; stock and money are conserved (stock +
//! held = restocked, never negative; each wallet and account is its deposits less what its
//! live orders and transfers hold); every 2xx the client saw exists. With shadow traffic,
//! the real tables are compared with a snapshot taken before the run.
//!
//! The conservation checks know the shipped specs (`specs/order.ordo`, `specs/transfer.ordo`):
//! the load the pressure test sends is theirs. Per key, they say which row broke; the
//! invariants those specs declare (`invariant ...`) are checked too, as the spec states them.

use crate::traffic::Seen;
use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult, Statement};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Audit {
    pub checks: Vec<Check>,
}

/// At most this many examples per failed check.
const EXAMPLES_MAX: usize = 5;

impl Audit {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(
                out,
                "audit: {:<44} {}  {}",
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.detail
            );
        }
        out
    }

    /// Records a check from its violations (none: passed).
    fn check(&mut self, name: &str, examined: usize, what: &str, violations: Vec<String>) {
        let detail = if violations.is_empty() {
            format!("{examined} {what}")
        } else {
            let shown: Vec<&str> = violations.iter().take(EXAMPLES_MAX).map(String::as_str).collect();
            format!("{} of {examined} {what}: {}", violations.len(), shown.join("; "))
        };
        self.checks.push(Check { name: name.to_string(), passed: violations.is_empty(), detail });
    }
}

async fn rows(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Result<Vec<QueryResult>> {
    let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
    db.query_all_raw(statement).await.with_context(|| format!("audit query: {sql}"))
}

/// The `n`th bound value's placeholder (from 1) in `db`'s SQL.
fn placeholder(db: &DatabaseConnection, n: usize) -> String {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    }
}

fn text(r: &QueryResult, col: &str) -> Result<String> {
    Ok(r.try_get::<Option<String>>("", col)?.unwrap_or_default())
}

fn int(r: &QueryResult, col: &str) -> Result<i64> {
    Ok(r.try_get::<Option<i64>>("", col)?.unwrap_or(0))
}

/// How many of `tenant`'s rows of `table` match `condition` (constant SQL).
async fn count(db: &DatabaseConnection, table: &str, condition: &str, tenant: &str) -> Result<usize> {
    let sql =
        format!("SELECT COUNT(*) AS n FROM {table} WHERE tenant = {} AND {condition}", placeholder(db, 1));
    let found = of_tenant(db, tenant, &sql).await?;
    Ok(found.first().map(|r| int(r, "n")).transpose()?.unwrap_or(0) as usize)
}

/// A journal row.
struct Entry {
    machine: String,
    entity: String,
    version: i64,
    event: String,
    from: Option<String>,
    to: Option<String>,
    params: Value,
}

/// `tenant`'s rows by `sql`, whose one placeholder is the tenant.
async fn of_tenant(db: &DatabaseConnection, tenant: &str, sql: &str) -> Result<Vec<QueryResult>> {
    rows(db, sql, vec![sea_orm::Value::from(tenant.to_string())]).await
}

/// Runs every check over `tenant`'s rows; `seen` is what the client saw succeed.
pub async fn audit(db: &DatabaseConnection, tenant: &str, seen: &[Seen]) -> Result<Audit> {
    let mut audit = Audit::default();
    let p = placeholder(db, 1);
    keys(&mut audit, db, tenant).await?;
    let journal = journal(db, tenant).await?;
    let orders = of_tenant(
        db,
        tenant,
        &format!("SELECT id, state, version, sku, quantity, account, amount FROM orders WHERE tenant = {p}"),
    )
    .await?;
    let transfers = of_tenant(
        db,
        tenant,
        &format!("SELECT id, state, version, payer, payee, amount FROM transfers WHERE tenant = {p}"),
    )
    .await?;
    let instances = replays(&mut audit, &journal, &orders, &transfers)?;
    conserved(&mut audit, db, tenant, &journal, &orders, &transfers).await?;
    declared(&mut audit, db, tenant).await?;
    answers(&mut audit, db, tenant, seen, &instances).await?;
    Ok(audit)
}

/// One effect per key, timers at most once, and every keyed effect with its record.
async fn keys(audit: &mut Audit, db: &DatabaseConnection, tenant: &str) -> Result<()> {
    let p = placeholder(db, 1);
    let dup = of_tenant(
        db,
        tenant,
        &format!(
            "SELECT idempotency_key AS k, COUNT(*) AS n FROM ordo_transitions WHERE tenant = {p} \
             AND idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING COUNT(*) > 1"
        ),
    )
    .await?;
    let keyed = count(db, "ordo_transitions", "idempotency_key IS NOT NULL", tenant).await?;
    let violations = dup
        .iter()
        .map(|r| Ok(format!("key {} applied {} times", text(r, "k")?, int(r, "n")?)))
        .collect::<Result<_>>()?;
    audit.check("each idempotency key has at most one effect", keyed, "keyed effects", violations);

    // Timers fire under the key `timer:<id>`: the check above holds them to once, this
    // says how many fired.
    let timers = count(db, "ordo_transitions", "idempotency_key LIKE 'timer:%'", tenant).await?;
    let twice = dup
        .iter()
        .filter_map(|r| text(r, "k").ok().filter(|k| k.starts_with("timer:")))
        .map(|k| format!("timer {k} fired more than once"))
        .collect();
    audit.check("no timer fired twice", timers, "timers fired", twice);

    // Every effect has its record (the second insurance was written with it).
    let orphans = of_tenant(
        db,
        tenant,
        &format!(
            "SELECT t.idempotency_key AS k FROM ordo_transitions t LEFT JOIN ordo_idempotency i \
             ON i.tenant = t.tenant AND i.key = t.idempotency_key \
             WHERE t.tenant = {p} AND t.idempotency_key IS NOT NULL AND i.key IS NULL"
        ),
    )
    .await?;
    let violations =
        orphans.iter().map(|r| Ok(format!("key {} has no record", text(r, "k")?))).collect::<Result<_>>()?;
    audit.check("every keyed effect has its idempotency record", keyed, "keyed effects", violations);
    Ok(())
}

/// `tenant`'s journal, in order per instance.
async fn journal(db: &DatabaseConnection, tenant: &str) -> Result<Vec<Entry>> {
    let p = placeholder(db, 1);
    of_tenant(
        db,
        tenant,
        &format!(
            "SELECT machine, entity, version, event, from_state, to_state, params FROM ordo_transitions \
             WHERE tenant = {p} ORDER BY machine, entity, version"
        ),
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Entry {
            machine: text(r, "machine")?,
            entity: text(r, "entity")?,
            version: int(r, "version")?,
            event: text(r, "event")?,
            from: r.try_get::<Option<String>>("", "from_state")?,
            to: r.try_get::<Option<String>>("", "to_state")?,
            params: serde_json::from_str(&text(r, "params")?)
                .context("a journal entry's params are not JSON")?,
        })
    })
    .collect()
}

/// Each order's and transfer's state is the replay of its journal, and no journal belongs to
/// an instance that is not there. Returns the instances' ids.
fn replays(
    audit: &mut Audit,
    journal: &[Entry],
    orders: &[QueryResult],
    transfers: &[QueryResult],
) -> Result<BTreeSet<String>> {
    let mut by_instance: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in journal {
        by_instance.entry((e.machine.as_str(), e.entity.as_str())).or_default().push(e);
    }
    let mut violations = Vec::new();
    let mut instances = BTreeSet::new();
    for (machine, list) in [("Order", orders), ("Transfer", transfers)] {
        for r in list {
            let id = r.try_get::<uuid::Uuid>("", "id")?.to_string();
            let (state, version) = (text(r, "state")?, int(r, "version")?);
            instances.insert(id.clone());
            let entries = by_instance.get(&(machine, id.as_str())).map_or(&[][..], Vec::as_slice);
            if let Some(why) = replay_mismatch(entries, &state, version) {
                violations.push(format!("{machine} {id}: {why}"));
            }
        }
    }
    for ((machine, entity), _) in by_instance.iter().filter(|((m, _), _)| matches!(*m, "Order" | "Transfer"))
    {
        if !instances.contains(*entity) {
            violations.push(format!("{machine} {entity}: journal rows but no instance"));
        }
    }
    audit.check(
        "each instance's state is the replay of its journal",
        orders.len() + transfers.len(),
        "orders and transfers",
        violations,
    );
    Ok(instances)
}

/// Where a resource keeps its balance, and what live instances hold of it per key.
struct Ledger {
    resource: &'static str,
    table: &'static str,
    key: &'static str,
    value: &'static str,
    held: BTreeMap<String, i64>,
    /// The check's name in the audit, and what it counts.
    check: &'static str,
    what: &'static str,
}

/// The invariants the shipped specs declare, over the tenant's rows and journal.
async fn declared(audit: &mut Audit, db: &DatabaseConnection, tenant: &str) -> Result<()> {
    let shipped = [
        ("order", include_str!("../../../specs/order.ordo")),
        ("transfer", include_str!("../../../specs/transfer.ordo")),
    ];
    for (name, source) in shipped {
        let spec = ordo_spec::compile(source)
            .map_err(|_| anyhow::anyhow!("the shipped spec `{name}` does not compile"))?;
        let checks = ordo_store::invariants::evaluate(db, &spec, Some(tenant))
            .await
            .with_context(|| format!("the invariants of `{name}`"))?;
        for check in checks {
            let broken =
                check.broken().map(|b| format!("{} against {} ({})", b.lhs, b.rhs, check.text)).collect();
            audit.check(&format!("invariant {name}.{}", check.name), check.tenants.len(), "tenant", broken);
        }
    }
    Ok(())
}

/// Stock and money conserved: each resource's balance is what the journal added to it less
/// what live orders and transfers hold.
async fn conserved(
    audit: &mut Audit,
    db: &DatabaseConnection,
    tenant: &str,
    journal: &[Entry],
    orders: &[QueryResult],
    transfers: &[QueryResult],
) -> Result<()> {
    let p = placeholder(db, 1);
    // Operations on resources, summed from the journal: restock, deposit, withdraw.
    let mut added: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for e in journal {
        let amount = |name: &str| e.params[name].as_i64().unwrap_or(0);
        let delta = match (e.machine.as_str(), e.event.as_str()) {
            ("Inventory", "restock") => amount("quantity"),
            ("Wallet" | "Account", "deposit") => amount("amount"),
            ("Wallet" | "Account", "withdraw") => -amount("amount"),
            _ => continue,
        };
        *added.entry((e.machine.as_str(), e.entity.as_str())).or_default() += delta;
    }

    // Stock: what is available plus what live orders hold is what was restocked.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut charged: BTreeMap<String, i64> = BTreeMap::new();
    for r in orders {
        let state = text(r, "state")?;
        if state != "cancelled" {
            *held.entry(text(r, "sku")?).or_default() += int(r, "quantity")?;
        }
        if matches!(state.as_str(), "paid" | "shipped" | "delivered" | "completed") {
            *charged.entry(text(r, "account")?).or_default() += int(r, "amount")?;
        }
    }
    // Accounts: deposits less withdrawals, less what pending and settled transfers took
    // from the payer, plus what settled ones gave the payee.
    let mut moved: BTreeMap<String, i64> = BTreeMap::new();
    for r in transfers {
        let (state, amount) = (text(r, "state")?, int(r, "amount")?);
        if matches!(state.as_str(), "pending" | "settled") {
            *moved.entry(text(r, "payer")?).or_default() += amount;
        }
        if state == "settled" {
            *moved.entry(text(r, "payee")?).or_default() -= amount;
        }
    }
    let ledgers = [
        Ledger {
            resource: "Inventory",
            table: "inventories",
            key: "sku",
            value: "available",
            held,
            check: "stock + held = restocked, never negative",
            what: "SKUs",
        },
        Ledger {
            resource: "Wallet",
            table: "wallets",
            key: "account",
            value: "balance",
            held: charged,
            check: "money conserved across wallets",
            what: "wallets",
        },
        Ledger {
            resource: "Account",
            table: "accounts",
            key: "id",
            value: "balance",
            held: moved,
            check: "money conserved across accounts",
            what: "accounts",
        },
    ];
    for l in ledgers {
        let sql = format!("SELECT {} AS k, {} AS v FROM {} WHERE tenant = {p}", l.key, l.value, l.table);
        let found = of_tenant(db, tenant, &sql).await?;
        let (n, violations) = conservation(l.resource, &found, &added, l.held)?;
        audit.check(l.check, n, l.what, violations);
    }
    Ok(())
}

/// Every 2xx the client saw has its applied record, and what it created exists.
async fn answers(
    audit: &mut Audit,
    db: &DatabaseConnection,
    tenant: &str,
    seen: &[Seen],
    instances: &BTreeSet<String>,
) -> Result<()> {
    let p = placeholder(db, 1);
    let records: BTreeMap<String, String> =
        of_tenant(db, tenant, &format!("SELECT key, outcome FROM ordo_idempotency WHERE tenant = {p}"))
            .await?
            .iter()
            .map(|r| Ok((text(r, "key")?, text(r, "outcome")?)))
            .collect::<Result<_>>()?;
    let mut violations = Vec::new();
    for s in seen {
        match records.get(&s.key) {
            None => violations.push(format!("key {}: answered 2xx, no record", s.key)),
            Some(outcome) if !outcome.contains("\"applied\"") => {
                violations.push(format!("key {}: answered 2xx, recorded as {outcome}", s.key));
            }
            Some(_) => {}
        }
        if let Some((table, id)) = &s.created
            && !instances.contains(id)
        {
            violations.push(format!("key {}: created {table} {id}, which does not exist", s.key));
        }
    }
    audit.check("every 2xx the client saw exists", seen.len(), "2xx answers", violations);
    Ok(())
}

/// How long the audit waits for the relay to publish what the run committed.
pub const PUBLISH_WAIT_MS: u64 = 30_000;

/// Every event the run committed was published (the relay `XADD`ed it and marked its
/// outbox row sent), waiting up to [`PUBLISH_WAIT_MS`] for the relay to catch up.
pub async fn published(audit: &mut Audit, db: &DatabaseConnection, tenant: &str) -> Result<()> {
    let (_, unsent) = relayed(db, tenant, std::time::Duration::from_millis(PUBLISH_WAIT_MS)).await?;
    let violations = if unsent > 0 {
        vec![format!("{unsent} committed event(s) still unpublished {PUBLISH_WAIT_MS} ms after the load")]
    } else {
        Vec::new()
    };
    let all = count(db, "ordo_outbox", "1 = 1", tenant).await?;
    audit.check("every committed event was published to its stream", all, "events", violations);
    Ok(())
}

/// Waits up to `wait` until the relays have published every committed event of the tenant
/// (its unsent outbox rows, polled every 100 ms). Returns how many were unsent when called
/// and how many still are.
pub async fn relayed(
    db: &DatabaseConnection,
    tenant: &str,
    wait: std::time::Duration,
) -> Result<(usize, usize)> {
    let deadline = std::time::Instant::now() + wait;
    let first = count(db, "ordo_outbox", "sent_at IS NULL", tenant).await?;
    let mut unsent = first;
    while unsent > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        unsent = count(db, "ordo_outbox", "sent_at IS NULL", tenant).await?;
    }
    Ok((first, unsent))
}

/// A consumer's record of what it applied, one row per application (no key: a second
/// application of an event is a second row): the consumer group, the event's tenant and
/// id. Written by the handler in the transaction that applies the event.
pub const APPLIED: &str = "ordo_audit_applied";

/// The table a consumer's handler writes each application to ([`APPLIED`]).
pub const APPLIED_DDL: &str = "CREATE TABLE IF NOT EXISTS ordo_audit_applied \
     (grp TEXT NOT NULL, tenant TEXT NOT NULL, event_id TEXT NOT NULL, stream TEXT NOT NULL)";

/// Each consumer group applied every committed event of `tenant` exactly once: for each
/// group, each outbox event's id has one row in [`APPLIED`] (in `consumers`, the consumers'
/// database), none has two, none is an event the outbox does not have. Waits up to
/// [`PUBLISH_WAIT_MS`] for the consumers to catch up.
pub async fn consumed(
    audit: &mut Audit,
    db: &DatabaseConnection,
    consumers: &DatabaseConnection,
    groups: &[String],
    tenant: &str,
) -> Result<()> {
    let p = placeholder(db, 1);
    let outbox =
        rows(db, &format!("SELECT payload FROM ordo_outbox WHERE tenant = {p}"), vec![tenant.into()]).await?;
    let mut events = BTreeSet::new();
    for r in &outbox {
        let payload: Value = serde_json::from_str(&text(r, "payload")?)?;
        events.insert(payload["id"].as_str().unwrap_or_default().to_string());
    }
    let (p1, p2) = (placeholder(consumers, 1), placeholder(consumers, 2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(PUBLISH_WAIT_MS);
    for group in groups {
        let sql = format!(
            "SELECT event_id, COUNT(*) AS n FROM {APPLIED} WHERE grp = {p1} AND tenant = {p2} GROUP BY event_id"
        );
        let applied = loop {
            let found = rows(consumers, &sql, vec![group.clone().into(), tenant.into()]).await?;
            let applied: BTreeMap<String, i64> =
                found.iter().map(|r| Ok((text(r, "event_id")?, int(r, "n")?))).collect::<Result<_>>()?;
            if events.iter().all(|e| applied.contains_key(e)) || std::time::Instant::now() >= deadline {
                break applied;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let mut violations: Vec<String> = events
            .iter()
            .filter(|e| !applied.contains_key(*e))
            .map(|e| format!("event {e} never applied"))
            .collect();
        for (e, n) in &applied {
            if *n > 1 {
                violations.push(format!("event {e} applied {n} times"));
            }
            if !events.contains(e) {
                violations.push(format!("event {e} applied, not in the outbox"));
            }
        }
        let name = format!("consumer group `{group}` applied each event once");
        audit.check(&name, events.len(), "events", violations);
    }
    Ok(())
}

/// Conservation over a resource's rows (`k`, `v`): each value is never negative, and the
/// value plus what instances hold of it (`held`, by key) is what the journal's operations
/// put in (`added`). Instances holding some of a row that does not exist are violations too.
fn conservation(
    resource: &str,
    found: &[QueryResult],
    added: &BTreeMap<(&str, &str), i64>,
    mut held: BTreeMap<String, i64>,
) -> Result<(usize, Vec<String>)> {
    let mut violations = Vec::new();
    for r in found {
        let (key, value) = (text(r, "k")?, int(r, "v")?);
        let put_in = added.get(&(resource, key.as_str())).copied().unwrap_or(0);
        let h = held.remove(&key).unwrap_or(0);
        if value < 0 || value + h != put_in {
            violations.push(format!("{resource} {key}: {value} + held by instances {h} != put in {put_in}"));
        }
    }
    violations.extend(
        held.iter()
            .filter(|(_, h)| **h != 0)
            .map(|(k, h)| format!("{resource} {k}: instances hold {h} of a row that does not exist")),
    );
    Ok((found.len(), violations))
}

/// Why an instance's journal does not replay to its state and version, if it does not.
fn replay_mismatch(entries: &[&Entry], state: &str, version: i64) -> Option<String> {
    let mut current: Option<&str> = None;
    for (i, e) in entries.iter().enumerate() {
        if e.version != i as i64 + 1 {
            return Some(format!("journal version {} at position {}", e.version, i + 1));
        }
        if e.from.as_deref() != current {
            return Some(format!("`{}` from {:?} but the replay is in {:?}", e.event, e.from, current));
        }
        current = e.to.as_deref();
    }
    if current != Some(state) || entries.len() as i64 != version {
        return Some(format!(
            "stored {state} v{version}, the journal replays to {current:?} v{}",
            entries.len()
        ));
    }
    None
}

/// What a set of tables holds, to show that a run did not touch them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot(BTreeMap<String, (i64, String)>);

/// Per table: rows, and the latest change (`updated_at`, or `created_at` for the journal
/// and the records).
const SNAPSHOT_TABLES: &[(&str, &str)] = &[
    ("orders", "updated_at"),
    ("transfers", "updated_at"),
    ("inventories", "updated_at"),
    ("wallets", "updated_at"),
    ("accounts", "updated_at"),
    ("ordo_transitions", "created_at"),
    ("ordo_outbox", "created_at"),
    ("ordo_idempotency", "created_at"),
    ("ordo_timers", "due_at"),
];

pub async fn snapshot(db: &DatabaseConnection) -> Result<Snapshot> {
    let mut out = BTreeMap::new();
    for (table, column) in SNAPSHOT_TABLES {
        let r = rows(
            db,
            &format!("SELECT COUNT(*) AS n, CAST(MAX({column}) AS TEXT) AS m FROM {table}"),
            Vec::new(),
        )
        .await?;
        let r = r.first().context("an aggregate gave no row")?;
        out.insert(table.to_string(), (int(r, "n")?, text(r, "m")?));
    }
    Ok(Snapshot(out))
}

/// Adds the check that `after` is `before` (the real tables, around a shadow run).
pub fn untouched(audit: &mut Audit, before: &Snapshot, after: &Snapshot) {
    let violations = before
        .0
        .iter()
        .filter(|(t, v)| after.0.get(*t) != Some(v))
        .map(|(t, v)| format!("{t}: {v:?} before, {:?} after", after.0.get(t)))
        .collect();
    audit.check("shadow traffic left the real tables untouched", before.0.len(), "real tables", violations);
}
