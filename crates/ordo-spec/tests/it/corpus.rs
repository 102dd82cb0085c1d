//! The corpus of bad specs (one mistake each, with the codes it must produce and a snapshot
//! of the rendered diagnostics), and the specs that must check clean.

use crate::{corpus, read, shipped_specs, short_name};
use ordo_spec::Code;
use std::collections::BTreeSet;

/// The codes a bad spec declares on its second line: `// expect: ordo::syntax ordo::syntax`.
fn expected_codes(source: &str) -> Vec<String> {
    let line = source.lines().nth(1).unwrap_or("");
    let codes = line
        .strip_prefix("// expect:")
        .unwrap_or_else(|| panic!("second line must be `// expect: CODES`: {line}"));
    codes.split_whitespace().map(str::to_string).collect()
}

#[test]
fn bad_specs_report_exactly_their_mistake() {
    insta::glob!("../corpus/bad", "*.ordo", |path| {
        let source = read(path);
        let diags = ordo_spec::compile(&source).expect_err("a bad spec must not compile");
        let codes: Vec<String> = diags.iter().map(|d| d.code.as_str().to_string()).collect();
        assert_eq!(codes, expected_codes(&source), "{}", short_name(path));
        for d in &diags {
            assert!(d.span.start <= d.span.end && d.span.end <= source.len(), "span inside the file");
        }
        insta::assert_snapshot!(ordo_spec::render(&short_name(path), &source, &diags));
    });
}

/// Every check has a spec in the corpus that trips it; the limits that need a huge or
/// binary file are exercised in `limits.rs` instead.
#[test]
fn every_code_is_covered() {
    let in_limits_tests = [Code::NotUtf8, Code::TooLarge, Code::TooManyErrors];
    let covered: BTreeSet<String> = corpus("bad").iter().flat_map(|p| expected_codes(&read(p))).collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !in_limits_tests.contains(c))
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(*c))
        .collect();
    assert!(missing.is_empty(), "no bad spec covers {missing:?}");
    for code in &covered {
        assert!(Code::ALL.iter().any(|c| c.as_str() == code), "unknown code {code} in the corpus");
    }
}

#[test]
fn codes_are_unique_and_namespaced() {
    let mut seen = BTreeSet::new();
    for c in Code::ALL {
        assert!(c.as_str().starts_with("ordo::"), "{}", c.as_str());
        assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
        assert!(!c.summary().is_empty());
    }
}

#[test]
fn good_and_shipped_specs_check_clean() {
    for path in corpus("good").into_iter().chain(shipped_specs()) {
        let source = read(&path);
        if let Err(diags) = ordo_spec::compile(&source) {
            panic!("{}", ordo_spec::render(&short_name(&path), &source, &diags));
        }
    }
}

#[test]
fn shipped_order_spec_means_what_it_says() {
    let spec = ordo_spec::compile(&read(&crate::workspace_root().join("specs/order.ordo")))
        .expect("order.ordo checks");
    let order = spec.machine("Order").expect("machine Order");
    assert_eq!(order.initial, "pending");
    assert_eq!(order.create.name, "place");
    let cancel = order.event("cancel").expect("event cancel");
    assert_eq!(cancel.transitions.len(), 2, "cancel has a transition from pending and one from paid");
    assert_eq!(cancel.transition_from("paid").expect("from paid").body.effects.len(), 2);
    let ship = order.event("ship").expect("event ship");
    let guard = &ship.transition_from("paid").expect("from paid").body.guards[0];
    assert_eq!((guard.name.as_str(), guard.text.as_str()), ("has_carrier", "carrier != \"\""));
    assert_eq!(ship.transition_from("paid").expect("from paid").body.lock, ordo_spec::ir::Lock::Pessimistic);
    let allowed: Vec<&str> = order.events_from("pending").map(|e| e.name.as_str()).collect();
    assert_eq!(allowed, ["pay", "cancel"]);
    assert!(
        order.timers.iter().any(|t| t.state == "pending" && t.event == "cancel" && t.after_ms == 30 * 60_000)
    );
    assert_eq!(spec.resource("Inventory").expect("Inventory").table, "inventories");

    // The IR is plain data: it survives a JSON round trip unchanged.
    let json = serde_json::to_string(&spec).expect("serialize");
    let back: ordo_spec::ir::Spec = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, spec);
}

/// The grammar's reserved words and the list the diagnostics quote agree: each listed word
/// is refused as a name, and a near-miss or a part of one is accepted.
#[test]
fn reserved_words_are_refused_as_names() {
    for &word in ordo_spec::RESERVED_WORDS {
        let spec = |name: &str| {
            format!(
                "machine M {{\n    initial {name}\n    final b\n    create c\n    on go: {name} -> b\n}}\n"
            )
        };
        let diags = ordo_spec::compile(&spec(word)).expect_err(word);
        assert_eq!(diags[0].code, Code::Syntax, "{word}");
        assert!(diags[0].message.contains("reserved word"), "{word}: {}", diags[0].message);
        assert!(ordo_spec::compile(&spec(&format!("{word}x"))).is_ok(), "{word}x is a fine name");
        // The grammar matches the words letter by letter: no part of one is reserved alone.
        for end in 1..word.len() {
            let prefix = &word[..end];
            if !ordo_spec::RESERVED_WORDS.contains(&prefix) {
                assert!(ordo_spec::compile(&spec(prefix)).is_ok(), "{prefix} is a fine name");
            }
        }
    }
}

/// `docs/spec-language.md` lists every code, and its complete example checks clean.
#[test]
fn language_reference_is_complete() {
    let doc = read(&crate::workspace_root().join("docs/spec-language.md"));
    for c in Code::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", c.as_str())),
            "docs/spec-language.md does not list {}",
            c.as_str()
        );
    }
    let example = doc
        .split("## A complete example")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("the complete example's code block");
    if let Err(diags) = ordo_spec::compile(example) {
        panic!("{}", ordo_spec::render("docs/spec-language.md", example, &diags));
    }
}
