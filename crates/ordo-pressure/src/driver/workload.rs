//! The workload: what the client knows of the instances it made, the next request of the
//! mix drawn from it (events on instances in the right state, a share on any instance to
//! conflict, creations when there is nothing to fire on), and what each answer teaches it.

use super::{Driver, lock};
use crate::traffic::{Answer, Class, Op, OpKind, Seen, Taken};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the client knows of the instances it made.
pub(super) struct World {
    rng: fastrand::Rng,
    /// Order ids by the state they were last seen in (taken out while a request is on them).
    orders: BTreeMap<String, Vec<String>>,
    all_orders: Vec<String>,
    pending_transfers: Vec<String>,
}

impl World {
    pub(super) fn new(seed: u64) -> World {
        World {
            rng: fastrand::Rng::with_seed(seed),
            orders: BTreeMap::new(),
            all_orders: Vec::new(),
            pending_transfers: Vec::new(),
        }
    }

    fn take_order(&mut self, state: &str) -> Option<String> {
        let ids = self.orders.get_mut(state)?;
        (!ids.is_empty()).then(|| {
            let i = self.rng.usize(..ids.len());
            ids.swap_remove(i)
        })
    }

    /// Any order it knows, whatever its state (for conflicting commands and reads).
    fn any_order(&mut self) -> String {
        let i = self.rng.usize(..self.all_orders.len());
        self.all_orders[i].clone()
    }

    fn put_order(&mut self, id: String, state: &str) {
        self.orders.entry(state.to_string()).or_default().push(id);
    }
}

impl Driver {
    /// True with probability `p`, from the run's seeded generator.
    pub(super) fn chance(&self, p: f64) -> bool {
        lock(&self.world).rng.f64() < p
    }

    /// The next request of the mix, from what the client knows.
    pub(super) fn next_op(&self, wanted: Option<OpKind>) -> Op {
        let mut guard = lock(&self.world);
        let w = &mut *guard;
        let kind = wanted.unwrap_or_else(|| self.pick_kind(w));
        let account = self.account(w.rng.usize(..self.scenario.accounts));
        let found = self.event_op(w, kind);
        // Nothing to fire an event on yet: make something instead.
        let kind = match (&found, kind) {
            (Some(_), k) => k,
            (None, OpKind::Settle | OpKind::Fail) => OpKind::Initiate,
            (None, OpKind::Deposit | OpKind::Initiate | OpKind::Read) => kind,
            (None, _) => OpKind::Place,
        };
        let mut op = found.unwrap_or_else(|| self.new_op(w, kind, &account));
        if op.post {
            op.key = Some(self.key());
        }
        op
    }

    /// A kind of request drawn by the mix's weights.
    fn pick_kind(&self, w: &mut World) -> OpKind {
        let m = &self.scenario.mix;
        let weights = [
            (OpKind::Place, m.place),
            (OpKind::Pay, m.pay),
            (OpKind::Ship, m.ship),
            (OpKind::Deliver, m.deliver),
            (OpKind::Cancel, m.cancel),
            (OpKind::Refund, m.refund),
            (OpKind::Deposit, m.deposit),
            (OpKind::Initiate, m.initiate),
            (OpKind::Settle, m.settle),
            (OpKind::Fail, m.fail),
            (OpKind::Read, m.read),
        ];
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        let mut pick = w.rng.u32(..total.max(1));
        weights
            .iter()
            .find(|(_, weight)| {
                if pick < *weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .map_or(OpKind::Place, |(k, _)| *k)
    }

    /// An event of `kind` on an instance the client knows in a state it can leave that
    /// way (or, for a share of them, on any order, to conflict); none when there is none.
    fn event_op(&self, w: &mut World, kind: OpKind) -> Option<Op> {
        match kind {
            OpKind::Place | OpKind::Deposit | OpKind::Initiate | OpKind::Read => None,
            OpKind::Settle | OpKind::Fail => {
                let n = w.pending_transfers.len();
                (n > 0).then(|| {
                    let id = w.pending_transfers.swap_remove(w.rng.usize(..n));
                    let body = if kind == OpKind::Settle {
                        json!({"reference": "r"})
                    } else {
                        json!({"reason": "load"})
                    };
                    let path = format!("/transfers/{id}/{}", kind.label());
                    request(kind, path, Some(body), Some(Taken::Transfer(id)))
                })
            }
            event => {
                let body = match event {
                    OpKind::Ship => json!({"carrier": "ups", "tracking": "1Z"}),
                    OpKind::Refund => json!({"reason": "returned"}),
                    _ => json!({}),
                };
                let conflicting = w.rng.f64() < self.scenario.conflict_share && !w.all_orders.is_empty();
                if conflicting {
                    let id = w.any_order();
                    Some(request(event, format!("/orders/{id}/{}", event.label()), Some(body), None))
                } else {
                    event.order_source().and_then(|state| w.take_order(state)).map(|id| {
                        let path = format!("/orders/{id}/{}", event.label());
                        request(event, path, Some(body), Some(Taken::Order(id)))
                    })
                }
            }
        }
    }

    /// A request that needs no instance: a deposit, a transfer, a read, or a new order (a
    /// share of them on the hot SKU).
    fn new_op(&self, w: &mut World, kind: OpKind, account: &str) -> Op {
        let s = &self.scenario;
        match kind {
            OpKind::Deposit => request(
                kind,
                format!("/wallet/{account}/deposit"),
                Some(json!({"amount": w.rng.i64(1..=1_000)})),
                None,
            ),
            OpKind::Initiate => {
                let payee = loop {
                    let p = self.account(w.rng.usize(..s.accounts));
                    if p != account {
                        break p;
                    }
                };
                let body = json!({"payer": account, "payee": payee, "amount": w.rng.i64(1..=100)});
                request(kind, "/transfers".to_string(), Some(body), None)
            }
            OpKind::Read if !w.all_orders.is_empty() => {
                let id = w.any_order();
                request(kind, format!("/orders/{id}"), None, None)
            }
            OpKind::Read => request(kind, format!("/inventory/{}", self.hot_sku), None, None),
            _ => {
                let sku = if w.rng.f64() < s.hot_share {
                    self.hot_sku.clone()
                } else {
                    self.sku(w.rng.usize(..s.skus))
                };
                let body = json!({
                    "sku": sku,
                    "quantity": w.rng.i64(1..=3),
                    "account": account,
                    "amount": w.rng.i64(1..=1_000),
                });
                request(OpKind::Place, "/orders".to_string(), Some(body), None)
            }
        }
    }

    /// Puts what a request learnt back into the world.
    pub(super) fn learn(&self, op: &Op, a: &Answer) {
        let mut w = lock(&self.world);
        let state = a.body["state"].as_str();
        // A replay is the first send's answer: new to the client when that one was lost.
        let fresh = !a.replayed || a.retries > 0;
        match (&op.taken, op.kind, a.class()) {
            (_, OpKind::Place, Class::Ok) if fresh => {
                if let Some(id) = a.body["id"].as_str() {
                    w.put_order(id.to_string(), "pending");
                    w.all_orders.push(id.to_string());
                }
            }
            (_, OpKind::Initiate, Class::Ok) if fresh => {
                if let Some(id) = a.body["id"].as_str() {
                    w.pending_transfers.push(id.to_string());
                }
            }
            // The answer (or the problem of an invalid transition) says where it is now.
            (Some(Taken::Order(id)), _, Class::Ok | Class::Rejected) => {
                if let Some(state) = state {
                    w.put_order(id.clone(), state);
                }
            }
            (Some(Taken::Transfer(id)), _, Class::Rejected) if state == Some("pending") => {
                w.pending_transfers.push(id.clone());
            }
            // Unknown outcome: it stays out of the lists (conflicting commands still find it).
            _ => {}
        }
    }

    pub(super) fn note_seen(&self, op: &Op, a: &Answer) {
        let (Some(key), Class::Ok) = (&op.key, a.class()) else { return };
        let created = match (op.kind, a.body["id"].as_str(), a.status) {
            (OpKind::Place, Some(id), Some(201)) => Some(("orders".to_string(), id.to_string())),
            (OpKind::Initiate, Some(id), Some(201)) => Some(("transfers".to_string(), id.to_string())),
            _ => None,
        };
        lock(&self.seen).push(Seen { key: key.clone(), created });
    }
}

/// A request without its key (given when it is sent): a POST when it has a body.
pub(super) fn request(kind: OpKind, path: String, body: Option<Value>, taken: Option<Taken>) -> Op {
    Op { kind, post: body.is_some(), path, body, key: None, taken }
}
