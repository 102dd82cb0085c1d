//! The Ordo language server: the spec checker's diagnostics, hover, go to definition, find
//! references, completion, rename, the outline, formatting, quick fixes and semantic tokens,
//! for any editor that speaks LSP (`docs/editors.md`).
//!
//! Everything is computed from `ordo_spec` (the same parser, checker and formatter as
//! `cargo xtask spec check` and `spec fmt`), so the editor and the command line never
//! disagree. `server` speaks the protocol; `features` and `complete` answer from a
//! [`doc::Document`] and do no I/O.

pub mod complete;
pub mod doc;
pub mod features;
pub mod index;
pub mod lines;
pub mod server;
