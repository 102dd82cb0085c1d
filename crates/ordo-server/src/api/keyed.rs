//! The idempotency contract around one command: the key parsed, the request fingerprinted,
//! the Redis lease claimed (a kept answer replays at once; 409 while another holds it),
//! the record read when there is no lease, the command run to its end in a task of its own
//! while the lease is held, the lease settled with the answer, and the outcome counted.

use super::access::{Caller, Lane};
use super::{Ctx, Problem, ProblemCode, Reply};
use crate::reply::{problem, reply, store_error};
use crate::telemetry::{KeyResult, TraceParent};
use ordo_idempotency::{Answer, Claim, Lease};
use ordo_store::{Action, Command, Executed, IdempotencyKey, Outcome, Rejection, Store};
use poem::Request;
use poem_openapi::payload::Json;
use serde_json::Value;
use std::sync::Arc;
use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

impl Ctx {
    /// The idempotency contract around one command: key, fingerprint, lease, execute,
    /// release, and the HTTP form of the outcome (the same for a fresh and a replayed one).
    pub(super) async fn command(
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
        let (lease, held) = match self.claim(lane, store, &cmd, &idempotency_key, &fingerprint, shadow).await
        {
            Ok(claimed) => claimed,
            Err(answer) => return answer,
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
        self.run_leased(store, lane, cmd, lease, held, fingerprint, shadow).await
    }

    /// The first insurance: the Redis lease on the key, and whether Redis said it is ours.
    /// `Err` is the answer when the claim decides the request: a kept answer replayed, or
    /// the key held by a request still running.
    #[allow(clippy::result_large_err, clippy::too_many_arguments)]
    async fn claim(
        &self,
        lane: &Lane,
        store: &Arc<Store>,
        cmd: &Command,
        idempotency_key: &str,
        fingerprint: &str,
        shadow: bool,
    ) -> Result<(Option<Lease>, bool), Reply<Value>> {
        let span = tracing::Span::current();
        // The first insurance: hold the key in Redis while the request runs. A key decided
        // lately is answered by the claim itself. Redis away means no lease, never a
        // failure: the database record still stops duplicates.
        // The lease, and whether Redis said it is ours (a claim that got no answer may
        // still have taken the key: it is ended all the same).
        Ok(match lane.leases.as_deref() {
            None => (None, false),
            Some(leases) => match self.breakers.redis(leases.claim(&cmd.tenant, idempotency_key)).await {
                // Redis failed repeatedly: go on at once, without waiting out its timeout.
                None => {
                    self.metrics.idempotency(KeyResult::RedisUnavailable, shadow);
                    (None, false)
                }
                Some(Ok(Claim::Acquired(lease))) => (Some(lease), true),
                Some(Ok(Claim::Answered(answer))) => {
                    return Err(match Executed::answered(answer.fingerprint, &answer.outcome, fingerprint) {
                        Ok(done) => {
                            self.count(&cmd.action, &done, shadow);
                            reply(&done, cmd)
                        }
                        Err(e) => store_error(e),
                    });
                }
                Some(Ok(Claim::Held { retry_after_ms })) => {
                    // Held, but maybe decided: the holder answers its client before its
                    // lease becomes the answer in Redis (or it never does, if Redis is slow).
                    // The record says.
                    if let Ok(Some(done)) = self.breakers.db(store.recorded(cmd)).await {
                        self.count(&cmd.action, &done, shadow);
                        return Err(reply(&done, cmd));
                    }
                    self.metrics.idempotency(KeyResult::InFlight, shadow);
                    span.record("idempotency", KeyResult::InFlight.label());
                    let p = Problem::new(
                        ProblemCode::KeyInUse,
                        "a request with this key is in flight; retry later",
                    );
                    return Err(Reply::Conflict(Json(p), Some(retry_after_ms.div_ceil(1000).max(1)), None));
                }
                Some(Err(failed)) => {
                    self.metrics.idempotency(KeyResult::RedisUnavailable, shadow);
                    tracing::warn!(error = %failed.error, "idempotency lease skipped");
                    (Some(failed.uncertain), false)
                }
            },
        })
    }

    /// Runs the command to its end in a task of its own, holding the lease while it runs and
    /// settling it with the answer (released on a failure), then answers and counts it.
    #[allow(clippy::too_many_arguments)]
    async fn run_leased(
        &self,
        store: &Arc<Store>,
        lane: &Lane,
        cmd: Command,
        lease: Option<Lease>,
        held: bool,
        fingerprint: String,
        shadow: bool,
    ) -> Reply<Value> {
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
    pub(super) fn count(&self, action: &Action, done: &Executed, shadow: bool) {
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
