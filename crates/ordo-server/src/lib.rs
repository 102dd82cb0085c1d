//! The Ordo service: configuration, tenants, problem+json errors, the idempotency contract,
//! and the routes generated from the specs (`OUT_DIR/generated.rs`).

pub mod api;
pub mod breaker;
pub mod config;
pub mod document;
pub mod middleware;
pub mod record;
pub mod relay;
pub mod reply;
pub mod startup;
pub mod text;

/// The typed routes and schemas of the specs the server was built from.
#[allow(clippy::all, unused_imports)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
pub mod telemetry;
