//! A Rust client of the Ordo API, generated from `docs/openapi.json` by progenitor when this
//! crate builds (nothing generated is checked in). Positional style: every required
//! parameter is an argument, so a state-changing call without its `Idempotency-Key` does
//! not compile:
//!
//! ```compile_fail
//! # async fn f(client: ordo_client::Client, order: ordo_client::types::OrderCreate) {
//! client.place_order(&order).await;
//! # }
//! ```
//!
//! and the same call with one does:
//!
//! ```no_run
//! # async fn f(client: ordo_client::Client, order: ordo_client::types::OrderCreate) {
//! let key = "9b2f0a4e-1d7c-4f0e-8a7b-3c5d6e7f8a9b".parse().unwrap();
//! client.place_order(&key, &order).await;
//! # }
//! ```
//!
//! A key is a `<Operation>IdempotencyKey`, made with `parse()`, which checks the document's
//! pattern; errors carry the server's problem (`types::Problem`). The scenario in
//! `clients/examples/scenario.rs` shows a whole order (`cargo xtask clients` runs it).

progenitor::generate_api!(spec = "../../docs/openapi.json", interface = Positional);
