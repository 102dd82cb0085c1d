//! What every generated route calls: tenant from the API key, the idempotency contract
//! (key, fingerprint, Redis lease, replay) and the executor; the HTTP form of the answers
//! is `reply.rs`'s.

use crate::breaker::Breakers;
pub use crate::reply::{
    AllowedEvents, DiagramReply, EventPage, FeedEvent, Problem, ProblemCode, RETRY_AFTER_S, Reply,
    TransitionEntry, TransitionPage,
};
use crate::reply::{body, etag, parse_etag, problem, reply, store_error};
use crate::telemetry::{KeyResult, TraceParent};
use ordo_idempotency::{Answer, Claim, Leases};
use ordo_store::{Action, Command, Executed, IdempotencyKey, Outcome, Rejection, Store};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

/// API keys to tenants. Empty: single-tenant mode, every request is tenant `default`.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_key: BTreeMap<String, String>,
}

pub const DEFAULT_TENANT: &str = "default";

impl Tenants {
    /// From `tenant:key,tenant:key`.
    pub fn parse(spec: &str) -> Result<Tenants, String> {
        let mut by_key = BTreeMap::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tenant, key) = pair.split_once(':').ok_or_else(|| format!("`{pair}` is not tenant:key"))?;
            if tenant.is_empty() || key.len() < 16 {
                return Err(format!(
                    "tenant `{tenant}`: a name and a key of at least 16 characters are needed"
                ));
            }
            by_key.insert(key.to_string(), tenant.to_string());
        }
        Ok(Tenants { by_key })
    }

    pub fn single_tenant(&self) -> bool {
        self.by_key.is_empty()
    }

    fn of(&self, req: &Request) -> Option<String> {
        if self.single_tenant() {
            return Some(DEFAULT_TENANT.to_string());
        }
        let header = req.header("Authorization")?;
        let key = header.strip_prefix("Bearer ")?.trim();
        self.by_key.get(key).cloned()
    }
}

/// A token bucket per tenant: `rate_per_s` requests a second on average, bursts up to
/// `burst`. Tenants come from configuration, so the map is bounded.
pub struct RateLimit {
    rate_per_s: f64,
    burst: f64,
    buckets: std::sync::Mutex<BTreeMap<String, (f64, std::time::Instant)>>,
}

impl RateLimit {
    pub fn new(rate_per_s: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Default::default(),
        }
    }

    /// `Err(seconds to wait)` when the tenant is over its rate.
    fn admit(&self, tenant: &str) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(tenant.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate_per_s).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate_per_s).ceil().max(1.0) as u64)
        }
    }
}

/// The stores and leases of one kind of traffic (real, or shadow): each machine and
/// resource is served by the store of the spec declaring it.
pub struct Lane {
    stores: BTreeMap<String, Arc<Store>>,
    leases: Option<Arc<Leases>>,
}

impl Lane {
    pub fn new(stores: Vec<Arc<Store>>, leases: Option<Arc<Leases>>) -> Lane {
        let mut by_name = BTreeMap::new();
        for store in stores {
            let spec = store.spec();
            for name in spec.machines.iter().map(|m| &m.name).chain(spec.resources.iter().map(|r| &r.name)) {
                by_name.insert(name.clone(), store.clone());
            }
        }
        Lane { stores: by_name, leases }
    }

    fn store(&self, name: &str) -> Option<&Arc<Store>> {
        self.stores.get(name)
    }
}

/// The tenants allowed to send shadow traffic: `tenant,tenant`, or `*` for all.
#[derive(Debug, Clone, Default)]
pub struct ShadowTenants {
    all: bool,
    names: std::collections::BTreeSet<String>,
}

impl ShadowTenants {
    pub fn parse(spec: &str) -> ShadowTenants {
        let names: std::collections::BTreeSet<String> =
            spec.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
        ShadowTenants { all: names.contains("*"), names }
    }

    pub fn any(&self) -> bool {
        self.all || !self.names.is_empty()
    }

    fn allows(&self, tenant: &str) -> bool {
        self.all || self.names.contains(tenant)
    }
}

/// Whether a request is load-test traffic (`X-Load-Test: true`); `None` when the header
/// is neither `true` nor `false`.
pub fn is_shadow(req: &Request) -> Option<bool> {
    match req.header("X-Load-Test").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Some(false),
        Some("true") => Some(true),
        Some(_) => None,
    }
}

/// Who sent a request, and the tables that serve it.
struct Caller<'a> {
    tenant: String,
    lane: &'a Lane,
    shadow: bool,
}

pub struct Ctx {
    real: Lane,
    shadow: Option<(Lane, ShadowTenants)>,
    tenants: Tenants,
    rate: RateLimit,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub breakers: Arc<Breakers>,
}

fn unauthorized<T: ToJSON>() -> Reply<T> {
    Reply::problem(Problem::new(ProblemCode::Unauthorized, "send `Authorization: Bearer <api key>`"), None)
}

impl Ctx {
    pub fn new(
        real: Lane,
        tenants: Tenants,
        rate: RateLimit,
        metrics: Arc<crate::telemetry::Metrics>,
        breakers: Arc<Breakers>,
    ) -> Ctx {
        Ctx { real, shadow: None, tenants, rate, metrics, breakers }
    }

    /// Serves `X-Load-Test: true` requests of the allowed tenants from `lane`.
    pub fn with_shadow(mut self, lane: Lane, allowed: ShadowTenants) -> Ctx {
        self.shadow = Some((lane, allowed));
        self
    }

    /// The request's tenant (its API key is valid) and lane (shadow traffic only from the
    /// tenants allowed to send it); else the answer to send (large, but sent at once, so
    /// boxing would buy nothing).
    #[allow(clippy::result_large_err)]
    fn identify<T: ToJSON>(&self, req: &Request) -> Result<Caller<'_>, Reply<T>> {
        let tenant = self.tenants.of(req).ok_or_else(unauthorized)?;
        let shadow = is_shadow(req).ok_or_else(|| {
            Reply::problem(
                Problem::new(ProblemCode::Malformed, "X-Load-Test must be `true` or `false`"),
                None,
            )
        })?;
        if !shadow {
            return Ok(Caller { tenant, lane: &self.real, shadow: false });
        }
        match &self.shadow {
            Some((lane, allowed)) if allowed.allows(&tenant) => Ok(Caller { tenant, lane, shadow: true }),
            _ => Err(Reply::problem(
                Problem::new(
                    ProblemCode::ShadowNotAllowed,
                    "this API key may not send load-test traffic (X-Load-Test)",
                ),
                None,
            )),
        }
    }

    /// [`Ctx::identify`], and the tenant is under its rate.
    #[allow(clippy::result_large_err)]
    fn caller<T: ToJSON>(&self, req: &Request) -> Result<Caller<'_>, Reply<T>> {
        let caller = self.identify(req)?;
        self.rate.admit(&caller.tenant).map_err(|wait| {
            Reply::TooManyRequests(
                Json(Problem::new(ProblemCode::RateLimited, "too many requests; slow down")),
                wait,
            )
        })?;
        Ok(caller)
    }

    /// Real and shadow lanes' leases (for readiness checks).
    pub fn leases(&self) -> impl Iterator<Item = &Leases> {
        std::iter::once(&self.real)
            .chain(self.shadow.as_ref().map(|(l, _)| l))
            .filter_map(|l| l.leases.as_deref())
    }

    /// Every store, real and shadow, with whether it is shadow.
    pub fn stores(&self) -> impl Iterator<Item = (&Arc<Store>, bool)> {
        let real = self.real.stores.values().map(|s| (s, false));
        real.chain(self.shadow.iter().flat_map(|(l, _)| l.stores.values().map(|s| (s, true))))
    }

    /// A machine's or resource's spec (the same in both lanes).
    fn spec_of(&self, name: &str) -> Option<&ordo_spec::ir::Spec> {
        self.real.store(name).map(|s| s.spec())
    }

    /// `POST /<machines>`.
    pub async fn create(
        &self,
        req: &Request,
        machine: &str,
        idempotency_key: String,
        input: Value,
    ) -> Reply<Value> {
        let input = object(input);
        let action = Action::Create { machine: machine.to_string(), input: input.clone() };
        self.command(req, machine, idempotency_key, Value::Object(input), action).await
    }

    /// `POST /<machines>/{id}/<event>`. (One argument per part of the request.)
    #[allow(clippy::too_many_arguments)]
    pub async fn fire(
        &self,
        req: &Request,
        machine: &str,
        id: &str,
        event: &str,
        idempotency_key: String,
        if_match: Option<String>,
        params: Value,
    ) -> Reply<Value> {
        let Ok(id) = id.parse() else {
            return Reply::problem(Problem::new(ProblemCode::NotFound, format!("no {machine} `{id}`")), None);
        };
        let if_match = match if_match.as_deref().map(parse_etag) {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => {
                return Reply::problem(
                    Problem::new(ProblemCode::Malformed, "If-Match must be an ETag such as \"3\""),
                    None,
                );
            }
        };
        let params = object(params);
        let action = Action::Fire {
            machine: machine.to_string(),
            id,
            event: event.to_string(),
            params: params.clone(),
            if_match,
        };
        self.command(req, machine, idempotency_key, Value::Object(params), action).await
    }

    /// `POST /<resources>/{key}/<operation>`.
    pub async fn operate(
        &self,
        req: &Request,
        resource: &str,
        row_key: Value,
        operation: &str,
        idempotency_key: String,
        params: Value,
    ) -> Reply<Value> {
        let params = object(params);
        let action = Action::Operate {
            resource: resource.to_string(),
            key: row_key,
            operation: operation.to_string(),
            params: params.clone(),
        };
        self.command(req, resource, idempotency_key, Value::Object(params), action).await
    }

    /// `GET /<machines>/{id}`.
    pub async fn get(&self, req: &Request, machine: &str, id: &str) -> Reply<Value> {
        let caller = match self.caller(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let (Some(store), Ok(id)) = (caller.lane.store(machine), id.parse()) else {
            return Reply::problem(Problem::new(ProblemCode::NotFound, format!("no {machine} `{id}`")), None);
        };
        match self.breakers.db(store.instance(&caller.tenant, machine, id)).await {
            Ok(Some(r)) => Reply::Ok(Json(body(&r)), Some(etag(r.version)), None),
            Ok(None) => {
                Reply::problem(Problem::new(ProblemCode::NotFound, format!("no {machine} `{id}`")), None)
            }
            Err(e) => store_error(e),
        }
    }

    /// `GET /<resources>/{key}`.
    pub async fn get_resource(&self, req: &Request, resource: &str, row_key: Value) -> Reply<Value> {
        let caller = match self.caller(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let Some(store) = caller.lane.store(resource) else {
            return Reply::problem(
                Problem::new(ProblemCode::NotFound, format!("no resource {resource}")),
                None,
            );
        };
        match self.breakers.db(store.resource(&caller.tenant, resource, &row_key)).await {
            Ok(Some(r)) => Reply::Ok(Json(body(&r)), Some(etag(r.version)), None),
            Ok(None) => Reply::problem(
                Problem::new(ProblemCode::NotFound, format!("no {resource} `{row_key}`")),
                None,
            ),
            Err(e) => store_error(e),
        }
    }

    /// `GET /<machines>/{id}/events`: the state and the events allowed in it.
    pub async fn allowed_events(&self, req: &Request, machine: &str, id: &str) -> Reply<AllowedEvents> {
        match self.get(req, machine, id).await {
            Reply::Ok(Json(v), etag, _) => {
                let state = v["state"].as_str().unwrap_or_default().to_string();
                let events = self
                    .spec_of(machine)
                    .and_then(|s| s.machine(machine))
                    .map(|m| m.events_from(&state).map(|e| e.name.clone()).collect())
                    .unwrap_or_default();
                Reply::Ok(Json(AllowedEvents { state, events }), etag, None)
            }
            other => other.typed(),
        }
    }

    /// `GET /<machines>/{id}/transitions?after=&limit=`: the journal, a page at a time.
    pub async fn transitions(
        &self,
        req: &Request,
        machine: &str,
        id: &str,
        after: Option<i64>,
        limit: Option<u64>,
    ) -> Reply<TransitionPage> {
        // Reading the instance first gives the tenant check and the 404 of a missing one.
        let etag = match self.get(req, machine, id).await {
            Reply::Ok(_, etag, _) => etag,
            other => return other.typed(),
        };
        // Already admitted by the rate limit, for the read above.
        let caller = match self.identify(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let (Some(store), Ok(uuid)) = (caller.lane.store(machine), id.parse()) else {
            return Reply::problem(Problem::new(ProblemCode::NotFound, format!("no {machine} `{id}`")), None);
        };
        let limit = limit.unwrap_or(100).clamp(1, ordo_store::JOURNAL_PAGE_MAX);
        match self.breakers.db(store.journal(&caller.tenant, machine, uuid, after.unwrap_or(0), limit)).await
        {
            Ok(entries) => {
                let next_after =
                    (entries.len() as u64 == limit).then(|| entries.last().map(|e| e.version)).flatten();
                let items = entries
                    .into_iter()
                    .map(|e| TransitionEntry {
                        version: e.version,
                        event: e.event,
                        from: e.from,
                        to: e.to,
                        params: e.params,
                        at: e.at,
                    })
                    .collect();
                Reply::Ok(Json(TransitionPage { items, next_after }), etag, None)
            }
            Err(e) => store_error(e).typed(),
        }
    }

    /// `GET /events?after=&limit=`: the tenant's events, oldest first, from every spec.
    pub async fn events(&self, req: &Request, after: Option<String>, limit: Option<u64>) -> Reply<EventPage> {
        let caller = match self.caller(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        // All specs share one database and outbox: any store reads the whole feed.
        let Some(store) = caller.lane.stores.values().next() else {
            return Reply::Ok(Json(EventPage { items: Vec::new(), next: after }), None, None);
        };
        let limit = limit.unwrap_or(100);
        match self.breakers.db(store.events_after(&caller.tenant, after.as_deref(), limit)).await {
            Ok(events) => {
                let next = events.last().map(|e| e.cursor.clone()).or(after);
                let items = events
                    .into_iter()
                    .map(|e| FeedEvent { cursor: e.cursor, at: e.created_at, event: e.payload })
                    .collect();
                Reply::Ok(Json(EventPage { items, next }), None, None)
            }
            Err(e) => store_error(e).typed(),
        }
    }

    /// `GET /machines/{name}/diagram`: the machine's Mermaid state diagram.
    pub fn diagram(&self, machine: &str) -> DiagramReply {
        let found = self.spec_of(machine).and_then(|s| s.machine(machine).cloned());
        match found {
            Some(m) => {
                let spec = ordo_spec::ir::Spec { resources: Vec::new(), machines: vec![m] };
                DiagramReply::Ok(poem_openapi::payload::PlainText(ordo_spec::graph::render(
                    &spec,
                    ordo_spec::graph::Format::Mermaid,
                )))
            }
            None => DiagramReply::NotFound(Json(Problem::new(
                ProblemCode::NotFound,
                format!("no machine `{machine}`"),
            ))),
        }
    }

    /// The idempotency contract around one command: key, fingerprint, lease, execute,
    /// release, and the HTTP form of the outcome (the same for a fresh and a replayed one).
    async fn command(
        &self,
        req: &Request,
        name: &str,
        idempotency_key: String,
        body: Value,
        action: Action,
    ) -> Reply<Value> {
        let caller = match self.caller(req) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        // A missing header never gets here (the route's parameter is required; see
        // `malformed`); the schema states the pattern this checks.
        let idempotency_key = match ordo_idempotency::parse_key(&idempotency_key) {
            Ok(k) => k,
            Err(e) => return Reply::problem(Problem::new(ProblemCode::BadKey, e.to_string()), None),
        };
        let Some(store) = caller.lane.store(name) else {
            return Reply::problem(Problem::new(ProblemCode::NotFound, format!("no {name}")), None);
        };
        let Caller { tenant, lane, shadow } = caller;
        let span = tracing::Span::current();
        span.record("tenant", tenant.as_str());
        span.record("machine", name);
        let fingerprint = ordo_idempotency::fingerprint(req.method().as_str(), req.uri().path(), &body);
        let trace = req.extensions().get::<TraceParent>().map(|t| t.0.clone());
        let idempotency =
            Some(IdempotencyKey { key: idempotency_key.clone(), fingerprint: fingerprint.clone() });
        let cmd = Command { tenant, idempotency, action, trace };
        // The first insurance: hold the key in Redis while the request runs. A key decided
        // lately is answered by the claim itself. Redis away means no lease, never a
        // failure: the database record still stops duplicates.
        // The lease, and whether Redis said it is ours (a claim that got no answer may
        // still have taken the key: it is ended all the same).
        let (lease, held) = match lane.leases.as_deref() {
            None => (None, false),
            Some(leases) => match self.breakers.redis(leases.claim(&cmd.tenant, &idempotency_key)).await {
                // Redis failed repeatedly: go on at once, without waiting out its timeout.
                None => {
                    self.metrics.idempotency(KeyResult::RedisUnavailable, shadow);
                    (None, false)
                }
                Some(Ok(Claim::Acquired(lease))) => (Some(lease), true),
                Some(Ok(Claim::Answered(answer))) => {
                    return match Executed::answered(answer.fingerprint, &answer.outcome, &fingerprint) {
                        Ok(done) => {
                            self.count(&cmd.action, &done, shadow);
                            reply(&done, &cmd)
                        }
                        Err(e) => store_error(e),
                    };
                }
                Some(Ok(Claim::Held { retry_after_ms })) => {
                    // Held, but maybe decided: the holder answers its client before its
                    // lease becomes the answer in Redis (or it never does, if Redis is slow).
                    // The record says.
                    if let Ok(Some(done)) = self.breakers.db(store.recorded(&cmd)).await {
                        self.count(&cmd.action, &done, shadow);
                        return reply(&done, &cmd);
                    }
                    self.metrics.idempotency(KeyResult::InFlight, shadow);
                    span.record("idempotency", KeyResult::InFlight.label());
                    let p = Problem::new(
                        ProblemCode::KeyInUse,
                        "a request with this key is in flight; retry later",
                    );
                    return Reply::Conflict(Json(p), Some(retry_after_ms.div_ceil(1000).max(1)), None);
                }
                Some(Err(failed)) => {
                    self.metrics.idempotency(KeyResult::RedisUnavailable, shadow);
                    tracing::warn!(error = %failed.error, "idempotency lease skipped");
                    (Some(failed.uncertain), false)
                }
            },
        };
        // Without a lease the record is read first: a request already decided is answered
        // from it. With one, that read is skipped: a key decided longer ago than Redis keeps
        // answers still meets its record when the command's own record is inserted, and is
        // answered with that.
        if !held {
            match self.breakers.db(store.recorded(&cmd)).await {
                Ok(Some(done)) => {
                    self.count(&cmd.action, &done, shadow);
                    return reply(&done, &cmd);
                }
                Ok(None) => {}
                Err(e) => return store_error(e),
            }
        }
        // The command runs to its end even if the client goes away: its outcome is recorded
        // and its lease settled, so the client's retry gets the replay instead of finding
        // the key held.
        let (store, leases, breakers) = (store.clone(), lane.leases.clone(), self.breakers.clone());
        let run = tokio::spawn(
            async move {
                let execute = breakers.db(store.execute_unrecorded(&cmd));
                let (Some(leases), Some(lease)) = (leases, lease) else {
                    let result = execute.await;
                    return (cmd, result);
                };
                let result = leases.hold(&lease, execute).await;
                // A lease left behind would hold the client's retry until it expires. One
                // Redis said is ours is ended past the breaker (Redis answered moments ago);
                // an uncertain one only while the breaker lets calls through.
                let end = async {
                    match result.as_ref().ok().and_then(Executed::settled) {
                        Some(outcome) => leases.settle(&lease, &Answer { fingerprint, outcome }).await,
                        None => leases.release(&lease).await,
                    }
                };
                let ended = if held { Some(end.await) } else { breakers.redis(end).await };
                if let Some(Err(e)) = ended {
                    tracing::warn!(error = %e, "idempotency lease not ended; it expires by itself");
                }
                (cmd, result)
            }
            // The request's span and subscriber go with it.
            .in_current_span()
            .with_current_subscriber(),
        );
        let (cmd, result) = match run.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the command's task failed");
                return Reply::problem(Problem::new(ProblemCode::Internal, "internal error"), None);
            }
        };
        match result {
            Ok(done) => {
                self.count(&cmd.action, &done, shadow);
                reply(&done, &cmd)
            }
            Err(e) => store_error(e),
        }
    }

    /// Counts a decided command: its outcome, and how its key went.
    fn count(&self, action: &Action, done: &Executed, shadow: bool) {
        let (machine, event) = match action {
            Action::Create { machine, .. } => {
                let create =
                    self.spec_of(machine).and_then(|s| s.machine(machine)).map(|m| m.create.name.clone());
                (machine.as_str(), create.unwrap_or_default())
            }
            Action::Fire { machine, event, .. } => (machine.as_str(), event.clone()),
            Action::Operate { resource, operation, .. } => (resource.as_str(), operation.clone()),
        };
        let outcome = match &done.outcome {
            Outcome::Applied { .. } => "applied".to_string(),
            Outcome::Rejected { rejection } => problem(rejection).code.code().to_string(),
        };
        let key = match &done.outcome {
            _ if done.replayed => KeyResult::Replayed,
            Outcome::Rejected { rejection: Rejection::KeyReused } => KeyResult::Reused,
            _ => KeyResult::Fresh,
        };
        self.metrics.idempotency(key, shadow);
        let span = tracing::Span::current();
        span.record("event", event.as_str());
        span.record("outcome", outcome.as_str());
        span.record("idempotency", key.label());
        if !done.replayed && key != KeyResult::Reused {
            self.metrics.transition(machine, &event, &outcome, shadow);
        }
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
