//! Commands the benchmarks send, shared by both bench binaries (each uses a part of it).
#![allow(dead_code)]

use ordo_store::{Action, Command};
use serde_json::{Map, Value as Json, json};

pub const ORDER: &str = include_str!("../../../../specs/order.ordo");

pub fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn command(action: Action) -> Command {
    Command { tenant: "t1".to_string(), idempotency: None, action, trace: None }
}

pub fn place(sku: &str, account: &str) -> Command {
    command(Action::Create {
        machine: "Order".to_string(),
        input: obj(json!({"sku": sku, "quantity": 1, "account": account, "amount": 10})),
    })
}

pub fn operate(resource: &str, key: &str, operation: &str, params: Json) -> Command {
    command(Action::Operate {
        resource: resource.to_string(),
        key: json!(key),
        operation: operation.to_string(),
        params: obj(params),
    })
}

pub fn fire(id: &str, event: &str, params: Json) -> Command {
    command(Action::Fire {
        machine: "Order".to_string(),
        id: id.parse().unwrap_or_default(),
        event: event.to_string(),
        params: obj(params),
        if_match: None,
    })
}
