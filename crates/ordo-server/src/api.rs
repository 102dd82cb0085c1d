//! What every generated route calls: tenant from the API key, the idempotency contract
//! (key, fingerprint, Redis lease, replay) and the executor; the HTTP form of the answers
//! is `reply.rs`'s.

use crate::breaker::Breakers;

mod access;
mod keyed;
mod reads;

use crate::reply::parse_etag;
pub use crate::reply::{
    AllowedEvents, DiagramReply, EventPage, FeedEvent, Problem, ProblemCode, RETRY_AFTER_S, Reply,
    TransitionEntry, TransitionPage,
};
pub use access::{API_KEY_BYTES_MIN, DEFAULT_TENANT, Lane, RateLimit, ShadowTenants, Tenants, is_shadow};
use ordo_idempotency::Leases;
use ordo_store::{Action, Store};
use poem::Request;
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct Ctx {
    real: Lane,
    shadow: Option<(Lane, ShadowTenants)>,
    tenants: Tenants,
    rate: RateLimit,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub breakers: Arc<Breakers>,
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
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
