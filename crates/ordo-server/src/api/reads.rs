//! The reads: an instance, a resource row, the events an instance allows, its journal, the
//! events feed and the machines' diagrams. None takes an idempotency key or changes a row.

use super::{AllowedEvents, Ctx, DiagramReply, EventPage, FeedEvent, Problem, ProblemCode, Reply};
use super::{TransitionEntry, TransitionPage};
use crate::reply::{body, etag, store_error};
use poem::Request;
use poem_openapi::payload::Json;
use serde_json::Value;

impl Ctx {
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
                let spec =
                    ordo_spec::ir::Spec { resources: Vec::new(), machines: vec![m], invariants: Vec::new() };
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
}
