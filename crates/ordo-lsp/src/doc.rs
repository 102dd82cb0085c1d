//! One open spec: its text, the checker's diagnostics, and the resolved names.

use crate::index::Index;
use crate::lines::Lines;
use ordo_spec::{Diagnostic, ast};
use std::sync::Arc;

pub struct Document {
    pub text: String,
    pub lines: Lines,
    /// The syntax tree, when the text parses.
    pub ast: Option<ast::Spec>,
    /// Names of the current text; `None` while it does not parse.
    pub index: Option<Arc<Index>>,
    /// Names of the last text that parsed: completion still offers them while the user
    /// is midway through typing something that does not parse yet.
    pub known: Option<Arc<Index>>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Document {
    pub fn new(text: String) -> Document {
        let mut d = Document {
            text: String::new(),
            lines: Lines::new(""),
            ast: None,
            index: None,
            known: None,
            diagnostics: Vec::new(),
        };
        d.update(text);
        d
    }

    /// Re-checks the whole text: the checker takes milliseconds even for a large spec (see
    /// the `recheck` bench), so no incremental analysis is kept.
    pub fn update(&mut self, text: String) {
        let (ast, diagnostics) = ordo_spec::analyse(&text);
        self.lines = Lines::new(&text);
        self.index = ast.as_ref().map(|a| Arc::new(Index::build(a)));
        if self.index.is_some() {
            self.known = self.index.clone();
        }
        self.ast = ast;
        self.diagnostics = diagnostics;
        self.text = text;
    }

    /// The machine or resource whose braces hold `offset`, in the current tree.
    pub fn item_at(&self, offset: usize) -> Option<&ast::Item> {
        self.ast.as_ref()?.items.iter().find(|i| i.span().start <= offset && offset <= i.span().end)
    }
}
