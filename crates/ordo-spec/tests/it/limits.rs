//! Bad input of every size and shape: a clear error, never a panic or a hang.

use ordo_spec::{Code, Diagnostic};

fn codes(diags: &[Diagnostic]) -> Vec<Code> {
    diags.iter().map(|d| d.code).collect()
}

fn compile_bytes_err(bytes: &[u8]) -> Vec<Diagnostic> {
    let diags = ordo_spec::compile_bytes(bytes).expect_err("must be refused");
    // Rendering never fails or panics either.
    let text = ordo_spec::source_text(bytes);
    assert!(!ordo_spec::render("input.ordo", &text, &diags).is_empty());
    diags
}

#[test]
fn empty_and_blank_files_declare_no_machine() {
    for input in ["", "   \n\n\t", "// only a comment\n"] {
        assert_eq!(codes(&compile_bytes_err(input.as_bytes())), [Code::EmptySpec], "{input:?}");
    }
}

#[test]
fn non_utf8_is_refused_at_the_first_bad_byte() {
    let mut bytes = b"machine M {\n    initial a\n".to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(&[0xff, 0xfe, b'x', b'\n', b'}']);
    let diags = compile_bytes_err(&bytes);
    assert_eq!(codes(&diags), [Code::NotUtf8]);
    assert_eq!(diags[0].span.start, at);
    assert_eq!(diags[0].line_col(&ordo_spec::source_text(&bytes)), (3, 1));
}

#[test]
fn binary_junk_is_a_syntax_error() {
    // A deterministic pseudo-random byte soup, valid UTF-8 or not.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let diags = compile_bytes_err(&junk);
    assert!(matches!(diags[0].code, Code::NotUtf8 | Code::Syntax));
    let ascii: Vec<u8> = junk.iter().map(|b| b % 128).collect();
    let diags = compile_bytes_err(&ascii);
    assert!(diags.iter().all(|d| matches!(d.code, Code::Syntax | Code::TooDeep)), "{:?}", codes(&diags));
}

#[test]
fn ten_megabytes_is_refused_before_parsing() {
    let big = vec![b' '; 10 * 1024 * 1024];
    assert_eq!(codes(&compile_bytes_err(&big)), [Code::TooLarge]);
    let text = " ".repeat(ordo_spec::SPEC_BYTES_MAX + 1);
    assert_eq!(codes(&ordo_spec::compile(&text).expect_err("too large")), [Code::TooLarge]);
}

#[test]
fn deep_brackets_are_refused_before_parsing() {
    for (open, close) in [("(", ")"), ("{", "}"), ("[", "]")] {
        let deep = format!(
            "machine M {{\n initial a\n final b\n create c {{ require {}true{} }}\n on go: a -> b\n}}\n",
            open.repeat(10_000),
            close.repeat(10_000)
        );
        let diags = ordo_spec::compile(&deep).expect_err("too deep");
        assert_eq!(codes(&diags), [Code::TooDeep], "{open}");
    }
    // Brackets in strings and comments do not count.
    let fine = format!(
        "machine M {{\n initial a // {}\n final b\n create c {{ require \"{}\" != \"\" }}\n on go: a -> b\n}}\n",
        "(".repeat(1000),
        "[".repeat(1000)
    );
    assert!(ordo_spec::compile(&fine).is_ok());
}

#[test]
fn long_operator_chains_are_refused_without_overflowing_the_stack() {
    for chain in [
        vec!["1"; 50_000].join(" + "),
        format!("{}true", "not ".repeat(50_000)),
        format!("{}1 > 0", "-".repeat(50_000)),
        vec!["true"; 50_000].join(" and "),
    ] {
        let spec = format!(
            "machine M {{\n initial a\n final b\n create c {{\n require {chain}\n }}\n on go: a -> b\n}}\n"
        );
        let diags = ordo_spec::compile(&spec).expect_err("too deep");
        assert_eq!(codes(&diags), [Code::TooDeep]);
    }
    // Just under the limit is fine.
    let chain = vec!["1"; ordo_spec::EXPR_DEPTH_MAX - 2].join(" + ");
    let spec = format!(
        "machine M {{\n initial a\n final b\n create c {{\n require {chain} > 0\n }}\n on go: a -> b\n}}\n"
    );
    assert!(ordo_spec::compile(&spec).is_ok());
}

#[test]
fn error_count_is_capped() {
    let states: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let spec = format!(
        "machine M {{\n initial a\n final b\n create c\n on go: a -> b\n on stray: {} -> nowhere\n}}\n",
        states.join(", ")
    );
    let diags = ordo_spec::compile(&spec).expect_err("unknown states");
    assert_eq!(diags.len(), ordo_spec::DIAGNOSTICS_MAX + 1);
    assert_eq!(diags.last().map(|d| d.code), Some(Code::TooManyErrors));
}

#[test]
fn syntax_recovery_is_bounded() {
    let broken: String = (0..100).map(|i| format!("machine M{i} {{\n    initial\n}}\n")).collect();
    let diags = ordo_spec::compile(&broken).expect_err("syntax errors");
    assert!(diags.len() <= ordo_spec::SYNTAX_ERRORS_MAX);
    assert!(diags.len() > 1, "recovery finds more than the first error");
    assert!(diags.iter().all(|d| d.code == Code::Syntax));
}

#[test]
fn a_ten_thousand_line_spec_checks_clean() {
    let spec = crate::generated::big_spec(10_000);
    assert!(spec.lines().count() >= 10_000);
    let ir = ordo_spec::compile(&spec).expect("the generated spec is valid");
    assert!(ir.machines.len() > 200);
}

/// The largest valid spec the limits allow parses within pest's call budget.
#[test]
fn a_spec_near_the_size_limit_still_compiles() {
    let mut spec = crate::generated::big_spec(10_000);
    let unit = spec.clone();
    while spec.len() + unit.len() < ordo_spec::SPEC_BYTES_MAX {
        // Rename the units of each copy so that names stay unique.
        let n = spec.len();
        spec.push_str(&unit.replace("Stock", &format!("S{n}x")).replace("Flow", &format!("F{n}x")));
    }
    assert!(spec.len() > ordo_spec::SPEC_BYTES_MAX * 3 / 4);
    let ir = ordo_spec::compile(&spec).expect("valid");
    assert!(ir.machines.len() > 1000);
}

/// A spec that starts with a UTF-8 byte order mark (as some Windows editors save) checks
/// as without it, and an error after it is reported where it is in the file.
#[test]
fn a_byte_order_mark_is_skipped() {
    let spec = "machine A {\n    initial a\n    final b\n    create open\n    on go: a -> b\n}\n";
    let with_bom = format!("\u{feff}{spec}");
    assert_eq!(
        ordo_spec::compile(&with_bom).expect("a BOM is skipped"),
        ordo_spec::compile(spec).expect("the spec checks")
    );
    // The same error with and without it, three bytes (the mark) further into the file.
    let broken = spec.replace("a -> b", "a -> b c");
    let plain = ordo_spec::compile(&broken).expect_err("a syntax error");
    let marked = ordo_spec::compile(&format!("\u{feff}{broken}")).expect_err("a syntax error");
    assert_eq!(codes(&marked), [Code::Syntax]);
    assert_eq!(marked[0].message, plain[0].message);
    assert_eq!(marked[0].span.start, plain[0].span.start + '\u{feff}'.len_utf8());
}

/// An error on a line of a megabyte is reported at its own line and column, with the line
/// cut a little past the error and the word it found cut in the message: the report stays
/// small.
#[test]
fn an_over_long_line_is_cut_in_the_report() {
    let junk = "1".repeat(1 << 20);
    let source = format!("machine A {{\n    x: int check >= {junk}zz\n    initial a\n}}\n");
    let diags = ordo_spec::compile(&source).expect_err("a syntax error");
    let report = ordo_spec::render("long.ordo", &source, &diags);
    assert!(report.len() < 2_000, "{} bytes: {}", report.len(), &report[..report.len().min(600)]);
    assert!(report.contains("long.ordo:2:21"), "{report}");
    assert!(report.contains("…` (1048578 characters)"), "{report}");
    assert!(report.contains(&format!("{}…", "1".repeat(120))), "{report}");
    // A short line is shown whole.
    let short = "machine A {\n    x: int check >= 1 +\n}\n";
    let report = ordo_spec::render("short.ordo", short, &ordo_spec::compile(short).expect_err("an error"));
    assert!(report.contains("x: int check >= 1 +\n") && !report.contains('…'), "{report}");
}
