//! Generated outputs: diagrams are stable, and the checked-in docs are fresh.

use crate::{read, shipped_specs, workspace_root};
use ordo_spec::graph::{Format, render};

#[test]
fn order_diagrams() {
    let spec = ordo_spec::compile(&read(&workspace_root().join("specs/order.ordo"))).expect("checks");
    insta::assert_snapshot!("order_mermaid", render(&spec, Format::Mermaid));
    insta::assert_snapshot!("order_dot", render(&spec, Format::Dot));
}

#[test]
fn diagrams_are_byte_stable() {
    for path in shipped_specs() {
        let source = read(&path);
        for format in [Format::Mermaid, Format::Dot] {
            let a = render(&ordo_spec::compile(&source).expect("checks"), format);
            let b = render(&ordo_spec::compile(&source).expect("checks"), format);
            assert_eq!(a, b);
        }
    }
}

/// `docs/specs/<name>.md` is what `cargo xtask spec docs` writes today.
#[test]
fn checked_in_spec_docs_are_fresh() {
    for path in shipped_specs() {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("file name");
        let expected = ordo_spec::docs::spec_doc(name, &read(&path)).expect("checks");
        let doc = workspace_root().join("docs/specs").join(format!("{name}.md"));
        let actual = std::fs::read_to_string(&doc).unwrap_or_default();
        assert!(actual == expected, "{} is stale: run `cargo xtask spec docs` and commit it", doc.display());
    }
}
