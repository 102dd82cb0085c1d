//! Property tests: parse + check never panic on any input, every span lies inside the
//! input, and whatever still parses formats idempotently.

use proptest::prelude::*;
use std::sync::OnceLock;

/// The shipped specs and the good corpus: the seeds that mutations start from.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        crate::shipped_specs().iter().chain(crate::corpus("good").iter()).map(|p| crate::read(p)).collect()
    })
}

/// The language's vocabulary besides the reserved words, so that soups and insertions
/// reach deep parser states.
const TOKENS: &[&str] = &[
    "pessimistic",
    "optimistic",
    "nowait",
    "skip locked",
    "serializable",
    "read committed",
    "text",
    "int",
    "money",
    "bool",
    "timestamp",
    "?",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    ",",
    "->",
    "=",
    ".",
    "+=",
    "-=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "\"s\"",
    "\"",
    "0",
    "99999999999999999999",
    "30m",
    "1h30m",
    "0s",
    "x",
    "M",
    "pending",
    "paid",
    "Wallet",
    "balance",
    "sku",
    "// c",
    "\n",
    " ",
    "\u{0}",
    "é",
];

fn token(i: usize) -> &'static str {
    let all = ordo_spec::RESERVED_WORDS.len() + TOKENS.len();
    let i = i % all;
    ordo_spec::RESERVED_WORDS.get(i).copied().unwrap_or_else(|| TOKENS[i - ordo_spec::RESERVED_WORDS.len()])
}

/// Runs the whole front end on `text` and checks the invariants that hold for any input.
fn front_end_holds(text: &str) -> Result<(), TestCaseError> {
    match ordo_spec::compile(text) {
        Ok(spec) => {
            // A spec that checks also formats, and formatting keeps its meaning.
            let formatted =
                ordo_spec::fmt::format(text).map_err(|d| TestCaseError::fail(format!("{d:?}")))?;
            prop_assert_eq!(ordo_spec::compile(&formatted).ok(), Some(spec));
            prop_assert_eq!(ordo_spec::fmt::format(&formatted).ok(), Some(formatted.clone()));
        }
        Err(diags) => {
            prop_assert!(!diags.is_empty());
            for d in &diags {
                prop_assert!(d.span.start <= d.span.end, "{:?}", d);
                prop_assert!(d.span.end <= text.len(), "span {:?} past the end ({})", d.span, text.len());
                prop_assert!(!d.message.is_empty());
            }
            let rendered = ordo_spec::render("p.ordo", text, &diags);
            prop_assert!(rendered.contains("error["));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    ReplaceChar { at: usize, with: char },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::ReplaceChar { at, with }),
    ]
}

fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Delete { at, len } => {
            let start = floor_boundary(text, at);
            let end = floor_boundary(text, (start + len).min(text.len()));
            text.replace_range(start..end.max(start), "");
        }
        Mutation::Insert { at, token } => {
            let at = floor_boundary(text, at);
            text.insert_str(at, self::token(token));
        }
        Mutation::DuplicateLine { line } | Mutation::SwapLines { a: line, .. } if text.is_empty() => {
            let _ = line;
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = line % lines.len().max(1);
            if let Some(l) = lines.get(i).copied() {
                lines.insert(i, l);
            }
            *text = lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let n = lines.len().max(1);
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            *text = lines.join("\n");
        }
        Mutation::ReplaceChar { at, with } => {
            let start = floor_boundary(text, at);
            if let Some(c) = text[start..].chars().next() {
                text.replace_range(start..start + c.len_utf8(), &with.to_string());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        front_end_holds(&text)?;
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(any::<usize>(), 0..200)) {
        let text: Vec<&str> = tokens.iter().map(|&i| token(i)).collect();
        front_end_holds(&text.join(" "))?;
    }

    #[test]
    fn mutated_specs_never_panic(seed in any::<usize>(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut text = seeds()[seed % seeds().len()].clone();
        for m in &mutations {
            apply(&mut text, m);
        }
        front_end_holds(&text)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(diags) = ordo_spec::compile_bytes(&bytes) {
            let text = ordo_spec::source_text(&bytes);
            for d in &diags {
                prop_assert!(d.span.end <= text.len().max(bytes.len()));
            }
            let _ = ordo_spec::render("b.ordo", &text, &diags);
        }
    }
}
