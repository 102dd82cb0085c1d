//! `spec fmt`: canonical, idempotent, and meaning-preserving.

use crate::{corpus, read, shipped_specs, short_name};

fn check_fmt(name: &str, source: &str) {
    let once = ordo_spec::fmt::format(source).unwrap_or_else(|d| panic!("{name}: {d:?}"));
    let twice = ordo_spec::fmt::format(&once).unwrap_or_else(|d| panic!("{name} after fmt: {d:?}"));
    assert_eq!(once, twice, "{name}: formatting is not idempotent");
    assert_eq!(
        ordo_spec::compile(source).ok(),
        ordo_spec::compile(&once).ok(),
        "{name}: formatting changed the meaning"
    );
    // Every comment survives, in order.
    let comments = |s: &str| -> Vec<String> {
        ordo_spec::parse(s).expect("parses").comments.into_iter().map(|c| c.text).collect()
    };
    assert_eq!(comments(source), comments(&once), "{name}: comments lost or reordered");
}

#[test]
fn idempotent_and_meaning_preserving_on_shipped_and_good_specs() {
    for path in shipped_specs().into_iter().chain(corpus("good")) {
        check_fmt(&short_name(&path), &read(&path));
    }
}

#[test]
fn shipped_specs_are_formatted() {
    for path in shipped_specs() {
        let source = read(&path);
        let formatted = ordo_spec::fmt::format(&source).expect("formats");
        assert_eq!(source, formatted, "{} is not formatted: run `cargo xtask spec fmt`", short_name(&path));
    }
}

#[test]
fn messy_layout_becomes_canonical() {
    let messy = "// head\n\n\n\nresource   Wallet key account:text{ balance:money check>=0\n  op deposit( amount :money check >=1 ,){balance+=amount}\n}\nmachine M{\n  initial a // start\n  final b\n  create c {}\n  on go(x: int?): a -> b { // after brace\n     require ok: (x == null or x>1) and not false\n\n\n     set   x_copy=x\n  }\n  x_copy: int?\n  after 1h30m in a : go\n}\n";
    let expected = "// head

resource Wallet key account: text {
    balance: money check >= 0
    op deposit(amount: money check >= 1) {
        balance += amount
    }
}

machine M {
    initial a // start
    final b
    create c
    on go(x: int?): a -> b { // after brace
        require ok: (x == null or x > 1) and not false

        set x_copy = x
    }
    x_copy: int?
    after 1h30m in a: go
}
";
    assert_eq!(ordo_spec::fmt::format(messy).expect("formats"), expected);
    check_fmt("messy", messy);
}

#[test]
fn refuses_to_format_broken_text() {
    let diags = ordo_spec::fmt::format("machine M {\n    initial\n}\n").expect_err("syntax error");
    assert_eq!(diags[0].code, ordo_spec::Code::Syntax);
}
