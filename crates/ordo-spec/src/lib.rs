//! The Ordo lifecycle language: grammar, checker, IR, formatter and diagrams.
//!
//! The front door is [`compile`]: text in, either a checked [`ir::Spec`] or every mistake
//! found, each a [`Diagnostic`] with a stable [`Code`]. This crate knows nothing of
//! databases, HTTP or Redis, and parsing and checking never panic, on any input.

pub mod ast;
mod check;
pub mod diag;
pub mod diff;
pub mod docs;
pub mod fmt;
pub mod graph;
pub mod ir;
mod parse;

pub use check::{DIAGNOSTICS_MAX, NAME_BYTES_MAX, TIMER_MS_MAX};
pub use diag::{Code, Diagnostic, render};
pub use parse::{
    EXPR_DEPTH_MAX, NESTING_DEPTH_MAX, RESERVED_WORDS, SPEC_BYTES_MAX, SYNTAX_ERRORS_MAX, parse,
};

use std::borrow::Cow;

/// Parses and checks a spec: the IR when it is sound, else every problem found.
pub fn compile(source: &str) -> Result<ir::Spec, Vec<Diagnostic>> {
    let ast = parse::parse_keeping(source, false)?;
    match check::check(&ast) {
        (Some(spec), diags) if diags.is_empty() => Ok(spec),
        (_, diags) => Err(diags),
    }
}

/// Parses and checks a spec for tools that also want the syntax tree (an editor): the tree
/// (without its comments, which only the formatter reads) when the text parses, and every
/// problem found, exactly as [`compile`] reports them.
pub fn analyse(source: &str) -> (Option<ast::Spec>, Vec<Diagnostic>) {
    match parse::parse_keeping(source, false) {
        Ok(ast) => {
            let (_, diags) = check::check(&ast);
            (Some(ast), diags)
        }
        Err(diags) => (None, diags),
    }
}

/// [`compile`] for raw file contents: refuses oversized and non-UTF-8 input with a
/// diagnostic. Render diagnostics against [`source_text`] of the same bytes.
pub fn compile_bytes(bytes: &[u8]) -> Result<ir::Spec, Vec<Diagnostic>> {
    compile(text_of(bytes)?)
}

/// [`fmt::format`] for raw file contents, with the same refusals as [`compile_bytes`].
pub fn format_bytes(bytes: &[u8]) -> Result<String, Vec<Diagnostic>> {
    fmt::format(text_of(bytes)?)
}

/// The text to show diagnostics against: invalid UTF-8 is replaced, and the replacement
/// keeps every offset before the first invalid byte, where the diagnostic points.
pub fn source_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = &bytes[..bytes.len().min(SPEC_BYTES_MAX + 1)];
    String::from_utf8_lossy(bytes)
}

fn text_of(bytes: &[u8]) -> Result<&str, Vec<Diagnostic>> {
    if bytes.len() > SPEC_BYTES_MAX {
        return Err(vec![parse::too_large(bytes.len())]);
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        vec![
            Diagnostic::new(Code::NotUtf8, ast::Span::new(at, at + 1), "the spec is not valid UTF-8 text")
                .label("invalid byte here")
                .help("save the file as UTF-8"),
        ]
    })
}
