//! No code: a dependency of every crate that links the service, so that a test, a server,
//! a bench and an xtask build all compile each third-party crate with one feature set and
//! reuse each other's artifacts. `cargo hakari generate` writes its Cargo.toml from the
//! workspace (`.config/hakari.toml`); `cargo hakari verify` checks it.
